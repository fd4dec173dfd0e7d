"""The ``eventproc`` command. Settings come from the environment (and .env);
flags override them by passing values into the same Settings constructor."""

import asyncio
import gc
import json
import sys
import uuid
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from eventproc import cli_admin, cli_prune, early_signals, logs
from eventproc.config import Settings, load_settings
from eventproc.errors import ConfigError, EventprocError
from eventproc.event import NewEvent

if TYPE_CHECKING:
    from eventproc.registry import Handler
    from eventproc.routing import Explanation

app = typer.Typer(
    name="eventproc",
    help="Claim events from the events table, route them to handlers, retry, dead-letter.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: typer's rich help shows a type beside every flag
    # (`--help <bool>`), which reads as if the flag took a value.
    rich_markup_mode=None,
)
console = Console(stderr=True)


def _print_version(given: bool) -> None:
    if given:
        from eventproc import __version__

        typer.echo(f"eventproc {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Claim events from the events table, route them to handlers, retry, dead-letter."""


DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="postgresql://… or sqlite:///path (default: $DATABASE_URL, else ./eventproc.db).",
        show_default=False,
    ),
]


def _error(problem: object) -> None:
    """One plain line on stderr (no wrapping: scripts and log collectors read it)."""
    typer.echo(f"error: {problem}", err=True)


def _settings(**overrides: Any) -> Settings:
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        settings = load_settings(**given)
    except ConfigError as exc:
        _error(exc)
        raise typer.Exit(2) from None
    logs.configure(
        settings.log_level.value, settings.log_format.value, production=settings.is_production
    )
    return settings


def _run(coro: Any) -> None:
    try:
        asyncio.run(coro)
        # The work is done and written: exit without a last full garbage collection,
        # which took 0.5-5 s of a SIGTERM's grace on a loaded machine.
        gc.freeze()
    except ConfigError as exc:
        _error(exc)
        raise typer.Exit(2) from None
    except EventprocError as exc:
        _error(exc)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@app.command()
def run(
    database_url: DatabaseOption = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default: $PORT, 8080).")] = None,
    host: Annotated[
        str | None, typer.Option(help="Bind address (default: $HOST, 127.0.0.1).")
    ] = None,
) -> None:
    """Run the processor and the HTTP server (health, triggers, metrics) in one process.

    Creates or upgrades the schema first. Stops cleanly on SIGTERM/SIGINT:
    running handlers get SHUTDOWN_GRACE_SECONDS to finish.
    """
    early_signals.catch()
    settings = _settings(database_url=database_url, port=port, host=host)
    try:
        settings.check_bind()
    except ConfigError as exc:
        _error(exc)
        raise typer.Exit(2) from None
    _run(_serve(settings, http=True))


@app.command()
def worker(database_url: DatabaseOption = None) -> None:
    """Run the processor only (no HTTP): for extra workers beside one `eventproc run`."""
    early_signals.catch()
    settings = _settings(database_url=database_url)
    _run(_serve(settings, http=False))


async def _serve(settings: Settings, *, http: bool) -> None:
    from eventproc import tracing
    from eventproc.app import build_runtime

    tracing.configure_from_environment()  # when OTEL_EXPORTER_OTLP_ENDPOINT is set (otel extra)
    await build_runtime(settings).serve(http=http)


@app.command()
def migrate(database_url: DatabaseOption = None) -> None:
    """Create the tables, or upgrade existing ones in place (idempotent).

    On PostgreSQL an existing seed-style `events` table keeps all its rows; the
    handler pack's tables are created when absent.
    """
    settings = _settings(database_url=database_url)

    async def go() -> None:
        from eventproc.runtime import Runtime

        runtime = Runtime(settings)
        try:
            await runtime.prepare(attempts=1)
        finally:
            await runtime.store.close()
        console.print(f"Schema is up to date ({runtime.backend}: {runtime.store.url_for_display})")

    _run(go())


