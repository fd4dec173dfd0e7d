"""Schemathesis against a real server: every check, bounded examples, with and without a token.

The CLI runs in a subprocess against uvicorn on a free loopback port, with
the processor running and a real database behind it; a run passes only with
no failure and no error of any check. Half the generated event ids are those
of real events, so /process-event is tested past its 404.
"""

import asyncio
import contextlib
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from eventproc.config import Settings
from eventproc.event import NewEvent
from eventproc.http import create_app
from eventproc.runtime import Runtime
from support.registries import make_registry
from support.served import serving

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
TOKEN = "schemathesis-token"
MAX_EXAMPLES = 10
EVENTS = 40

pytestmark = [pytest.mark.slow, pytest.mark.timeout(330)]


@contextlib.asynccontextmanager
async def running(database_url: str, token: str | None) -> AsyncIterator[tuple[str, list[str]]]:
    """The app served with its processor running; yields the URL and the seeded events' ids."""
    settings = Settings(database_url=database_url, poll_interval_ms=200, api_token=token)
    runtime = Runtime(settings, registry=make_registry())
    await runtime.prepare(attempts=1)
    events = [NewEvent("t.ok", {}) for _ in range(EVENTS)]
    await runtime.store.event_insert_many(events)
    processor = asyncio.create_task(runtime.processor.run())
    try:
        async with serving(create_app(runtime)) as url:
            yield url, [str(event.id) for event in events]
    finally:
        runtime.processor.stop()
        await processor
        await runtime.store.close()


def config_text(event_ids: list[str], token: str | None) -> str:
    """schemathesis.toml: real event ids for half the bodies, and the token if one is sent.

    The seed answers 400 "Event already processed" for an event that was
    (schemathesis would expect 409), so 400 is accepted for valid bodies of
    /process-event alone. Event ids in paths (/admin/v1/events/{event_id})
    are real ones half the time too.
    """
    lines = [
        "[dictionaries.event_ids]",
        f"values = {json.dumps(event_ids)}",
        "",
        "[parameters]",
        '"body.event_id" = { dictionary = "event_ids", probability = 0.5 }',
        '"path.event_id" = { dictionary = "event_ids", probability = 0.5 }',
        "",
        "[[operations]]",
        'include-path = "/process-event"',
        "[operations.checks.positive_data_acceptance]",
        'expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429"]',
        "",
        # A cursor is opaque: any string matches its schema, only one from a
        # previous page is valid (422 otherwise); a replay of an event that
        # is still pending has nothing to replay (409).
        "[[operations]]",
        'include-path-regex = "^/admin/v1/"',
        "[operations.checks.positive_data_acceptance]",
        'expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]',
    ]
    if token:
        lines += ["", "[auth.openapi.bearerAuth]", f'bearer = "{token}"']
    return "\n".join(lines) + "\n"


async def schemathesis(
    url: str, event_ids: list[str], tmp_path: Path, *, token: str | None = None
) -> tuple[int, str]:
    """Run the CLI with every check; ``token`` goes through its auth configuration."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(config_text(event_ids, token))
    process = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS),
        "--config-file",
        str(config),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        "11",
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--request-timeout",
        "10",
        "--no-color",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
    out, _ = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode is not None
    return process.returncode, out.decode()


def assert_clean(code: int, out: str) -> None:
    """Exit 0, and every generated case passed (no failure, no error)."""
    assert code == 0, out
    counts = re.search(r"Test cases:\s+(\d+) generated, (\d+) passed(.*)", out)
    assert counts is not None, out
    generated, passed, rest = int(counts[1]), int(counts[2]), counts[3]
    assert generated > 50 and passed == generated, out
    assert "failed" not in rest and "error" not in rest, out


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_without_api_token(tmp_path: Path, store_url: str) -> None:
    async with running(store_url, None) as (url, ids):
        assert_clean(*await schemathesis(url, ids, tmp_path))


@pytest.mark.parametrize("backend", ["postgres"])
async def test_with_api_token_sent(tmp_path: Path, store_url: str) -> None:
    async with running(store_url, TOKEN) as (url, ids):
        assert_clean(*await schemathesis(url, ids, tmp_path, token=TOKEN))


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_with_api_token_not_sent(tmp_path: Path, store_url: str) -> None:
    """No credentials: every trigger answers its documented 401."""
    async with running(store_url, TOKEN) as (url, ids):
        code, out = await schemathesis(url, ids, tmp_path)
    assert_clean(code, out)
    unauthorized = re.search(r"401 Unauthorized \((\d+) operations\)", out)
    assert unauthorized is not None and int(unauthorized[1]) >= 6, out
