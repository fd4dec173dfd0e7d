"""The admin CLI (eventproc events|dlq|replay|handlers|ops|stats) as real subprocesses.

Against a real server (uvicorn in the test's loop, tokens of each role; the
CLI runs in a subprocess started with asyncio so the loop keeps serving), and
in local mode on the database itself (a SQLite file, PostgreSQL).
"""

import asyncio
import getpass
import json
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventproc import NewEvent
from eventproc.admin import operations
from eventproc.admin.operations import carry_operations
from eventproc.config import Settings
from eventproc.engine import Processor
from eventproc.http import create_app
from eventproc.runtime import Runtime
from eventproc.store.admin import Audit
from support.admin_api import TOKENS, Api, admin_registry, publish
from support.served import serving

# Each test starts several CLI processes (about 2 s of CPU each): more than the default 60 s
# on a loaded machine.
pytestmark = pytest.mark.timeout(300)

TESTS = Path(__file__).resolve().parents[1]
HANDLERS_MODULE = "from support.admin_api import admin_registry\n\nregistry = admin_registry()\n"
SCRUBBED = (
    "DATABASE_URL", "HANDLERS", "EVENTPROC_URL", "EVENTPROC_TOKEN", "API_TOKEN", "API_TOKENS",
    "API_TOKENS_FILE", "REDACT_PATHS", "LOG_LEVEL", "LOG_FORMAT", "PORT", "WORKER_ID",
)  # fmt: skip
FINGERPRINT = "order <n> was refused"
ME = f"cli:{getpass.getuser()}@{socket.gethostname()}"


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, self.err
        return json.loads(self.out)


