"""What every admin command shares: where it goes, how it ends, how it prints.

A command's work is an async function of an :class:`AdminClient`; ``run``
opens the client, runs it, and turns an :class:`AdminError` into its one
line on stderr and its exit code.
"""

import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from eventproc.cli_admin.client import USAGE, AdminClient, AdminError, Target, open_client

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="EVENTPROC_URL",
        help="The service, e.g. http://127.0.0.1:8080 (default: $EVENTPROC_URL; "
        "without one, the database itself).",
        show_default=False,
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="EVENTPROC_TOKEN",
        help="Bearer token for --url (default: $EVENTPROC_TOKEN).",
        show_default=False,
    ),
]
DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="Work on this database in-process instead of a service "
        "(default: $DATABASE_URL, else ./eventproc.db).",
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the API's JSON (one document).", metavar="")
]
LimitOption = Annotated[
    int, typer.Option("--limit", help="At most this many items (pages of up to 500).")
]
CursorOption = Annotated[
    str | None,
    typer.Option("--cursor", help="Start after this next_cursor of an earlier listing."),
]

Work = Callable[[AdminClient], Awaitable[int | None]]

stdout = Console(width=None if sys.stdout.isatty() else 160, highlight=False)
stderr = Console(stderr=True, highlight=False)


def target(url: str | None, token: str | None, database_url: str | None) -> Target:
    """The Target of the flags; a bad combination is a usage error (exit 2)."""
    if url is not None and database_url is not None:
        raise AdminError("give --url (or EVENTPROC_URL) or --database-url, not both", USAGE)
    if url is not None and not url.startswith(("http://", "https://")):
        raise AdminError(f"--url: must start with http:// or https://, got {url!r}", USAGE)
    return Target(url=url, token=token, database_url=database_url)


@contextlib.contextmanager
def checked() -> Iterator[None]:
    """Flags checked before any call: a bad one ends the command here, in one line."""
    try:
        yield
    except AdminError as exc:
        fail(exc)


def run(where: Target, work: Work) -> NoReturn:
    """Run ``work`` against the target and exit with its code (130 on Ctrl-C)."""
    try:
        code = asyncio.run(_session(where, work))
    except AdminError as exc:
        fail(exc)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    raise typer.Exit(code or 0)


async def _session(given: Target, work: Work) -> int | None:
    async with open_client(given) as client:
        return await work(client)


def fail(exc: AdminError) -> NoReturn:
    typer.echo(f"error: {exc.message}", err=True)
    raise typer.Exit(exc.code)


def usage(message: str) -> AdminError:
    return AdminError(message, USAGE)


def print_json(document: Any) -> None:
    indent = 2 if sys.stdout.isatty() else None
    typer.echo(json.dumps(document, indent=indent, default=str))


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    shown = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        shown.add_column(column, overflow="fold")
    for row in rows:
        shown.add_row(*("" if cell is None else str(cell) for cell in row))
    return shown


def when(value: Any) -> str:
    """An API time as ``2026-12-01 10:00:00`` (UTC), or empty."""
    if not value:
        return ""
    text = str(value).replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        return str(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def counted(count: int, capped: bool) -> str:
    return f"{count:,}{'+' if capped else ''}"


def clip(text: Any, most: int = 60) -> str:
    if text is None:
        return ""
    line = " ".join(str(text).split())
    return line if len(line) <= most else line[: most - 1] + "…"


def age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def an_id(flag: str, text: str) -> str:
    """A UUID argument, checked here so that a typo is a usage error (2), not a 422."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise usage(f"{flag}: not a UUID: {text!r}") from None


def a_time(flag: str, text: str | None) -> str | None:
    """An ISO 8601 time flag as the API wants it (with a zone; a naive one is UTC)."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise usage(f"{flag}: not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


def a_limit(limit: int) -> int:
    if limit < 1:
        raise usage(f"--limit: must be >= 1, got {limit}")
    return limit


async def collect(
    client: AdminClient,
    resource: str,
    limit: int,
    cursor: str | None = None,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Up to ``limit`` items of a keyset list, page after page: one {items, next_cursor}."""
    items: list[Any] = []
    while True:
        size = min(limit - len(items), 500)
        page = await client.get(resource, {**(params or {}), "limit": size, "cursor": cursor})
        items.extend(page["items"])
        cursor = page.get("next_cursor")
        if cursor is None or len(items) >= limit:
            return {"items": items, "next_cursor": cursor}


def more_hint(listing: dict[str, Any]) -> None:
    if listing.get("next_cursor"):
        typer.echo(f"more: add --cursor {listing['next_cursor']}", err=True)


def bulk_flags(execute: bool, reason: str | None, rate: float | None, most: int | None) -> None:
    """--execute needs --reason; --rate and --max are positive."""
    if execute and not reason:
        raise usage("--execute needs --reason (kept in the audit trail)")
    if rate is not None and not rate > 0:
        raise usage(f"--rate: must be > 0, got {rate:g}")
    if most is not None and most < 1:
        raise usage(f"--max: must be >= 1, got {most}")


def json_text(document: Any) -> str:
    return json.dumps(document, indent=2, default=str)
