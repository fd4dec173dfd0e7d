"""``Store.admin``: the admin surface's reads and mutations, over the store's driver.

Every mutation takes an :class:`Audit` and writes its ``admin_actions`` row
in the transaction of its effect. Reads are bounded (a page, a capped
count) and served by an index; ``bench/admin_explain.py`` prints each plan.
"""

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from eventproc.store.admin import audit, events, mutations
from eventproc.store.admin.audit import Audit, AuditEntry
from eventproc.store.admin.dead_letters import DeadLetterReads
from eventproc.store.admin.events import BadFilter, EventDetail, EventQuery, EventRow
from eventproc.store.admin.handlers import HandlerReads
from eventproc.store.admin.operations import OperationRows
from eventproc.store.driver import Driver
from eventproc.store.errors import idempotent, translated

__all__ = [
    "Audit",
    "AuditEntry",
    "BadFilter",
    "EventDetail",
    "EventQuery",
    "EventRow",
    "StoreAdmin",
]


class StoreAdmin:
    def __init__(self, driver: Driver, wake: Callable[[], None]) -> None:
        self.driver = driver
        self._wake = wake  # a processor in this process looks again at once
        self.dead_letters = DeadLetterReads(driver)
        self.handlers = HandlerReads(driver)
        self.operations = OperationRows(driver, wake)

    # -- events ----------------------------------------------------------------------

    @idempotent
    async def events_page(self, query: EventQuery) -> list[EventRow]:
        return await events.page(self.driver, query)

    @idempotent
    async def event_detail(self, event_id: uuid.UUID) -> EventDetail | None:
        return await events.detail(self.driver, event_id)

    @translated
    async def replay_events(self, ids: Sequence[uuid.UUID], who: Audit) -> list[uuid.UUID]:
        replayed = await mutations.replay_events(self.driver, ids, who)
        if replayed:
            self._wake()
        return replayed

    @translated
    async def replay_delivery(self, event_id: uuid.UUID, handler: str, who: Audit) -> bool:
        replayed = await mutations.replay_delivery(self.driver, event_id, handler, who)
        if replayed:
            self._wake()
        return replayed

    # -- dead letters ----------------------------------------------------------------

    @translated
    async def replay_dead_letters(self, ids: Sequence[uuid.UUID], who: Audit) -> int:
        """Each open dead letter's delivery again (or its event, if it names no handler)."""
        async with self.driver.begin() as conn:
            replayed = 0
            for _, event_id, handler in await mutations.dead_letter_targets(conn, ids):
                if handler is None:
                    found = await mutations.replay_events_in(self.driver, conn, [event_id], who)
                    replayed += len(found)
                else:
                    done = await mutations.replay_delivery_in(
                        self.driver, conn, event_id, handler, who
                    )
                    replayed += int(done)
            await audit.record(
                conn,
                who,
                "dead_letter.replay",
                {"dead_letter_ids": [str(i) for i in ids]},
                {"matched": len(ids), "replayed": replayed},
                "ok" if replayed else "unchanged",
            )
        if replayed:
            self._wake()
        return replayed

    @translated
    async def discard_dead_letters(self, ids: Sequence[uuid.UUID], who: Audit) -> int:
        async with self.driver.begin() as conn:
            discarded = await mutations.discard_dead_letters_in(self.driver, conn, ids)
            await audit.record(
                conn,
                who,
                "dead_letter.discard",
                {"dead_letter_ids": [str(i) for i in ids]},
                {"matched": len(ids), "discarded": discarded},
                "ok" if discarded else "unchanged",
            )
        return discarded

    # -- handlers --------------------------------------------------------------------

    @translated
    async def pause(self, handler: str, who: Audit) -> bool:
        return await mutations.pause(self.driver, handler, who)

    @translated
    async def resume(self, handler: str, who: Audit) -> bool:
        resumed = await mutations.resume(self.driver, handler, who)
        if resumed:
            self._wake()
        return resumed

    @idempotent
    async def paused(self) -> dict[str, tuple[Any, str, str | None]]:
        return await mutations.paused_handlers(self.driver)

    # -- audit -----------------------------------------------------------------------

    @idempotent
    async def audit_page(
        self,
        *,
        limit: int,
        after: tuple[datetime, int] | None = None,
        action: str | None = None,
        actor: str | None = None,
    ) -> list[AuditEntry]:
        return await audit.page(self.driver, limit=limit, after=after, action=action, actor=actor)
