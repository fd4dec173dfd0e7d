"""Claiming's slot accounting: one small state object the engine's parts share.

The producer reserves slots for its claims, the runners count events in and
out and say how many of them wait inside a handler, and the completer asks
whether a claim is coming that could carry its successes. They all read and
write these fields instead of calling into one another.
"""

import asyncio

from eventproc.processor_config import ProcessorConfig


class Slots:
    __slots__ = (
        "batch_size",
        "busy",
        "concurrency",
        "database_ok",
        "last_error",
        "more_available",
        "pickers",
        "polling_enabled",
        "producing",
        "reserved",
        "runners",
        "stopping",
        "wakeup",
    )

    def __init__(self, config: ProcessorConfig) -> None:
        self.concurrency = config.concurrency
        self.batch_size = config.batch_size
        self.polling_enabled = config.polling_enabled
        self.busy = 0  # events claimed and not yet handled
        self.reserved = 0  # slots of the claims still out
        self.runners = 0  # runner tasks
        self.pickers = 0  # runners not waiting inside a handler
        self.more_available = False  # the last claim came back full
        self.producing = False  # the claim loop runs: when it ends, claimers stop too
        self.database_ok = True
        self.last_error: str | None = None  # why the database is not ok, for /health
        self.stopping = asyncio.Event()
        # The producer's: set by whatever may make a claim worthwhile (a
        # publish, a run ending while more waits, a write-back, a stop).
        self.wakeup = asyncio.Event()

    def free(self) -> int:
        """Events one more claim may bring.

        While no handler is waiting (the queue empties within the loop turn
        it is filled in), one batch more than CONCURRENCY: otherwise the next
        claim would only go out after the batch just claimed was handled, and
        a worker with quick handlers would sit idle for every round trip.
        Runners are capped at CONCURRENCY, so no more handlers run at once.
        """
        free = self.concurrency - self.busy - self.reserved
        if self.pickers == self.runners:
            free += self.batch_size
        return free

    def reserve(self) -> int:
        """Reserve the slots of one claim; how many (0: none free, nothing reserved)."""
        limit = min(self.batch_size, self.free())
        if limit <= 0:
            return 0
        self.reserved += limit
        return limit

    def claim_coming(self) -> bool:
        """Whether a claim goes out soon that can carry results back (see Completer)."""
        return (
            self.more_available
            and self.free() > 0
            and self.producing
            and self.database_ok
            and self.polling_enabled
            and not self.stopping.is_set()
        )