class Cli:
    """``python -m eventproc ...`` in a subprocess; the test's loop goes on meanwhile."""

    def __init__(self, folder: Path) -> None:
        env = {key: value for key, value in os.environ.items() if key not in SCRUBBED}
        env.update(
            PYTHONPATH=os.pathsep.join([str(folder), str(TESTS)]), HANDLERS="cli_admin_handlers"
        )
        self.env = env

    async def start(self, *args: str, **extra: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "eventproc",
            *args,
            env={**self.env, **extra},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

    async def __call__(self, *args: str, **extra: str) -> Ran:
        process = await self.start(*args, **extra)
        async with asyncio.timeout(120):
            out, err = await process.communicate()
        assert process.returncode is not None
        return Ran(process.returncode, out.decode(), err.decode())


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    (tmp_path / "cli_admin_handlers.py").write_text(HANDLERS_MODULE)
    return Cli(tmp_path)


@dataclass
class Served:
    api: Api
    viewer: tuple[str, ...]  # --url URL --token TOKEN of each role
    operator: tuple[str, ...]


@pytest.fixture
async def served(store_url: str) -> AsyncIterator[Served]:
    settings = Settings(
        database_url=store_url,
        poll_interval_ms=60_000,
        max_retries=2,
        retry_base_ms=0,
        api_tokens=",".join(f"{role}:{token}" for role, token in TOKENS.items()),
    )
    runtime = Runtime(settings, registry=admin_registry())
    await runtime.prepare(attempts=1)
    try:
        async with serving(create_app(runtime)) as url:

            def client(token: str | None) -> httpx.AsyncClient:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                return httpx.AsyncClient(base_url=url, headers=headers, timeout=10)

            async with (
                client(TOKENS["viewer"]) as viewer,
                client(TOKENS["operator"]) as operator,
                client(TOKENS["admin"]) as admin,
                client(None) as anonymous,
            ):
                api = Api(runtime, url, viewer, operator, admin, anonymous)
                yield Served(
                    api,
                    ("--url", url, "--token", TOKENS["viewer"]),
                    ("--url", url, "--token", TOKENS["operator"]),
                )
    finally:
        await runtime.store.close()


async def drain(runtime: Runtime) -> None:
    """Handle everything due, as Api.drain does (a Processor of its own runs to idle once)."""
    processor = Processor(
        runtime.store,
        runtime.registry,
        runtime.settings.processor_config(),
        worker_id=runtime.worker_id,
    )
    await processor.run(until_idle=True)


async def seed(runtime: Runtime) -> dict[str, Any]:
    """One t.ok event, three t.fan whose fan_b dead-letters (one group), one t.fan that passes."""
    ok = NewEvent("t.ok", {"n": 1})
    failing = [NewEvent("t.fan", {"fail": True, "order": n}) for n in (1, 2, 3)]
    passing = NewEvent("t.fan", {"order": 4})
    await publish(runtime, ok, *failing, passing)
    await drain(runtime)
    return {
        "ok": str(ok.id),
        "failing": [str(event.id) for event in failing],
        "passing": str(passing.id),
        "all": {str(event.id) for event in (ok, *failing, passing)},
    }


def one_line(ran: Ran) -> str:
    """The error line: exactly one line on stderr, starting with error:."""
    lines = ran.err.strip().splitlines()
    assert len(lines) == 1, ran.err
    assert lines[0].startswith("error: "), ran.err
    return lines[0]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- against a server ----------------------------------------------------------------


# The server's backend is the HTTP tests' concern: one is enough here.
@pytest.mark.parametrize("backend", ["postgres"])
async def test_reads_against_a_server(served: Served, cli: Cli) -> None:
    ids = await seed(served.api.runtime)
    v = served.viewer
    (
        listed,
        oks,
        first,
        letters,
        groups,
        groups_text,
        handlers,
        stats,
        ops,
        table,
    ) = await asyncio.gather(
        cli("events", "ls", "--json", *v),
        cli("events", "ls", "--type", "t.ok", "--json", *v),
        cli("events", "ls", "--limit", "2", "--json", *v),
        cli("dlq", "ls", "--json", *v),
        cli("dlq", "groups", "--json", *v),
        cli("dlq", "groups", *v),
        cli("handlers", "ls", "--json", *v),
        cli("stats", "--json", *v),
        cli("ops", "ls", "--json", *v),
        cli("events", "ls", "--where", "payload.order=2", *v),
    )
    assert {item["id"] for item in listed.json()["items"]} == ids["all"]
    assert [item["id"] for item in oks.json()["items"]] == [ids["ok"]]
    page = first.json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = (await cli("events", "ls", "--cursor", page["next_cursor"], "--json", *v)).json()
    assert {i["id"] for i in page["items"] + rest["items"]} == ids["all"]
    found = letters.json()["items"]
    assert {d["event_id"] for d in found} == set(ids["failing"])
    [group] = groups.json()["items"]
    assert (group["handler"], group["error_fingerprint"], group["count"]) == (
        "fan_b",
        FINGERPRINT,
        3,
    )
    assert f"eventproc dlq replay --handler fan_b --fingerprint '{FINGERPRINT}'" in groups_text.out
    names = [item["name"] for item in handlers.json()["items"]]
    assert names == ["fan_a", "fan_b", "flaky", "ok"]
    figures = stats.json()
    assert figures["dead_letters"]["letters"] == 3 and figures["dead_letters"]["groups"] == 1
    assert [h["name"] for h in figures["handlers"]] == names
    assert figures["blocked_aggregates"]["count"] == 0
    assert ops.json() == {"items": [], "next_cursor": None}
    assert table.code == 0 and ids["failing"][1] in table.out and ids["failing"][0] not in table.out
    await _shows(served, cli, ids, found[0])


async def _shows(served: Served, cli: Cli, ids: dict[str, Any], letter: dict[str, Any]) -> None:
    v = served.viewer
    event_id = letter["event_id"]
    shown, text, dead = await asyncio.gather(
        cli("events", "show", event_id, "--json", *v),
        cli("events", "show", event_id, *v),
        cli("dlq", "show", letter["id"], "--json", *v),
    )
    event = shown.json()
    assert event["id"] == event_id
    assert {d["handler"]: d["state"] for d in event["deliveries"]} == {
        "fan_a": "succeeded",
        "fan_b": "dead_lettered",
    }
    assert [a["outcome"] for a in event["attempt_log"]] == ["dead_lettered"]
    assert text.code == 0 and "traceback of attempt 1 (fan_b)" in text.out
    assert "PermanentError" in text.out
    detail = dead.json()
    assert detail["event_id"] == event_id and "PermanentError" in detail["error_detail"]


# The CLI's own refusals and the API's statuses do not depend on the backend: SQLite only.
@pytest.mark.parametrize("backend", ["sqlite"])
async def test_exit_codes_and_one_line_errors(served: Served, cli: Cli) -> None:
    ids = await seed(served.api.runtime)
    v, o, url = served.viewer, served.operator, served.api.url
    letters = (await served.api.viewer.get("/admin/v1/dead-letters")).json()["items"]
    unknown = str(uuid.uuid4())
    port = closed_port()
    runs = await asyncio.gather(
        cli("dlq", "replay", letters[0]["id"], "--reason", "r", *v),  # 0: a viewer mutating
        cli("handlers", "pause", "fan_b", "--reason", "r", *v),
        cli("dlq", "replay", "--handler", "fan_b", *v),  # a viewer's dry run: a plan is a change
        cli("events", "ls", "--url", url),  # 3: no token
        cli("events", "ls", "--state", "bogus", *v),  # the API's 422
        cli("events", "show", unknown, *v),  # 5: not found
        cli("dlq", "show", unknown, *v),
        cli("ops", "show", unknown, *v),
        cli("handlers", "pause", "nope", "--reason", "r", *o),
        cli("events", "ls", "--limit", "0", *v),  # 9: bad usage
        cli("events", "show", "not-a-uuid", *v),
        cli("dlq", "replay", *o),
        cli("dlq", "replay", "--handler", "fan_b", "--execute", *o),
        cli("events", "ls", "--bogus", *v),
        cli("events", "ls", "--since", "yesterday", *v),
        cli("events", "ls", "--url", "ftp://x"),
        cli("events", "ls", "--url", url, "--database-url", "sqlite:///x.db"),
        cli("events", "ls", "--url", f"http://127.0.0.1:{port}"),  # 17: unreachable
    )
    codes = [ran.code for ran in runs]
    assert codes == [1, 1, 1, 1, 1, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2, 4], [r.err for r in runs]
    assert one_line(runs[0]) == (
        "error: This needs the operator role; the token given is viewer (HTTP 403)"
    )
    assert one_line(runs[3]) == "error: Missing or unknown bearer token (HTTP 401)"
    assert one_line(runs[4]).endswith("(HTTP 422)") and "state" in runs[4].err
    assert one_line(runs[5]) == "error: Event not found (HTTP 404)"
    assert one_line(runs[8]) == "error: No subscription named 'nope' is registered (HTTP 404)"
    for ran in (*runs[9:13], *runs[14:17]):
        one_line(ran)  # ours: one line each (click's own usage error for --bogus)
    assert one_line(runs[12]) == "error: --execute needs --reason (kept in the audit trail)"
    assert one_line(runs[17]).startswith(
        f"error: cannot reach eventproc at http://127.0.0.1:{port}"
    )
    # Nothing changed: the letter is open, fan_b not paused, no operation planned.
    still = (await served.api.viewer.get("/admin/v1/dead-letters")).json()["items"]
    assert len(still) == 3
    assert (await served.api.viewer.get("/admin/v1/handlers/fan_b")).json()["paused"] is None
    assert (await served.api.viewer.get("/admin/v1/operations")).json()["items"] == []
    again = await cli("replay", ids["passing"], *o), await cli("replay", ids["passing"], *o)
    assert [ran.code for ran in again] == [0, 1]  # the second: still pending (409)
    assert one_line(again[1]).endswith("(HTTP 409)")


# The server's backend is the HTTP tests' concern: one is enough here.
@pytest.mark.parametrize("backend", ["postgres"])
async def test_bulk_replay_previewed_then_executed_at_a_rate(served: Served, cli: Cli) -> None:
    await seed(served.api.runtime)
    o, api = served.operator, served.api
    group = ("dlq", "replay", "--handler", "fan_b", "--fingerprint", FINGERPRINT)
    letters = [d["id"] for d in (await api.viewer.get("/admin/v1/dead-letters")).json()["items"]]
    preview, text, two = await asyncio.gather(
        cli(*group, "--json", *o),
        cli(*group, *o),
        cli("dlq", "replay", *letters[:2], "--max", "1", "--json", *o),  # several ids: a plan
    )
    plan = preview.json()
    assert (plan["status"], plan["count"], plan["capped"]) == ("planned", 3, False)
    assert {s["handler"] for s in plan["sample"]} == {"fan_b"} and len(plan["sample"]) == 3
    assert (two.json()["count"], two.json()["capped"]) == (1, True)
    assert two.json()["selector"] == {"dead_letter_ids": letters[:2]}
    assert "Dry run: replay would take 3 item(s)" in text.out and "Nothing changed" in text.out
    assert len((await api.viewer.get("/admin/v1/dead-letters")).json()["items"]) == 3
    carrier = asyncio.create_task(carry_operations(api.runtime))  # the server's workers
    try:
        run = await cli(*group, "--execute", "--reason", "downstream is back", "--rate", "2", *o)
        done = await cli(*group, "--execute", "--reason", "again", "--rate", "2", "--json", *o)
    finally:
        carrier.cancel()
        await asyncio.gather(carrier, return_exceptions=True)
    assert run.code == 0, run.err
    assert "done, 3 of 3 item(s) done, 3 changed" in run.out
    op_id = run.err.split("Operation ", 1)[1].split(":", 1)[0]
    assert done.json()["count"] == 0  # nothing left open: nothing to do
    assert (await api.viewer.get("/admin/v1/dead-letters")).json()["items"] == []
    audit = (await api.viewer.get("/admin/v1/audit", params={"action": "operation.execute"})).json()
    [row] = audit["items"]
    assert (row["operation_id"], row["reason"], row["role"]) == (
        op_id,
        "downstream is back",
        "operator",
    )
    assert row["counts"] == {"total": 3}
    shown = (await cli("ops", "show", op_id, "--json", *served.viewer)).json()
    assert (shown["status"], shown["changed_count"], shown["rate_per_second"]) == ("done", 3, 2.0)


# The server's backend is the HTTP tests' concern: one is enough here.
@pytest.mark.parametrize("backend", ["postgres"])
async def test_ctrl_c_stops_following_not_the_operation(served: Served, cli: Cli) -> None:
    await seed(served.api.runtime)
    o, api = served.operator, served.api
    process = await cli.start(
        "dlq", "replay", "--handler", "fan_b", "--execute", "--reason", "r", *o
    )
    assert process.stderr is not None
    async with asyncio.timeout(60):
        line = (await process.stderr.readline()).decode()  # nobody carries it: it stays running
    assert line.startswith("Operation "), line
    op_id = line.split()[1].rstrip(":")
    process.send_signal(signal.SIGINT)
    async with asyncio.timeout(60):
        _, rest = await process.communicate()
    assert process.returncode == 130
    assert f"eventproc ops cancel {op_id}" in rest.decode()
    assert (await api.viewer.get(f"/admin/v1/operations/{op_id}")).json()["status"] == "running"
    cancelled = await cli("ops", "cancel", op_id, "--reason", "wrong group", "--json", *o)
    assert cancelled.json()["status"] == "cancelled"
    again = await cli("ops", "cancel", op_id, *o)
    assert again.code == 1 and one_line(again).endswith("(HTTP 409)")


# The server's backend is the HTTP tests' concern: one is enough here.
@pytest.mark.parametrize("backend", ["postgres"])
async def test_single_actions_against_a_server(served: Served, cli: Cli) -> None:
    ids = await seed(served.api.runtime)
    o, api = served.operator, served.api
    letters = {
        d["event_id"]: d["id"]
        for d in (await api.viewer.get("/admin/v1/dead-letters")).json()["items"]
    }
    first, second, third = ids["failing"]
    paused, replayed, discarded, letter = await asyncio.gather(
        cli("handlers", "pause", "fan_b", "--reason", "downstream outage", "--json", *o),
        cli("replay", first, "--handler", "fan_b", "--reason", "fixed", "--json", *o),
        cli("dlq", "discard", letters[second], "--reason", "test order", "--json", *o),
        cli("dlq", "replay", letters[third], "--json", *o),
    )
    assert paused.json() == {"handler": "fan_b", "paused": True, "changed": True}
    assert replayed.json() == {"event_id": first, "handler": "fan_b", "replayed": True}
    assert discarded.json()["discarded"] is True
    assert letter.json()["replayed"] is True
    listed = (await cli("handlers", "ls", "--json", *served.viewer)).json()["items"]
    [fan_b] = [item for item in listed if item["name"] == "fan_b"]
    assert fan_b["paused"]["reason"] == "downstream outage"
    resumed = await cli("handlers", "resume", "fan_b", *o)
    assert resumed.code == 0 and resumed.out.strip() == "fan_b: running"
    gone = await cli("dlq", "show", letters[second], *served.viewer)
    assert gone.code == 3
    audit = (await api.viewer.get("/admin/v1/audit", params={"limit": 50})).json()["items"]
    actions = {row["action"]: row for row in audit}
    assert {"handler.pause", "handler.resume", "delivery.replay", "dead_letter.discard"} <= set(
        actions
    )
    assert actions["handler.pause"]["reason"] == "downstream outage"
    assert actions["dead_letter.discard"]["role"] == "operator"


# -- local mode: the database itself ---------------------------------------------------


@pytest.fixture
async def local(store_url: str) -> AsyncIterator[Runtime]:
    """The seeded database, read back by the test through a runtime of its own."""
    runtime = Runtime(Settings(database_url=store_url, max_retries=2), registry=admin_registry())
    await runtime.prepare(attempts=1)
    try:
        yield runtime
    finally:
        await runtime.store.close()


async def test_local_mode_every_command(local: Runtime, store_url: str, cli: Cli) -> None:
    ids = await seed(local)
    d = ("--database-url", store_url)
    events, show, groups, handlers, stats, unknown, discard = await asyncio.gather(
        cli("events", "ls", "--json", *d),
        cli("events", "show", ids["failing"][0], "--json", *d),
        cli("dlq", "groups", "--json", *d),
        cli("handlers", "ls", "--json", *d),
        cli("stats", *d),
        cli("events", "show", str(uuid.uuid4()), *d),
        cli("dlq", "discard", "--handler", "fan_b", "--fingerprint", FINGERPRINT, *d),
    )
    assert {item["id"] for item in events.json()["items"]} == ids["all"]
    assert discard.code == 0 and "Dry run: discard would take 3 item(s)" in discard.out
    assert show.json()["attempt_log"][0]["outcome"] == "dead_lettered"
    assert groups.json()["items"][0]["count"] == 3
    assert len(handlers.json()["items"]) == 4
    assert stats.code == 0 and "Dead letters (open): 3 in 1 group(s)" in stats.out
    ops = await cli("ops", "ls", *d)  # the discard's dry run, planned
    assert ops.code == 0 and "1 operation(s)" in ops.out and "planned" in ops.out
    assert unknown.code == 3 and one_line(unknown) == "error: Event not found (HTTP 404)"
    # Tokens in the settings do not lock out who holds the database.
    paused = await cli(
        "handlers", "pause", "fan_b", "--reason", "outage", *d, API_TOKENS="viewer:x"
    )
    assert paused.code == 0 and paused.out.strip() == "fan_b: paused", paused.err
    replayed = await cli("replay", ids["failing"][0], "--handler", "fan_b", *d)
    assert replayed.code == 0, replayed.err
    entries = await local.store.admin.audit_page(limit=10)
    assert {(e.action, e.actor, e.role) for e in entries} == {
        ("operation.plan", ME, "admin"),
        ("handler.pause", ME, "admin"),
        ("delivery.replay", ME, "admin"),
    }


async def test_local_bulk_replay_is_carried_by_the_cli(
    local: Runtime, store_url: str, cli: Cli
) -> None:
    await seed(local)
    d = ("--database-url", store_url)
    preview = (await cli("dlq", "replay", "--handler", "fan_b", "--json", *d)).json()
    assert (preview["count"], preview["status"]) == (3, "planned")
    run = await cli(
        "dlq",
        "replay",
        "--handler",
        "fan_b",
        "--execute",
        "--reason",
        "back",
        "--rate",
        "5",
        "--json",
        *d,
    )
    final = run.json()  # no worker runs: the CLI carried it while following
    assert (final["status"], final["done_count"], final["changed_count"]) == ("done", 3, 3)
    assert final["actor"] == ME and final["locked_by"] is None
    entries = await local.store.admin.audit_page(limit=10, action="operation.execute")
    assert [(str(e.operation_id), e.reason, e.actor) for e in entries] == [
        (final["id"], "back", ME)
    ]
    listed = (await cli("ops", "ls", "--status", "done", "--json", *d)).json()["items"]
    assert [op["id"] for op in listed] == [final["id"]]


async def test_local_follow_carries_a_running_operation_on(
    local: Runtime, store_url: str, cli: Cli
) -> None:
    """An operation started elsewhere with no worker running: following it here finishes it."""
    await seed(local)
    who = Audit(actor="someone", role="operator", reason="started elsewhere")
    selector = {"dead_letters": {"handler": "fan_b"}}
    planned = await operations.plan(
        local, "replay", selector, max_items=100, rate_per_second=50, who=who
    )
    started = await operations.execute(local, planned.operation.id, planned.token, who)
    assert started.status == "running"
    d = ("--database-url", store_url)
    before = (await cli("ops", "show", str(started.id), "--json", *d)).json()
    assert (before["status"], before["done_count"]) == ("running", 0)  # without --follow: a look
    followed = await cli("ops", "show", str(started.id), "--follow", "--json", *d)
    assert (followed.json()["status"], followed.json()["changed_count"]) == ("done", 3)
    discard = (await cli("dlq", "discard", "--handler", "fan_b", "--json", *d)).json()
    assert discard["count"] == 0  # replayed: none open to discard


async def test_local_mode_unreachable_databases(tmp_path: Path, cli: Cli) -> None:
    missing = tmp_path / "none.db"
    port = closed_port()
    no_file, no_server = await asyncio.gather(
        cli("events", "ls", "--database-url", f"sqlite:///{missing}"),
        cli("stats", "--database-url", f"postgresql://postgres@127.0.0.1:{port}/eventproc"),
    )
    assert no_file.code == 4 and one_line(no_file).startswith(f"error: no database at {missing}")
    assert not missing.exists()  # not created by looking
    assert no_server.code == 4
    assert one_line(no_server).startswith("error: cannot reach the database postgresql://")
