"""eventproc: claim rows from an `events` table, route them to handlers, keep going.

The public API is the names in ``__all__`` and the module
:mod:`eventproc.columns` (column types and query helpers for a pack's own
tables); handler packs import nothing else (tests/unit/test_architecture.py).
"""

from eventproc.errors import EventprocError, PermanentError, RetryLater
from eventproc.event import Event, NewEvent, Outcome
from eventproc.handler import HandlerContext
from eventproc.registry import Registry
from eventproc.sample import Sample

__version__ = "0.1.0"

__all__ = [
    "Event",
    "EventprocError",
    "HandlerContext",
    "NewEvent",
    "Outcome",
    "PermanentError",
    "Registry",
    "RetryLater",
    "Sample",
    "__version__",
]
