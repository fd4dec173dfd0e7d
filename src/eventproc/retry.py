"""Backoff policy: pure functions, no clock, no I/O."""

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter on the upper half, capped.

    ``max_retries`` counts failed attempts: the attempt that fails for the
    ``max_retries``-th time is dead-lettered instead of rescheduled.
    """

    max_retries: int = 5
    base_ms: int = 1000
    max_ms: int = 300_000

    def __post_init__(self) -> None:
        if self.max_retries < 1:
            raise ValueError("max_retries must be >= 1")
        if self.base_ms < 0 or self.max_ms < self.base_ms:
            raise ValueError("need 0 <= base_ms <= max_ms")

    def exhausted(self, attempt: int) -> bool:
        """True when the failure of ``attempt`` (1-based) spends the budget."""
        return attempt >= self.max_retries

    def delay_ms(self, attempt: int, rng: random.Random | None = None) -> int:
        """Delay before the attempt that follows failed ``attempt`` (1-based).

        The ceiling doubles per attempt; the delay is drawn from its upper half
        so that delays still grow while retries of a burst spread out.
        """
        ceiling = min(self.max_ms, self.base_ms * 2 ** min(max(attempt - 1, 0), 40))
        draw = (rng or random).random()
        return int(ceiling / 2 + draw * ceiling / 2)
