"""Routing: which subscriptions take an event (types and content filters), and why.

Pure Python over a plain envelope dict (``envelope`` / ``envelope_of``
build it); the filter language is the EventBridge event-pattern subset
(``patterns.py`` says which parts, the tests hold the cases).
"""

from eventproc.routing.errors import PatternError
from eventproc.routing.event_types import TypeMatcher, check_type_pattern
from eventproc.routing.explain import Check, Explanation
from eventproc.routing.patterns import ENVELOPE_FIELDS, Envelope, Matcher, compile
from eventproc.routing.router import Route, Router, envelope, envelope_of

__all__ = [
    "ENVELOPE_FIELDS",
    "Check",
    "Envelope",
    "Explanation",
    "Matcher",
    "PatternError",
    "Route",
    "Router",
    "TypeMatcher",
    "check_type_pattern",
    "compile",
    "envelope",
    "envelope_of",
]
