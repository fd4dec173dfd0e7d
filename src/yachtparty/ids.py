"""Deterministic ids: the same event and purpose always give the same uuid.

Every row a handler creates, follow-up events included, takes its id from
:func:`derived_id`, and is inserted with on-conflict-do-nothing: running a
handler twice for one event therefore never duplicates anything.
"""

import uuid

NAMESPACE = uuid.UUID("6f1d7c1e-3a52-5c8e-9b0d-59a7c3e2f4a1")
"""The pack's uuid5 namespace. Never change it: stored ids depend on it."""


def derived_id(event_id: uuid.UUID, purpose: str) -> uuid.UUID:
    """``uuid5(NAMESPACE, "<event id>:<purpose>")``.

    ``purpose`` names the row within the event, e.g. ``"task:research_solution"``
    or ``"task:community_request_available:<expert id>"``; distinct rows of one
    event need distinct purposes.
    """
    return uuid.uuid5(NAMESPACE, f"{event_id}:{purpose}")
