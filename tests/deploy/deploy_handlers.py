"""Handlers for the image's command under test (HANDLERS=deploy_handlers:registry).

Each start and finish leaves a file in DEPLOY_TEST_MARKS, so the test can
tell a handler that finished from one that was cut off.
"""

import asyncio
import os
from pathlib import Path

from eventproc import Event, HandlerContext, Registry

registry = Registry()
MARKS = Path(os.environ.get("DEPLOY_TEST_MARKS", "."))


@registry.handler("deploy.quick", description="Finishes at once.")
async def quick(event: Event, ctx: HandlerContext) -> None:
    (MARKS / f"{event.id}.done").touch()


@registry.handler("deploy.slow", description="Takes payload.seconds, well within the grace.")
async def slow(event: Event, ctx: HandlerContext) -> None:
    (MARKS / f"{event.id}.started").touch()
    await asyncio.sleep(float(event.payload["seconds"]))
    (MARKS / f"{event.id}.done").touch()


@registry.handler("deploy.outlast", description="Outlasts the grace on its first start only.")
async def outlast(event: Event, ctx: HandlerContext) -> None:
    first = not (MARKS / f"{event.id}.started").exists()
    (MARKS / f"{event.id}.started").touch()
    if first:
        await asyncio.sleep(3600)
    (MARKS / f"{event.id}.done").touch()
