"""The chaos tests drive the code in bench/chaos (run.py's engine), so it is importable here."""

import sys
from pathlib import Path

CHAOS_DIR = Path(__file__).resolve().parents[2] / "bench" / "chaos"
if str(CHAOS_DIR) not in sys.path:
    sys.path.insert(0, str(CHAOS_DIR))
