"""Run a coroutine by hand up to its first wait, inside the current task.

Creating a task (or arming a timer) for work that finishes without ever
waiting costs more than the work, for quick event handlers. A coroutine
stepped here runs at once; only if it waits does the caller go on to await
the rest, which then behaves exactly as awaiting the coroutine would have.
"""

import contextvars
from collections.abc import Callable, Coroutine, Generator
from typing import Any


class _SameContext:
    """Stands in for a contextvars.Context: runs the call in the current one."""

    @staticmethod
    def run(function: Callable[..., Any], *args: Any) -> Any:
        return function(*args)


_SAME_CONTEXT: Any = _SameContext()


class Stepped:
    """A coroutine stepped by hand inside the current task (in ``context`` if given).

    ``first_step`` runs it up to its first wait; awaiting the object then goes
    on where it stopped, as ``await`` would have. The current task stays the
    one that steps it, so ``asyncio.timeout`` and cancellation inside reach
    it as usual.
    """

    __slots__ = ("_context", "_coro", "_waiting_on")

    def __init__(
        self, coro: Coroutine[Any, Any, None], context: contextvars.Context | None = None
    ) -> None:
        self._coro = coro
        self._context = context if context is not None else _SAME_CONTEXT
        self._waiting_on: Any = None

    def first_step(self) -> bool:
        """True if the coroutine finished without waiting."""
        try:
            self._waiting_on = self._context.run(self._coro.send, None)
        except StopIteration:
            return True
        return False

    def __await__(self) -> Generator[Any, Any, None]:
        waiting_on = self._waiting_on
        while True:
            try:
                sent = yield waiting_on
            except GeneratorExit:
                self._coro.close()
                raise
            except BaseException as exc:
                try:
                    waiting_on = self._context.run(self._coro.throw, exc)
                except StopIteration:
                    return
            else:
                try:
                    waiting_on = self._context.run(self._coro.send, sent)
                except StopIteration:
                    return
