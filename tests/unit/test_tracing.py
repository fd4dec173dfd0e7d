"""Issue 16: one CONSUMER span per handler call, with the SDK's in-memory exporter.

The provider is given to eventproc.tracing.configure (the global one can be
set only once per process), and taken back after each test.
"""

import http.server
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from eventproc import Event, HandlerContext, NewEvent, Registry, tracing
from eventproc.engine import Processor
from eventproc.processor_config import ProcessorConfig
from eventproc.retry import RetryPolicy
from eventproc.store import Store
from eventproc.store.protocol import EventFilter

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.configure(provider)
    yield exporter
    tracing.configure(None)
    provider.shutdown()


def config(**overrides: Any) -> ProcessorConfig:
    values: dict[str, Any] = {
        "poll_interval_ms": 50,
        "lease_seconds": 5,
        "retry": RetryPolicy(max_retries=2, base_ms=0, max_ms=0),
    }
    values.update(overrides)
    return ProcessorConfig(**values)


def registry(failures: dict[str, int] | None = None) -> Registry:
    """t.ok succeeds; t.flaky fails its first ``failures[id]`` calls; t.fan publishes."""
    failures = failures if failures is not None else {}
    registry = Registry()

    @registry.handler("t.ok", name="ok")
    async def ok(event: Event, ctx: HandlerContext) -> None:
        return None

    @registry.handler("t.flaky", name="flaky")
    async def flaky(event: Event, ctx: HandlerContext) -> None:
        left = failures.get(str(event.id), 0)
        if left:
            failures[str(event.id)] = left - 1
            raise LookupError("not yet")

    @registry.handler("t.fan", name="fan")
    async def fan(event: Event, ctx: HandlerContext) -> None:
        await ctx.publish(
            NewEvent("t.ok", {"from": "fan"}),
            NewEvent("t.ok", {"from": "own"}, metadata={"traceparent": TRACEPARENT, "k": 1}),
        )

    return registry


async def drain(store: Store, registry: Registry, *events: NewEvent) -> None:
    await store.event_insert_many(list(events))
    await Processor(store, registry, config()).run(until_idle=True)


def spans_of(exporter: InMemorySpanExporter, consumer_group: str) -> list[ReadableSpan]:
    spans = exporter.get_finished_spans()
    chosen = [
        s
        for s in spans
        if (s.attributes or {}).get("messaging.consumer.group.name") == consumer_group
    ]
    return sorted(chosen, key=lambda span: span.start_time or 0)


async def test_a_successful_call_is_one_consumer_span(
    store: Store, exporter: InMemorySpanExporter
) -> None:
    aggregate = uuid.uuid4()
    event = NewEvent("t.ok", {}, aggregate_id=aggregate, aggregate_type="order")
    await drain(store, registry(), event)
    (span,) = exporter.get_finished_spans()
    assert span.name == "process t.ok"
    assert span.kind is SpanKind.CONSUMER
    assert span.status.status_code is StatusCode.UNSET
    assert dict(span.attributes or {}) == {
        "messaging.system": "eventproc",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "t.ok",
        "messaging.consumer.group.name": "ok",
        "messaging.message.id": str(event.id),
        "messaging.client.id": dict(span.attributes or {})["messaging.client.id"],
        "eventproc.attempt": 1,
        "eventproc.aggregate_id": str(aggregate),
        "eventproc.aggregate_type": "order",
        "eventproc.outcome": "succeeded",
    }
    assert span.parent is None and not span.links  # a worker's loop: no ambient context


async def test_a_retried_then_dead_lettered_call_records_each_failure(
    store: Store, exporter: InMemorySpanExporter
) -> None:
    retried = NewEvent("t.flaky", {})
    buried = NewEvent("t.flaky", {})
    failures = {str(retried.id): 1, str(buried.id): 5}
    await drain(store, registry(failures), retried, buried)
    spans = spans_of(exporter, "flaky")
    by_event: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        by_event.setdefault(str((span.attributes or {})["messaging.message.id"]), []).append(span)

    first, second = by_event[str(retried.id)]
    assert first.status.status_code is StatusCode.ERROR
    assert first.status.description == "not yet"
    assert (first.attributes or {})["error.type"] == "LookupError"
    assert (first.attributes or {})["eventproc.outcome"] == "retried"
    assert (first.attributes or {})["eventproc.attempt"] == 1
    (exception,) = [e for e in first.events if e.name == "exception"]
    assert (exception.attributes or {})["exception.type"] == "LookupError"
    assert second.status.status_code is StatusCode.UNSET
    assert (second.attributes or {})["eventproc.attempt"] == 2
    assert "error.type" not in (second.attributes or {})

    outcomes = [(s.attributes or {})["eventproc.outcome"] for s in by_event[str(buried.id)]]
    assert outcomes == ["retried", "dead_lettered"]  # max_retries=2
    last = by_event[str(buried.id)][-1]
    assert last.status.status_code is StatusCode.ERROR
    assert (last.attributes or {})["error.type"] == "LookupError"
    assert [d.event_id for d in await store.dead_letter_list()] == [buried.id]


async def test_a_traceparent_in_the_metadata_is_linked_not_made_the_parent(
    store: Store, exporter: InMemorySpanExporter
) -> None:
    metadata = {"traceparent": TRACEPARENT, "tracestate": "vendor=abc"}
    await drain(store, registry(), NewEvent("t.ok", {}, metadata=metadata))
    (span,) = exporter.get_finished_spans()
    (link,) = span.links
    assert format(link.context.trace_id, "032x") == TRACE_ID
    assert format(link.context.span_id, "016x") == SPAN_ID
    assert link.context.trace_state.get("vendor") == "abc"
    assert link.context.is_remote
    assert span.parent is None  # the conventions' default: a link, in a trace of its own
    assert span.context is not None and format(span.context.trace_id, "032x") != TRACE_ID


