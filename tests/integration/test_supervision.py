"""Side tasks under supervision: a crash in one stops the processor loudly."""

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from eventproc import Event, HandlerContext, NewEvent, Registry
from eventproc.engine import Processor
from eventproc.processor_config import ProcessorConfig
from eventproc.store import EventFilter, Store
from eventproc.supervision import SideTaskCrashed


class Faulty:
    """The real store, with one method replaced by a bug."""

    def __init__(self, store: Store, **broken: Callable[..., Any]) -> None:
        self._store = store
        self._broken = broken

    def __getattr__(self, name: str) -> Any:
        return self._broken.get(name) or getattr(self._store, name)


async def test_a_crashed_lease_renewal_stops_the_processor(store: Store) -> None:
    registry = Registry()
    started = asyncio.Event()

    @registry.handler("t.slow")
    async def slow(event: Event, ctx: HandlerContext) -> None:
        started.set()
        await asyncio.sleep(30)

    async def renew(*_: object) -> set[object]:
        raise ZeroDivisionError("a bug in renewal")

    await store.event_insert_many([NewEvent("t.slow", {})])
    config = ProcessorConfig(lease_seconds=1, poll_interval_ms=50, shutdown_grace_seconds=0.2)
    processor = Processor(Faulty(store, event_renew_leases=renew), registry, config)  # type: ignore[arg-type]
    began = time.monotonic()
    with pytest.raises(SideTaskCrashed, match="eventproc-leases crashed: ZeroDivisionError"):
        await asyncio.wait_for(processor.run(), 20)
    assert started.is_set() and time.monotonic() - began < 10
    assert processor.crash is not None and not processor.running
    # The unfinished event was given back, not left leased until it expires.
    [event] = await store.event_list(EventFilter())
    assert event is not None and event.locked_by is None and not event.processed


async def test_a_crashed_listener_stops_the_processor(store: Store) -> None:
    async def listen(_wake: object) -> None:
        raise RuntimeError("listener bug")

    processor = Processor(
        Faulty(store, listen=listen),  # type: ignore[arg-type]
        Registry(),
        ProcessorConfig(poll_interval_ms=50),
    )
    with pytest.raises(
        SideTaskCrashed, match="eventproc-listen crashed: RuntimeError: listener bug"
    ):
        await asyncio.wait_for(processor.run(), 20)
    assert "listener bug" in (processor.last_error or "")
