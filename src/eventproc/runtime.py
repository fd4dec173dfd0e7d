"""Wires Settings -> store -> registry -> processor (+ HTTP) and runs them together.

One process, one event loop: the processor, its side tasks and uvicorn.
The HTTP app is given (``http_app``, wired in by :mod:`eventproc.app`): this
module never imports :mod:`eventproc.http`, which reads the runtime.
SIGTERM/SIGINT stop claiming, let running handlers finish within the grace
period, give back what could not finish, and return normally (exit 0).
"""

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import uvicorn

from eventproc import __version__, early_signals
from eventproc.admin.chores import CHORES
from eventproc.admin.pruner import Pruner
from eventproc.config import AggregateFailure, Ordering, Settings
from eventproc.engine import Processor, default_worker_id
from eventproc.errors import EventprocError, StoreError, StoreUnavailable
from eventproc.metrics import Metrics, StoreReading
from eventproc.metrics_tables import TableWatch
from eventproc.registry import Registry, load_registry
from eventproc.shared_reading import SharedReadings
from eventproc.stats import Stats
from eventproc.store import BlockedSummary, Store, StoreStats, open_store
from eventproc.store.admin.handlers import HandlerFigures

logger = logging.getLogger("eventproc.runtime")

STATS_TIMEOUT_SECONDS = 2.0
STARTING = "starting: creating or upgrading the schema"

# Builds the ASGI app served beside the processor from the runtime it serves
# (eventproc.http.create_app, given by eventproc.app.build_runtime).
AppFactory = Callable[["Runtime"], Any]


class ListenError(EventprocError):
    """The HTTP address cannot be bound: in use, not permitted, or not this machine's."""


