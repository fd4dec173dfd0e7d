"""The values and operators of one field's list, each compiled once into a ``Clause``.

A clause tests ONE event value that is present and is neither an object nor
an array (arrays are taken apart by the field, objects are never leaf
values). Types follow EventBridge: the string operators see only strings,
``numeric`` only JSON numbers (booleans are not numbers), and ``"5"`` never
equals ``5``. ``equals-ignore-case`` (alone or inside prefix, suffix and
anything-but) compares ``str.lower()`` of both sides.
"""

from typing import Any

from eventproc.routing import numeric, wildcard
from eventproc.routing.errors import MAX_FIELD_VALUES, PatternError
from eventproc.routing.explain import render
from eventproc.routing.primitives import Clause, Say, Test, is_number, number, said, string

OPERATORS = (
    "anything-but",
    "equals-ignore-case",
    "exists",
    "numeric",
    "prefix",
    "suffix",
    "wildcard",
)


def _value_set(values: list[Any]) -> Test:
    """Typed membership: True is not 1, "5" is not 5, 5 is 5.0 (JSON numbers compare by value)."""
    plain = frozenset(v for v in values if v is not None and type(v) is not bool)
    singletons = tuple(v for v in values if v is None or type(v) is bool)
    if not singletons and not any(is_number(v) for v in plain):
        return plain.__contains__  # strings only: nothing else can be equal to them
    if not singletons:
        return lambda value: value in plain and type(value) is not bool
    return lambda value: (
        any(value is one for one in singletons)
        if value is None or type(value) is bool
        else value in plain
    )


def equals(values: list[Any]) -> Clause:
    shown = render(values[0]) if len(values) == 1 else f"one of {render(values)}"
    strings = {v for v in values if type(v) is str}
    others = {render(v) for v in values if type(v) is not str}

    def fails(value: Any) -> str:
        hint = ""
        if type(value) is str and value in others:
            hint = " (a string never equals a number, boolean or null)"
        elif type(value) is not str and render(value) in strings:
            hint = " (a number, boolean or null never equals a string)"
        return f"is not {shown}{hint}"

    text = f"equals {shown}" if len(values) == 1 else shown
    return Clause("equals", text, _value_set(values), said(f"is {shown}"), fails)


def _not_string(text: str) -> Say:
    return lambda value: f"is not a string ({text})"


def _affix(path: str, op: str, spec: Any) -> Clause:
    """``prefix`` / ``suffix``, as a string or ``{"equals-ignore-case": string}``."""
    fold = isinstance(spec, dict) and list(spec) == ["equals-ignore-case"]
    if not fold and type(spec) is not str:
        raise PatternError(
            path, f'{op} needs a string or {{"equals-ignore-case": string}}, got {render(spec)}'
        )
    given = string(path, op, spec["equals-ignore-case"] if fold else spec)
    text = f"{op} {'equals-ignore-case ' if fold else ''}{render(given)}"
    verb = "start" if op == "prefix" else "end"
    case = " (ignoring case)" if fold else ""
    want = given.lower() if fold else given
    test: Test
    if op == "prefix" and fold:
        test = lambda v: type(v) is str and v.lower().startswith(want)  # noqa: E731
    elif op == "prefix":
        test = lambda v: type(v) is str and v.startswith(want)  # noqa: E731
    elif fold:
        test = lambda v: type(v) is str and v.lower().endswith(want)  # noqa: E731
    else:
        test = lambda v: type(v) is str and v.endswith(want)  # noqa: E731
    not_string = _not_string(text)

    def fails(value: Any) -> str:
        if type(value) is not str:
            return not_string(value)
        return f"does not {verb} with {render(given)}{case}"

    return Clause(op, text, test, said(f"{verb}s with {render(given)}{case}"), fails)


def _equals_ignore_case(path: str, spec: Any) -> Clause:
    given = string(path, "equals-ignore-case", spec)
    want = given.lower()
    text = f"equals-ignore-case {render(given)}"
    not_string = _not_string(text)

    def fails(value: Any) -> str:
        if type(value) is not str:
            return not_string(value)
        return f"is not {render(given)} (ignoring case)"

    return Clause(
        "equals-ignore-case",
        text,
        lambda v: type(v) is str and v.lower() == want,
        said(f"is {render(given)} (ignoring case)"),
        fails,
    )


