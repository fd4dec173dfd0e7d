"""Portable column types and query helpers for a handler pack's own tables (public API).

A pack that keeps tables of its own defines them with these types and
writes its queries with these helpers; the same code then runs on
PostgreSQL and on the embedded SQLite file, and the pack never checks which
one it is on. Together with the names in ``eventproc.__all__`` this is all a
pack may import from eventproc.

- :class:`GUID`, :data:`JSONDoc`, :class:`UTCDateTime`: uuid, JSON document,
  timezone-aware UTC time (as eventproc's own tables use them);
- :class:`TextArray`, :class:`UUIDArray`: arrays (native on PostgreSQL, JSON on SQLite);
- :class:`new_uuid`, :class:`utc_now`: server-side column defaults;
- :func:`db_clock`, :func:`db_now`: the database's clock, as an expression or read once;
- :func:`insert_ignoring_conflicts`: ``INSERT ... ON CONFLICT DO NOTHING``;
- :func:`overlaps`: a text array shares an element with a list.
"""

from eventproc.store.portable import (
    TextArray,
    UUIDArray,
    db_clock,
    db_now,
    insert_ignoring_conflicts,
    overlaps,
)
from eventproc.store.types import GUID, JSONDoc, UTCDateTime, new_uuid, utc_now

__all__ = [
    "GUID",
    "JSONDoc",
    "TextArray",
    "UTCDateTime",
    "UUIDArray",
    "db_clock",
    "db_now",
    "insert_ignoring_conflicts",
    "new_uuid",
    "overlaps",
    "utc_now",
]
