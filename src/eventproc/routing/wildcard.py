"""EventBridge's ``wildcard``: ``*`` stands for any run of characters, ``\\*`` for a star.

Matched without regular expressions: the literal pieces between the stars
are found left to right with ``str.find``, which is linear in the value and
cannot backtrack the way ``.*a.*a.*`` can.
"""

from collections.abc import Callable

from eventproc.routing.errors import PatternError
from eventproc.routing.explain import render


def parse(path: str, text: str) -> tuple[str, ...]:
    """The literal pieces around the stars: ``a*b*c`` -> ``("a", "b", "c")``.

    As Event Ruler: consecutive stars are refused, a backslash escapes only a
    star or a backslash.
    """
    pieces: list[str] = []
    current: list[str] = []
    escaped = previous_star = False
    for char in text:
        if escaped:
            if char not in "*\\":
                raise PatternError(
                    path, f"wildcard: a backslash escapes only * or \\, got {render(text)}"
                )
            current.append(char)
            escaped = previous_star = False
        elif char == "\\":
            escaped = True
        elif char == "*":
            if previous_star:
                raise PatternError(
                    path, f"wildcard: consecutive * are not allowed, got {render(text)}"
                )
            pieces.append("".join(current))
            current = []
            previous_star = True
        else:
            current.append(char)
            previous_star = False
    if escaped:
        raise PatternError(
            path, f"wildcard: a trailing backslash escapes nothing, got {render(text)}"
        )
    pieces.append("".join(current))
    return tuple(pieces)


def matcher(pieces: tuple[str, ...]) -> Callable[[str], bool]:
    """A test of one string against the pieces (first is a prefix, last a suffix)."""
    if len(pieces) == 1:
        exact = pieces[0]
        return exact.__eq__
    head, *middle, tail = pieces
    shortest = len(head) + len(tail)
    if not middle:

        def ends(value: str) -> bool:
            return len(value) >= shortest and value.startswith(head) and value.endswith(tail)

        return ends
    inner = tuple(middle)

    def spans(value: str) -> bool:
        if len(value) < shortest or not value.startswith(head) or not value.endswith(tail):
            return False
        position, stop = len(head), len(value) - len(tail)
        for piece in inner:
            found = value.find(piece, position, stop)
            if found < 0:
                return False
            position = found + len(piece)
        return True

    return spans
