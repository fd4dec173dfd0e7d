"""`eventproc route test`, and a bad subscription at start-up, run as real subprocesses."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]

SUBSCRIPTIONS = """
from eventproc import Event, HandlerContext, Registry

registry = Registry()


async def noop(event: Event, ctx: HandlerContext) -> None:
    return None


registry.register("intro.completed", noop, name="credits")
registry.register(
    "intro.completed",
    noop,
    name="pro_only",
    filter={"payload": {"plan": ["pro", "team"]}, "metadata": {"source": [{"exists": True}]}},
)
registry.register(["user.*"], noop, name="users")
registry.register(
    "*",
    noop,
    name="audit",
    filter={"$or": [{"created_by": [{"prefix": "svc-"}]}, {"aggregate_type": ["user"]}]},
)
"""

BAD = """
from eventproc import Event, HandlerContext, Registry

registry = Registry()


@registry.handler("intro.completed", name="award_credits", filter={"payload": {"plan": "pro"}})
async def award(event: Event, ctx: HandlerContext) -> None:
    return None
"""


@pytest.fixture
def handlers(tmp_path: Path) -> Path:
    (tmp_path / "routed_handlers.py").write_text(textwrap.dedent(SUBSCRIPTIONS))
    (tmp_path / "bad_handlers.py").write_text(textwrap.dedent(BAD))
    return tmp_path


def eventproc(
    folder: Path, *args: str, handlers: str | None = "routed_handlers"
) -> subprocess.CompletedProcess[str]:
    scrubbed = ("DATABASE_URL", "HANDLERS", "LOG_LEVEL")
    env = {key: value for key, value in os.environ.items() if key not in scrubbed}
    env["PYTHONPATH"] = os.pathsep.join([str(folder), str(TESTS)])
    if handlers is not None:
        env["HANDLERS"] = handlers
    return subprocess.run(
        [sys.executable, "-m", "eventproc", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_every_subscription_is_listed_with_the_clause_a_miss_failed(handlers: Path) -> None:
    given = {"event_type": "intro.completed", "payload": {"plan": "free"}, "created_by": "web"}
    done = eventproc(handlers, "route", "test", "--event", json.dumps(given))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    heads = [line for line in lines if not line.startswith(" ")]
    assert heads == [
        'match  credits  types ["intro.completed"]',
        'miss   pro_only  types ["intro.completed"]',
        'miss   users  types ["user.*"]',
        'miss   audit  types ["*"]',
        "1 of 4 subscriptions take this event",
    ]
    out = done.stdout
    assert 'failed clause one of ["pro", "team"]: payload.plan: "free" is not one of' in out
    assert "FAIL  metadata.source: missing" in out  # every check of the filter is shown
    assert 'failed clause types ["user.*"]: event_type: "intro.completed" is not among' in out
    assert "failed clause $or: $or: none of its 2 branches matched" in out
    assert 'FAIL  created_by: "web" does not start with "svc-"' in out


def test_exit_1_when_no_subscription_takes_the_event(handlers: Path) -> None:
    done = eventproc(handlers, "route", "test", "--event", '{"event_type": "billing.x"}')
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines()[-1] == "0 of 4 subscriptions take this event"


def test_json_output_for_machines(handlers: Path) -> None:
    given = {
        "event_type": "user.verified",
        "aggregate_type": "user",
        "aggregate_id": "0b0e7c2e-3f1e-4bb0-9f43-6a3a1f7a2d11",
        "payload": {"userId": "u1"},
    }
    done = eventproc(handlers, "route", "test", "--json", "--event", json.dumps(given))
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["matched"] == ["users", "audit"]
    assert body["event"] == {**given, "metadata": {}}
    by_name = {entry["name"]: entry for entry in body["subscriptions"]}
    assert list(by_name) == ["credits", "pro_only", "users", "audit"]
    assert by_name["credits"]["matched"] is False and by_name["credits"]["types"] == [
        "intro.completed"
    ]
    [check] = by_name["credits"]["checks"]
    assert check["path"] == "event_type" and check["matched"] is False
    assert by_name["audit"]["filter"]["$or"][1] == {"aggregate_type": ["user"]}
    assert by_name["audit"]["reason"].startswith("matched: ")


def test_the_event_may_come_from_a_file(handlers: Path) -> None:
    path = handlers / "event.json"
    given = {"event_type": "intro.completed", "payload": {"plan": "pro"}, "metadata": {"source": 1}}
    path.write_text(json.dumps(given))
    done = eventproc(handlers, "route", "test", "--json", "--event", f"@{path}")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["matched"] == ["credits", "pro_only"]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ('{"event_type": ', "error: --event: not valid JSON (line 1 column 16"),
        ('["intro.completed"]', "error: --event: must be a JSON object, not an array"),
        ('{"payload": {}}', 'error: --event: needs "event_type", a non-empty string'),
        ('{"event_type": ""}', 'error: --event: needs "event_type", a non-empty string'),
        ('{"event_type": 5}', 'error: --event: needs "event_type", a non-empty string'),
        (
            '{"event_type": "a.b", "paylod": {}}',
            "error: --event: unknown field 'paylod' (the envelope has event_type,",
        ),
        ('{"event_type": "a.b", "payload": [1]}', "error: --event: payload must be a JSON object"),
        ('{"event_type": "a.b", "created_by": 3}', "error: --event: created_by must be a string"),
        ("@/nowhere/event.json", "error: --event: cannot read /nowhere/event.json"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(handlers: Path, given: str, message: str) -> None:
    done = eventproc(handlers, "route", "test", "--event", given)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(message), done.stderr
    assert done.stderr.count("\n") == 1


def test_without_handlers_it_routes_against_the_yachtparty_pack(handlers: Path) -> None:
    given = '{"event_type": "intro.completed"}'
    done = eventproc(handlers, "route", "test", "--json", "--event", given, handlers=None)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["matched"] == ["yachtparty.handlers.intro_completed"]
    assert len(body["subscriptions"]) == 12  # 11 event types, user.response.recorded split in two


def test_a_bad_filter_stops_start_up_in_one_line_naming_the_handler_and_clause(
    handlers: Path,
) -> None:
    line = (
        "error: handler 'award_credits': filter payload.plan: a field takes a list of values "
        'or an object, got "pro"\n'
    )
    database = f"sqlite:///{handlers / 'never.db'}"
    for command in (
        ("migrate", "--database-url", database),
        ("worker", "--database-url", database),
    ):
        done = eventproc(handlers, *command, handlers="bad_handlers")
        assert done.returncode == 1, (command, done.stderr)
        assert done.stderr == line, command
    done = eventproc(
        handlers, "route", "test", "--event", '{"event_type": "a.b"}', handlers="bad_handlers"
    )
    assert (done.returncode, done.stderr) == (2, line)


def test_publish_warns_only_when_no_subscription_takes_the_type(handlers: Path) -> None:
    database = f"sqlite:///{handlers / 'events.db'}"
    # "audit" subscribes to "*": every type is taken, filters aside.
    done = eventproc(handlers, "publish", "billing.x", "--database-url", database)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    narrow = handlers / "narrow_handlers.py"
    narrow.write_text(
        "from eventproc import Registry\n"
        "registry = Registry()\n"
        "async def noop(event, ctx):\n    return None\n"
        "registry.register(['user.*'], noop, name='users')\n"
        "registry.register('intro.completed', noop, name='credits')\n"
    )
    done = eventproc(
        handlers, "publish", "user.verified", "--database-url", database, handlers="narrow_handlers"
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    done = eventproc(
        handlers, "publish", "billing.x", "--database-url", database, handlers="narrow_handlers"
    )
    assert done.returncode == 0
    assert done.stderr.startswith("warning: no handler for 'billing.x' in HANDLERS=narrow_handlers")
    assert "(0 of its 2 subscriptions take that type)" in done.stderr
