"""A SIGTERM that arrives while the service is still starting.

Between the command starting and the runtime taking the signals over
(imports, settings, the app: seconds on a loaded machine), SIGTERM's
default action would end the process mid-start with status 143, as if it
had crashed. ``eventproc run`` and ``eventproc worker`` catch it from
their first line instead; the runtime, once it owns the signals, takes
the one caught and stops at once, exiting 0.
"""

import signal
from types import FrameType

_caught: signal.Signals | None = None


def catch() -> None:
    signal.signal(signal.SIGTERM, _remember)


def take() -> signal.Signals | None:
    """The signal caught before the runtime took over, once."""
    global _caught
    caught, _caught = _caught, None
    return caught


def _remember(signum: int, frame: FrameType | None) -> None:
    global _caught
    _caught = signal.Signals(signum)
