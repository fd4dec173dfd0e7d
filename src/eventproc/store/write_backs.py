"""Writing a batch of results back: deliveries, events' own rows, and the order between them.

Every write is fenced on its lease. Results of deliveries go before those of
events' rows, so that a row's in-order test sees the deliveries before it
written. With ORDERING=aggregate a batch holding failures is written in two
steps: the successes first, then the failures, leaving out any failure of a
run whose earlier success was just refused (its lease was taken over, or an
earlier event is pending): writing it would record a later event's handling
before its predecessor's final one. The runs refused are remembered for a
while, and later results of theirs left out too, since they may come in a
later batch than the refusal (they run again: delivery is at least once).
"""

import uuid
from collections import OrderedDict
from collections.abc import Sequence

from eventproc.store import args, deliveries
from eventproc.store.driver import Driver
from eventproc.store.protocol import Kind, WriteBack
from eventproc.store.rows import uuid_of

REFUSALS_KEPT = 4096  # runs (claim token, handler) whose success was refused, newest kept

Run = tuple[str, str | None]  # a claim's token and the handler of its run


class Refusals:
    """The runs whose success was refused lately: their later failures are not written."""

    def __init__(self) -> None:
        self._runs: OrderedDict[Run, None] = OrderedDict()

    def add(self, runs: set[Run]) -> None:
        for run in runs:
            self._runs[run] = None
            self._runs.move_to_end(run)
        while len(self._runs) > REFUSALS_KEPT:
            self._runs.popitem(last=False)

    def __contains__(self, run: object) -> bool:
        return run in self._runs


def run_of(item: WriteBack) -> Run:
    return (item.lease.token, item.handler)


async def write(
    driver: Driver,
    batch: Sequence[WriteBack],
    worker: str,
    *,
    in_order: bool,
    refusals: Refusals,
) -> int:
    """Write ``batch`` (no COMMITTED in it); how many events were written."""
    if not in_order:
        written, _ = await _write(driver, batch, worker, in_order=False)
        return len(written)
    successes = [item for item in batch if item.closing is not None]
    if any(run_of(item) in refusals for item in successes):
        successes = [item for item in successes if run_of(item) not in refusals]
    done, refused = await _write(driver, successes, worker, in_order=True)
    refusals.add(refused)
    failures = [item for item in batch if item.closing is None and run_of(item) not in refusals]
    more, _ = await _write(driver, failures, worker, in_order=True)
    return len(done | more)


async def _write(
    driver: Driver, batch: Sequence[WriteBack], worker: str, *, in_order: bool
) -> tuple[set[uuid.UUID], set[Run]]:
    """One pass: deliveries (failures on rows moved onto theirs first), then rows.

    Returns the events written and the runs of the successes refused.
    """
    if not batch:
        return set(), set()
    moving = [item for item in batch if item.moves_to_delivery]
    on_rows = [item for item in batch if item.lease.handler is None and not item.moves_to_delivery]
    on_deliveries = [item for item in batch if item.lease.handler is not None]
    if moving:
        on_deliveries += await deliveries.move_failures(driver, moving)
    keys = await deliveries.write_back(
        driver, on_deliveries, worker, in_order=in_order, beside=on_rows
    )
    ids = {event_id for event_id, _ in keys}
    refused = {
        run_of(item)
        for item in on_deliveries
        if item.closing is not None and (item.lease.event_id, item.lease.handler) not in keys
    }
    if on_rows:
        rows = await driver.fetch(
            "event_write_back",
            args.write_back(on_rows, worker, in_order=in_order),
            durable=any(item.closing is None for item in on_rows),
        )
        on_row_ids = {uuid_of(row[0]) for row in rows}
        ids |= on_row_ids
        refused |= {
            run_of(item)
            for item in on_rows
            if item.kind is not Kind.SKIPPED
            and item.closing is not None
            and item.lease.event_id not in on_row_ids
        }
    return ids, refused
