"""Rows inserted with ``processed = NULL`` before 0004's normaliser are pending too.

A backfill of its own: the UPDATE scans the whole table but takes only
ROW EXCLUSIVE, which publishers' INSERTs do not conflict with; in 0004 it
would have run under the trigger DDL's ACCESS EXCLUSIVE lock and held every
INSERT for the length of the scan (bench/README.md, adopting a
1,000,000-row seed table). Rows inserted meanwhile are normalised by 0004's
trigger, so none is missed. NULL rows are never claimable, so no claim
holds one of them locked.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE events SET processed = false WHERE processed IS NULL")
