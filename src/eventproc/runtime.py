"""Wires Settings -> store -> registry -> processor (+ HTTP) and runs them together.

One process, one event loop: the processor, its side tasks and uvicorn.
SIGTERM/SIGINT stop claiming, let running handlers finish within the grace
period, give back what could not finish, and return normally (exit 0).
"""

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import uvicorn

from eventproc import __version__
from eventproc.config import AggregateFailure, Ordering, Settings
from eventproc.errors import StoreError, StoreUnavailable
from eventproc.metrics import Metrics
from eventproc.processor import Processor, default_worker_id
from eventproc.registry import Registry, load_registry
from eventproc.stats import Stats
from eventproc.store import SqlStore, StoreStats, open_store

logger = logging.getLogger("eventproc.runtime")

STATS_TIMEOUT_SECONDS = 2.0


class Runtime:
    """Everything one eventproc process runs, built from Settings."""

    def __init__(self, settings: Settings, *, registry: Registry | None = None) -> None:
        self.settings = settings
        self.worker_id = settings.worker_id or default_worker_id()
        self.registry = registry if registry is not None else load_registry(settings.handlers)
        self.store: SqlStore = open_store(
            settings.effective_database_url,
            worker_name=self.worker_id,
            pool_size=min(max(settings.concurrency // 2, 5), 40),
            async_commit=settings.effective_async_commit,
        )
        self.stats = Stats()
        self.metrics = Metrics()
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

    @property
    def backend(self) -> str:
        return "postgresql" if self.store.capabilities.skip_locked else "sqlite"

    @property
    def uptime_seconds(self) -> float:
        return time.monotonic() - self.started_monotonic

    async def prepare(self, *, attempts: int | None = None) -> None:
        """Create or upgrade the schema, waiting for the database if it is not up yet."""
        delay = 0.5
        tries = 0
        while True:
            tries += 1
            try:
                await self.store.migrate(self.registry.schema_hooks)
                return
            except StoreUnavailable as exc:
                if attempts is not None and tries >= attempts:
                    raise
                logger.error("Database unreachable at start, retrying in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 15.0)

    async def blocked_aggregates(self, limit: int = 10) -> list[dict[str, object]]:
        """Aggregates held back by a failing event (empty when ORDERING=none)."""
        if self.settings.ordering is not Ordering.AGGREGATE:
            return []
        try:
            async with asyncio.timeout(STATS_TIMEOUT_SECONDS):
                blocked = await self.store.aggregates_blocked(
                    limit,
                    include_dead_letters=self.settings.aggregate_failure is AggregateFailure.BLOCK,
                )
        except (StoreError, TimeoutError):
            return []
        return [
            {
                "aggregateId": str(item.aggregate_id),
                "aggregateType": item.aggregate_type,
                "blockedBy": str(item.event_id),
                "eventType": item.event_type,
                "reason": item.reason,
                "waiting": item.waiting,
                "retryAt": item.retry_at.isoformat() if item.retry_at else None,
            }
            for item in blocked
        ]

    async def store_stats(self) -> StoreStats | None:
        """Backlog figures for /health and /metrics; None when the database is away."""
        try:
            async with asyncio.timeout(STATS_TIMEOUT_SECONDS):
                stats = await self.store.stats_snapshot()
        except (StoreError, TimeoutError) as exc:
            self.processor.last_error = str(exc) or "timed out"
            return None
        self.metrics.backlog.set(stats.backlog)
        self.metrics.dead_letters.set(stats.dead_letters)
        if stats.oldest_pending_at is not None:
            age = (stats.database_now - stats.oldest_pending_at).total_seconds()
            self.metrics.oldest_pending_seconds.set(max(age, 0))
        else:
            self.metrics.oldest_pending_seconds.set(0)
        return stats

    async def serve(self, *, http: bool = True) -> None:
        """Run until SIGTERM/SIGINT (or :meth:`shutdown`)."""
        logger.info(
            "eventproc %s starting: %s database at %s, worker %s, %d handlers",
            __version__,
            self.backend,
            self.store.url_for_display,
            self.worker_id,
            len(self.registry),
            extra={"action": "starting", "worker": self.worker_id},
        )
        await self.prepare()
        with self._signals():
            tasks = [asyncio.create_task(self.processor.run(), name="eventproc-processor")]
            if http:
                tasks.append(asyncio.create_task(self._serve_http(), name="eventproc-http"))
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # a crash in either half surfaces here
            finally:
                self.shutdown()
                await asyncio.gather(*tasks, return_exceptions=True)
                await self.store.close()
        logger.info("eventproc stopped", extra={"action": "stopped"})

    def shutdown(self) -> None:
        self.processor.stop()
        if self._server is not None:
            self._server.should_exit = True

    async def _serve_http(self) -> None:
        from eventproc.http import create_app

        config = uvicorn.Config(
            create_app(self),
            host=self.settings.host,
            port=self.settings.port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        self._server = _QuietServer(config)
        logger.info(
            "HTTP on http://%s:%d (health: /health)", self.settings.host, self.settings.port
        )
        await self._server.serve()
        if not self._server.started:
            raise RuntimeError(f"could not listen on {self.settings.host}:{self.settings.port}")
        # The HTTP server stopping (not by a signal) stops the processor too.
        self.processor.stop()

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
    """uvicorn without its own signal handling: the runtime owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:  # older uvicorn
        return None