def _wildcard(path: str, spec: Any) -> Clause:
    given = string(path, "wildcard", spec)
    match = wildcard.matcher(wildcard.parse(path, given))
    text = f"wildcard {render(given)}"
    not_string = _not_string(text)

    def fails(value: Any) -> str:
        return not_string(value) if type(value) is not str else f"does not match {text}"

    return Clause(
        "wildcard", text, lambda v: type(v) is str and match(v), said(f"matches {text}"), fails
    )


def _exists_true() -> Clause:
    return Clause("exists", "exists: true", lambda v: True, said("exists"), said("exists"))


def _values_list(path: str, spec: Any) -> list[Any]:
    values = spec if isinstance(spec, list) else [spec]
    if not values:
        raise PatternError(path, "anything-but needs at least one value, got []")
    if len(values) > MAX_FIELD_VALUES:
        raise PatternError(path, f"anything-but: at most {MAX_FIELD_VALUES} values")
    if all(type(v) is str for v in values):
        return [string(path, "anything-but", v) for v in values]
    if all(is_number(v) for v in values):
        return [number(path, "anything-but", v) for v in values]
    raise PatternError(
        path,
        "anything-but takes a string, a number, a list of only strings or only numbers, "
        f'or {{"prefix"|"suffix"|"equals-ignore-case"|"wildcard": ...}}, got {render(spec)}',
    )


def _anything_but(path: str, spec: Any) -> tuple[Clause, int]:
    """The negation of the inner clause; a value must still be present to pass."""
    if isinstance(spec, dict):
        inner, count = _anything_but_object(path, spec)
        shown = inner.text
    else:
        values = _values_list(path, spec)
        inner, count, shown = equals(values), len(values), render(spec)
    allowed = inner.test
    return Clause(
        "anything-but",
        f"anything-but {shown}",
        lambda v: not allowed(v),
        inner.fails,
        lambda v: f"{inner.passes(v)} (anything-but)",
    ), count


def _anything_but_object(path: str, spec: dict[Any, Any]) -> tuple[Clause, int]:
    if len(spec) != 1:
        raise PatternError(path, f"anything-but takes one operator object, got {render(spec)}")
    ((op, value),) = spec.items()
    if op in ("prefix", "suffix"):
        if type(value) is not str or not value:
            raise PatternError(
                path, f"anything-but {op} needs a non-empty string, got {render(value)}"
            )
        return _affix(path, op, value), 1
    if op in ("equals-ignore-case", "wildcard"):
        values = value if isinstance(value, list) else [value]
        if not values or len(values) > MAX_FIELD_VALUES:
            raise PatternError(path, f"anything-but {op} needs 1 to {MAX_FIELD_VALUES} strings")
        build = _equals_ignore_case if op == "equals-ignore-case" else _wildcard
        parts = [build(path, v) for v in values]
        return _any_of(f"{op} {render(value)}", parts), len(parts)
    raise PatternError(
        path,
        "anything-but takes prefix, suffix, equals-ignore-case or wildcard as an operator, "
        f"got {render(spec)}",
    )


def _any_of(text: str, parts: list[Clause]) -> Clause:
    if len(parts) == 1:
        only = parts[0]
        return Clause(only.op, text, only.test, only.passes, only.fails)
    tests = tuple(part.test for part in parts)

    def passes(value: Any) -> str:
        return next(part.passes(value) for part in parts if part.test(value))

    return Clause(
        parts[0].op,
        text,
        lambda v: any(test(v) for test in tests),
        passes,
        lambda v: " and ".join(part.fails(v) for part in parts),
    )


def operator_clause(path: str, spec: dict[Any, Any]) -> tuple[Clause | None, int]:
    """One ``{"op": ...}`` object of a field's list: its clause (None for exists: false)."""
    if len(spec) != 1:
        raise PatternError(path, f"an operator object has exactly one key, got {render(spec)}")
    ((op, value),) = spec.items()
    if op == "exists":
        if type(value) is not bool:
            raise PatternError(path, f"exists needs true or false, got {render(value)}")
        return (_exists_true() if value else None), 1
    if op in ("prefix", "suffix"):
        return _affix(path, op, value), 1
    if op == "equals-ignore-case":
        return _equals_ignore_case(path, value), 1
    if op == "wildcard":
        return _wildcard(path, value), 1
    if op == "numeric":
        return numeric.clause(path, value), 1
    if op == "anything-but":
        return _anything_but(path, value)
    raise PatternError(
        path,
        f"unknown operator {render(op)} (supported: {', '.join(OPERATORS)}), got {render(spec)}",
    )
