"""The admin API's test kit: a registry with fan-out and failures, a token of each role."""

import uuid
from dataclasses import dataclass

import httpx

from eventproc import Event, HandlerContext, NewEvent, PermanentError, Registry
from eventproc.engine import Processor
from eventproc.runtime import Runtime

TOKENS = {"viewer": "view-token", "operator": "op-token", "admin": "admin-token"}


def admin_registry() -> Registry:
    """t.ok: one subscription; t.fan: two, fan_b failing for payloads with "fail"; t.flaky:
    fails its first attempt."""
    registry = Registry()

    @registry.handler("t.ok", name="ok")
    async def ok(event: Event, ctx: HandlerContext) -> None:
        return None

    @registry.handler("t.fan", name="fan_a")
    async def fan_a(event: Event, ctx: HandlerContext) -> None:
        return None

    @registry.handler("t.fan", name="fan_b")
    async def fan_b(event: Event, ctx: HandlerContext) -> None:
        if event.payload.get("fail"):
            raise PermanentError(f"order {event.payload.get('order', 0)} was refused")

    @registry.handler("t.flaky", name="flaky")
    async def flaky(event: Event, ctx: HandlerContext) -> None:
        if ctx.attempt == 1:
            raise RuntimeError(f"upstream 503 for {event.payload.get('order', 0)}")

    return registry


@dataclass
class Api:
    runtime: Runtime
    url: str
    viewer: httpx.AsyncClient
    operator: httpx.AsyncClient
    admin: httpx.AsyncClient
    anonymous: httpx.AsyncClient

    async def drain(self) -> None:
        """Handle everything due, with a processor of its own (one runs to idle only once)."""
        runtime = self.runtime
        processor = Processor(
            runtime.store,
            runtime.registry,
            runtime.settings.processor_config(),
            worker_id=runtime.worker_id,
        )
        await processor.run(until_idle=True)


async def publish(runtime: Runtime, *events: NewEvent) -> list[uuid.UUID]:
    await runtime.store.event_insert_many(list(events))
    return [event.id for event in events]
