"""Create the seed's tables, or adopt existing ones, and add eventproc's columns.

Every statement is idempotent (IF NOT EXISTS), so a database that already has
the seed's ``events`` table with rows is upgraded in place and keeps them.
Each statement is quick on a table of any size: the new columns have constant
defaults or none (metadata-only since PostgreSQL 11), and the indexes are not
built here but concurrently after the revisions (``indexes.py``, revision
"0001"), so the ACCESS EXCLUSIVE lock the ALTERs take is held for
milliseconds (and waited for only ``lock_timeout``: see ``online.py``);
the events table is locked last, by one statement, so that little runs
between it and the commit.

Revision ID: 0001
Revises:
"""

from alembic import op

from eventproc.store.migrations import sql_file_statements

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# No lock on an existing table: CREATE ... IF NOT EXISTS only looks the name up.
CREATE_TABLES = [
    """
    CREATE TABLE IF NOT EXISTS events (
        id UUID PRIMARY KEY,
        event_type VARCHAR(100) NOT NULL,
        aggregate_id UUID,
        aggregate_type VARCHAR(50),
        payload JSONB NOT NULL,
        metadata JSONB,
        processed BOOLEAN DEFAULT FALSE,
        version INTEGER DEFAULT 1,
        created_at TIMESTAMPTZ DEFAULT now(),
        created_by VARCHAR(100)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS event_dead_letters (
        id UUID PRIMARY KEY,
        event_id UUID NOT NULL,
        event_type VARCHAR(100) NOT NULL,
        payload JSONB NOT NULL,
        error_message TEXT NOT NULL,
        retry_count INTEGER NOT NULL,
        original_created_at TIMESTAMPTZ NOT NULL,
        created_at TIMESTAMPTZ DEFAULT now()
    )
    """,
]

DEAD_LETTER_COLUMNS = """
    ALTER TABLE event_dead_letters
        ALTER COLUMN id SET DEFAULT gen_random_uuid(),
        ADD COLUMN IF NOT EXISTS error_detail TEXT,
        ADD COLUMN IF NOT EXISTS handler TEXT,
        ADD COLUMN IF NOT EXISTS replayed_at TIMESTAMPTZ
"""

# One statement: the ACCESS EXCLUSIVE lock on events is taken once, and what
# follows it until the commit is the six statements of the trigger file.
EVENT_COLUMNS = """
    ALTER TABLE events
        ALTER COLUMN id SET DEFAULT gen_random_uuid(),
        ADD COLUMN IF NOT EXISTS priority SMALLINT NOT NULL DEFAULT 0,
        ADD COLUMN IF NOT EXISTS attempts INTEGER NOT NULL DEFAULT 0,
        ADD COLUMN IF NOT EXISTS next_attempt_at TIMESTAMPTZ,
        ADD COLUMN IF NOT EXISTS locked_by TEXT,
        ADD COLUMN IF NOT EXISTS locked_until TIMESTAMPTZ,
        ADD COLUMN IF NOT EXISTS processed_at TIMESTAMPTZ,
        ADD COLUMN IF NOT EXISTS outcome TEXT
"""


def upgrade() -> None:
    for statement in CREATE_TABLES:
        op.execute(statement)
    op.execute(DEAD_LETTER_COLUMNS)
    op.execute(EVENT_COLUMNS)
    for statement in sql_file_statements("postgres_triggers_v1.sql"):
        op.execute(statement)
