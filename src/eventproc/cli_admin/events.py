"""``eventproc events ls|show`` and ``eventproc replay EVENT_ID``."""

from typing import Annotated, Any

import typer
from rich.syntax import Syntax

from eventproc.cli_admin import common
from eventproc.cli_admin.client import AdminClient
from eventproc.cli_admin.common import (
    CursorOption,
    DatabaseOption,
    JsonOption,
    LimitOption,
    TokenOption,
    UrlOption,
    checked,
    clip,
    json_text,
    run,
    stdout,
    table,
    target,
    when,
)

events_app = typer.Typer(
    name="events",
    help="Find events and see why one failed (the admin API's /events).",
    no_args_is_help=True,
    rich_markup_mode=None,
)

Opt = typer.Option
Text = str | None


def _where_option(text: str | None) -> tuple[str | None, str | None]:
    """``--where payload.a.b=value`` as the API's path and value."""
    if text is None:
        return None, None
    path, equals, value = text.partition("=")
    if not equals or not path.startswith(("payload.", "metadata.")):
        raise common.usage(f"--where: expected payload.PATH=VALUE or metadata.PATH=VALUE: {text!r}")
    return path, value


@events_app.command("ls")
def events_ls(
    type: Annotated[Text, Opt("--type", help="Event type, exact or with * (user.*).")] = None,
    handler: Annotated[Text, Opt("--handler", help="Taken by this subscription.")] = None,
    state: Annotated[Text, Opt("--state", help="pending or done.")] = None,
    outcome: Annotated[
        Text, Opt(help="succeeded, skipped, dead_lettered, partial or discarded.")
    ] = None,
    aggregate: Annotated[Text, Opt("--aggregate", help="aggregate_id (UUID).")] = None,
    created_by: Annotated[Text, Opt("--created-by")] = None,
    since: Annotated[Text, Opt("--since", help="Created at or after (ISO 8601).")] = None,
    until: Annotated[Text, Opt("--until", help="Created before (ISO 8601).")] = None,
    where: Annotated[
        Text, Opt("--where", help="payload.PATH=VALUE or metadata.PATH=VALUE.")
    ] = None,
    error: Annotated[Text, Opt("--error", help="Text in the last error.")] = None,
    limit: LimitOption = 50,
    cursor: CursorOption = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Events, newest first, with every filter optional."""
    with checked():
        path, value = _where_option(where)
        params = {
            "type": type,
            "handler": handler,
            "state": state,
            "outcome": outcome,
            "aggregate_id": common.an_id("--aggregate", aggregate) if aggregate else None,
            "created_by": created_by,
            "since": common.a_time("--since", since),
            "until": common.a_time("--until", until),
            "path": path,
            "value": value,
            "error": error,
        }
        count = common.a_limit(limit)
        given = target(url, token, database_url)

    async def work(client: AdminClient) -> None:
        listing = await common.collect(client, "/events", count, cursor, params)
        if as_json:
            common.print_json(listing)
            return
        stdout.print(_events_table(listing["items"]))
        common.more_hint(listing)

    run(given, work)


def _events_table(items: list[dict[str, Any]]) -> Any:
    return table(
        f"{len(items)} event(s)",
        ("id", "type", "state", "outcome", "attempts", "created", "last error"),
        (
            (
                item["id"],
                item["event_type"],
                item["state"],
                item.get("outcome"),
                item["attempts"],
                when(item.get("created_at")),
                clip(item.get("last_error")),
            )
            for item in items
        ),
    )


@events_app.command("show")
def events_show(
    event_id: Annotated[str, typer.Argument(metavar="ID", help="The event's id.")],
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """One event: payload, metadata, every delivery, attempt (with traceback) and dead letter."""
    with checked():
        wanted = common.an_id("ID", event_id)
        given = target(url, token, database_url)

    async def work(client: AdminClient) -> None:
        event = await client.get(f"/events/{wanted}")
        if as_json:
            common.print_json(event)
        else:
            _show_event(event)

    run(given, work)


def _show_event(event: dict[str, Any]) -> None:
    stdout.print(f"[bold]{event['event_type']}[/bold] {event['id']}")
    for label, key in (
        ("state", "state"),
        ("outcome", "outcome"),
        ("attempts", "attempts"),
        ("aggregate", "aggregate_id"),
        ("created by", "created_by"),
        ("last error", "last_error"),
    ):
        if event.get(key) is not None:
            stdout.print(f"  {label}: {event[key]}", markup=False)
    for label, key in (("created", "created_at"), ("processed", "processed_at")):
        if event.get(key):
            stdout.print(f"  {label}: {when(event[key])}", markup=False)
    for name in ("payload", "metadata"):
        stdout.print(f"{name}:")
        text = json_text(event.get(name))
        if stdout.is_terminal:
            stdout.print(Syntax(text, "json"))
        else:
            typer.echo(text)
    _show_deliveries(event)


def _show_deliveries(event: dict[str, Any]) -> None:
    deliveries = event.get("deliveries") or []
    if deliveries:
        stdout.print(
            table(
                "deliveries",
                ("handler", "state", "attempts", "next attempt", "last error"),
                (
                    (
                        d["handler"],
                        d["state"],
                        d["attempts"],
                        when(d.get("next_attempt_at")),
                        clip(d.get("last_error")),
                    )
                    for d in deliveries
                ),
            )
        )
    attempts = event.get("attempt_log") or []
    if attempts:
        stdout.print(
            table(
                "attempts",
                ("at", "handler", "#", "outcome", "ms", "worker", "error"),
                (
                    (
                        when(a.get("finished_at")),
                        a.get("handler"),
                        a["attempt"],
                        a["outcome"],
                        "" if a.get("duration_ms") is None else f"{a['duration_ms']:.0f}",
                        a.get("worker"),
                        clip(a.get("error"), 80),
                    )
                    for a in attempts
                ),
            )
        )
        last = next((a for a in reversed(attempts) if a.get("traceback")), None)
        if last is not None:
            stdout.print(f"traceback of attempt {last['attempt']} ({last.get('handler')}):")
            stdout.print(last["traceback"], markup=False, highlight=False)
    _show_dead_letters(event.get("dead_letters") or [])


def _show_dead_letters(letters: list[dict[str, Any]]) -> None:
    if letters:
        stdout.print(
            table(
                "dead letters",
                ("id", "handler", "at", "replayed", "error"),
                (
                    (
                        d["id"],
                        d.get("handler"),
                        when(d.get("created_at")),
                        when(d.get("replayed_at")),
                        clip(d.get("error_message"), 80),
                    )
                    for d in letters
                ),
            )
        )


def replay(
    event_id: Annotated[str, typer.Argument(metavar="EVENT_ID", help="The event's id.")],
    handler: Annotated[
        Text, Opt("--handler", help="Replay only this subscription's delivery.")
    ] = None,
    reason: Annotated[Text, Opt("--reason", help="Why: kept in the audit trail.")] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Run a finished event again with a fresh budget: every delivery, or --handler's only."""
    with checked():
        wanted = common.an_id("EVENT_ID", event_id)
        given = target(url, token, database_url)

    async def work(client: AdminClient) -> None:
        body = {key: value for key, value in (("handler", handler), ("reason", reason)) if value}
        answer = await client.post(f"/events/{wanted}/replay", body)
        if as_json:
            common.print_json(answer)
        else:
            which = f" (delivery of {handler})" if handler else ""
            typer.echo(f"replayed {wanted}{which}: workers run it again")

    run(given, work)
