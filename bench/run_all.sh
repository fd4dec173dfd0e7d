#!/usr/bin/env bash
# Every benchmark, one after the other (never in parallel: 2 shared cores),
# 3 runs each, then the combined table (bench/report.py). About 30 minutes.
# Results: bench/results/*.jsonl (git-ignored); the console log of this run:
# bench/results/run_all-<stamp>.log.
#
#   bench/run_all.sh            # from the repository root (or anywhere)
#   RUNS=5 bench/run_all.sh
#   STEPS="drain latency" bench/run_all.sh     # a subset, in this order
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$BENCH")"
PY="$ROOT/.venv/bin/python"
RUNS="${RUNS:-3}"
STEPS="${STEPS:-publish drain latency peers profile report}"
mkdir -p "$BENCH/results"
STAMP="$(date +%Y%m%d-%H%M%S)"
LOG="$BENCH/results/run_all-$STAMP.log"
cd "$ROOT"

# Benchmark one version of the code: src/ is copied once, and every process
# (publishers, workers, the peers venv) imports eventproc from the copy, so
# that edits made in src/ while this runs (about 30 minutes) do not mix in.
# SNAPSHOT=0 uses the live tree instead.
if [ "${SNAPSHOT:-1}" = 1 ]; then
  SNAP="$BENCH/results/src-$STAMP"
  mkdir -p "$SNAP"
  (cd "$ROOT/src" && tar --exclude=__pycache__ -cf - .) | (cd "$SNAP" && tar -xf -)
  git -C "$ROOT" rev-parse HEAD >"$SNAP/GIT_HEAD"
  git -C "$ROOT" diff HEAD -- src >"$SNAP/GIT_DIFF" || true
  export PYTHONPATH="$SNAP${PYTHONPATH:+:$PYTHONPATH}"
  echo "=== eventproc from snapshot $SNAP (HEAD $(cut -c1-7 "$SNAP/GIT_HEAD"))" | tee -a "$LOG"
fi

step() {
  echo "=== $* ($(date +%H:%M:%S))" | tee -a "$LOG"
  "$@" 2>&1 | tee -a "$LOG"
}

for s in $STEPS; do
  case "$s" in
    publish) step "$PY" bench/publish.py --runs "$RUNS" ;;
    drain) step "$PY" bench/drain.py --runs "$RUNS" ;;
    latency) step "$PY" bench/latency.py --runs "$RUNS" ;;
    peers) step "$PY" bench/peers_bench.py --runs "$RUNS" ;;
    profile)
      if [ -x "$ROOT/.venv/bin/py-spy" ]; then
        step "$PY" bench/profile.py
      else
        echo "=== profile skipped: .venv/bin/pip install -e '.[bench]'" | tee -a "$LOG"
      fi
      ;;
    report) step "$PY" bench/report.py ;;
    *) echo "unknown step $s" >&2; exit 2 ;;
  esac
done
echo "log: $LOG"
