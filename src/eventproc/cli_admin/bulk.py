"""Bulk commands through /admin/v1/operations: a dry run unless --execute, then its progress.

Without --execute the plan is printed (count, capped, sample) and nothing
changes (the planned operation only expires). With --execute (and a
--reason) the plan's token executes it at once, and its progress is
followed by polling GET /operations/{id} until it is done, cancelled or
failed. Ctrl-C stops following, not the operation.

In local mode no worker may be running beside the command: it carries
running operations itself while it follows (carry_operations' leases keep
that safe beside workers that do run).
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from eventproc.cli_admin.client import FAILED, OK, AdminClient
from eventproc.cli_admin.common import print_json, stderr, stdout, table

POLL_SECONDS = 0.5
UNCARRIED_HINT_SECONDS = 10.0  # running, yet no worker leased it: say so once
FINAL = frozenset({"done", "cancelled", "failed"})


async def bulk(
    client: AdminClient,
    action: str,
    selector: dict[str, Any],
    *,
    execute: bool,
    reason: str | None,
    rate: float | None,
    max_items: int | None,
    as_json: bool,
) -> int:
    """Plan the operation; print the dry run, or execute it and follow it to its end."""
    body: dict[str, Any] = {"action": action, "selector": selector}
    for key, value in (("rate_per_second", rate), ("max_items", max_items), ("reason", reason)):
        if value is not None:
            body[key] = value
    plan = await client.post("/operations", body)
    if not execute:
        if as_json:
            print_json(plan)
        else:
            _show_plan(plan)
        return OK
    if plan["count"] == 0:
        if as_json:
            print_json(plan)
        else:
            stdout.print(f"Nothing matches: nothing to {action}.", markup=False)
        return OK
    started = await client.post(
        f"/operations/{plan['id']}/execute", {"plan_token": plan["plan_token"], "reason": reason}
    )
    stderr.print(
        f"Operation {started['id']}: {action} of {started.get('total', plan['count'])} item(s) "
        f"at {started['rate_per_second']:g}/s",
        markup=False,
    )
    return ended(await follow(client, started), as_json)


def _show_plan(plan: dict[str, Any]) -> None:
    more = f" (more match: only the first {plan['max_items']:,} would be taken)"
    stdout.print(
        f"Dry run: {plan['action']} would take {plan['count']:,} item(s)"
        f"{more if plan['capped'] else ''}, at {plan['rate_per_second']:g}/s.",
        markup=False,
    )
    sample = plan.get("sample") or []
    if sample:
        stdout.print(
            table(
                "sample",
                ("event", "type", "handler", "dead letter"),
                (
                    (
                        s.get("event_id"),
                        s.get("event_type"),
                        s.get("handler"),
                        s.get("dead_letter_id"),
                    )
                    for s in sample
                ),
            )
        )
    stdout.print(
        "Nothing changed. To do it, run the same command with --execute --reason TEXT.",
        markup=False,
    )


def ended(operation: dict[str, Any], as_json: bool) -> int:
    """Print how an operation ended; 0 when done, 1 when cancelled or failed."""
    if as_json:
        print_json(operation)
    else:
        stdout.print(summary(operation), markup=False)
    return OK if operation["status"] == "done" else FAILED


def summary(operation: dict[str, Any]) -> str:
    total = operation.get("total")
    line = (
        f"Operation {operation['id']} ({operation['action']}): {operation['status']}, "
        f"{operation['done_count']:,} of {'?' if total is None else f'{total:,}'} item(s) done, "
        f"{operation['changed_count']:,} changed"
    )
    if operation.get("error"):
        line += f"; error: {operation['error']}"
    return line


async def follow(client: AdminClient, operation: dict[str, Any]) -> dict[str, Any]:
    """Poll the operation, with a progress bar on stderr, until it is done, cancelled or failed."""
    op_id = operation["id"]
    try:
        async with carrying(client):
            return await _poll(client, operation)
    except asyncio.CancelledError:  # Ctrl-C: the operation goes on
        stderr.print(stopped_hint(op_id, client.local), markup=False)
        raise


async def _poll(client: AdminClient, operation: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    started, hinted = loop.time(), client.local
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("changed {task.fields[changed]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=stderr) as bar:
        task = bar.add_task(operation["action"], total=operation.get("total"), changed=0)
        current = operation
        while True:
            bar.update(
                task,
                total=current.get("total"),
                completed=current["done_count"],
                changed=current["changed_count"],
            )
            if current["status"] in FINAL:
                return current
            idle = loop.time() - started > UNCARRIED_HINT_SECONDS
            if not hinted and idle and current.get("locked_by") is None:
                bar.console.print("No worker has taken it up yet: is one running?")
                hinted = True
            await asyncio.sleep(POLL_SECONDS)
            current = await client.get(f"/operations/{current['id']}")


def stopped_hint(op_id: str, local: bool) -> str:
    lines = [
        f"Stopped following; operation {op_id} goes on.",
        f"  cancel it:        eventproc ops cancel {op_id}",
        f"  follow it again:  eventproc ops show {op_id} --follow",
    ]
    if local:
        lines.append("  (no worker may be carrying it now: following it again carries it on)")
    return "\n".join(lines)


@contextlib.asynccontextmanager
async def carrying(client: AdminClient) -> AsyncIterator[None]:
    """In local mode, carry running operations here while the block runs."""
    if client.runtime is None:
        yield
        return
    from eventproc.admin.operations import carry_operations

    carrier = asyncio.create_task(carry_operations(client.runtime), name="eventproc-cli-carrier")
    try:
        yield
    finally:
        carrier.cancel()
        await asyncio.gather(carrier, return_exceptions=True)
