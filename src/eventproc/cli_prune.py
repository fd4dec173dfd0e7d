"""``eventproc prune``: what retention would remove, and (with --execute) one pass of it.

A dry run by default, like the admin CLI's bulk commands: it reads only, and
shows per table and outcome how many rows would go and the oldest and newest
of them. ``--execute`` runs one pass of the pruner (the same lease as the
workers' chore: if a worker is pruning now, it says so and exits 1).
Exit codes as the other commands: 0 done, 1 failed, 2 bad usage or
configuration, 4 database unreachable.
"""

import asyncio
import json
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from eventproc.admin.pruner import Pruner
from eventproc.config import Settings, load_settings
from eventproc.errors import ConfigError, EventprocError, StoreUnavailable
from eventproc.store import open_store, retention, table_health
from eventproc.store.errors import translating

OK, FAILED, USAGE, UNREACHABLE = 0, 1, 2, 4


def prune(
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="postgresql://… or sqlite:///path (default: $DATABASE_URL, else ./eventproc.db).",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would go; write nothing (default).")
    ] = False,
    execute: Annotated[
        bool, typer.Option("--execute", help="Prune now: one pass, as a worker's chore does.")
    ] = False,
    vacuum: Annotated[
        bool,
        typer.Option(
            "--vacuum",
            help="SQLite, with --execute: make the file incremental first (one VACUUM, "
            "which rewrites the file under the write lock).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Show (or, with --execute, remove) the rows the RETAIN_* settings let go.

    Works whether PRUNE is on or off: the workers prune only with PRUNE=on.
    """
    if dry_run and execute:
        _fail("give --dry-run or --execute, not both", USAGE)
    if vacuum and not execute:
        _fail("--vacuum needs --execute", USAGE)
    try:
        settings = load_settings(**({"database_url": database_url} if database_url else {}))
    except ConfigError as exc:
        _fail(str(exc), USAGE)
    try:
        document = asyncio.run(_go(settings, execute=execute, vacuum=vacuum))
    except StoreUnavailable as exc:
        _fail(str(exc), UNREACHABLE)
    except (EventprocError, OSError) as exc:
        _fail(str(exc), FAILED)
    _print(document, as_json)
    if execute and document.get("pruned") is None:
        raise typer.Exit(FAILED)


async def _go(settings: Settings, *, execute: bool, vacuum: bool) -> dict[str, Any]:
    store = open_store(settings.effective_database_url, worker_name="eventproc-prune")
    policy = settings.retention_policy()
    try:
        async with translating():
            await store.open()
            planned = await retention.plan(store.driver, policy)
            document: dict[str, Any] = {
                "dry_run": not execute,
                "prune_setting": settings.prune,
                "archive": settings.prune_archive,
                "would_go": [_plain(asdict(item)) for item in planned],
            }
            if execute:
                if vacuum and store.backend == "sqlite":
                    await table_health.sqlite_convert(store.driver)
                pruner = Pruner(store.driver, policy, jsonl=settings.archive_path)
                document["pruned"] = await pruner.run_pass()
        return document
    finally:
        await store.close()


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in item.items()}


def _print(document: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(document, sort_keys=True))
        return
    console = Console(highlight=False)
    title = "Would go (dry run: nothing written)" if document["dry_run"] else "Due before this pass"
    table = Table(title=title)
    for column in ("table", "outcome", "rows", "oldest", "newest"):
        table.add_column(column, justify="right" if column == "rows" else "left")
    for item in document["would_go"]:
        table.add_row(
            item["table"],
            item["outcome"] or "",
            str(item["rows"]),
            item["oldest"] or "",
            item["newest"] or "",
        )
    console.print(table)
    if not document["prune_setting"]:
        console.print("PRUNE is off: workers do not prune; `eventproc prune --execute` does once.")
    if "pruned" in document:
        pruned = document["pruned"]
        if pruned is None:
            console.print("Another worker is pruning now (it holds the lease): nothing done.")
        else:
            console.print("Pruned: " + ", ".join(f"{k} {v}" for k, v in pruned.items()))


def _fail(message: str, code: int) -> Any:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