class Runtime:
    """Everything one eventproc process runs, built from Settings."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: Registry | None = None,
        http_app: AppFactory | None = None,
    ) -> None:
        self.settings = settings
        self.http_app = http_app
        self.tokens = settings.token_book()  # who may call the API, with which role
        self.redaction = settings.redaction()  # payload paths viewers never see
        self.worker_id = settings.worker_id or default_worker_id()
        self.registry = registry if registry is not None else load_registry(settings.handlers)
        self.store: Store = open_store(
            settings.effective_database_url,
            worker_name=self.worker_id,
            pool_size=settings.database_pool_size,
            listen=settings.listen and settings.enable_polling,
            async_commit=settings.effective_async_commit,
            pooler=settings.pooler,
        )
        self.stats = Stats()
        self.metrics = Metrics()
        wake_ups = self.store.wake_ups
        self.metrics.listen_verified.set_function(lambda: 1 if wake_ups.mode == "listen" else 0)
        self.pruner, self.tables = self._retention(settings)
        self.processor = Processor(
            self.store,
            self.registry,
            settings.processor_config(),
            stats=self.stats,
            metrics=self.metrics,
            worker_id=self.worker_id,
        )
        self.started_monotonic = time.monotonic()
        self.started_at = datetime.now(UTC)
        self._server: uvicorn.Server | None = None
        # Start-up, as /health reports it until the processor runs.
        self.prepared = False  # the schema is up to date (prepare() succeeded)
        self.startup_error: str | None = None  # why the last prepare() try failed
        self.http_port: int | None = None  # the port bound (PORT=0 picks a free one)
        self.http_url: str | None = None  # set once HTTP accepts connections
        self.listening = asyncio.Event()  # ditto
        self._starting: asyncio.Task[None] | None = None
        self.blocked: BlockedSummary | None = None  # as of the last store_stats()
        self._stats = SharedReadings[tuple[StoreStats, BlockedSummary | None]](
            settings.stats_max_age_seconds
        )
        # The admin API's per-subscription figures (http/admin/handlers.py), by page.
        self.handler_figures = SharedReadings[tuple[datetime, list[HandlerFigures]]](
            settings.handler_figures_max_age_seconds
        )

    def _retention(self, settings: Settings) -> tuple[Pruner, TableWatch]:
        """Retention and table health (issue 16): the pruner chore, and the shared reading."""
        pruner = Pruner(
            self.store.driver,
            settings.retention_policy(),
            holder=f"{self.worker_id}:{os.getpid()}",
            jsonl=settings.archive_path,
            busy=self.claims_behind,
        )
        tables = TableWatch(
            self.store.driver,
            pruner,
            max_age=settings.table_health_max_age_seconds,
            pruning=settings.prune,
        )
        self.metrics.registry.register(tables)
        return pruner, tables

    def claims_behind(self) -> bool:
        """Whether the claim loop has due work it has not started: its last claim came
        back full, or no slot is free for the next. The pruner gives way meanwhile
        (admin/pruner.py); the engine's own counters, no query."""
        slots = self.processor.slots
        if not (slots.producing and slots.polling_enabled and slots.database_ok):
            return False  # no claims to give way to (stopped, manual triggers only, an outage)
        return slots.more_available or slots.free() <= 0

    @property
    def backend(self) -> str:
        return self.store.backend

    @property
    def uptime_seconds(self) -> float:
        return time.monotonic() - self.started_monotonic

    async def prepare(self, *, attempts: int | None = None) -> None:
        """Create or upgrade the schema, waiting for the database if it is not up yet.

        Each failed try is logged with its error and kept in ``startup_error``
        for /health; ``attempts`` bounds the tries (None: until it works).
        """
        delay = 0.5
        tries = 0
        while True:
            tries += 1
            try:
                await self.store.migrate(self.registry.schema_hooks)
            except StoreUnavailable as exc:
                self.startup_error = str(exc)
                if attempts is not None and tries >= attempts:
                    raise
                logger.error(
                    "Database unreachable at start (%s); retrying in %.1fs",
                    exc,
                    delay,
                    extra={"action": "db_down"},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 15.0)
            except StoreError as exc:
                self.startup_error = str(exc)
                raise
            else:
                self.prepared, self.startup_error = True, None
                return

    def health_status(self, stats: StoreStats | None) -> tuple[str, list[str]]:
        """``healthy`` or ``degraded``, and why (for /health's ``status`` and ``statusReasons``)."""
        reasons = []
        if self.processor.crash is not None:
            reasons.append(f"processor stopped: {self.processor.crash}")
        if stats is None:
            reasons.append(self.processor.last_error or "database unreachable")
        wake_ups = self.store.wake_ups
        if wake_ups.failing:  # meant to listen, polling instead
            reasons.append(f"wake-ups by polling only: {wake_ups.reason}")
        if self.blocked_too_long() and self.blocked is not None:
            reasons.append(
                f"{self.blocked.count}{'+' if self.blocked.capped else ''} aggregate(s) blocked; "
                f"an event has waited {self.blocked.oldest_wait_seconds():.0f}s "
                f"(BLOCKED_AGGREGATE_MAX_AGE_SECONDS="
                f"{self.settings.blocked_aggregate_max_age_seconds:g})"
            )
        return ("degraded" if reasons else "healthy"), reasons

    def blocked_too_long(self) -> bool:
        """An event has waited behind a blocked aggregate past BLOCKED_AGGREGATE_MAX_AGE_SECONDS."""
        if self.blocked is None:
            return False
        limit = self.settings.blocked_aggregate_max_age_seconds
        return self.blocked.oldest_wait_seconds() > limit

    async def store_stats(self) -> StoreStats | None:
        """Backlog figures for /health and /metrics; None when the database is away.

        With ORDERING=aggregate the blocked aggregates are read too, and the
        events held back by them are not counted as due.
        """
        if not self.prepared:  # start-up: not ready, whatever the database says
            self.processor.last_error = self.startup_error or STARTING
            self.metrics.store.failed()
            return None
        try:
            async with asyncio.timeout(STATS_TIMEOUT_SECONDS):
                stats, blocked = await self._stats.get("stats", self._read_stats)
        except (StoreError, TimeoutError) as exc:
            self.processor.last_error = str(exc) or "timed out"
            self.metrics.store.failed()  # the gauges keep the last figures read, marked stale
            return None
        self.blocked = blocked
        if blocked is not None:
            stats = dataclasses.replace(stats, due=max(stats.due - blocked.waiting_due, 0))
        self._set_gauges(stats, blocked)
        return stats

    def stats_age_seconds(self) -> float:
        """How old the figures store_stats() serves are (a shared reading)."""
        return self._stats.age("stats")

    async def _read_stats(self) -> tuple[StoreStats, BlockedSummary | None]:
        return await self.store.stats_snapshot(), await self._blocked_summary()

    async def _blocked_summary(self) -> BlockedSummary | None:
        if self.settings.ordering is not Ordering.AGGREGATE:
            return None
        return await self.store.blocked_summary(
            include_dead_letters=self.settings.aggregate_failure is AggregateFailure.BLOCK
        )

    def _set_gauges(self, stats: StoreStats, blocked: BlockedSummary | None) -> None:
        oldest = 0.0
        if stats.oldest_pending_at is not None:
            oldest = max((stats.database_now - stats.oldest_pending_at).total_seconds(), 0.0)
        self.metrics.store.record(
            StoreReading(
                backlog=stats.backlog,
                oldest_pending_seconds=oldest,
                dead_letters=stats.dead_letters,
                blocked_aggregates=blocked.count if blocked else 0,
                blocked_oldest_seconds=blocked.oldest_wait_seconds() if blocked else 0.0,
            ),
            age=self.stats_age_seconds(),
        )

    async def serve(self, *, http: bool = True) -> None:
        """Run until SIGTERM/SIGINT (or :meth:`shutdown`).

        HTTP comes up first, so that a platform's start-up probe gets an
        answer and /health can say why nothing is processed yet (a database
        that does not answer); then the schema is prepared, retried until the
        database answers, and only then does the processor start.
        ``http=True`` needs the ``http_app`` this Runtime was built with.
        """
        if http and self.http_app is None:
            await self.store.close()
            raise ValueError("serve(http=True) needs http_app: use eventproc.app.build_runtime")
        try:
            sock = self._bind() if http else None
        except ListenError:
            await self.store.close()
            raise
        logger.info(
            "eventproc %s starting: %s database at %s, worker %s, %d handlers",
            __version__,
            self.backend,
            self.store.url_for_display,
            self.worker_id,
            len(self.registry),
            extra={"action": "starting", "worker": self.worker_id},
        )
        with self._signals():
            self._starting = asyncio.create_task(
                self._process(http=sock is not None), name="eventproc-processor"
            )
            tasks = [self._starting]
            if sock is not None:
                tasks.append(asyncio.create_task(self._serve_http(sock), name="eventproc-http"))
            if (caught := early_signals.take()) is not None:
                self._on_signal(caught)  # came while the command was starting
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if not task.cancelled():
                        task.result()  # a crash in either half surfaces here
            finally:
                self.shutdown()
                await asyncio.gather(*tasks, return_exceptions=True)
                await self.store.close()
        logger.info("eventproc stopped", extra={"action": "stopped"})

    async def _process(self, *, http: bool) -> None:
        if http:
            await self.listening.wait()  # answer probes before the first migration try
        await self.prepare()
        chores = [
            asyncio.create_task(chore(self), name=f"eventproc-{chore.__name__}") for chore in CHORES
        ]
        try:
            await self.processor.run()
        finally:
            for task in chores:
                task.cancel()
            await asyncio.gather(*chores, return_exceptions=True)

    def shutdown(self) -> None:
        self.processor.stop()
        if self._starting is not None and not self.prepared:
            self._starting.cancel()  # still waiting for the database: nothing to finish
        if self._server is not None:
            self._server.should_exit = True

    def _bind(self) -> socket.socket:
        """Bind before anything runs: a taken port is then one clear error line."""
        host, port = self.settings.host, self.settings.port
        # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so, and
        # without it a keep-alive answer written in two parts waits 40 ms (Nagle).
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise ListenError(
                f"cannot listen on {host}:{port}: {reason[:1].lower()}{reason[1:]}"
            ) from None
        self.http_port = int(sock.getsockname()[1])
        return sock

    async def _serve_http(self, sock: socket.socket) -> None:
        assert self.http_app is not None  # serve() checked
        config = uvicorn.Config(
            self.http_app(self), log_config=None, access_log=False, lifespan="off"
        )
        self._server = _QuietServer(config, on_started=self._on_listening)
        # A stop asked for before this task first ran found no server to tell.
        self._server.should_exit = self.processor.slots.stopping.is_set()
        await self._server.serve(sockets=[sock])
        # The HTTP server stopping (not by a signal) stops the processor too.
        self.shutdown()

    def _on_listening(self) -> None:
        host = self.settings.host
        self.http_url = f"http://{f'[{host}]' if ':' in host else host}:{self.http_port}"
        logger.info("HTTP on %s (health: /health)", self.http_url, extra={"action": "listening"})
        self.listening.set()

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
        try:
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        logger.info(
            "%s received: finishing running handlers, then exiting",
            sig.name,
            extra={"action": "stopping"},
        )
        self.shutdown()


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling (the runtime owns the signals),
    telling the runtime when it accepts connections."""

    def __init__(self, config: uvicorn.Config, *, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:  # older uvicorn
        return None
