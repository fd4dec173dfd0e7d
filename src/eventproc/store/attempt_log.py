"""The attempt log: every handler call that did not succeed, with its error and traceback.

Written after the write-back of its result (not in its statement: the hot
path's statements stay as they are, and failures are rare); a success is
its row's own finished state, so nothing is written for one.
"""

from collections.abc import Sequence

from sqlalchemy import insert

from eventproc.store.driver import Driver
from eventproc.store.protocol import FailedAttempt
from eventproc.store.schema import attempts

MAX_ERROR = 2000  # characters of an error message kept (as in metadata.last_error)
MAX_DETAIL = 20_000  # characters of a traceback kept: its end, where the raise is


async def record(driver: Driver, failed: Sequence[FailedAttempt]) -> None:
    if not failed:
        return
    rows = [
        {
            "event_id": item.event_id,
            "handler": item.handler,
            "attempt": item.attempt,
            "worker": item.worker,
            "finished_at": item.finished_at,
            "duration_ms": item.duration_ms,
            "outcome": item.outcome,
            "error": item.error[:MAX_ERROR] if item.error else item.error,
            "detail": item.detail[-MAX_DETAIL:] if item.detail else item.detail,
        }
        for item in failed
    ]
    async with driver.begin() as conn:
        await conn.execute(insert(attempts), rows)
