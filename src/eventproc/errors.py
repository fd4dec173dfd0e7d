"""The whole error model of eventproc, in one place.

::

    EventprocError                 root; every message says what to do next
    ├── ConfigError                a bad setting; the message names the variable
    ├── RegistryError              a duplicate or malformed handler registration
    ├── StoreError                 anything the database said, with __cause__ kept
    │   ├── StoreUnavailable       unreachable, connection lost, restarting: back off, retry
    │   │   └── StoreConflict      deadlock or serialization failure: retry at once
    │   ├── LeaseLost              a write-back was fenced out: another worker owns the event
    │   ├── NotFound               no such event or dead letter (HTTP 404)
    │   └── Conflict               the row is in a state that forbids the action (HTTP 409)
    │       └── AlreadyProcessed   the event is finished; replay it first (HTTP 400, as the seed)
    ├── SideTaskCrashed            a processor side task (leases, completer, listener) died: stop
    └── HandlerSignal              raised BY handlers to steer the lifecycle; not failures
        ├── PermanentError         dead-letter now, do not retry
        └── RetryLater(delay)      reschedule; not counted as a failed attempt
"""


class EventprocError(Exception):
    """Root of every error eventproc raises on purpose."""


class ConfigError(EventprocError):
    """A setting is missing or invalid; the message names the variable."""


class RegistryError(EventprocError):
    """A handler registration is malformed or collides with another."""


class StoreError(EventprocError):
    """The database refused or failed an operation."""


class StoreUnavailable(StoreError):
    """The database cannot be reached; callers back off and try again."""


class StoreConflict(StoreUnavailable):
    """The statement lost a deadlock or serialization race; the database is fine.

    Trying again at once is right: nothing was written, and nothing is wrong
    with the connection.
    """


class LeaseLost(StoreError):
    """The event's lease now belongs to another claim; the write-back was dropped."""


class NotFound(StoreError):
    """The requested row does not exist."""


class Conflict(StoreError):
    """The row exists but its state forbids the requested action."""


class QueryTooBroad(StoreError):
    """A listing ran out of its time bound: its filters walk too many rows.

    Not retryable as it is (the same filters would walk the same rows):
    narrow them, with a time range or an exact event type.
    """


class AlreadyProcessed(Conflict):
    """The event is finished (``processed = true``): nothing runs it until it is replayed.

    Its own type because the seed answered it 400, not 409, and callers
    (the HTTP layer among them) choose by type, never by message text.
    """


class SideTaskCrashed(EventprocError):
    """A side task of the processor ended by an exception it did not handle (a bug)."""


class HandlerSignal(EventprocError):
    """Raised by a handler to choose what happens to its event next."""


class PermanentError(HandlerSignal):
    """Retrying cannot help (e.g. the payload is invalid): dead-letter at once."""


class RetryLater(HandlerSignal):
    """Not ready yet: try again after ``delay_seconds``, without spending the budget."""

    def __init__(self, delay_seconds: float, reason: str = "retry later") -> None:
        if delay_seconds < 0:
            raise ValueError("delay_seconds must be >= 0")
        super().__init__(reason)
        self.delay_seconds = delay_seconds
        self.reason = reason
