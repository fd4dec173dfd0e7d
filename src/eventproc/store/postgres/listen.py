"""LISTEN/NOTIFY wake-ups on a dedicated connection, reconnecting when lost."""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

logger = logging.getLogger("eventproc.store.postgres")

CHANNEL = "eventproc_events"
LISTENER_CHECK_SECONDS = 15.0


async def listen(connect_args: dict[str, Any], on_wake: Callable[[], None]) -> None:
    """Call ``on_wake`` on every NOTIFY until cancelled; reconnect when lost.

    A dedicated connection outside the pool; it is checked every
    ``LISTENER_CHECK_SECONDS`` so that a half-open socket is noticed, and a
    reconnect wakes the processor because notifications may have been
    missed meanwhile.
    """
    delay = 0.5
    while True:
        connection = None
        try:
            connection = await asyncpg.connect(**connect_args)
            closed = asyncio.Event()
            connection.add_termination_listener(lambda _conn, ev=closed: ev.set())
            await connection.add_listener(CHANNEL, lambda *_: on_wake())
            logger.debug("Listening on %s", CHANNEL)
            delay = 0.5
            on_wake()  # notifications may have been missed while away
            await _watch(connection, closed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure of the listener means: reconnect
            logger.warning(
                "Listener connection lost (%s); reconnecting in %.1fs",
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                delay,
                extra={"action": "listen_reconnect"},
            )
        finally:
            if connection is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(connection.close(), timeout=2)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)


async def _watch(connection: asyncpg.Connection, closed: asyncio.Event) -> None:
    """Return never; raise when the connection is gone or stops answering."""
    while True:
        try:
            await asyncio.wait_for(closed.wait(), LISTENER_CHECK_SECONDS)
        except TimeoutError:
            await asyncio.wait_for(connection.fetchval("SELECT 1"), timeout=10)
        else:
            raise ConnectionError("listener connection closed by the server")
