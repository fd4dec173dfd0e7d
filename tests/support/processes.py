"""Environment for eventproc processes started by tests."""

import os
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def worker_env(database_url: str, marks: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "HANDLERS", "PORT")
    }
    env.update(
        DATABASE_URL=database_url,
        HANDLERS="support.handlers:registry",
        PYTHONPATH=str(TESTS),
        TEST_MARKS_DIR=str(marks),
        POLL_INTERVAL_MS="100",
        LOG_FORMAT="json",
        **extra,
    )
    return env
