"""The delivery model: ``event_deliveries``, two routing columns, replay trigger v3.

Nothing is rewritten: every existing event, in any state, is an event
handled on its own row (``routed_at`` NULL), exactly as before, and is routed
when it is next claimed. An in-flight lease stays valid, a retrying event
runs when due, a dead-lettered one stays dead-lettered and replayable. The
new columns are nullable without a default (no table rewrite); the new table
is empty, so its indexes are built here, not concurrently.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

from eventproc.store.migrations import sql_file_statements

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TABLE = """
CREATE TABLE IF NOT EXISTS event_deliveries (
    event_id uuid NOT NULL,
    handler text NOT NULL,
    event_type varchar(100) NOT NULL,
    aggregate_id uuid,
    event_created_at timestamptz NOT NULL,
    priority smallint NOT NULL DEFAULT 0,
    status text NOT NULL DEFAULT 'pending',
    outcome text,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    locked_by text,
    locked_until timestamptz,
    last_error text,
    created_at timestamptz DEFAULT now(),
    finished_at timestamptz,
    PRIMARY KEY (event_id, handler)
) WITH (fillfactor = 50)
"""

_INDEXES = (
    "CREATE INDEX IF NOT EXISTS event_deliveries_pending_idx ON event_deliveries "
    "(priority DESC, event_created_at, event_id) WHERE status = 'pending'",
    "CREATE INDEX IF NOT EXISTS event_deliveries_aggregate_idx ON event_deliveries "
    "(aggregate_id, event_created_at, event_id) "
    "WHERE aggregate_id IS NOT NULL AND (status = 'pending' OR outcome = 'dead_lettered')",
)


def upgrade() -> None:
    op.execute("ALTER TABLE events ADD COLUMN IF NOT EXISTS routed_at timestamptz")
    op.execute("ALTER TABLE events ADD COLUMN IF NOT EXISTS deliveries_open integer")
    op.execute(_TABLE)
    for statement in _INDEXES:
        op.execute(statement)
    for statement in sql_file_statements("postgres_triggers_v3.sql"):
        op.execute(statement)
