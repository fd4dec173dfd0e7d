"""``eventproc ops ls|show|cancel``: bulk operations, their progress, and stopping one."""

import json
from typing import Annotated, Any

import typer

from eventproc.cli_admin import common
from eventproc.cli_admin.bulk import FINAL, ended, follow, summary
from eventproc.cli_admin.client import OK, AdminClient
from eventproc.cli_admin.common import (
    CursorOption,
    DatabaseOption,
    JsonOption,
    LimitOption,
    TokenOption,
    UrlOption,
    checked,
    clip,
    run,
    stdout,
    table,
    target,
    when,
)

ops_app = typer.Typer(
    name="ops",
    help="Bulk operations (replay, discard, pause, resume, backfill): list, follow, cancel.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

IdArg = Annotated[str, typer.Argument(metavar="ID", help="The operation's id.")]


@ops_app.command("ls")
def ops_ls(
    status: Annotated[
        str | None,
        typer.Option("--status", help="planned, running, done, cancelled or failed."),
    ] = None,
    action: Annotated[
        str | None,
        typer.Option("--action", help="replay, discard, pause, resume or backfill."),
    ] = None,
    limit: LimitOption = 50,
    cursor: CursorOption = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Operations, newest first."""
    with checked():
        count = common.a_limit(limit)
        given = target(url, token, database_url)

    async def work(client: AdminClient) -> None:
        listing = await common.collect(
            client, "/operations", count, cursor, {"status": status, "action": action}
        )
        if as_json:
            common.print_json(listing)
            return
        stdout.print(
            table(
                f"{len(listing['items'])} operation(s)",
                ("id", "action", "status", "done", "changed", "rate/s", "by", "created", "reason"),
                (_row(op) for op in listing["items"]),
            )
        )
        common.more_hint(listing)

    run(given, work)


def _row(op: dict[str, Any]) -> tuple[Any, ...]:
    total = op.get("total")
    planned = common.counted(op["count"], op["capped"])
    return (
        op["id"],
        op["action"],
        op["status"],
        f"{op['done_count']:,}/{planned if total is None else f'{total:,}'}",
        op["changed_count"],
        f"{op['rate_per_second']:g}",
        op["actor"],
        when(op["created_at"]),
        clip(op.get("reason"), 40),
    )


@ops_app.command("show")
def ops_show(
    op_id: IdArg,
    follow_it: Annotated[
        bool,
        typer.Option(
            "--follow",
            help="Follow its progress until it ends (in local mode, carrying it on).",
            metavar="",
        ),
    ] = False,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """One operation: its selector, progress and error.

    With --follow, its progress until it ends: then exit 1 if it ended
    cancelled or failed.
    """
    with checked():
        wanted = common.an_id("ID", op_id)
        given = target(url, token, database_url)

    async def work(client: AdminClient) -> int:
        operation = await client.get(f"/operations/{wanted}")
        if follow_it and operation["status"] not in FINAL and operation["status"] != "planned":
            return ended(await follow(client, operation), as_json)
        if as_json:
            common.print_json(operation)
        else:
            _show(operation)
        return OK

    run(given, work)


def _show(op: dict[str, Any]) -> None:
    stdout.print(summary(op), markup=False)
    for label, value in (
        ("selector", json.dumps(op["selector"])),
        ("planned", f"{common.counted(op['count'], op['capped'])} (max {op['max_items']:,})"),
        ("rate", f"{op['rate_per_second']:g}/s"),
        ("by", f"{op['actor']} ({op['role']})"),
        ("reason", op.get("reason")),
        ("created", when(op["created_at"])),
        ("started", when(op.get("started_at"))),
        ("finished", when(op.get("finished_at"))),
        ("carried by", op.get("locked_by")),
    ):
        if value:
            stdout.print(f"  {label}: {value}", markup=False)


@ops_app.command("cancel")
def ops_cancel(
    op_id: IdArg,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why: kept in the audit trail.")
    ] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Stop it: no batch starts after this; what was applied stays."""
    with checked():
        wanted = common.an_id("ID", op_id)
        given = target(url, token, database_url)

    async def work(client: AdminClient) -> None:
        answer = await client.post(
            f"/operations/{wanted}/cancel", {"reason": reason} if reason else {}
        )
        if as_json:
            common.print_json(answer)
        else:
            stdout.print(summary(answer), markup=False)

    run(given, work)