@app.command()
def publish(
    event_type: Annotated[str, typer.Argument(help="e.g. user.verified")],
    payload: Annotated[str, typer.Option(help="The payload, a JSON object.")] = "{}",
    aggregate_id: Annotated[str | None, typer.Option(help="UUID of the aggregate.")] = None,
    aggregate_type: Annotated[str | None, typer.Option(help="At most 50 characters.")] = None,
    priority: Annotated[int, typer.Option(help="Higher runs first (-32768..32767).")] = 0,
    database_url: DatabaseOption = None,
) -> None:
    """Publish one event (prints its id).

    A type that the registry named by HANDLERS has no handler for is
    published anyway, with a warning: a processor will mark it skipped.
    """
    settings = _settings(database_url=database_url)
    try:
        event = NewEvent(
            event_type,
            _json_object("--payload", payload),
            aggregate_id=_uuid_or_none("--aggregate-id", aggregate_id),
            aggregate_type=_bounded("--aggregate-type", aggregate_type, 50),
            priority=_smallint("--priority", priority),
            created_by="eventproc-cli",
        )
    except _BadInput as exc:
        _error(exc)
        raise typer.Exit(2) from None
    except ValueError as exc:  # what NewEvent itself refuses (the type's length)
        _error(f"TYPE: {exc}")
        raise typer.Exit(2) from None
    warning = _unhandled_warning(event_type, settings.handlers)

    async def go() -> None:
        from eventproc.store import open_store

        store = open_store(settings.effective_database_url, pooler=settings.pooler)
        try:
            await store.migrate()
            await store.event_insert_many([event])
        finally:
            await store.close()
        print(event.id)

    _run(go())
    if warning:
        typer.echo(f"warning: {warning}", err=True)


class _BadInput(Exception):
    """A command-line value that cannot be used; the message names its flag."""


