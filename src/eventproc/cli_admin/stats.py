"""``eventproc stats``: one screen: handlers, dead letters, blocked aggregates, workers."""

import asyncio
from typing import Any

from eventproc.cli_admin import common
from eventproc.cli_admin.client import AdminClient
from eventproc.cli_admin.common import (
    DatabaseOption,
    JsonOption,
    TokenOption,
    UrlOption,
    age,
    checked,
    clip,
    counted,
    run,
    stdout,
    table,
    target,
    when,
)
from eventproc.cli_admin.handlers import MOST_HANDLERS, handlers_table

TOP_GROUPS = 5
TOP_BLOCKED = 5


def stats(
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Handlers' figures, dead letters' groups, blocked aggregates and workers, at a glance."""
    with checked():
        given = target(url, token, database_url)

    async def work(client: AdminClient) -> None:
        figures = await gather(client)
        if as_json:
            common.print_json(figures)
        else:
            show(figures)

    run(given, work)


async def gather(client: AdminClient) -> dict[str, Any]:
    """The four reads at once, as one document."""
    handlers, groups, blocked, workers = await asyncio.gather(
        common.collect(client, "/handlers", MOST_HANDLERS),
        client.get("/dead-letters/groups", {"limit": 500}),
        client.get("/aggregates/blocked", {"limit": TOP_BLOCKED}),
        common.collect(client, "/workers", 500),
    )
    found = groups["items"]
    return {
        "handlers": handlers["items"],
        "dead_letters": {
            "groups": len(found),
            "groups_capped": bool(groups.get("capped")),
            "letters": sum(group["count"] for group in found),
            "letters_capped": any(group["count_capped"] for group in found),
            "top_groups": found[:TOP_GROUPS],
        },
        "blocked_aggregates": blocked,
        "workers": workers["items"],
    }


def show(figures: dict[str, Any]) -> None:
    stdout.print(handlers_table(figures["handlers"]))
    letters = figures["dead_letters"]
    stdout.print(
        f"Dead letters (open): {counted(letters['letters'], letters['letters_capped'])} "
        f"in {counted(letters['groups'], letters['groups_capped'])} group(s)",
        markup=False,
    )
    if letters["top_groups"]:
        stdout.print(
            table(
                None,
                ("handler", "count", "last seen", "sample error"),
                (
                    (
                        g.get("handler"),
                        counted(g["count"], g["count_capped"]),
                        when(g["last_seen"]),
                        clip(g["sample"]["error_message"], 70),
                    )
                    for g in letters["top_groups"]
                ),
            )
        )
    _show_blocked(figures["blocked_aggregates"])
    _show_workers(figures["workers"])


def _show_blocked(blocked: dict[str, Any]) -> None:
    if blocked["ordering"] != "aggregate":
        stdout.print("Blocked aggregates: none (ORDERING=none: nothing waits)", markup=False)
        return
    line = f"Blocked aggregates: {counted(blocked['count'], blocked['capped'])}"
    if blocked["count"]:
        line += f", the oldest waiting {age(blocked['oldest_wait_seconds'])}"
    stdout.print(line, markup=False)
    if blocked["items"]:
        stdout.print(
            table(
                None,
                ("aggregate", "handler", "head event", "state", "waiting"),
                (
                    (b["aggregate_id"], b.get("handler"), b["event_id"], b["state"], b["waiting"])
                    for b in blocked["items"]
                ),
            )
        )


def _show_workers(workers: list[dict[str, Any]]) -> None:
    alive = sum(1 for worker in workers if worker["alive"])
    stdout.print(f"Workers seen in the last 10 minutes: {len(workers)} ({alive} alive)")
    if workers:
        stdout.print(
            table(
                None,
                ("id", "host", "pid", "version", "alive", "started", "last seen", "last claim"),
                (
                    (
                        w["id"],
                        w["host"],
                        w["pid"],
                        w["version"],
                        "yes" if w["alive"] else "no",
                        when(w["started_at"]),
                        when(w["last_seen_at"]),
                        when(w.get("last_claim_at")),
                    )
                    for w in workers
                ),
            )
        )
