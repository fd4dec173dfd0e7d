import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from eventproc.processor import Processor


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


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    """Poll ``check`` until true (for cross-process effects with no signal to await)."""
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not reached within {within}s")
        await asyncio.sleep(0.02)