def _json_object(flag: str, text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _BadInput(
            f"{flag}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})"
        ) from None
    except RecursionError:
        raise _BadInput(f"{flag}: not valid JSON (nested too deeply)") from None
    if not isinstance(value, dict):
        raise _BadInput(f"{flag}: must be a JSON object, not {_json_kind(value)}")
    return value


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def _uuid_or_none(flag: str, text: str | None) -> uuid.UUID | None:
    if text is None or text == "":
        return None
    try:
        return uuid.UUID(text)
    except ValueError:
        raise _BadInput(f"{flag}: not a UUID: {text!r}") from None


def _bounded(flag: str, text: str | None, most: int) -> str | None:
    if text is not None and len(text) > most:
        raise _BadInput(f"{flag}: at most {most} characters, got {len(text)}")
    return text


def _smallint(flag: str, value: int) -> int:
    if not -32768 <= value <= 32767:
        raise _BadInput(f"{flag}: must be between -32768 and 32767, got {value}")
    return value


def _unhandled_warning(event_type: str, spec: str) -> str | None:
    """Why nothing will handle ``event_type``, or None when some subscription's types take it."""
    from eventproc.registry import load_registry

    try:
        registry = load_registry(spec)
    except EventprocError as exc:
        return f"could not check {event_type!r} against HANDLERS={spec}: {exc}"
    taking = sum(1 for entry in registry if entry.takes(event_type))
    if taking:
        return None
    return (
        f"no handler for {event_type!r} in HANDLERS={spec} (0 of its {len(registry)} "
        "subscriptions take that type); published anyway: a processor will mark it skipped "
        "(replay it once a handler exists)"
    )


route_app = typer.Typer(
    name="route",
    help="Which subscriptions of HANDLERS take an event, and why.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(route_app)

# The envelope a filter sees, and what each of its fields may hold.
_ENVELOPE_STRINGS = ("aggregate_id", "aggregate_type", "created_by")
_ENVELOPE_OBJECTS = ("metadata", "payload")
_ENVELOPE_FIELDS = (*_ENVELOPE_STRINGS, *_ENVELOPE_OBJECTS)


@route_app.command("test")
def route_test(
    event: Annotated[
        str,
        typer.Option(
            "--event",
            help='The envelope as JSON, {"event_type": ..., "payload": {...}, '
            '"metadata": {...}, "aggregate_id", "aggregate_type", "created_by"}, '
            "or @file.json.",
        ),
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of text.", metavar="")
    ] = False,
) -> None:
    """Test an event against every subscription: matched or not, and which clause failed.

    Reads HANDLERS like the other commands; touches no database. Exit 0 when
    at least one subscription takes the event, 1 when none does, 2 for bad
    input or a registry that does not load.
    """
    from eventproc.registry import load_registry

    settings = _settings()
    try:
        envelope = _envelope_option(event)
        registry = load_registry(settings.handlers)
    except _BadInput as exc:
        _error(exc)
        raise typer.Exit(2) from None
    except EventprocError as exc:  # an unloadable registry, or a bad subscription in it
        _error(exc)
        raise typer.Exit(2) from None
    results = registry.explain(envelope)
    if as_json:
        typer.echo(json.dumps(_route_json(envelope, results), default=str))
    else:
        typer.echo("\n".join(_route_lines(results)))
    raise typer.Exit(0 if any(why.matched for _, why in results) else 1)


def _envelope_option(text: str) -> dict[str, Any]:
    """``--event``'s JSON (or the file ``@path`` names) as the envelope a filter sees."""
    from eventproc.routing import envelope

    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as file:
                text = file.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise _BadInput(f"--event: cannot read {text[1:]}: {exc}") from None
    given = _json_object("--event", text)
    unknown = [key for key in given if key != "event_type" and key not in _ENVELOPE_FIELDS]
    if unknown:
        raise _BadInput(
            f"--event: unknown field {unknown[0]!r} (the envelope has event_type, "
            f"{', '.join(_ENVELOPE_FIELDS)})"
        )
    event_type = given.get("event_type")
    if not isinstance(event_type, str) or not event_type:
        raise _BadInput('--event: needs "event_type", a non-empty string')
    for key in _ENVELOPE_STRINGS:
        if given.get(key) is not None and not isinstance(given[key], str):
            raise _BadInput(f"--event: {key} must be a string, not {_json_kind(given[key])}")
    for key in _ENVELOPE_OBJECTS:
        if given.get(key) is not None and not isinstance(given[key], dict):
            raise _BadInput(f"--event: {key} must be a JSON object, not {_json_kind(given[key])}")
    return envelope(
        event_type,
        given.get("payload"),
        aggregate_id=given.get("aggregate_id"),
        aggregate_type=given.get("aggregate_type"),
        created_by=given.get("created_by"),
        metadata=given.get("metadata"),
    )


def _route_lines(results: "list[tuple[Handler, Explanation]]") -> list[str]:
    """Per subscription: match or miss, the failed clause for a miss, then each check made."""
    from eventproc.routing.explain import render

    lines: list[str] = []
    for entry, why in results:
        mark = "match" if why.matched else "miss "
        lines.append(f"{mark}  {entry.name}  types {render(list(entry.types))}")
        if entry.filter is not None:
            lines.append(f"       filter {json.dumps(entry.filter, default=str)}")
        if not why.matched:
            failed = why.failures[0]
            lines.append(f"       failed clause {failed.clause}: {failed.reason}")
            if len(why.checks) == 1:  # the type check alone: the line above said it all
                continue
        lines.extend(line for check in why.checks for line in check.lines(7))
    taken = sum(1 for _, why in results if why.matched)
    lines.append(f"{taken} of {len(results)} subscriptions take this event")
    return lines


def _route_json(
    envelope: dict[str, Any], results: "list[tuple[Handler, Explanation]]"
) -> dict[str, Any]:
    return {
        "event": envelope,
        "matched": [entry.name for entry, why in results if why.matched],
        "subscriptions": [
            {
                "name": entry.name,
                "types": list(entry.types),
                "filter": entry.filter,
                **why.as_dict(),
            }
            for entry, why in results
        ],
    }


# metavar="" on the flags: help shows "--once", not "--once <bool>".
DemoOnce = Annotated[
    bool,
    typer.Option("--once", help="Publish, drain, print a summary table, exit.", metavar=""),
]
DemoForce = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Write into a --database-url that holds events the demo did not publish.",
        metavar="",
    ),
]
DemoDatabase = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="Run on this database instead of ./eventproc-demo.db "
        "(DATABASE_URL is not read by the demo).",
        show_default=False,
    ),
]
DemoEvents = Annotated[
    int | None, typer.Option(help="Events to publish (default: 500 with --once, else endless).")
]
DemoRate = Annotated[
    float | None,
    typer.Option(help="Events per second (default: 50 live; all at once with --once)."),
]
DemoPort = Annotated[
    int | None, typer.Option(help="HTTP port (default: $PORT, else 8080; a free one if taken).")
]


