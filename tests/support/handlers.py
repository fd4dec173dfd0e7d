"""Handlers used by tests that start eventproc in a subprocess (HANDLERS=support.handlers)."""

import asyncio
import os
from pathlib import Path

from eventproc import Event, HandlerContext, Registry

registry = Registry()
MARKS = Path(os.environ.get("TEST_MARKS_DIR", "."))


@registry.handler("test.ok", description="Records that it ran.")
async def ok(event: Event, ctx: HandlerContext) -> None:
    (MARKS / f"{event.id}.{ctx.attempt}.done").touch()


@registry.handler("test.hang_first", description="Hangs on its first attempt only.")
async def hang_first(event: Event, ctx: HandlerContext) -> None:
    (MARKS / f"{event.id}.{ctx.attempt}.started").touch()
    if ctx.attempt == 1:
        await asyncio.sleep(3600)
    (MARKS / f"{event.id}.{ctx.attempt}.done").touch()


@registry.handler("test.slow", description="Takes a while.")
async def slow(event: Event, ctx: HandlerContext) -> None:
    (MARKS / f"{event.id}.{ctx.attempt}.started").touch()
    await asyncio.sleep(float(event.payload.get("seconds", 1)))
    (MARKS / f"{event.id}.{ctx.attempt}.done").touch()


@registry.handler("test.tx_hold", transactional=True, description="Holds its transaction a while.")
async def tx_hold(event: Event, ctx: HandlerContext) -> None:
    await asyncio.sleep(float(event.payload.get("seconds", 0.2)))
    (MARKS / f"{event.id}.{ctx.attempt}.done").touch()
