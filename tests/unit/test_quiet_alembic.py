"""Alembic's INFO chatter (about nine lines per start) is shown only with LOG_LEVEL=debug."""

import logging
from collections.abc import Iterator

import pytest

from eventproc import logs


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    alembic_level = logging.getLogger("alembic").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(alembic_level)


@pytest.mark.parametrize("level", ["info", "INFO", "warning", "error"])
def test_alembic_is_quiet_below_debug(level: str) -> None:
    logs.configure(level, "text")
    alembic = logging.getLogger("alembic.runtime.plugins")
    assert not alembic.isEnabledFor(logging.INFO)
    assert alembic.isEnabledFor(logging.WARNING)


def test_alembic_speaks_with_debug() -> None:
    logs.configure("debug", "text")
    assert logging.getLogger("alembic.runtime.migration").isEnabledFor(logging.INFO)
    logs.configure("info", "text")  # and is quiet again when reconfigured
    assert not logging.getLogger("alembic.runtime.migration").isEnabledFor(logging.INFO)
