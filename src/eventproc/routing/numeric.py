"""``numeric``: ``["<", 10]``, ``[">=", 0, "<", 5]``, ``["=", 3]``, on JSON numbers only.

Forms as Event Ruler parses them: one bound (any of the five operators), or
a lower bound (``>``/``>=``) followed by an upper bound (``<``/``<=``).
Pattern numbers must lie within ±5e9 (EventBridge's range); an event number
outside it never matches. Comparison is exact float arithmetic (EventBridge
rounds to six decimal places; a difference below 1e-6 can therefore match
there and not here).
"""

import operator
from collections.abc import Callable
from typing import Any

from eventproc.routing.errors import NUMERIC_LIMIT, PatternError
from eventproc.routing.explain import render
from eventproc.routing.primitives import Clause, Test, is_number, number, said

_BOUNDS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _bounds(path: str, spec: Any) -> list[tuple[str, float]]:
    shown = render(spec)
    if not isinstance(spec, list) or len(spec) not in (2, 4):
        raise PatternError(path, f"numeric needs an operator and a number, got {shown}")
    pairs: list[tuple[str, float]] = []
    for at in range(0, len(spec), 2):
        op, value = spec[at], spec[at + 1]
        if type(op) is not str or op not in _BOUNDS:
            raise PatternError(path, f"numeric operators are =, <, <=, >, >=, got {shown}")
        if not is_number(value):
            raise PatternError(path, f"numeric needs an operator and a number, got {shown}")
        pairs.append((op, number(path, "numeric", value)))
    if len(pairs) == 2:
        (low_op, low), (high_op, high) = pairs
        if low_op not in (">", ">=") or high_op not in ("<", "<="):
            raise PatternError(
                path,
                "a numeric range is a lower bound (> or >=) then an upper bound (< or <=), "
                f"got {shown}",
            )
        if low > high or (low == high and (low_op, high_op) != (">=", "<=")):
            raise PatternError(path, f"numeric range is empty, got {shown}")
    return pairs


def _test(pairs: list[tuple[str, float]]) -> Test:
    (first_op, first), *rest = pairs
    low_ok = _BOUNDS[first_op]
    if not rest:
        return lambda v: (
            (type(v) is int or type(v) is float)
            and -NUMERIC_LIMIT <= v <= NUMERIC_LIMIT
            and low_ok(v, first)
        )
    high_ok, high = _BOUNDS[rest[0][0]], rest[0][1]
    return lambda v: (
        (type(v) is int or type(v) is float)
        and -NUMERIC_LIMIT <= v <= NUMERIC_LIMIT
        and low_ok(v, first)
        and high_ok(v, high)
    )


def clause(path: str, spec: Any) -> Clause:
    pairs = _bounds(path, spec)
    words = [("equal to " if op == "=" else f"{op} ") + render(n) for op, n in pairs]
    text = "numeric " + ", ".join(f"{op} {render(n)}" for op, n in pairs)

    def fails(value: Any) -> str:
        if not is_number(value):
            return f"is not a number ({text})"
        if abs(value) > NUMERIC_LIMIT:
            return f"is outside ±{NUMERIC_LIMIT:g}, where numeric matching stops ({text})"
        return "is not " + " and ".join(words)

    return Clause("numeric", text, _test(pairs), said("is " + " and ".join(words)), fails)
