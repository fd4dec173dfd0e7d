"""The ``eventproc`` command. Settings come from the environment (and .env);
flags override them by passing values into the same Settings constructor."""

import asyncio
import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

from eventproc import logs
from eventproc.config import Settings, load_settings
from eventproc.errors import ConfigError, EventprocError
from eventproc.event import NewEvent

app = typer.Typer(
    name="eventproc",
    help="Claim events from the events table, route them to handlers, retry, dead-letter.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

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
    settings = _settings(database_url=database_url)
    _run(_serve(settings, http=False))


async def _serve(settings: Settings, *, http: bool) -> None:
    from eventproc.runtime import Runtime

    await Runtime(settings).serve(http=http)


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
    aggregate_type: Annotated[str | None, typer.Option()] = None,
    priority: Annotated[int, typer.Option(help="Higher runs first.")] = 0,
    database_url: DatabaseOption = None,
) -> None:
    """Publish one event (prints its id)."""
    import uuid

    settings = _settings(database_url=database_url)
    try:
        body = json.loads(payload)
        aggregate = uuid.UUID(aggregate_id) if aggregate_id else None
        event = NewEvent(
            event_type,
            body,
            aggregate_id=aggregate,
            aggregate_type=aggregate_type,
            priority=priority,
            created_by="eventproc-cli",
        )
    except (ValueError, TypeError) as exc:
        _error(exc)
        raise typer.Exit(2) from None

    async def go() -> None:
        from eventproc.store import open_store

        store = open_store(settings.effective_database_url)
        try:
            await store.migrate()
            await store.event_insert_many([event])
        finally:
            await store.close()
        print(event.id)

    _run(go())


@app.command()
def demo(
    events: Annotated[
        int | None,
        typer.Option(help="Events to publish (default: 500 with --once, else endless)."),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(help="Events per second (default: 50 live; all at once with --once)."),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Publish, drain, print a summary table, exit.")
    ] = False,
    database_url: DatabaseOption = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default: $PORT, 8080).")] = None,
) -> None:
    """Try it: sample Yachtparty data and traffic on a fresh embedded database.

    Uses ./eventproc-demo.db (recreated) unless DATABASE_URL is set, loads
    users, experts, conversations, workflows and intro opportunities, then
    publishes all 11 event types with a share of bad ones (unknown type,
    invalid payload, missing user) so that retries and dead letters show.
    Retries are quick in the demo (MAX_RETRIES=3, 100 ms backoff base).
    """
    import os

    from eventproc.demo import DEMO_LOG_LEVEL, DEMO_OVERRIDES, demo_database_url, run_demo

    quiet = {} if os.environ.get("LOG_LEVEL") else {"log_level": DEMO_LOG_LEVEL}
    settings = _settings(database_url=database_url, port=port, handlers="yachtparty:registry")
    settings = _settings(
        database_url=demo_database_url(settings),
        port=port,
        handlers="yachtparty:registry",
        **DEMO_OVERRIDES,
        **quiet,
    )
    code = 1
    try:
        output = Console(width=None if sys.stdout.isatty() else 120)
        code = asyncio.run(run_demo(settings, events=events, rate=rate, once=once, console=output))
    except EventprocError as exc:
        _error(exc)
    except KeyboardInterrupt:
        code = 130
    raise typer.Exit(code)


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # `eventproc … | head`
        sys.exit(0)
