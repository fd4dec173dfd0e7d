"""eventproc.app wires the HTTP app into the Runtime, so that runtime never imports http."""

import asyncio
from pathlib import Path

import httpx
import pytest

from eventproc.app import build_runtime
from eventproc.config import Settings
from eventproc.http import create_app
from eventproc.runtime import Runtime
from support.registries import make_registry


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'app.db'}", port=0, poll_interval_ms=60_000
    )


async def test_build_runtime_serves_eventproc_http(tmp_path: Path) -> None:
    runtime = build_runtime(_settings(tmp_path), registry=make_registry())
    assert runtime.http_app is create_app
    serving = asyncio.create_task(runtime.serve(http=True))
    try:
        await asyncio.wait_for(runtime.listening.wait(), 10)
        async with httpx.AsyncClient(base_url=str(runtime.http_url), timeout=10) as client:
            response = await client.get("/health")
        assert response.status_code in (200, 503)
        assert response.json()["registry"]["eventTypes"] == ["t.ok"]
    finally:
        runtime.shutdown()
        await asyncio.wait_for(serving, 30)


async def test_a_runtime_without_an_http_app_refuses_to_serve_http(tmp_path: Path) -> None:
    runtime = Runtime(_settings(tmp_path), registry=make_registry())
    with pytest.raises(ValueError, match="needs http_app"):
        await runtime.serve(http=True)
    assert runtime.http_port is None  # refused before binding
