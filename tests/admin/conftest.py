"""The admin API on a real server and database, with a token of each role."""

from collections.abc import AsyncIterator

import httpx
import pytest

from eventproc.config import Settings
from eventproc.http import create_app
from eventproc.runtime import Runtime
from support.admin_api import TOKENS, Api, admin_registry
from support.served import serving


@pytest.fixture
async def admin_runtime(store_url: str) -> AsyncIterator[Runtime]:
    settings = Settings(
        database_url=store_url,
        poll_interval_ms=60_000,
        max_retries=2,
        retry_base_ms=0,
        api_tokens=",".join(f"{role}:{token}" for role, token in TOKENS.items()),
        redact_paths="payload.secret,metadata.ip",
        # Every figure read fresh: these tests change the database between reads
        # (test_admin_handlers.py's test_figures_are_shared covers the defaults).
        stats_max_age_seconds=0,
        handler_figures_max_age_seconds=0,
    )
    runtime = Runtime(settings, registry=admin_registry())
    await runtime.prepare(attempts=1)
    yield runtime
    await runtime.store.close()


@pytest.fixture
async def api(admin_runtime: Runtime) -> AsyncIterator[Api]:
    async with serving(create_app(admin_runtime)) as url:

        def client(token: str | None) -> httpx.AsyncClient:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return httpx.AsyncClient(base_url=url, headers=headers, timeout=10)

        async with (
            client(TOKENS["viewer"]) as viewer,
            client(TOKENS["operator"]) as operator,
            client(TOKENS["admin"]) as admin,
            client(None) as anonymous,
        ):
            yield Api(admin_runtime, url, viewer, operator, admin, anonymous)
