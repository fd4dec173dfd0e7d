"""Payload and metadata fields hidden from viewers: ``REDACT_PATHS=payload.email,metadata.ip``.

A path is dotted keys from the event's envelope (``payload`` or
``metadata`` first); ``*`` matches every key of an object or item of a
list. A path that is not there hides nothing; the value of one that is
becomes ``"[redacted]"``, whatever it held.
"""

from typing import Any

REDACTED = "[redacted]"
ROOTS = ("payload", "metadata")


class RedactionError(ValueError):
    """A path that can never match: refused at start-up."""


def parse_paths(text: str | None) -> tuple[tuple[str, ...], ...]:
    if not text:
        return ()
    paths: list[tuple[str, ...]] = []
    for item in text.split(","):
        if not item.strip():
            continue
        keys = tuple(item.strip().split("."))
        if keys[0] not in ROOTS or len(keys) < 2 or not all(keys):
            raise RedactionError(
                f"REDACT_PATHS: {item.strip()!r} is not payload.<key>[.<key>...] "
                "or metadata.<key>[.<key>...]"
            )
        paths.append(keys)
    return tuple(paths)


def redact(root: str, document: Any, paths: tuple[tuple[str, ...], ...]) -> Any:
    """A copy of ``document`` (the event's ``root``: payload or metadata) with the paths hidden."""
    mine = [path[1:] for path in paths if path[0] == root]
    if not mine or not isinstance(document, dict | list):
        return document
    for keys in mine:
        document = _hide(document, keys)
    return document


def _hide(node: Any, keys: tuple[str, ...]) -> Any:
    if not keys:
        return REDACTED
    head, rest = keys[0], keys[1:]
    if isinstance(node, dict):
        if head == "*":
            return {key: _hide(value, rest) for key, value in node.items()}
        if head not in node:
            return node
        return {**node, head: _hide(node[head], rest)}
    if isinstance(node, list) and head == "*":
        return [_hide(item, rest) for item in node]
    return node
