"""OpenTelemetry tracing of handler calls: one CONSUMER span per delivery attempt.

Optional (``pip install eventproc[otel]``): without the OpenTelemetry API,
or with the API but no tracer provider configured, every function here
does nothing, and the dispatcher pays one check per handler call.

Each span follows the messaging conventions: named ``process <type>``
(the subscription's pattern for a wildcard subscription, so that names
stay few), kind CONSUMER, ``messaging.*`` attributes plus
``eventproc.attempt`` and ``eventproc.aggregate_id``. When the event's
metadata carries a W3C ``traceparent`` (and ``tracestate``), the span
*links* to that creation context, the conventions' default for consumers;
its parent is the ambient context, if any (a worker's loop has none, so
each delivery starts a trace of its own, linked to the publisher's).
``HandlerContext.publish`` writes the current span's ``traceparent`` into
the events a handler publishes, unless the handler set one itself.
"""

import dataclasses
import importlib.metadata
import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from eventproc.event import Event, NewEvent

try:
    from opentelemetry import context as _context
    from opentelemetry import trace as _trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the otel extra is not installed
    _trace = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer, TracerProvider

# While no tracer provider is configured, how often to look again (one
# configured later, after the worker started, is used from then on).
RECHECK_SECONDS = 1.0
TRACER_NAME = "eventproc"


class _State:
    tracer: "Tracer | None" = None
    provider: "TracerProvider | None" = None  # configure()'s, else the global one
    checked_at = float("-inf")


_state = _State()
_propagator: Any = TraceContextTextMapPropagator() if _trace is not None else None


def available() -> bool:
    """Whether the OpenTelemetry API is installed."""
    return _trace is not None


def configure(provider: "TracerProvider | None") -> None:
    """Trace to ``provider`` instead of the global one (None: the global one again).

    For applications that keep eventproc's spans apart, and for tests: the
    global provider can be set only once per process.
    """
    _state.provider = provider
    _state.tracer = None
    _state.checked_at = float("-inf")


def configure_from_environment(environ: Mapping[str, str] = os.environ) -> bool:
    """Set up the SDK to send spans by OTLP/HTTP when OTEL_EXPORTER_OTLP_*ENDPOINT is set.

    For a process started without ``opentelemetry-instrument``: the SDK and
    the exporter read the usual OTEL_* variables (service name, resource,
    sampler, endpoint, headers). False, and nothing done, when no endpoint
    is set, a provider is configured already, or the packages are missing.
    """
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not endpoint or _trace is None:
        return False
    if not isinstance(_trace.get_tracer_provider(), _trace.ProxyTracerProvider):
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        return False
    provider = TracerProvider()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, sampler
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _trace.set_tracer_provider(provider)
    configure(None)
    return True


def tracer() -> "Tracer | None":
    """eventproc's tracer, or None while tracing is off (the hot path's one check)."""
    found = _state.tracer
    if found is not None or _trace is None:
        return found
    now = time.monotonic()
    if now - _state.checked_at < RECHECK_SECONDS:
        return None
    _state.checked_at = now
    provider = _state.provider or _trace.get_tracer_provider()
    if isinstance(provider, _trace.ProxyTracerProvider | _trace.NoOpTracerProvider):
        return None  # nothing configured: spans would go nowhere
    _state.tracer = provider.get_tracer(TRACER_NAME, _version())
    return _state.tracer


def _version() -> str | None:
    try:
        return importlib.metadata.version("eventproc")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return None


class ProcessSpan:
    """The span of one handler call, current while the handler runs."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: "Span", token: "Token[Context]") -> None:
        self._span = span
        self._token = token

    def succeeded(self) -> None:
        self._span.set_attribute("eventproc.outcome", "succeeded")
        self._end()

    def failed(self, exc: BaseException, outcome: str, error_type: str) -> None:
        """The call raised: status error, the exception recorded, what eventproc did next."""
        span = self._span
        span.set_attribute("error.type", error_type)
        span.set_attribute("eventproc.outcome", outcome)
        span.record_exception(exc)
        span.set_status(_trace.StatusCode.ERROR, str(exc) or type(exc).__name__)
        self._end()

    def cancelled(self) -> None:
        """The worker stopped the call (shutdown): the span ends, its outcome unknown."""
        self._span.set_attribute("eventproc.outcome", "cancelled")
        self._end()

    def _end(self) -> None:
        _context.detach(self._token)
        self._span.end()


def start(
    tracer: "Tracer",
    event: Event,
    handler: str,
    destination: tuple[str, bool],
    worker_id: str,
) -> ProcessSpan:
    """Start the handler call's span and make it current (``destination``: metrics.type_label)."""
    label, templated = destination
    attributes: dict[str, str | int] = {
        "messaging.system": "eventproc",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": event.event_type,
        "messaging.consumer.group.name": handler,
        "messaging.message.id": str(event.id),
        "messaging.client.id": worker_id,
        "eventproc.attempt": event.attempts,
    }
    if templated:
        attributes["messaging.destination.template"] = label
    if event.aggregate_id is not None:
        attributes["eventproc.aggregate_id"] = str(event.aggregate_id)
    if event.aggregate_type:
        attributes["eventproc.aggregate_type"] = event.aggregate_type
    span = tracer.start_span(
        f"process {label}",
        kind=_trace.SpanKind.CONSUMER,
        attributes=attributes,
        links=_creation_links(event.metadata),
    )
    token = _context.attach(_trace.set_span_in_context(span))
    return ProcessSpan(span, token)


def _creation_links(metadata: Mapping[str, Any] | None) -> "list[_trace.Link]":
    """A link to the publisher's context, when the metadata carries a valid traceparent."""
    if not metadata:
        return []
    traceparent = metadata.get("traceparent")
    if not isinstance(traceparent, str):
        return []
    carrier = {"traceparent": traceparent}
    tracestate = metadata.get("tracestate")
    if isinstance(tracestate, str):
        carrier["tracestate"] = tracestate
    linked = _trace.get_current_span(_propagator.extract(carrier)).get_span_context()
    return [_trace.Link(linked)] if linked.is_valid else []


def with_trace_context(events: Sequence[NewEvent]) -> Sequence[NewEvent]:
    """``events``, each with the current context's traceparent in its metadata.

    An event whose metadata has a ``traceparent`` already keeps it (the
    conventions: a creation context the caller gave is not modified).
    """
    if tracer() is None or not events:
        return events
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    if "traceparent" not in carrier:
        return events  # no valid span is current
    return [
        event
        if event.metadata and "traceparent" in event.metadata
        else dataclasses.replace(event, metadata={**(event.metadata or {}), **carrier})
        for event in events
    ]
