"""Driver errors become eventproc.errors once, here, at the store boundary.

Nothing above ``eventproc.store`` sees a SQLAlchemy, asyncpg or sqlite3
exception: the SQLSTATE (or the kind of failure) decides between
StoreUnavailable (try again later), StoreConflict (try again now) and
StoreError (the same statement would fail the same way).
"""

import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import exc as sa_exc

from eventproc.errors import StoreConflict, StoreError, StoreUnavailable

P = ParamSpec("P")
T = TypeVar("T")

# sa_exc.TimeoutError: no pooled connection came free within the pool's
# timeout (DATABASE_POOL_SIZE reached): backpressure, not a failure.
UNAVAILABLE = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    OSError,
    TimeoutError,
)

# SQLSTATEs after which the same statement can simply be tried again:
# connection exceptions (class 08), the server starting, stopping or in
# recovery (57P01-57P03), too many connections, deadlock, serialization.
_RETRYABLE_STATES = ("08", "57P01", "57P02", "57P03", "53300", "40001", "40P01")
_CONFLICT_STATES = ("40001", "40P01")  # of those, the ones that say nothing about the server


def translate_error(exc: BaseException) -> StoreError:
    if isinstance(exc, UNAVAILABLE):
        return StoreUnavailable(f"database unavailable: {first_line(exc)}")
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return StoreUnavailable(f"database connection lost: {first_line(exc)}")
    state = sqlstate_of(exc)
    if state == "08P01" and "unsupported startup parameter" in first_line(exc):
        # A pooler refusing session settings: trying again cannot help.
        return StoreError(
            f"database refused eventproc's start-up settings ({first_line(exc)}): "
            "behind a pooler, set POOLER=session or POOLER=transaction "
            "(README: Using it with Supabase)"
        )
    if state in _CONFLICT_STATES:
        return StoreConflict(f"database conflict ({state}), try again: {first_line(exc)}")
    if state and state.startswith(_RETRYABLE_STATES):
        return StoreUnavailable(f"database busy or restarting ({state}): {first_line(exc)}")
    return StoreError(f"database error: {first_line(exc)}")


def sqlstate_of(exc: BaseException) -> str | None:
    for candidate in (getattr(exc, "orig", None), exc.__cause__, exc):
        state = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(state, str):
            return state
    return None


def first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc) or type(exc).__name__
    return text.strip().splitlines()[0][:500]


def translated(
    func_: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Map driver errors to eventproc.errors."""

    @functools.wraps(func_)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await func_(*args, **kwargs)
        except StoreError:
            raise
        except (sa_exc.SQLAlchemyError, *UNAVAILABLE) as exc:
            raise translate_error(exc) from exc

    return wrapper


def idempotent(
    func_: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Retry once when the connection turned out dead (e.g. after a database restart).

    Only for operations that are safe to repeat: reads, and inserts that
    ignore ids already present. The pool drops its stale connections on the
    first failure, so the second try gets a fresh one.
    """
    translated_func = translated(func_)

    @functools.wraps(func_)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await translated_func(*args, **kwargs)
        except StoreUnavailable:
            return await translated_func(*args, **kwargs)

    return wrapper


@asynccontextmanager
async def translating() -> AsyncIterator[None]:
    """The same mapping for a block (a transaction handed to a handler)."""
    try:
        yield
    except StoreError:
        raise
    except (sa_exc.SQLAlchemyError, *UNAVAILABLE) as exc:
        raise translate_error(exc) from exc
