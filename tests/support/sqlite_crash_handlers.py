"""Handlers for the SQLite crash test (HANDLERS=support.sqlite_crash_handlers:registry).

The handler writes in the event's own transaction: one row per event (its
id is the key, so a second committed run would fail loudly) plus a shared
counter, with a few kilobytes of payload so that a commit spans several
pages, and a short sleep so that a SIGKILL often lands inside the
transaction. Effects and outcome commit together or not at all, which is
what the crash test counts.
"""

import asyncio
import os

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from eventproc import Event, HandlerContext, Registry

EVENT_TYPE = "crash.write"
registry = Registry()
# "b <id>" when a run enters its transaction, "e <id>" when it leaves the
# handler: a "b" without its "e" after a SIGKILL is a transaction cut short.
_marks = os.environ.get("CRASH_MARKS_FILE")
_fd = os.open(_marks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if _marks else None


def _mark(kind: str, event: Event) -> None:
    if _fd is not None:
        os.write(_fd, f"{kind} {event.id}\n".encode())


@registry.on_migrate
async def _schema(connection: AsyncConnection) -> None:
    await connection.execute(
        text(
            "CREATE TABLE IF NOT EXISTS crash_effects ("
            " event_id TEXT PRIMARY KEY, attempt INTEGER NOT NULL,"
            " pid INTEGER NOT NULL, blob BLOB NOT NULL)"
        )
    )
    await connection.execute(
        text("CREATE TABLE IF NOT EXISTS crash_totals (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
    )
    await connection.execute(text("INSERT OR IGNORE INTO crash_totals (id, n) VALUES (1, 0)"))


@registry.handler(EVENT_TYPE, transactional=True, description="Writes in its transaction.")
async def write(event: Event, ctx: HandlerContext) -> None:
    size = int(event.payload.get("bytes", 8192))
    _mark("b", event)
    await ctx.connection.execute(
        text(
            "INSERT INTO crash_effects (event_id, attempt, pid, blob)"
            " VALUES (:event_id, :attempt, :pid, :blob)"
        ),
        {
            "event_id": str(event.id),
            "attempt": ctx.attempt,
            "pid": os.getpid(),
            "blob": os.urandom(size),
        },
    )
    await asyncio.sleep(float(event.payload.get("seconds", 0.01)))
    await ctx.connection.execute(text("UPDATE crash_totals SET n = n + 1 WHERE id = 1"))
    _mark("e", event)
