"""Leases: renew those of running handlers, check a run is still ours, give back the rest.

Every write-back is fenced on its lease, so a lease lost here costs at most
the result of the handler that held it; nothing here can write a result.
"""

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from eventproc.errors import StoreError
from eventproc.event import Event
from eventproc.metrics import Metrics
from eventproc.store.protocol import Lease, Storage

logger = logging.getLogger("eventproc.processor")


class HeldRuns(Protocol):
    def held(self) -> list[list[Event]]:
        """The runs claimed and not finished: being handled, or queued."""
        ...


class Leases:
    def __init__(self, store: Storage, lease_seconds: float, metrics: Metrics) -> None:
        self.store = store
        self.lease_seconds = lease_seconds
        self.metrics = metrics

    async def keep(self, runs: HeldRuns) -> None:
        """Renew the leases of running handlers well before they expire."""
        interval = max(self.lease_seconds / 3, 0.2)
        while True:
            await asyncio.sleep(interval)
            leases = [Lease.of(event) for run in runs.held() for event in run]
            if not leases:
                continue
            try:
                renewed = await self.store.event_renew_leases(leases, self.lease_seconds)
            except StoreError as exc:
                self.metrics.store_errors.labels("renew").inc()
                logger.warning("Could not renew leases: %s", exc)
                continue
            still_running = {event.id for run in runs.held() for event in run}
            for lease in leases:
                # An event that finished meanwhile was completed, not taken over.
                if lease.event_id not in renewed and lease.event_id in still_running:
                    logger.warning(
                        "Lease lost while the handler runs; its result will be dropped",
                        extra={"event_id": str(lease.event_id), "action": "lease_lost"},
                    )

    async def still_ours(self, run: list[Event]) -> bool:
        """Renew the rest of a run; False (and the run dropped) if any lease is gone."""
        leases = [Lease.of(event) for event in run]
        try:
            renewed = await self.store.event_renew_leases(leases, self.lease_seconds)
        except StoreError as exc:
            logger.warning("Could not check the leases of a run, stopping it: %s", exc)
            return False
        if len(renewed) == len(leases):
            return True
        logger.warning(
            "Lost the lease of a run of %d events (another worker took its head over)",
            len(run),
            extra={"event_id": str(run[0].id), "action": "lease_lost"},
        )
        await self.give_back([event for event in run if event.id in renewed])
        return False

    async def give_back(self, run: list[Event]) -> None:
        """Release the rest of a run whose earlier event failed: they must wait for it."""
        try:
            await self.store.event_release_many([Lease.of(event) for event in run])
        except StoreError as exc:
            logger.warning("Could not release %d events (their leases expire): %s", len(run), exc)

    async def release_unfinished(self, events: Sequence[Event]) -> None:
        """At shutdown: give back what the grace did not let finish."""
        leases = [Lease.of(event) for event in events]
        if not leases:
            return
        try:
            released = await self.store.event_release_many(leases)
            logger.warning("Released %d unfinished events", released)
        except StoreError as exc:
            logger.error("Could not release leases (they will expire): %s", exc)
