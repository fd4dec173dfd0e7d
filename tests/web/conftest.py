from collections.abc import AsyncIterator

import httpx
import pytest

from eventproc.config import Settings
from eventproc.http import create_app
from eventproc.runtime import Runtime
from support.registries import make_registry


@pytest.fixture
async def runtime(store_url: str) -> AsyncIterator[Runtime]:
    settings = Settings(database_url=store_url, poll_interval_ms=60_000)
    runtime = Runtime(settings, registry=make_registry())
    await runtime.prepare(attempts=1)
    yield runtime
    await runtime.store.close()


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client
