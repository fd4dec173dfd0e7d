"""``eventproc dlq ls|groups|show|replay|discard``: dead letters, one outage one line."""

import shlex
from typing import Annotated, Any

import typer

from eventproc.cli_admin import common
from eventproc.cli_admin.bulk import bulk
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
    counted,
    run,
    stdout,
    table,
    target,
    when,
)

dlq_app = typer.Typer(
    name="dlq",
    help="Dead letters: list, group by cause, show, replay or discard (one or in bulk).",
    no_args_is_help=True,
    rich_markup_mode=None,
)

Opt = typer.Option
Text = str | None
HandlerOpt = Annotated[Text, Opt("--handler", help="The subscription that gave up.")]
TypeOpt = Annotated[Text, Opt("--event-type", help="The event's exact type.")]
FingerprintOpt = Annotated[Text, Opt("--fingerprint", help="The error's fingerprint (dlq groups).")]
SinceOpt = Annotated[Text, Opt("--since", help="Dead-lettered at or after (ISO 8601).")]
UntilOpt = Annotated[Text, Opt("--until", help="Dead-lettered before (ISO 8601).")]


@dlq_app.command("ls")
def dlq_ls(
    handler: HandlerOpt = None,
    event_type: TypeOpt = None,
    fingerprint: FingerprintOpt = None,
    state: Annotated[str, Opt("--state", help="open, replayed or all.")] = "open",
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: LimitOption = 50,
    cursor: CursorOption = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Dead letters, newest first (open ones unless --state)."""
    with checked():
        params = _filters(handler, event_type, fingerprint, since, until)
        count = common.a_limit(limit)
        given = target(url, token, database_url)

    async def work(client: AdminClient) -> None:
        listing = await common.collect(
            client, "/dead-letters", count, cursor, {"state": state, **params}
        )
        if as_json:
            common.print_json(listing)
            return
        stdout.print(
            table(
                f"{len(listing['items'])} dead letter(s)",
                ("id", "handler", "type", "event", "at", "replayed", "error"),
                (
                    (
                        d["id"],
                        d.get("handler"),
                        d["event_type"],
                        d["event_id"],
                        when(d.get("created_at")),
                        when(d.get("replayed_at")),
                        clip(d.get("error_message")),
                    )
                    for d in listing["items"]
                ),
            )
        )
        common.more_hint(listing)

    run(given, work)


def _filters(
    handler: str | None,
    event_type: str | None,
    fingerprint: str | None,
    since: str | None,
    until: str | None,
) -> dict[str, Any]:
    found = {
        "handler": handler,
        "event_type": event_type,
        "fingerprint": fingerprint,
        "since": common.a_time("--since", since),
        "until": common.a_time("--until", until),
    }
    return {key: value for key, value in found.items() if value is not None}


@dlq_app.command("groups")
def dlq_groups(
    handler: HandlerOpt = None,
    event_type: TypeOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: Annotated[int, Opt("--limit", help="At most this many groups (1-500).")] = 50,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Open dead letters grouped by (handler, error fingerprint), biggest group first."""
    with checked():
        params = _filters(handler, event_type, None, since, until)
        given = target(url, token, database_url)

    async def work(client: AdminClient) -> None:
        found = await client.get("/dead-letters/groups", {**params, "limit": limit})
        if as_json:
            common.print_json(found)
            return
        _show_groups(found)

    run(given, work)


def _show_groups(found: dict[str, Any]) -> None:
    groups = found["items"]
    title = f"{len(groups)}{'+' if found.get('capped') else ''} group(s) of open dead letters"
    stdout.print(
        table(
            title,
            ("handler", "count", "first seen", "last seen", "fingerprint", "sample error"),
            (
                (
                    g.get("handler"),
                    counted(g["count"], g["count_capped"]),
                    when(g["first_seen"]),
                    when(g["last_seen"]),
                    clip(g.get("error_fingerprint"), 50),
                    clip(g["sample"]["error_message"], 60),
                )
                for g in groups
            ),
        )
    )
    if groups:
        top = groups[0]
        stdout.print(f"Preview a replay of the biggest group:\n  {replay_line(top)}", markup=False)


def replay_line(group: dict[str, Any]) -> str:
    words = ["eventproc", "dlq", "replay"]
    if group.get("handler"):
        words += ["--handler", group["handler"]]
    if group.get("error_fingerprint"):
        words += ["--fingerprint", group["error_fingerprint"]]
    return shlex.join(words)


@dlq_app.command("show")
def dlq_show(
    dead_letter_id: Annotated[str, typer.Argument(metavar="ID", help="The dead letter's id.")],
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """One dead letter: its error, traceback and the event's payload."""
    with checked():
        wanted = common.an_id("ID", dead_letter_id)
        given = target(url, token, database_url)

    async def work(client: AdminClient) -> None:
        letter = await client.get(f"/dead-letters/{wanted}")
        if as_json:
            common.print_json(letter)
            return
        for label, key in (
            ("dead letter", "id"),
            ("event", "event_id"),
            ("type", "event_type"),
            ("handler", "handler"),
            ("retries", "retry_count"),
            ("fingerprint", "error_fingerprint"),
            ("error", "error_message"),
        ):
            stdout.print(f"{label}: {letter.get(key)}", markup=False)
        stdout.print(f"at: {when(letter.get('created_at'))}", markup=False)
        if letter.get("replayed_at"):
            stdout.print(f"replayed: {when(letter['replayed_at'])}", markup=False)
        stdout.print(f"payload: {common.json_text(letter.get('payload'))}", markup=False)
        if letter.get("error_detail"):
            stdout.print("traceback:", markup=False)
            stdout.print(letter["error_detail"], markup=False)

    run(given, work)


IdsArg = Annotated[
    list[str] | None,
    typer.Argument(metavar="ID", help="Dead letter ids (or select with the filters)."),
]
ExecuteOpt = Annotated[
    bool, Opt("--execute", help="Do it (default: a dry run that changes nothing).", metavar="")
]
ReasonOpt = Annotated[Text, Opt("--reason", help="Why: kept in the audit trail (--execute).")]
RateOpt = Annotated[float | None, Opt("--rate", help="Items per second (default 10).")]
MaxOpt = Annotated[int | None, Opt("--max", help="At most this many items (default 1000).")]


@dlq_app.command("replay")
def dlq_replay(
    ids: IdsArg = None,
    handler: HandlerOpt = None,
    event_type: TypeOpt = None,
    fingerprint: FingerprintOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    execute: ExecuteOpt = False,
    reason: ReasonOpt = None,
    rate: RateOpt = None,
    max_items: MaxOpt = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Replay dead letters: one ID at once; several, or a filter, as a previewed bulk operation."""
    filters = (handler, event_type, fingerprint, since, until)
    _act(
        "replay",
        ids,
        filters,
        execute,
        reason,
        rate,
        max_items,
        as_json,
        (url, token, database_url),
    )


@dlq_app.command("discard")
def dlq_discard(
    ids: IdsArg = None,
    handler: HandlerOpt = None,
    event_type: TypeOpt = None,
    fingerprint: FingerprintOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    execute: ExecuteOpt = False,
    reason: ReasonOpt = None,
    rate: RateOpt = None,
    max_items: MaxOpt = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Discard dead letters (their events marked discarded): one ID at once, else in bulk."""
    filters = (handler, event_type, fingerprint, since, until)
    _act(
        "discard",
        ids,
        filters,
        execute,
        reason,
        rate,
        max_items,
        as_json,
        (url, token, database_url),
    )


def _act(
    action: str,
    ids: list[str] | None,
    filters: tuple[str | None, ...],
    execute: bool,
    reason: str | None,
    rate: float | None,
    max_items: int | None,
    as_json: bool,
    where: tuple[str | None, str | None, str | None],
) -> None:
    with checked():
        selector = _selector(ids or [], _filters(*filters))
        common.bulk_flags(execute, reason, rate, max_items)
        given = target(*where)

    async def work(client: AdminClient) -> int:
        if "dead_letter_ids" in selector and len(selector["dead_letter_ids"]) == 1:
            [one] = selector["dead_letter_ids"]
            answer = await client.post(f"/dead-letters/{one}/{action}", _reason(reason))
            if as_json:
                common.print_json(answer)
            else:
                stdout.print(f"{action}ed dead letter {one}", markup=False)
            return OK
        return await bulk(
            client,
            action,
            selector,
            execute=execute,
            reason=reason,
            rate=rate,
            max_items=max_items,
            as_json=as_json,
        )

    run(given, work)


def _selector(ids: list[str], filters: dict[str, Any]) -> dict[str, Any]:
    if ids and filters:
        raise common.usage("give dead letter ids or filters, not both")
    if ids:
        return {"dead_letter_ids": [common.an_id("ID", text) for text in ids]}
    if not filters:
        raise common.usage(
            "give dead letter ids, or select with --handler, --event-type, --fingerprint, "
            "--since, --until"
        )
    return {"dead_letters": filters}


def _reason(reason: str | None) -> dict[str, Any]:
    return {"reason": reason} if reason else {}
