"""Error fingerprints: what makes ten thousand dead letters from one outage one group.

The human message keeps its ids and values; the fingerprint replaces them
with placeholders so that ``GROUP BY error_fingerprint`` (and the admin API's
dead-letter groups) puts failures of the same kind together.
"""

import re

MAX_LENGTH = 300

# Order matters: the specific shapes go first, so that a UUID is not read as
# a run of hex words and numbers.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"'(?:[^'\\]|\\.)*'"), "'<str>'"),
    (re.compile(r'"(?:[^"\\]|\\.)*"'), '"<str>"'),
    (
        re.compile(
            r"\b[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\b"
        ),
        "<uuid>",
    ),
    (re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"), "<email>"),
    (
        re.compile(
            r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?"
        ),
        "<time>",
    ),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<ip>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<hex>"),
    (re.compile(r"\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{12,}\b"), "<hex>"),
    (re.compile(r"(?<![\w<])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w>])"), "<n>"),
    (re.compile(r"\s+"), " "),
)


def fingerprint(message: str) -> str:
    """``message`` with ids, numbers, times and quoted values replaced by placeholders.

    The message already starts with the exception's class name (the
    dispatcher writes ``Class: text``), so the class is part of the print.
    """
    normalised = message.strip()
    for pattern, placeholder in _PATTERNS:
        normalised = pattern.sub(placeholder, normalised)
    return normalised[:MAX_LENGTH]
