"""The admin surface's background work in every worker process, run beside the processor.

Each chore is a coroutine function of the Runtime that runs until cancelled
(the Runtime cancels them at shutdown, after the processor has stopped).
"""

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from eventproc.admin import heartbeat, operations, pruner

if TYPE_CHECKING:
    from eventproc.runtime import Runtime

Chore = Callable[["Runtime"], Coroutine[Any, Any, None]]

CHORES: tuple[Chore, ...] = (
    heartbeat.keep_reporting,
    operations.carry_operations,
    pruner.keep_pruning,
)
