"""Replays close their dead letters; dead letters get a fingerprint; NULL processed is pending.

- ``event_dead_letters.error_fingerprint``: the message with ids, numbers and
  quoted values normalised, so that equal failures group together.
- A partial index on the open (not replayed) dead letters, which the
  gauges and the aggregate gate's diagnostics count (declared in
  ``indexes.py`` and built concurrently after the revisions).
- Replay trigger v2 (see ``sql/postgres_triggers_v2.sql``) and the NULL
  normaliser, so that new rows inserted with ``processed = NULL`` are
  pending; rows already there are fixed by 0005, in a revision of its own
  (a table scan must not run under this revision's trigger locks).

Revision ID: 0004
Revises: 0003
"""

from alembic import op

from eventproc.store.migrations import sql_file_statements

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE event_dead_letters ADD COLUMN IF NOT EXISTS error_fingerprint TEXT")
    for statement in sql_file_statements("postgres_triggers_v2.sql"):
        op.execute(statement)
