"""Which database errors mean "try again" (the classification the processor relies on)."""

import pytest
from sqlalchemy import exc as sa_exc

from eventproc.errors import StoreError, StoreUnavailable
from eventproc.store.errors import translate_error


class DriverError(Exception):
    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("sqlstate", "retryable"),
    [
        ("57P03", True),  # the database system is not yet accepting connections
        ("57P01", True),  # terminating connection due to administrator command
        ("08006", True),  # connection failure
        ("40P01", True),  # deadlock detected
        ("40001", True),  # serialization failure
        ("23505", False),  # unique violation: retrying the same rows fails the same way
        ("42P01", False),  # undefined table
    ],
)
def test_sqlstate_classification(sqlstate: str, retryable: bool) -> None:
    error = sa_exc.DBAPIError("UPDATE events ...", {}, DriverError("boom", sqlstate))
    translated = translate_error(error)
    assert isinstance(translated, StoreError)
    assert isinstance(translated, StoreUnavailable) is retryable


def test_os_errors_mean_unavailable() -> None:
    assert isinstance(translate_error(ConnectionRefusedError("refused")), StoreUnavailable)


def test_deadlocks_and_serialization_failures_are_conflicts_to_retry_at_once() -> None:
    import asyncpg

    from eventproc.errors import StoreConflict, StoreUnavailable
    from eventproc.store.errors import translate_error

    for exc in (
        asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
        asyncpg.exceptions.SerializationError("could not serialize access"),
    ):
        assert isinstance(translate_error(exc), StoreConflict)
    restarting = translate_error(asyncpg.exceptions.AdminShutdownError("terminating"))
    assert isinstance(restarting, StoreUnavailable)
    assert not isinstance(restarting, StoreConflict)


def test_a_pooler_refusing_start_up_settings_is_not_retried_and_names_pooler() -> None:
    # PgBouncer 1.18, as the issue reported it: "database busy or restarting (08P01)", forever.
    refused = DriverError("unsupported startup parameter: plan_cache_mode", "08P01")
    translated = translate_error(sa_exc.DBAPIError("connect", {}, refused))
    assert not isinstance(translated, StoreUnavailable)
    assert "POOLER=transaction" in str(translated) and "\n" not in str(translated)
    other = translate_error(sa_exc.DBAPIError("x", {}, DriverError("protocol", "08P01")))
    assert isinstance(other, StoreUnavailable)  # other protocol violations still retry
