"""SharedReadings: one reading per key and max age, shared by concurrent callers."""

import asyncio

import pytest

from eventproc.shared_reading import SharedReadings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_reading_is_kept_for_its_max_age_then_read_again() -> None:
    clock, calls = Clock(), []

    async def read() -> int:
        calls.append(clock.now)
        return len(calls)

    readings = SharedReadings[int](2.0, clock=clock)
    assert await readings.get("k", read) == 1
    clock.now += 1.9
    assert await readings.get("k", read) == 1
    assert await readings.get("other", read) == 2  # keys apart
    clock.now += 0.2
    assert await readings.get("k", read) == 3
    readings.forget()
    assert await readings.get("k", read) == 4


async def test_a_slow_reading_is_kept_for_a_multiple_of_what_it_took() -> None:
    clock, calls = Clock(), []

    async def read() -> int:
        calls.append(clock.now)
        clock.now += 0.2 if len(calls) == 1 else 0.01  # the first reading takes 200 ms
        return len(calls)

    readings = SharedReadings[int](1.0, max_share=0.02, clock=clock)  # 2 %: kept 10 s
    assert await readings.get("k", read) == 1
    clock.now += 9.5  # 9.7 s after it started
    assert await readings.get("k", read) == 1
    clock.now += 0.4
    assert await readings.get("k", read) == 2  # 10.1 s: read again, quickly this time
    clock.now += 1.0
    assert await readings.get("k", read) == 3  # a fast reading keeps max_age (1 s)
    fast = SharedReadings[int](1.0, max_share=1.0, clock=clock)
    calls.clear()
    assert await fast.get("k", read) == 1
    clock.now += 1.0
    assert await fast.get("k", read) == 2


async def test_concurrent_callers_share_one_reading() -> None:
    started, release, calls = asyncio.Event(), asyncio.Event(), [0]

    async def read() -> str:
        calls[0] += 1
        started.set()
        await release.wait()
        return "figures"

    readings = SharedReadings[str](5.0)
    waiting = [asyncio.create_task(readings.get("k", read)) for _ in range(5)]
    await started.wait()
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiting) == ["figures"] * 5
    assert calls[0] == 1


async def test_a_failure_is_not_kept_and_reaches_every_waiter() -> None:
    attempts = [0]

    async def read() -> int:
        attempts[0] += 1
        await asyncio.sleep(0.01)
        if attempts[0] == 1:
            raise ConnectionError("database away")
        return 7

    readings = SharedReadings[int](60.0)
    first = await asyncio.gather(
        readings.get("k", read), readings.get("k", read), return_exceptions=True
    )
    assert [type(found) for found in first] == [ConnectionError, ConnectionError]
    assert await readings.get("k", read) == 7  # read again at once, not kept as failed
    assert attempts[0] == 2


async def test_one_caller_cancelled_does_not_cancel_the_others() -> None:
    release = asyncio.Event()

    async def read() -> int:
        await release.wait()
        return 3

    readings = SharedReadings[int](1.0)
    impatient = asyncio.create_task(readings.get("k", read))
    patient = asyncio.create_task(readings.get("k", read))
    await asyncio.sleep(0.01)
    impatient.cancel()
    release.set()
    assert await patient == 3
    with pytest.raises(asyncio.CancelledError):
        await impatient


async def test_max_age_zero_keeps_nothing() -> None:
    calls = [0]

    async def read() -> int:
        calls[0] += 1
        return calls[0]

    readings = SharedReadings[int](0.0)
    assert [await readings.get("k", read) for _ in range(3)] == [1, 2, 3]
