from collections.abc import AsyncIterator

import httpx
import pytest

from eventproc.config import Settings
from eventproc.http import create_app
from eventproc.runtime import Runtime
from support.registries import make_registry
from support.served import serving


@pytest.fixture
async def runtime(store_url: str) -> AsyncIterator[Runtime]:
    settings = Settings(database_url=store_url, poll_interval_ms=60_000)
    runtime = Runtime(settings, registry=make_registry())
    await runtime.prepare(attempts=1)
    yield runtime
    await runtime.store.close()


@pytest.fixture
async def base_url(runtime: Runtime) -> AsyncIterator[str]:
    """The runtime's HTTP app served by uvicorn on a free loopback port."""
    async with serving(create_app(runtime)) as url:
        yield url


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        yield client