@pytest.mark.parametrize(
    "metadata",
    [
        {"traceparent": "not a traceparent"},
        {"traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"},
        {"traceparent": 42},
        {"tracestate": "vendor=abc"},
    ],
)
async def test_a_bad_traceparent_is_no_link_and_no_error(
    sqlite_store: Store, exporter: InMemorySpanExporter, metadata: dict[str, Any]
) -> None:
    event = NewEvent("t.ok", {}, metadata=metadata)
    await drain(sqlite_store, registry(), event)
    (span,) = exporter.get_finished_spans()
    assert not span.links
    done = await sqlite_store.event_get(event.id)
    assert done is not None and done.outcome == "succeeded"


async def test_publish_writes_the_calls_traceparent_unless_one_is_set(
    store: Store, exporter: InMemorySpanExporter
) -> None:
    await drain(store, registry(), NewEvent("t.fan", {}))
    (fan,) = spans_of(exporter, "fan")
    assert fan.context is not None
    published = {
        event.payload["from"]: event
        for event in await store.event_list(EventFilter())
        if event.event_type == "t.ok"
    }
    context = fan.context
    expected = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    assert published["fan"].metadata["traceparent"] == expected
    own = published["own"].metadata
    assert (own["traceparent"], own["k"]) == (TRACEPARENT, 1)  # kept as given
    assert "tracestate" not in own
    # Their consumers link to the call that published them.
    linked = {
        (span.links[0].context.trace_id, span.links[0].context.span_id)
        for span in spans_of(exporter, "ok")
    }
    assert linked == {
        (fan.context.trace_id, fan.context.span_id),
        (int(TRACE_ID, 16), int(SPAN_ID, 16)),
    }


async def test_without_a_provider_nothing_is_traced_and_nothing_breaks(store: Store) -> None:
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    tracing.configure(None)
    assert tracing.available() and tracing.tracer() is None
    await drain(store, registry(), NewEvent("t.fan", {}))
    events = await store.event_list(EventFilter())
    assert len(events) == 3 and all(event.outcome == "succeeded" for event in events)
    by_origin = {event.payload.get("from"): event for event in events}
    assert "traceparent" not in by_origin["fan"].metadata  # nothing to write


ABSENT = textwrap.dedent(
    """
    import asyncio, sys
    sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
    from eventproc import Event, HandlerContext, NewEvent, Registry, tracing
    from eventproc.engine import Processor
    from eventproc.store import open_store
    from eventproc.store.protocol import EventFilter

    assert not tracing.available() and tracing.tracer() is None
    registry = Registry()

    @registry.handler("t.fan")
    async def fan(event: Event, ctx: HandlerContext) -> None:
        await ctx.publish(NewEvent("t.ok", {}))

    @registry.handler("t.ok")
    async def ok(event: Event, ctx: HandlerContext) -> None:
        pass

    async def main() -> None:
        store = open_store(sys.argv[1])
        await store.migrate()
        await store.event_insert_many([NewEvent("t.fan", {})])
        await Processor(store, registry).run(until_idle=True)
        events = await store.event_list(EventFilter())
        assert [e.outcome for e in events] == ["succeeded", "succeeded"], events
        assert all("traceparent" not in e.metadata for e in events)
        assert not any(name.startswith("opentelemetry.") for name in sys.modules)
        await store.close()
        print("ok")

    asyncio.run(main())
    """
)


def test_eventproc_runs_without_opentelemetry(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'absent.db'}"
    done = subprocess.run(
        [sys.executable, "-c", ABSENT, url], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


OTLP = textwrap.dedent(
    """
    import asyncio, sys
    from opentelemetry import trace
    from eventproc import Event, HandlerContext, NewEvent, Registry, tracing
    from eventproc.engine import Processor
    from eventproc.store import open_store

    assert tracing.configure_from_environment()
    assert not tracing.configure_from_environment()  # once: a provider is set now
    registry = Registry()

    @registry.handler("t.ok")
    async def ok(event: Event, ctx: HandlerContext) -> None:
        pass

    async def main() -> None:
        store = open_store(sys.argv[1])
        await store.migrate()
        await store.event_insert_many([NewEvent("t.ok", {})])
        await Processor(store, registry).run(until_idle=True)
        await store.close()

    asyncio.run(main())
    trace.get_tracer_provider().shutdown()  # flushes the batch
    """
)


def test_an_otlp_endpoint_in_the_environment_sends_the_spans(tmp_path: Path) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT (a Datadog Agent, a collector): spans arrive by OTLP/HTTP."""
    received: list[tuple[str, bytes]] = []

    class Collector(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append((self.path, self.rfile.read(length)))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        environ = {
            **os.environ,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
            "OTEL_SERVICE_NAME": "eventproc-otlp-test",
        }
        url = f"sqlite:///{tmp_path / 'otlp.db'}"
        done = subprocess.run(
            [sys.executable, "-c", OTLP, url],
            capture_output=True,
            text=True,
            timeout=60,
            env=environ,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    assert [path for path, _ in received] == ["/v1/traces"]
    body = received[0][1]
    assert b"process t.ok" in body and b"eventproc-otlp-test" in body


def test_no_endpoint_configures_nothing() -> None:
    assert not tracing.configure_from_environment({})
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
