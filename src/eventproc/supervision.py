"""Side tasks under supervision: a crash stops the owner loudly instead of waiting for shutdown.

The processor's lease renewal, completer and listener run beside its claim
loop. Each of them handles the failures it expects (the database going
away) itself; an exception that escapes one is a bug, and carrying on
without it would leave leases expiring or results unwritten while /health
says all is well. So the first crash is recorded and the owner is told to
stop; the owner re-raises it once it has shut down (the process exits
non-zero).
"""

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from eventproc.errors import SideTaskCrashed

__all__ = ["SideTaskCrashed", "SideTasks"]


class SideTasks:
    def __init__(self, on_crash: Callable[[], None]) -> None:
        self._on_crash = on_crash
        self._tasks: list[asyncio.Task[None]] = []
        self.crash: SideTaskCrashed | None = None

    def start(self, coro: Coroutine[Any, Any, None], name: str) -> "asyncio.Task[None]":
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._watch)
        self._tasks.append(task)
        return task

    def _watch(self, task: "asyncio.Task[None]") -> None:
        if task.cancelled() or task.exception() is None or self.crash is not None:
            return
        error = task.exception()
        self.crash = SideTaskCrashed(f"{task.get_name()} crashed: {type(error).__name__}: {error}")
        self.crash.__cause__ = error
        self._on_crash()

    async def cancel(self, *keep: "asyncio.Task[None]") -> None:
        """Cancel every task but ``keep`` and wait for them to end."""
        others = [task for task in self._tasks if task not in keep]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def raise_crash(self) -> None:
        if self.crash is not None:
            raise self.crash
