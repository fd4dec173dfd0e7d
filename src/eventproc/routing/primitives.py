"""What every clause is: a test of one event value, and the two phrases that explain it."""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eventproc.routing.errors import MAX_STRING, NUMERIC_LIMIT, PatternError
from eventproc.routing.explain import render

Test = Callable[[Any], bool]  # on one present value that is not an object or an array
Say = Callable[[Any], str]


@dataclass(frozen=True, slots=True)
class Clause:
    op: str  # the keyword: "equals" for a plain value, else the operator's name
    text: str  # what the pattern asks, for people: 'prefix "ent"'
    test: Test
    passes: Say  # why a value that passes does: 'starts with "ent"'
    fails: Say  # why a value that fails does: 'does not start with "ent"'


def said(text: str) -> Say:
    return lambda value: text


def is_number(value: object) -> bool:
    kind = type(value)
    return kind is int or kind is float


def string(path: str, op: str, value: object) -> str:
    if type(value) is not str:
        raise PatternError(path, f"{op} needs a string, got {render(value)}")
    if len(value) > MAX_STRING:
        raise PatternError(path, f"{op}: strings are capped at {MAX_STRING} characters")
    return value


def number(path: str, op: str, value: Any, *, limited: bool = True) -> float:
    if not is_number(value) or not math.isfinite(value):
        raise PatternError(path, f"{op} needs a finite number, got {render(value)}")
    if limited and abs(value) > NUMERIC_LIMIT:
        raise PatternError(
            path,
            f"{op}: numbers must be within ±{NUMERIC_LIMIT:g} (EventBridge's range), got {value}",
        )
    return value  # type: ignore[no-any-return]
