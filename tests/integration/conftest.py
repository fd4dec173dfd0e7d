import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from eventproc.engine import Processor


@pytest.fixture
async def running() -> AsyncIterator[Callable[[Processor], Awaitable[None]]]:
    """Start processors in the background; stop and join them after the test."""
    started: list[tuple[Processor, asyncio.Task[None]]] = []

    async def start(processor: Processor) -> None:
        started.append((processor, asyncio.create_task(processor.run())))
        await asyncio.sleep(0)

    yield start
    for processor, _ in started:
        processor.stop()
    for _, task in started:
        await asyncio.wait_for(task, 30)