@app.command()
def demo(
    events: DemoEvents = None,
    rate: DemoRate = None,
    once: DemoOnce = False,
    database_url: DemoDatabase = None,
    force: DemoForce = False,
    port: DemoPort = None,
) -> None:
    """Try it: sample Yachtparty data and traffic on a fresh embedded database.

    Uses ./eventproc-demo.db (recreated at every run) unless --database-url
    is given; it never reads DATABASE_URL, and it refuses a --database-url
    holding events it did not publish unless --force. Loads users, experts,
    conversations, workflows and intro opportunities, then publishes all 11
    event types with a share of bad ones (unknown type, invalid payload,
    missing user) so that retries and dead letters show. Retries are quick
    in the demo (MAX_RETRIES=3, 100 ms backoff base). Serves HTTP on PORT
    (8080 by default, or a free port if that one is taken; the URL is printed).
    """
    import os

    from eventproc.demo import DEMO_LOG_LEVEL, DEMO_OVERRIDES, demo_database_url

    quiet = {} if os.environ.get("LOG_LEVEL") else {"log_level": DEMO_LOG_LEVEL}
    url = database_url or demo_database_url()
    overrides = {**DEMO_OVERRIDES, **quiet}
    # DEMO_OVERRIDES names the registry (HANDLERS) whose sample data the demo runs on.
    settings = _settings(database_url=url, port=port, **overrides)
    output = Console(width=None if sys.stdout.isatty() else 120)
    raise typer.Exit(_demo_exit_code(settings, events, rate, once, database_url, force, output))


def _demo_exit_code(
    settings: Settings,
    events: int | None,
    rate: float | None,
    once: bool,
    named_database: str | None,
    force: bool,
    output: Console,
) -> int:
    """Run the demo; 2 for a refused database or setting, 1 for other errors, 130 on Ctrl+C."""
    from eventproc.demo import DemoRefused, port_to_ask, reset_demo_database

    try:
        if not once:
            settings.check_bind()
            settings = _demo_port(settings, port_to_ask(settings.host, settings.port), output)
        if named_database is None:
            reset_demo_database()
        return asyncio.run(
            _demo(settings, events, rate, once, named_database is not None, force, output)
        )
    except (ConfigError, DemoRefused) as exc:
        _error(exc)
        return 2
    except EventprocError as exc:
        _error(exc)
        return 1
    except KeyboardInterrupt:
        return 130


def _demo_port(settings: Settings, port: int, output: Console) -> Settings:
    if port != settings.port:
        output.print(f"Port {settings.port} is taken: listening on a free one.", markup=False)
    return settings.model_copy(update={"port": port})


async def _demo(
    settings: Settings,
    events: int | None,
    rate: float | None,
    once: bool,
    check: bool,
    force: bool,
    output: Console,
) -> int:
    from eventproc.app import build_runtime
    from eventproc.demo import run_demo

    runtime = build_runtime(settings)
    return await run_demo(
        runtime, events=events, rate=rate, once=once, check=check, force=force, console=output
    )


# -- eventproc backfill (issue 14, point 6) ------------------------------------------

