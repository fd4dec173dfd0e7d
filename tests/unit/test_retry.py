import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventproc.retry import RetryPolicy


@given(
    base=st.integers(1, 10_000),
    factor=st.integers(1, 1000),
    attempt=st.integers(1, 60),
    seed=st.integers(0, 2**32),
)
def test_delay_stays_within_half_and_full_ceiling(
    base: int, factor: int, attempt: int, seed: int
) -> None:
    policy = RetryPolicy(max_retries=5, base_ms=base, max_ms=base * factor)
    ceiling = min(policy.max_ms, base * 2 ** (attempt - 1))
    delay = policy.delay_ms(attempt, random.Random(seed))
    assert ceiling // 2 <= delay <= ceiling


@given(attempt=st.integers(1, 20), seeds=st.tuples(st.integers(0, 999), st.integers(0, 999)))
def test_delays_never_shrink_from_one_attempt_to_the_next(
    attempt: int, seeds: tuple[int, int]
) -> None:
    policy = RetryPolicy(max_retries=5, base_ms=100, max_ms=10**9)
    earlier = policy.delay_ms(attempt, random.Random(seeds[0]))
    later = policy.delay_ms(attempt + 1, random.Random(seeds[1]))
    assert later >= earlier


def test_budget() -> None:
    policy = RetryPolicy(max_retries=3)
    assert [policy.exhausted(n) for n in (1, 2, 3, 4)] == [False, False, True, True]


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_ms=10, max_ms=5)
