"""Sample data a handler pack offers ``eventproc demo``, so that the demo needs no pack of its own.

A pack registers a loader with :meth:`eventproc.Registry.on_sample`: a
coroutine that inserts the pack's sample rows through the connection it is
given and returns a :class:`Sample`, which makes the traffic the demo
publishes and says what must become of each event. The demo reaches the pack
only through ``HANDLERS`` and this hook.
"""

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eventproc.event import NewEvent, Outcome

__all__ = ["Sample", "SampleHook", "SampleLoader"]


@dataclass(frozen=True, slots=True)
class Sample:
    """Traffic over the sample rows a loader inserted, and the outcome each event is designed for.

    ``traffic(count, seed)`` makes ``count`` new events (the same ones for a
    seed, event ids aside); ``kind_of(event)`` names the kind of one of them
    (``"ok"``, ``"bad_missing_user"``...), and ``designed[kind]`` is the
    outcome every event of that kind must end with. ``summary`` says what was
    loaded (``"40 users"``), for the demo's first line.
    """

    summary: str
    traffic: Callable[[int, int], Sequence[NewEvent]]
    kind_of: Callable[[NewEvent], str]
    designed: Mapping[str, Outcome]

    def expected(self, event: NewEvent) -> Outcome:
        """The outcome ``event`` must end with."""
        return self.designed[self.kind_of(event)]


# Receives an open SQLAlchemy AsyncConnection inside a transaction of a migrated database.
SampleLoader = Callable[[Any], Awaitable[Sample]]


@dataclass(frozen=True, slots=True)
class SampleHook:
    """A registered loader, and the ``created_by`` the pack's handlers give the events they publish.

    The demo counts those follow-up events as its own, not as another
    publisher's, when it checks that a database is its to write into.
    """

    load: SampleLoader
    follow_ups_created_by: str | None = None
