"""Leave half of each page of ``events`` free, so that a claim is a HOT update.

A claim changes only unindexed columns (locked_by, locked_until, attempts).
On a full page PostgreSQL puts the new row version on another page and adds
it to every index, which the ordered claim's gate then has to step over;
with room on the page the row is updated in place (a heap-only tuple) and no
index grows. Half the page is room for one new version of every row. Old
versions are pruned as pages are visited, so the space is reused: after a
20,000-event drain the heap was 8.3 MB instead of 6.4 MB and the indexes
smaller (bench/README.md). Pages written before this migration keep their
layout; the setting applies as rows are added.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# SET (fillfactor) takes SHARE UPDATE EXCLUSIVE, which INSERT, UPDATE and
# SELECT ... FOR UPDATE do not conflict with: waiting for it (behind an
# autovacuum of a freshly loaded table, say) blocks no publisher and no
# claim, so this revision may wait longer than the default (online.py).
LOCK_TIMEOUT_MS = 5000


def upgrade() -> None:
    op.execute("ALTER TABLE events SET (fillfactor = 50)")


def downgrade() -> None:
    op.execute("ALTER TABLE events RESET (fillfactor)")