BackfillSince = Annotated[
    str,
    typer.Option(
        "--since", help="Events created at or after this ISO 8601 time (UTC unless it says)."
    ),
]
BackfillUntil = Annotated[
    str | None,
    typer.Option(
        "--until",
        help="... and before this one (default: no end). End it when the subscription went "
        "live: events it has handled since, alone on their rows, have no delivery to see.",
    ),
]
BackfillFilter = Annotated[
    str | None,
    typer.Option("--filter", help="An event pattern (JSON) narrowing the subscription's own."),
]
BackfillExecute = Annotated[
    bool,
    typer.Option(
        "--execute", help="Create the deliveries (default: a dry run that counts).", metavar=""
    ),
]
BackfillBatch = Annotated[int, typer.Option("--batch-size", help="Events per batch.")]
BackfillJson = Annotated[
    bool, typer.Option("--json", help="Print the report as JSON instead of text.", metavar="")
]


@app.command("backfill")
def backfill_command(
    subscription: Annotated[str, typer.Argument(help="The subscription's name.")],
    since: BackfillSince,
    until: BackfillUntil = None,
    filter: BackfillFilter = None,
    execute: BackfillExecute = False,
    batch_size: BackfillBatch = 500,
    as_json: BackfillJson = False,
    database_url: DatabaseOption = None,
) -> None:
    """Apply a subscription of HANDLERS to past events: how many deliveries it would create.

    A dry run unless --execute: then the deliveries are created batch by
    batch, and processors run them (that subscription only). Events still
    pending are left to be routed when claimed. Exit 2 for bad input.
    """
    from eventproc.backfill import backfill, progress_line, report_lines
    from eventproc.store import open_store

    settings = _settings(database_url=database_url)
    try:
        registry, handler, pattern = _backfill_subscription(settings, subscription, filter)
        start, end = _backfill_window(since, until)
        if batch_size < 1:
            raise _BadInput(f"--batch-size: must be >= 1, got {batch_size}")
    except (_BadInput, EventprocError) as exc:  # a registry, subscription or pattern error
        _error(exc)
        raise typer.Exit(2) from None
    done: list[Any] = []  # the reports of the batches so far

    def progress(report: Any) -> None:
        if not as_json:
            typer.echo(progress_line(report, done[-1] if done else None))
        done.append(report)

    async def go() -> None:
        store = open_store(settings.effective_database_url, pooler=settings.pooler)
        try:
            report = await backfill(
                store,
                registry,
                handler.name,
                since=start,
                until=end,
                filter=pattern,
                dry_run=not execute,
                batch_size=batch_size,
                on_batch=progress if execute else None,
            )
        finally:
            await store.close()
        lines = [json.dumps(report.as_dict())] if as_json else report_lines(report, handler)
        typer.echo("\n".join(lines))

    _run(go())


def _backfill_subscription(settings: Settings, name: str, filter: str | None) -> Any:
    """The registry, the subscription and the extra pattern; bad ones raise in one line."""
    from eventproc.backfill import subscription
    from eventproc.registry import load_registry
    from eventproc.routing import PatternError, compile

    registry = load_registry(settings.handlers)
    handler = subscription(registry, name)
    if filter is None:
        return registry, handler, None
    pattern = _json_object("--filter", filter)
    try:
        compile(pattern)
    except PatternError as exc:
        raise _BadInput(f"--filter: {exc}") from None
    return registry, handler, pattern


def _backfill_window(since: str, until: str | None) -> Any:
    """--since and --until as times (a naive one is UTC); --until after --since."""
    start = _backfill_time("--since", since)
    if until is None:
        return start, None
    end = _backfill_time("--until", until)
    if end <= start:
        raise _BadInput(f"--until: must be after --since, got {until!r} and {since!r}")
    return start, end


def _backfill_time(flag: str, text: str) -> Any:
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _BadInput(f"{flag}: not an ISO 8601 time: {text!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


# -- the admin commands (issue 15): eventproc.cli_admin, over the admin API -----------

app.add_typer(cli_admin.events_app)
app.add_typer(cli_admin.dlq_app)
app.add_typer(cli_admin.handlers_app)
app.add_typer(cli_admin.ops_app)
app.command("replay")(cli_admin.replay)
app.command("stats")(cli_admin.stats)

# -- retention (issue 16): eventproc.cli_prune ------------------------------------------

app.command("prune")(cli_prune.prune)


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # `eventproc … | head`
        sys.exit(0)
