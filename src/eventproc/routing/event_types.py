"""Which event types a subscription takes: exact names, ``user.*`` and ``*``.

- ``intro.completed`` matches that type only (any 1-100 characters without
  ``*``, as the registry has always accepted);
- ``user.*`` matches every type that starts with ``user.`` and goes on: one
  or more further segments (``user.created``, ``user.profile.updated``), not
  ``user`` itself;
- ``*`` matches every type.

A star anywhere else (``*.completed``, ``user.*.done``, ``us*``) is refused:
the one rule ("a trailing ``.*`` means everything below") stays easy to read
in a registry listing.
"""

from collections.abc import Iterable

from eventproc.routing.errors import PatternError
from eventproc.routing.explain import Check, render

MAX_TYPE_LENGTH = 100  # the events table's limit on event_type


def check_type_pattern(pattern: object) -> str:
    """``pattern`` if it is a valid type pattern, else ``PatternError`` in one line."""
    if type(pattern) is not str:
        raise PatternError("event type", f"a type pattern is a string, got {render(pattern)}")
    if not 1 <= len(pattern) <= MAX_TYPE_LENGTH:
        raise PatternError(
            "event type",
            f"a type pattern is 1 to {MAX_TYPE_LENGTH} characters, got {render(pattern)}",
        )
    if pattern == "*" or "*" not in pattern:
        return pattern
    stem = pattern[:-2]
    if not pattern.endswith(".*") or "*" in stem:
        raise PatternError(
            "event type",
            f"* stands alone ('*') or as the whole last segment ('user.*'), got {render(pattern)}",
        )
    if not stem or "" in stem.split("."):
        raise PatternError(
            "event type", f"the segments before .* must not be empty, got {render(pattern)}"
        )
    return pattern


class TypeMatcher:
    """A compiled set of type patterns: a set lookup, then a few ``startswith``."""

    __slots__ = ("_every", "_exact", "_prefixes", "patterns")

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(check_type_pattern(pattern) for pattern in patterns)
        if not self.patterns:
            raise PatternError("event type", "a subscription needs at least one event type")
        self._every = "*" in self.patterns
        self._exact = frozenset(p for p in self.patterns if not p.endswith("*"))
        self._prefixes = tuple(p[:-1] for p in self.patterns if p.endswith(".*"))

    def matches(self, event_type: str) -> bool:
        if self._every or event_type in self._exact:
            return True
        for prefix in self._prefixes:
            if len(event_type) > len(prefix) and event_type.startswith(prefix):
                return True
        return False

    def which(self, event_type: str) -> str | None:
        """The first pattern, in the order given, that takes ``event_type``."""
        for pattern in self.patterns:
            if TypeMatcher((pattern,)).matches(event_type):
                return pattern
        return None

    def explain(self, event_type: str) -> Check:
        """The type check, in the shape of a filter's checks (path ``event_type``)."""
        found = self.which(event_type)
        asked = render(list(self.patterns))
        if found is None:
            reason = f"event_type: {render(event_type)} is not among the subscribed types {asked}"
        elif found == event_type:
            reason = f"event_type: {render(event_type)} is subscribed"
        else:
            reason = f"event_type: {render(event_type)} matches {render(found)}"
        return Check(
            "event_type",
            f"types {asked}",
            found is not None,
            reason,
            list(self.patterns),
            event_type,
        )

    def __repr__(self) -> str:
        return f"TypeMatcher({list(self.patterns)!r})"
