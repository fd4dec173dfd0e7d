"""The indexes eventproc builds with ``CREATE INDEX CONCURRENTLY`` on PostgreSQL.

An index on a table other services write to (the seed's ``events`` may hold
millions of rows) is not built inside a revision: a plain ``CREATE INDEX``
holds a SHARE lock for the whole build, and every publisher's INSERT waits
for it. A revision declares its indexes here instead, and ``eventproc
migrate`` builds them after the revisions, one autocommit statement each,
repairing any that an interrupted build left INVALID (see ``online.py``).

To add an index: append an entry naming the revision that introduces it, and
declare the same index in ``schema.py`` (SQLite creates from there, and a test
holds the two equal). Nothing else is needed.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class ConcurrentIndex:
    """One index: ``CREATE [UNIQUE] INDEX <name> ON <table> <definition>``."""

    name: str
    table: str
    definition: str  # the column list and any WHERE clause
    revision: str  # built once the database is at (or past) this revision
    unique: bool = False

    def create_sql(self) -> str:
        unique = "UNIQUE " if self.unique else ""
        return (
            f"CREATE {unique}INDEX CONCURRENTLY IF NOT EXISTS {self.name} "
            f"ON {self.table} {self.definition}"
        )

    def drop_sql(self) -> str:
        return f"DROP INDEX CONCURRENTLY IF EXISTS {self.name}"


CONCURRENT_INDEXES: tuple[ConcurrentIndex, ...] = (
    ConcurrentIndex(
        "events_pending_idx",
        "events",
        "(priority DESC, created_at, id) WHERE NOT processed",
        revision="0001",
    ),
    ConcurrentIndex(
        "events_aggregate_pending_idx",
        "events",
        "(aggregate_id, created_at, id) WHERE NOT processed AND aggregate_id IS NOT NULL",
        revision="0001",
    ),
    ConcurrentIndex(
        "events_type_created_idx",
        "events",
        "(event_type, created_at)",
        revision="0001",
    ),
    ConcurrentIndex(
        "event_dead_letters_event_id_idx",
        "event_dead_letters",
        "(event_id)",
        revision="0001",
    ),
    ConcurrentIndex(
        "event_dead_letters_created_at_idx",
        "event_dead_letters",
        "(created_at)",
        revision="0001",
    ),
    ConcurrentIndex(
        "events_aggregate_dead_idx",
        "events",
        "(aggregate_id, created_at) WHERE outcome = 'dead_lettered'",
        revision="0002",
    ),
    # The aggregate gate of the delivery model: an earlier event of the
    # aggregate still on its row, unrouted (an index-only probe; with
    # routed_at tested on the heap instead, ordered drains ran 25 % slower).
    ConcurrentIndex(
        "events_aggregate_unrouted_idx",
        "events",
        "(aggregate_id, created_at, id) "
        "WHERE NOT processed AND routed_at IS NULL AND aggregate_id IS NOT NULL",
        revision="0006",
    ),
    ConcurrentIndex(
        "event_dead_letters_open_idx",
        "event_dead_letters",
        "(event_id) WHERE replayed_at IS NULL",
        revision="0004",
    ),
    # The admin API's dead-letter groups: (handler, fingerprint) of the open ones.
    ConcurrentIndex(
        "event_dead_letters_group_idx",
        "event_dead_letters",
        "(handler, error_fingerprint, created_at) WHERE replayed_at IS NULL",
        revision="0007",
    ),
)
