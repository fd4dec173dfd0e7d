"""Why a pattern matched an event or not: for a person, and as JSON for the admin API.

EventBridge's TestEventPattern answers true or false; an explanation names
each clause, what it expected, what the event held, and one line of why.
"""

import json
from dataclasses import dataclass
from typing import Any

_RENDER_MAX = 80  # characters of an event value quoted in a reason


def render(value: object) -> str:
    """A value as JSON in one short line (long values are cut with an ellipsis)."""
    try:
        text = json.dumps(value, ensure_ascii=False, sort_keys=False, default=repr)
    except ValueError:  # a circular structure: not JSON, say what it is
        text = repr(value)
    return text if len(text) <= _RENDER_MAX else text[: _RENDER_MAX - 1] + "…"


def join_path(base: str, key: str) -> str:
    return f"{base}.{key}" if base else key


@dataclass(frozen=True, slots=True)
class Check:
    """One clause of a pattern applied to one event.

    ``clause`` is what the pattern asks (``one of ["pro", "team"]``,
    ``exists: true``, ``$or``), ``expected`` the pattern's own JSON for the
    field, ``actual`` the event's value (``None`` and ``present=False`` when
    the field is missing). A ``$or`` check, or an object matched against the
    elements of an array, holds the alternatives it tried in ``branches``.
    """

    path: str
    clause: str
    matched: bool
    reason: str
    expected: Any = None
    actual: Any = None
    present: bool = True
    branches: tuple[tuple["Check", ...], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path,
            "clause": self.clause,
            "matched": self.matched,
            "reason": self.reason,
            "expected": self.expected,
            "actual": self.actual,
            "present": self.present,
        }
        if self.branches:
            out["branches"] = [[check.as_dict() for check in branch] for branch in self.branches]
        return out

    def lines(self, indent: int = 0) -> list[str]:
        mark = "pass" if self.matched else "FAIL"
        out = [f"{' ' * indent}{mark}  {self.reason}"]
        for number, branch in enumerate(self.branches, 1):
            out.append(f"{' ' * (indent + 6)}#{number}:")
            for check in branch:
                out.extend(check.lines(indent + 8))
        return out


@dataclass(frozen=True, slots=True)
class Explanation:
    """Whether an event matched, and every check that decided it, in pattern order."""

    matched: bool
    checks: tuple[Check, ...]

    def __bool__(self) -> bool:
        return self.matched

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(check for check in self.checks if not check.matched)

    @property
    def reason(self) -> str:
        """One line: the first failed check's reason, or why it matched."""
        failed = self.failures
        if failed:
            return failed[0].reason
        if not self.checks:
            return "matched: no clauses"
        return "matched: " + "; ".join(check.reason for check in self.checks)

    def lines(self) -> list[str]:
        head = "matched" if self.matched else "did not match"
        return [head] + [line for check in self.checks for line in check.lines(2)]

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def as_dict(self) -> dict[str, Any]:
        return {
            "matched": self.matched,
            "reason": self.reason,
            "checks": [check.as_dict() for check in self.checks],
        }
