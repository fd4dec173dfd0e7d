"""A worker SIGKILLed mid-write on SQLite: the file stays sound and no event is lost.

bench/sqlite_crash.py's run with 5 kills instead of 20 (its rounds and
checks are the same code, loaded from the file).
"""

import importlib.util
import sqlite3
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "sqlite_crash.py"
KILLS = 5


def load_crash() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sqlite_crash", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


crash = load_crash()


@pytest.mark.slow
async def test_sigkill_mid_write_never_corrupts_the_file_nor_loses_an_event(
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    run = await crash.crash_run(tmp_path, KILLS, seed=16, say=lines.append)
    report = "\n".join(lines + run.failures)
    assert run.failures == [], report
    assert [counts.integrity for counts in run.rounds] == ["ok"] * KILLS, report
    # Each kill waited for a handler inside its transaction: most landed there.
    assert run.cut_short >= KILLS // 2, report
    final = crash.read_counts(run.path)
    published = len(run.published)
    assert published >= KILLS * 30
    assert (final.integrity, final.rows, final.processed, final.succeeded) == (
        "ok",
        published,
        published,
        published,
    ), report
    # The handler's effect exactly once per event, however many runs were cut short.
    assert final.effects == final.total == published, report
    assert (final.other_outcomes, final.dead_letters, final.leased) == (0, 0, 0), report
    assert crash.event_ids(run.path) == run.published
    # The checks see damage: a half-written effect, then a page overwritten.
    broken = tmp_path / "broken.db"
    with sqlite3.connect(run.path) as source, sqlite3.connect(broken) as db:
        source.backup(db)
        db.execute("DELETE FROM crash_effects WHERE rowid = (SELECT min(rowid) FROM crash_effects)")
    source.close()
    db.close()
    bad = crash.Run(broken, "", published=set(run.published))
    crash.check_round(bad, "copy", crash.read_counts(broken))
    assert any("half-committed" in failure for failure in bad.failures)
    with broken.open("r+b") as file:
        file.seek(4096 * 3)
        file.write(b"\xff" * 4096)
    assert crash.read_counts(broken).integrity != "ok"
