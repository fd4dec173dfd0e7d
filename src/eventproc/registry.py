"""Registry: event type -> the handler that processes it."""

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from eventproc.errors import ConfigError, RegistryError
from eventproc.handler import HandlerFunc
from eventproc.sample import SampleHook, SampleLoader
from eventproc.store.protocol import SchemaHook  # one definition, used by the store too


@dataclass(frozen=True, slots=True)
class Handler:
    event_type: str
    func: HandlerFunc
    description: str = ""
    payload_model: type[BaseModel] | None = None
    transactional: bool = False
    timeout_seconds: float | None = None

    @property
    def name(self) -> str:
        return _name(self.func)


class Registry:
    """Maps each event type to one handler, as the seed's registry did."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
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
        event_type: str,
        *,
        description: str = "",
        payload: type[BaseModel] | None = None,
        transactional: bool = False,
        timeout_seconds: float | None = None,
    ) -> Callable[[HandlerFunc], HandlerFunc]:
        """Decorator form of :meth:`register`."""

        def decorate(func: HandlerFunc) -> HandlerFunc:
            self.register(
                event_type,
                func,
                description=description,
                payload=payload,
                transactional=transactional,
                timeout_seconds=timeout_seconds,
            )
            return func

        return decorate

    def register(
        self,
        event_type: str,
        func: HandlerFunc,
        *,
        description: str = "",
        payload: type[BaseModel] | None = None,
        transactional: bool = False,
        timeout_seconds: float | None = None,
    ) -> Handler:
        if not event_type or len(event_type) > 100:
            raise RegistryError(f"event type must be 1 to 100 characters: {event_type!r}")
        if event_type in self._handlers:
            existing = self._handlers[event_type].name
            raise RegistryError(f"{event_type!r} already has a handler: {existing}")
        if timeout_seconds is not None and timeout_seconds <= 0:
            raise RegistryError("timeout_seconds must be > 0")
        entry = Handler(
            event_type=event_type,
            func=func,
            description=description,
            payload_model=payload,
            transactional=transactional,
            timeout_seconds=timeout_seconds,
        )
        self._handlers[event_type] = entry
        return entry

    def include(self, other: "Registry") -> None:
        """Add every handler of ``other`` (e.g. a pack) to this registry, and its sample data."""
        if other.sample is not None:
            self.on_sample(
                other.sample.load, follow_ups_created_by=other.sample.follow_ups_created_by
            )
        self.schema_hooks.extend(other.schema_hooks)
        for entry in other:
            self.register(
                entry.event_type,
                entry.func,
                description=entry.description,
                payload=entry.payload_model,
                transactional=entry.transactional,
                timeout_seconds=entry.timeout_seconds,
            )

    def get(self, event_type: str) -> Handler | None:
        return self._handlers.get(event_type)

    @property
    def event_types(self) -> list[str]:
        return list(self._handlers)

    def __iter__(self) -> Iterator[Handler]:
        return iter(self._handlers.values())

    def __len__(self) -> int:
        return len(self._handlers)

    def __contains__(self, event_type: object) -> bool:
        return event_type in self._handlers


def _name(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"


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
