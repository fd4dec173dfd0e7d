"""What a handler receives besides its event: payload, attempt, connection, publish."""

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeAlias

from sqlalchemy.ext.asyncio import AsyncConnection

from eventproc import tracing
from eventproc.event import Event, NewEvent

logger = logging.getLogger("eventproc.handler")

# The open transaction a transactional handler writes in. Named here so that
# the engine passes it on without importing SQLAlchemy itself.
Connection: TypeAlias = AsyncConnection


class Publisher(Protocol):
    async def __call__(self, events: Sequence[NewEvent], connection: Connection | None) -> None: ...


class HandlerContext:
    """Passed to every handler call.

    In a transactional handler, ``connection`` is the open transaction that
    will also mark the event processed: its writes, and events published
    through ``publish``, commit exactly once together with the outcome.
    """

    __slots__ = (
        "_connection",
        "_publisher",
        "attempt",
        "event",
        "payload",
        "worker_id",
    )

    def __init__(
        self,
        event: Event,
        payload: Any,
        *,
        attempt: int,
        worker_id: str,
        publisher: Publisher,
        connection: Connection | None = None,
    ) -> None:
        self.event = event
        self.payload = payload
        self.attempt = attempt
        self.worker_id = worker_id
        self._publisher = publisher
        self._connection = connection

    @property
    def transactional(self) -> bool:
        return self._connection is not None

    @property
    def connection(self) -> AsyncConnection:
        if self._connection is None:
            raise RuntimeError(
                "this handler is not transactional: register it with "
                "transactional=True to get the event's transaction"
            )
        return self._connection

    async def publish(self, *events: NewEvent) -> None:
        """Publish follow-up events (in the event's transaction when there is one).

        Events whose ``id`` already exists are ignored, so a handler that gives
        deterministic ids can run twice without publishing twice. With
        tracing on, each carries the handler call's ``traceparent`` in its
        metadata (unless it has one already), for its consumers to link to.
        """
        await self._publisher(tracing.with_trace_context(events), self._connection)


HandlerFunc = Callable[[Event, HandlerContext], Awaitable[None]]
