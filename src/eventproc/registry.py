"""Registry: the subscriptions (a handler, its event types, its content filter) and routing.

A subscription's ``name`` is its deliveries' identity (dead letters carry
it), so it must be unique and stable; the default is the function's dotted
name, as eventproc has always named handlers. Several subscriptions may
take the same event type: :meth:`Registry.route` says which take an event.
"""

import copy
import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from pydantic import BaseModel

from eventproc.errors import ConfigError, RegistryError
from eventproc.event import Event
from eventproc.handler import HandlerFunc
from eventproc.routing import Envelope, Explanation, PatternError, Route, envelope_of
from eventproc.routing.explain import render
from eventproc.sample import SampleHook, SampleLoader
from eventproc.store.protocol import SchemaHook  # one definition, used by the store too

Types: TypeAlias = str | Sequence[str]
Filter: TypeAlias = Mapping[str, Any]
_Test: TypeAlias = Callable[[Envelope], bool]
# Per event type: the candidate subscriptions (by type, in registration
# order) and, when one of them has a filter, each paired with its filter's
# test (None: takes every event of its types).
# Their names too: what the engine routes by.
_Candidates: TypeAlias = tuple[
    tuple["Handler", ...], tuple[tuple["Handler", _Test | None], ...] | None, tuple[str, ...]
]

_CACHE_LIMIT = 4_096  # distinct event types whose candidates are remembered


@dataclass(frozen=True, slots=True)
class Handler:
    """One subscription: the function, the types and filter it takes, how it runs.

    Built (and validated) once at registration; ``route`` holds the compiled
    types and filter, so routing an event compiles nothing.
    """

    name: str
    types: tuple[str, ...]
    func: HandlerFunc
    filter: Filter | None = field(default=None, hash=False)
    description: str = ""
    payload_model: type[BaseModel] | None = None
    transactional: bool = False
    timeout_seconds: float | None = None
    route: Route = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            compiled = Route(self.name, self.types, self.filter)
        except PatternError as exc:
            raise _bad_subscription(self.name, exc) from None
        object.__setattr__(self, "route", compiled)

    @property
    def event_type(self) -> str:
        """The first of its types (what a one-type handler registered as)."""
        return self.types[0]

    def takes(self, event_type: str) -> bool:
        """Whether its types take ``event_type`` (its filter aside)."""
        return self.route.types.matches(event_type)


def _bad_subscription(name: str, exc: PatternError) -> PatternError:
    """One line naming the subscription, then ``event type`` or ``filter <path>``, then why."""
    inner = exc.path.removeprefix(f"{name}: ")  # Route put the name first
    where = inner if inner == "event type" else f"filter {inner}".rstrip()
    return PatternError(f"handler {name!r}: {where}", exc.problem)


