"""Subscriptions as routes: types plus an optional filter, and the table that picks them.

Pure Python: the router step of the delivery model asks ``Router`` which
subscriptions take an event; nothing here touches the database.
"""

from collections.abc import Iterable, Mapping
from typing import Any

from eventproc.event import Event
from eventproc.routing.errors import PatternError
from eventproc.routing.event_types import TypeMatcher
from eventproc.routing.explain import Explanation
from eventproc.routing.patterns import Envelope, Matcher, compile

_CACHE_LIMIT = 4_096  # distinct event types whose candidate routes are remembered


def envelope(
    event_type: str,
    payload: Mapping[str, Any] | None = None,
    *,
    aggregate_id: object = None,
    aggregate_type: str | None = None,
    created_by: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What a filter sees: the row's routing columns, ``aggregate_id`` as a string.

    A missing aggregate (NULL) is left out, so ``exists: false`` matches it;
    payload and metadata are always objects.
    """
    out: dict[str, Any] = {
        "event_type": event_type,
        "metadata": dict(metadata or {}),
        "payload": dict(payload or {}),
    }
    if aggregate_id is not None:
        out["aggregate_id"] = str(aggregate_id)
    if aggregate_type is not None:
        out["aggregate_type"] = aggregate_type
    if created_by is not None:
        out["created_by"] = created_by
    return out


def envelope_of(event: Event) -> dict[str, Any]:
    return envelope(
        event.event_type,
        event.payload,
        aggregate_id=event.aggregate_id,
        aggregate_type=event.aggregate_type,
        created_by=event.created_by,
        metadata=event.metadata,
    )


class Route:
    """One subscription's routing: its name, its types, its filter (None: every event)."""

    __slots__ = ("filter", "name", "types")

    def __init__(
        self, name: str, types: str | Iterable[str], filter: Mapping[str, Any] | None = None
    ) -> None:
        self.name = name
        try:
            self.types = TypeMatcher([types] if isinstance(types, str) else types)
            self.filter: Matcher | None = None if filter is None else compile(filter)
        except PatternError as exc:  # name the subscription, keep the one line
            raise PatternError(f"{name}: {exc.path}", exc.problem) from None

    def matches(self, envelope: Envelope) -> bool:
        if not self.types.matches(envelope["event_type"]):
            return False
        return self.filter is None or self.filter.matches(envelope)

    def explain(self, envelope: Envelope) -> Explanation:
        """The type check, then (when the type is taken) every check of the filter."""
        typed = self.types.explain(envelope.get("event_type", ""))
        if not typed.matched or self.filter is None:
            return Explanation(typed.matched, (typed,))
        rest = self.filter.explain(envelope)
        return Explanation(rest.matched, (typed, *rest.checks))

    def __repr__(self) -> str:
        shown = "" if self.filter is None else f", {self.filter.pattern!r}"
        return f"Route({self.name!r}, {list(self.types.patterns)!r}{shown})"


class Router:
    """Routes in registration order, indexed by exact type, with a per-type cache."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(routes)
        names = [route.name for route in self.routes]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise PatternError("subscriptions", f"names must be unique, got {duplicates} twice")
        self._cache: dict[str, tuple[Route, ...]] = {}

    def candidates(self, event_type: str) -> tuple[Route, ...]:
        """The routes whose types take ``event_type``; their filters are still to run."""
        found = self._cache.get(event_type)
        if found is None:
            found = tuple(route for route in self.routes if route.types.matches(event_type))
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[event_type] = found
        return found

    def route(self, envelope: Envelope) -> list[str]:
        """The names of the routes that take this event, in registration order."""
        return [
            route.name
            for route in self.candidates(envelope["event_type"])
            if route.filter is None or route.filter.matches(envelope)
        ]

    def explain(self, envelope: Envelope) -> dict[str, Explanation]:
        """Every route, matched or not, with why (``eventproc route test``)."""
        return {route.name: route.explain(envelope) for route in self.routes}
