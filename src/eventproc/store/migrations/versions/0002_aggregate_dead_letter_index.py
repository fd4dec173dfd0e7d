"""Index the dead-lettered events that hold back their aggregate (AGGREGATE_FAILURE=block).

The index, ``events_aggregate_dead_idx``, is declared in ``indexes.py``
(revision "0002") and built concurrently after the revisions, so that a
large ``events`` table keeps taking INSERTs while it builds. Databases
migrated before that change got it from this revision; it is the same index.

Revision ID: 0002
Revises: 0001
"""

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to do in the transaction: the index is built concurrently."""
