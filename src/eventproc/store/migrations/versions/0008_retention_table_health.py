"""Retention and table health: the pruner's lease, the events archive, autovacuum per table.

Two new empty tables, and per-table autovacuum settings on the hot tables.
``ALTER TABLE ... SET (...)`` takes a SHARE UPDATE EXCLUSIVE lock, which
publishers' inserts and workers' updates do not wait on. The defaults
(vacuum at 20 % dead rows, analyze at 10 %) let a queue table of ten million
rows carry two million dead tuples before autovacuum starts, and every claim
walks past them in the pending index; these start it at about 2 % instead
(bench/autovacuum_effect.py measures the difference). Idempotent: SET of the
same values and IF NOT EXISTS. The downgrade RESETs to the server's defaults.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

HOT_TABLES = ("events", "event_deliveries", "event_attempts")
AUTOVACUUM = {
    "autovacuum_vacuum_scale_factor": "0.02",
    "autovacuum_vacuum_insert_scale_factor": "0.05",
    "autovacuum_analyze_scale_factor": "0.02",
}

_TABLES = (
    """
    CREATE TABLE IF NOT EXISTS eventproc_leases (
        name text PRIMARY KEY,
        holder text,
        expires_at timestamptz,
        pass_started_at timestamptz,
        succeeded_at timestamptz
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS events_archive (
        id uuid NOT NULL,
        event_type varchar(100) NOT NULL,
        aggregate_id uuid,
        aggregate_type varchar(50),
        payload jsonb NOT NULL,
        metadata jsonb,
        processed boolean,
        version integer,
        created_at timestamptz,
        created_by varchar(100),
        priority smallint NOT NULL,
        attempts integer NOT NULL,
        next_attempt_at timestamptz,
        locked_by text,
        locked_until timestamptz,
        processed_at timestamptz,
        outcome text,
        routed_at timestamptz,
        deliveries_open integer,
        archived_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    "CREATE INDEX IF NOT EXISTS events_archive_id_idx ON events_archive (id)",
    "CREATE INDEX IF NOT EXISTS events_archive_created_at_idx ON events_archive (created_at)",
)


def upgrade() -> None:
    for statement in _TABLES:
        op.execute(statement)
    settings = ", ".join(f"{name} = {value}" for name, value in AUTOVACUUM.items())
    for table in HOT_TABLES:
        op.execute(f"ALTER TABLE {table} SET ({settings})")


def downgrade() -> None:
    for table in HOT_TABLES:
        op.execute(f"ALTER TABLE {table} RESET ({', '.join(AUTOVACUUM)})")
    op.execute("DROP TABLE IF EXISTS events_archive")
    op.execute("DROP TABLE IF EXISTS eventproc_leases")
