"""The registry's sample hook: how `eventproc demo` reaches a pack without importing it."""

from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from eventproc import Event, HandlerContext, NewEvent, Outcome, Registry, Sample
from eventproc.config import load_settings
from eventproc.demo import DEMO_OVERRIDES, run_demo
from eventproc.errors import ConfigError, RegistryError
from eventproc.runtime import Runtime
from eventproc.store import EventFilter


async def _no_sample(connection: Any) -> Sample:
    raise AssertionError("not called")


def test_one_sample_loader_per_registry_and_include_carries_it() -> None:
    pack, app = Registry(), Registry()
    assert pack.on_sample(_no_sample, follow_ups_created_by="pack") is _no_sample
    with pytest.raises(RegistryError, match="sample data is registered already"):
        pack.on_sample(_no_sample)
    app.include(pack)
    assert app.sample is not None
    assert app.sample.load is _no_sample and app.sample.follow_ups_created_by == "pack"
    with pytest.raises(RegistryError, match="sample data is registered already"):
        app.include(pack)


def _tiny_pack() -> Registry:
    """A pack of its own: one handler, and sample traffic of good and unknown events."""
    registry = Registry()

    @registry.handler("tiny.ok")
    async def ok(event: Event, ctx: HandlerContext) -> None:
        return None

    @registry.on_sample
    async def sample(connection: Any) -> Sample:
        def traffic(count: int, seed: int) -> list[NewEvent]:
            kinds = ["good" if index % 3 else "unknown" for index in range(count)]
            return [
                NewEvent("tiny.ok" if kind == "good" else "tiny.nobody", {}, metadata={"k": kind})
                for kind in kinds
            ]

        return Sample(
            summary="nothing",
            traffic=traffic,
            kind_of=lambda event: str((event.metadata or {})["k"]),
            designed={"good": Outcome.SUCCEEDED, "unknown": Outcome.SKIPPED},
        )

    return registry


def _runtime(tmp_path: Path, registry: Registry) -> Runtime:
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'demo.db'}", **DEMO_OVERRIDES)
    return Runtime(settings, registry=registry)


async def test_the_demo_runs_on_any_registry_with_sample_data(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, _tiny_pack())
    console = Console(record=True, width=200)
    code = await run_demo(
        runtime, events=9, rate=None, once=True, check=False, force=False, console=console
    )
    text = console.export_text()
    assert code == 0, text
    assert "nothing loaded, 1 handlers" in text and "Every event ended as designed" in text
    assert "good" in text and "unknown" in text and "yachtparty" not in text
    runtime = _runtime(tmp_path, _tiny_pack())  # the first one's store is closed
    try:
        rows = await runtime.store.event_list(EventFilter(limit=100))
    finally:
        await runtime.store.close()
    assert sorted(row.outcome or "" for row in rows) == ["skipped"] * 3 + ["succeeded"] * 6


async def test_a_registry_without_sample_data_is_one_config_error(tmp_path: Path) -> None:
    registry = Registry()
    runtime = _runtime(tmp_path, registry)
    with pytest.raises(ConfigError) as raised:
        await run_demo(
            runtime, events=5, rate=None, once=True, check=True, force=False, console=Console()
        )
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("HANDLERS=yachtparty:registry: the registry has no sample data")
    assert not runtime.prepared  # refused before the schema was touched
