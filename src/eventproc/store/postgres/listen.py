"""LISTEN/NOTIFY wake-ups on a dedicated connection, proven by self-NOTIFY probes.

A connection that LISTENs proves nothing: a transaction pooler accepts
LISTEN on a server connection it then lends to others, and a proxy may drop
the notification messages. So right after LISTEN, and then every
``PROBE_INTERVAL_SECONDS``, the listener sends a NOTIFY the way publishers
do (through the pool: the trigger notifies from the publisher's own
connection) and waits ``PROBE_TIMEOUT_SECONDS`` for it on the listener.
Until a probe has arrived, and whenever one does not, ``WakeUps`` says
``polling``, which the processor does anyway.
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from eventproc.store.protocol import WakeUps

logger = logging.getLogger("eventproc.store.postgres")

CHANNEL = "eventproc_events"
LISTENER_CHECK_SECONDS = 15.0
PROBE_INTERVAL_SECONDS = 60.0
PROBE_TIMEOUT_SECONDS = 5.0
PROBE_SEND_SECONDS = 10.0  # every pooled connection busy that long: no verdict this time
# The triggers notify with an empty payload; a probe's says it is one, and whose.
PROBE_PREFIX = "eventproc-probe:"

Begin = Callable[[], AbstractAsyncContextManager[AsyncConnection]]


async def listen(
    connect_args: dict[str, Any], on_wake: Callable[[], None], wake_ups: WakeUps, begin: Begin
) -> None:
    """Call ``on_wake`` on every NOTIFY until cancelled; reconnect when lost.

    A dedicated connection outside the pool; it is checked every
    ``LISTENER_CHECK_SECONDS`` so that a half-open socket is noticed, and a
    reconnect wakes the processor because notifications may have been
    missed meanwhile. ``begin`` opens the pool's transactions probes go out in.
    """
    probes = Probes(begin, wake_ups)

    def notified(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        if not probes.received(payload):
            on_wake()

    delay = 0.5
    while True:
        connection = None
        try:
            connection = await asyncpg.connect(**connect_args)
            closed = asyncio.Event()
            connection.add_termination_listener(lambda _conn, ev=closed: ev.set())
            await connection.add_listener(CHANNEL, notified)
            logger.debug("Listening on %s", CHANNEL)
            wake_ups.verifying()
            delay = 0.5
            on_wake()  # notifications may have been missed while away
            await _watch(connection, closed, probes)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure of the listener means: reconnect
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            wake_ups.lost(f"LISTEN connection lost ({reason}); reconnecting")
            logger.warning(
                "Listener connection lost (%s); reconnecting in %.1fs",
                reason,
                delay,
                extra={"action": "listen_reconnect"},
            )
        finally:
            if connection is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2):
                        await connection.close()
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)


async def _watch(connection: asyncpg.Connection, closed: asyncio.Event, probes: "Probes") -> None:
    """Probe at once and then periodically; raise when the connection is gone or stops answering.

    asyncio.timeout, never wait_for, in this module: on 3.11 wait_for
    swallows a cancellation that arrives as the awaited thing completes (a
    probe coming back as the processor stops), and the listener never ends.
    """
    loop = asyncio.get_running_loop()
    probe_at = loop.time()
    check_at = probe_at + LISTENER_CHECK_SECONDS
    while True:
        timeout = min(probe_at, check_at) - loop.time()
        if timeout > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await closed.wait()
        if closed.is_set():
            raise ConnectionError("listener connection closed by the server")
        if loop.time() >= probe_at:
            await probes.run(connection)
            probe_at = loop.time() + PROBE_INTERVAL_SECONDS
        else:
            await _check(connection)
        check_at = loop.time() + LISTENER_CHECK_SECONDS


async def _check(connection: asyncpg.Connection) -> None:
    """A half-open socket answers nothing: this then times out."""
    async with asyncio.timeout(10):
        await connection.fetchval("SELECT 1")


class Probes:
    """Self-NOTIFY probes: sent through the pool, awaited on the listener."""

    def __init__(self, begin: Begin, wake_ups: WakeUps) -> None:
        self._begin = begin
        self._wake_ups = wake_ups
        self._prefix = f"{PROBE_PREFIX}{uuid.uuid4().hex[:12]}:"
        self._sent = 0
        self._waiting: dict[str, asyncio.Future[None]] = {}

    def received(self, payload: str) -> bool:
        """Whether ``payload`` is a probe (anyone's: probes wake no processor)."""
        if not payload.startswith(PROBE_PREFIX):
            return False
        waiter = self._waiting.get(payload)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return True

    async def run(self, connection: asyncpg.Connection) -> None:
        """Send one probe and record whether it came back in time.

        No verdict when it could not be sent (the pool, not LISTEN, is in
        trouble) or when the listener's own connection no longer answers.
        """
        self._sent += 1
        payload = f"{self._prefix}{self._sent}"
        arrived = asyncio.get_running_loop().create_future()
        self._waiting[payload] = arrived
        try:
            if not await self._send(payload):
                return
            try:
                async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
                    await arrived
            except TimeoutError:
                await _check(connection)
                self._missed()
            else:
                self._arrived()
        finally:
            del self._waiting[payload]

    async def _send(self, payload: str) -> bool:
        try:
            async with asyncio.timeout(PROBE_SEND_SECONDS), self._begin() as conn:
                await conn.execute(
                    text("SELECT pg_notify(:channel, :payload)"),
                    {"channel": CHANNEL, "payload": payload},
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the pool's trouble, reported where it is used
            logger.debug("LISTEN probe not sent: %s", exc)
            return False
        return True

    def _arrived(self) -> None:
        if self._wake_ups.verified():
            logger.info(
                "LISTEN notifications arrive again: wake-ups by LISTEN",
                extra={"action": "listen_verified"},
            )
        else:
            logger.debug("LISTEN verified by a probe")

    def _missed(self) -> None:
        reason = (
            f"LISTEN notifications did not arrive within {PROBE_TIMEOUT_SECONDS:g}s "
            "(a transaction pooler?)"
        )
        if self._wake_ups.unverified(reason):
            logger.warning(
                "%s; new events are picked up by polling (POLL_INTERVAL_MS) until a probe "
                "arrives. Behind a transaction pooler set LISTEN=false",
                reason,
                extra={"action": "listen_unverified"},
            )
