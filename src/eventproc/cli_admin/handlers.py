"""``eventproc handlers ls|pause|resume``: each subscription's figures, and stopping one."""

from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table

from eventproc.cli_admin import common
from eventproc.cli_admin.client import AdminClient
from eventproc.cli_admin.common import (
    DatabaseOption,
    JsonOption,
    TokenOption,
    UrlOption,
    age,
    checked,
    counted,
    run,
    stdout,
    table,
    target,
)

handlers_app = typer.Typer(
    name="handlers",
    help="Subscriptions: backlog, rates, durations; pause one during an outage, resume it.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

MOST_HANDLERS = 5000
NameArg = Annotated[str, typer.Argument(metavar="NAME", help="The subscription's name.")]


@handlers_app.command("ls")
def handlers_ls(
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Every subscription with its backlog, due, in flight, rates and p50/p95 durations."""
    with checked():
        given = target(url, token, database_url)

    async def work(client: AdminClient) -> None:
        listing = await common.collect(client, "/handlers", MOST_HANDLERS)
        if as_json:
            common.print_json(listing)
        else:
            stdout.print(handlers_table(listing["items"]))

    run(given, work)


def handlers_table(items: list[dict[str, Any]]) -> Table:
    return table(
        f"{len(items)} subscription(s)",
        (
            "name",
            "paused",
            "backlog",
            "due",
            "in flight",
            "oldest",
            "ok/fail 1m",
            "calls/s 1m",
            "fail rate 1h",
            "p50/p95 ms",
        ),
        (_row(item) for item in items),
    )


def _row(item: dict[str, Any]) -> tuple[Any, ...]:
    minute, hour, durations = item["last_minute"], item["last_hour"], item["duration_ms"]
    paused = item.get("paused")
    rate = hour.get("failure_rate")
    return (
        item["name"],
        f"yes ({paused['actor']})" if paused else "",
        counted(item["backlog"]["count"], item["backlog"]["capped"]),
        item["due"],
        item["in_flight"],
        age(item.get("oldest_pending_age_seconds")),
        f"{minute['succeeded']}/{minute['failed']}",
        f"{minute['per_second']:g}",
        "" if rate is None else f"{rate:.1%}",
        f"{_ms(durations.get('p50'))}/{_ms(durations.get('p95'))}",
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


@handlers_app.command("pause")
def handlers_pause(
    name: NameArg,
    reason: Annotated[str, typer.Option("--reason", help="Why: kept in the audit trail.")],
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Stop every worker starting this subscription's work; it waits, pending, until resumed."""
    _switch(name, "pause", reason, as_json, target_of=(url, token, database_url))


@handlers_app.command("resume")
def handlers_resume(
    name: NameArg,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why: kept in the audit trail.")
    ] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Let its waiting work run again."""
    _switch(name, "resume", reason, as_json, target_of=(url, token, database_url))


def _switch(
    name: str,
    action: str,
    reason: str | None,
    as_json: bool,
    *,
    target_of: tuple[str | None, str | None, str | None],
) -> None:
    with checked():
        if action == "pause" and not reason:
            raise common.usage("--reason: must not be empty")
        given = target(*target_of)

    async def work(client: AdminClient) -> None:
        answer = await client.post(
            f"/handlers/{quote(name, safe='')}/{action}", {"reason": reason} if reason else {}
        )
        if as_json:
            common.print_json(answer)
            return
        state = "paused" if answer["paused"] else "running"
        already = "" if answer["changed"] else f" (it already was {state})"
        stdout.print(f"{name}: {state}{already}", markup=False)

    run(given, work)
