#!/usr/bin/env bash
# Create bench/.venv-peers: procrastinate + pgqueuer (pinned by the shared peer
# benchmark's requirements.txt) and eventproc's own runtime dependencies, pinned
# to the versions in the main venv, so that peers.py can drive eventproc in the
# same harness as its peers. eventproc itself is not installed there: a .pth
# file puts /work/main/src on sys.path (nothing is written outside bench/).
# Idempotent: does nothing when the venv is already complete.
set -euo pipefail
BENCH="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$BENCH")"
PEERS_DIR="${BENCH_PEERS_DIR:-$ROOT/../shared/bench-peers}"
VENV="$BENCH/.venv-peers"
MAIN_PY="$ROOT/.venv/bin/python"

if [ -f "$VENV/.complete" ]; then
  exit 0
fi
BASE_PY="$("$MAIN_PY" -c 'import sys; print(sys._base_executable)')"
rm -rf "$VENV"
"$BASE_PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q -r "$PEERS_DIR/requirements.txt"

# eventproc's runtime dependencies, at the main venv's versions where they overlap.
CONSTRAINTS="$VENV/main-venv-constraints.txt"
"$ROOT/.venv/bin/pip" freeze --exclude-editable | grep -v '^-e ' | grep -v '^#' >"$CONSTRAINTS"
mapfile -t DEPS < <("$MAIN_PY" - "$ROOT/pyproject.toml" <<'PY'
import sys
import tomllib

with open(sys.argv[1], "rb") as fh:
    for dep in tomllib.load(fh)["project"]["dependencies"]:
        print(dep)
PY
)
"$VENV/bin/pip" install -q -c "$CONSTRAINTS" "${DEPS[@]}"
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$ROOT/src" >"$SITE/eventproc_src.pth"
"$VENV/bin/python" -c 'import eventproc, procrastinate, pgqueuer; print("peers venv ok:", eventproc.__file__)'
"$VENV/bin/pip" freeze >"$VENV/freeze.txt"
touch "$VENV/.complete"
