"""The alert rules and the Grafana dashboard in deploy/, judged by promtool and by a real
/metrics: every rule checked and unit-tested, every series they name served by eventproc."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from eventproc import Event, HandlerContext, NewEvent, PermanentError, Registry
from eventproc.config import Settings
from eventproc.http import create_app
from eventproc.runtime import Runtime
from support.served import serving

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "eventproc.json"
# Metric names in PromQL, once label matchers and label lists are taken out.
NAME = re.compile(r"\b(?:eventproc|messaging|process)_[a-z_]+\b")
LABELS = re.compile(r"\{[^}]*\}|\b(?:by|without|on|ignoring)\s*\([^)]*\)")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool")
    assert found, "promtool is missing: apt-get install prometheus (.ci/run does)"
    return subprocess.run(
        [found, *args], cwd=RULES.parent, capture_output=True, text=True, timeout=120
    )


def test_promtool_checks_the_rules() -> None:
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


def test_promtool_unit_tests_every_alert() -> None:
    tested = promtool("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    spec = yaml.safe_load((RULES.parent / "alerts.test.yml").read_text())
    fired = {
        case["alertname"]
        for test in spec["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert fired == {rule["alert"] for rule in rules()}, "every alert has a test that fires it"


def test_a_broken_expectation_fails_promtool(tmp_path: Path) -> None:
    """The unit tests compare what fires: an expectation changed by one word fails."""
    shutil.copy(RULES, tmp_path / RULES.name)
    text = (RULES.parent / "alerts.test.yml").read_text().replace("award_credits}", "notify}", 1)
    (tmp_path / "broken.test.yml").write_text(text)
    broken = subprocess.run(
        [shutil.which("promtool") or "promtool", "test", "rules", "broken.test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert broken.returncode != 0 and "FAILED" in broken.stdout + broken.stderr


def test_the_dashboard_is_grafana_json_with_a_query_per_panel() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] and board["panels"]
    for panel in board["panels"]:
        assert panel["targets"] and all(target["expr"] for target in panel["targets"]), panel


async def test_every_series_the_rules_and_the_dashboard_name_is_served(pg_url: str) -> None:
    named = {name for expr in expressions() for name in NAME.findall(LABELS.sub(" ", expr))}
    assert {"eventproc_backlog", "messaging_process_duration_seconds_count"} <= named
    registry = Registry()

    @registry.handler("t.ok", name="ok")
    async def ok(event: Event, ctx: HandlerContext) -> None:
        if event.payload.get("fail"):
            raise PermanentError("refused")

    runtime = Runtime(
        Settings(database_url=pg_url, poll_interval_ms=60_000, max_retries=1, prune=True),
        registry=registry,
    )
    await runtime.prepare(attempts=1)
    try:
        await runtime.store.event_insert_many([NewEvent("t.ok", {}), NewEvent("t.ok", {"fail": 1})])
        await runtime.processor.run(until_idle=True)
        assert await runtime.pruner.run_pass() is not None  # a pass: prune lag has a value
        async with serving(create_app(runtime)) as url, httpx.AsyncClient(base_url=url) as client:
            text = (await client.get("/metrics")).text
    finally:
        await runtime.store.close()
    served = {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }
    assert named - served == set(), (
        f"named by deploy/ but not in /metrics: {sorted(named - served)}"
    )


def rules() -> list[dict[str, str]]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def expressions() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    targets = [t["expr"] for panel in board["panels"] for t in panel["targets"]]
    return [rule["expr"] for rule in rules()] + targets
