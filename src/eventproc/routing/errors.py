"""The one error a bad subscription raises, and the caps a pattern must stay within."""

from eventproc.errors import RegistryError

# Caps on a compiled pattern. They bound the work one evaluation can do and
# the size of what /health lists; EventBridge caps a whole pattern at 2,048
# characters by default, these are looser but of the same order.
MAX_DEPTH = 10  # nested objects, counting each $or branch as a level
MAX_FIELD_VALUES = 100  # values in one field's list (an anything-but list included)
MAX_VALUES = 1_000  # values in the whole pattern
MAX_STRING = 1_024  # characters in one string value
MAX_KEY = 256  # characters in one field name
MAX_OR_BRANCHES = 32  # patterns in one $or
# EventBridge's numeric range: a pattern number outside it is refused, an event
# number outside it never matches a numeric clause.
NUMERIC_LIMIT = 5e9


class PatternError(RegistryError):
    """A type pattern or content filter is malformed.

    The message is one line, ``<path>: <what is wrong>, got <clause>``; the
    registry prefixes the handler's name. A ``RegistryError`` so start-up
    reports it like any other bad registration.
    """

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)