class Registry:
    """The subscriptions, in registration order, and which of them take an event."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}  # by name, in registration order
        self._candidates: dict[str, _Candidates] = {}
        self.schema_hooks: list[SchemaHook] = []
        self.sample: SampleHook | None = None

    def on_migrate(self, hook: SchemaHook) -> SchemaHook:
        """Register ``async def hook(connection)`` to create a pack's own tables.

        It runs after eventproc's own schema, inside the same transaction, on
        every ``eventproc migrate`` and service start, so it must be
        idempotent (create what is absent, leave what is present).
        """
        self.schema_hooks.append(hook)
        return hook

    def on_sample(
        self, loader: SampleLoader, *, follow_ups_created_by: str | None = None
    ) -> SampleLoader:
        """Register ``async def loader(connection) -> Sample``: the pack's data for the demo.

        ``eventproc demo`` calls it once, in a transaction of the migrated
        database, and publishes the traffic the :class:`~eventproc.Sample`
        makes. ``follow_ups_created_by``: the ``created_by`` of the events
        the handlers publish, which the demo counts as its own. One per
        registry; usable as a bare decorator.
        """
        if self.sample is not None:
            raise RegistryError(f"sample data is registered already: {_name(self.sample.load)}")
        self.sample = SampleHook(loader, follow_ups_created_by)
        return loader

    def handler(
        self,
        types: Types,
        *,
        name: str | None = None,
        filter: Filter | None = None,
        description: str = "",
        payload: type[BaseModel] | None = None,
        transactional: bool = False,
        timeout_seconds: float | None = None,
    ) -> Callable[[HandlerFunc], HandlerFunc]:
        """Decorator form of :meth:`register`."""

        def decorate(func: HandlerFunc) -> HandlerFunc:
            self.register(
                types,
                func,
                name=name,
                filter=filter,
                description=description,
                payload=payload,
                transactional=transactional,
                timeout_seconds=timeout_seconds,
            )
            return func

        return decorate

    def register(
        self,
        types: Types,
        func: HandlerFunc,
        *,
        name: str | None = None,
        filter: Filter | None = None,
        description: str = "",
        payload: type[BaseModel] | None = None,
        transactional: bool = False,
        timeout_seconds: float | None = None,
    ) -> Handler:
        """Subscribe ``func`` to ``types`` (one or a list; exact, ``user.*`` or ``*``).

        ``filter`` is an EventBridge event pattern over the envelope, compiled
        now: a bad one raises ``RegistryError`` in one line naming the
        subscription and the clause, at start-up rather than on some event.
        """
        name = _name(func) if name is None else name
        _check_name(name)
        if name in self._handlers:
            raise RegistryError(f"handler {name!r} is registered already: names must be unique")
        if timeout_seconds is not None and timeout_seconds <= 0:
            raise RegistryError(f"handler {name!r}: timeout_seconds must be > 0")
        entry = Handler(
            name=name,
            types=_types(name, types),
            func=func,
            filter=None if filter is None else _frozen_copy(name, filter),
            description=description,
            payload_model=payload,
            transactional=transactional,
            timeout_seconds=timeout_seconds,
        )
        self._add(entry)
        return entry

    def _add(self, entry: Handler) -> None:
        self._handlers[entry.name] = entry
        self._candidates.clear()  # a new subscription may take any cached type

    def include(self, other: "Registry") -> None:
        """Add every subscription of ``other`` (e.g. a pack), its hooks and its sample data.

        A name both registries hold is refused before anything is added.
        """
        clashes = [entry.name for entry in other if entry.name in self._handlers]
        if clashes:
            raise RegistryError(f"handlers registered in both registries: {', '.join(clashes)}")
        if other.sample is not None:
            self.on_sample(
                other.sample.load, follow_ups_created_by=other.sample.follow_ups_created_by
            )
        self.schema_hooks.extend(other.schema_hooks)
        for entry in other:
            self._add(entry)

    def route(self, event: Event) -> tuple[Handler, ...]:
        """The subscriptions that take ``event``, in registration order (the hot path).

        Candidates by type are cached per event type; the envelope is built
        only when one of them has a filter, and then once.
        """
        handlers, filtered, _ = self._candidates_for(event.event_type)
        if filtered is None:
            return handlers
        envelope = envelope_of(event)
        return tuple([handler for handler, test in filtered if test is None or test(envelope)])

    def route_names(self, event: Event) -> tuple[str, ...]:
        """The names of :meth:`route`'s subscriptions: one cached tuple per unfiltered type."""
        _, filtered, names = self._candidates_for(event.event_type)
        if filtered is None:
            return names
        return tuple([handler.name for handler in self.route(event)])

    def _candidates_for(self, event_type: str) -> _Candidates:
        found = self._candidates.get(event_type)
        return found if found is not None else self._find(event_type)

    def _find(self, event_type: str) -> _Candidates:
        handlers = tuple(entry for entry in self._handlers.values() if entry.takes(event_type))
        filtered = None
        if any(entry.route.filter is not None for entry in handlers):
            filtered = tuple(
                (entry, None if entry.route.filter is None else entry.route.filter.matches)
                for entry in handlers
            )
        if len(self._candidates) >= _CACHE_LIMIT:  # publishers may send any type
            self._candidates.clear()
        found: _Candidates = (handlers, filtered, tuple(entry.name for entry in handlers))
        self._candidates[event_type] = found
        return found

    def subscription(self, name: str) -> Handler | None:
        """The subscription named ``name`` (a delivery's or dead letter's ``handler``)."""
        return self._handlers.get(name)

    def explain(self, event: Event | Envelope) -> list[tuple[Handler, Explanation]]:
        """Every subscription, matched or not, with why (``eventproc route test``, admin API)."""
        envelope = envelope_of(event) if isinstance(event, Event) else event
        return [(entry, entry.route.explain(envelope)) for entry in self._handlers.values()]

    def get(self, event_type: str) -> Handler | None:
        """The first subscription whose types take ``event_type``, filters aside (compatibility)."""
        handlers = self._candidates_for(event_type)[0]
        return handlers[0] if handlers else None

    @property
    def event_types(self) -> list[str]:
        """Every type pattern subscribed to, once each, in registration order."""
        return list(dict.fromkeys(t for entry in self._handlers.values() for t in entry.types))

    def __iter__(self) -> Iterator[Handler]:
        return iter(list(self._handlers.values()))

    def __len__(self) -> int:
        return len(self._handlers)

    def __contains__(self, event_type: object) -> bool:
        """Whether some subscription's types take ``event_type``."""
        return isinstance(event_type, str) and self.get(event_type) is not None


def _name(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"


def _check_name(name: object) -> None:
    if type(name) is not str or not name or name != name.strip():
        raise RegistryError(
            f"a handler's name is a non-empty string without surrounding spaces, got {render(name)}"
        )


def _types(name: str, types: object) -> tuple[str, ...]:
    """The type patterns as a tuple, each once (``Route`` checks each pattern)."""
    if isinstance(types, str):
        return (types,)
    if not isinstance(types, list | tuple):
        raise PatternError(
            f"handler {name!r}: event type",
            f"types are a string or a list of strings, got {render(types)}",
        )
    for pattern in types:
        if type(pattern) is not str:
            raise PatternError(
                f"handler {name!r}: event type",
                f"a type pattern is a string, got {render(pattern)}",
            )
    return tuple(dict.fromkeys(types))


def _frozen_copy(name: str, pattern: object) -> Filter:
    """A private copy of the pattern, so that what /health shows is what was compiled."""
    if not isinstance(pattern, Mapping):
        raise PatternError(
            f"handler {name!r}: filter", f"a pattern is a JSON object, got {render(pattern)}"
        )
    return copy.deepcopy(dict(pattern))


def load_registry(spec: str) -> Registry:
    """Import ``package.module[:name]`` and return the Registry it names.

    Without ``:name`` the module's ``registry`` attribute is used.
    """
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"HANDLERS={spec!r}: cannot import {module_name}: {exc}") from exc
    found = getattr(module, attr or "registry", None)
    if not isinstance(found, Registry):
        raise ConfigError(
            f"HANDLERS={spec!r}: {module_name}.{attr or 'registry'} is not an eventproc.Registry"
        )
    return found
