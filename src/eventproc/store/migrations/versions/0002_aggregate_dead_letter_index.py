"""Index the dead-lettered events that hold back their aggregate (AGGREGATE_FAILURE=block).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX IF NOT EXISTS events_aggregate_dead_idx "
        "ON events (aggregate_id, created_at) WHERE outcome = 'dead_lettered'"
    )
