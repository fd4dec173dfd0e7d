"""The admin surface: audit trail, bulk operations, attempt log, pauses, workers, handler stats.

New tables, all empty (their indexes built here); the dead letters' group
index is built concurrently after the revisions (migrations/indexes.py).
Nothing existing is rewritten, and a worker of the previous release keeps
running beside this schema (it never writes these tables).

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_TABLES = (
    """
    CREATE TABLE IF NOT EXISTS admin_actions (
        id bigserial PRIMARY KEY,
        at timestamptz NOT NULL DEFAULT now(),
        actor text NOT NULL,
        role text NOT NULL,
        action text NOT NULL,
        target jsonb,
        reason text,
        counts jsonb,
        result text NOT NULL,
        operation_id uuid
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS admin_operations (
        id uuid PRIMARY KEY,
        action text NOT NULL,
        selector jsonb NOT NULL,
        max_items integer NOT NULL,
        rate_per_second double precision NOT NULL,
        status text NOT NULL,
        plan_token_hash text NOT NULL,
        plan_expires_at timestamptz NOT NULL,
        planned_count integer NOT NULL,
        total integer,
        done_count integer NOT NULL DEFAULT 0,
        changed_count integer NOT NULL DEFAULT 0,
        actor text NOT NULL,
        role text NOT NULL,
        reason text,
        created_at timestamptz NOT NULL DEFAULT now(),
        started_at timestamptz,
        finished_at timestamptz,
        updated_at timestamptz,
        locked_by text,
        locked_until timestamptz,
        "cursor" integer NOT NULL DEFAULT 0,
        error text
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS admin_operation_items (
        operation_id uuid NOT NULL,
        position integer NOT NULL,
        event_id uuid NOT NULL,
        handler text,
        dead_letter_id uuid,
        PRIMARY KEY (operation_id, position)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS event_attempts (
        id bigserial PRIMARY KEY,
        event_id uuid NOT NULL,
        handler text,
        attempt integer NOT NULL,
        worker text,
        finished_at timestamptz NOT NULL DEFAULT now(),
        duration_ms double precision,
        outcome text NOT NULL,
        error text,
        detail text
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS handler_pauses (
        handler text PRIMARY KEY,
        paused_at timestamptz NOT NULL DEFAULT now(),
        actor text NOT NULL,
        reason text
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS eventproc_workers (
        id text PRIMARY KEY,
        host text NOT NULL,
        pid integer NOT NULL,
        version text NOT NULL,
        started_at timestamptz NOT NULL,
        last_seen_at timestamptz NOT NULL,
        last_claim_at timestamptz
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS handler_stats (
        handler text NOT NULL,
        minute timestamptz NOT NULL,
        worker text NOT NULL,
        succeeded integer NOT NULL DEFAULT 0,
        failed integer NOT NULL DEFAULT 0,
        duration_sum_ms double precision NOT NULL DEFAULT 0,
        duration_buckets jsonb NOT NULL,
        PRIMARY KEY (handler, minute, worker)
    )
    """,
)

_INDEXES = (
    "CREATE INDEX IF NOT EXISTS admin_actions_at_idx ON admin_actions (at DESC, id DESC)",
    "CREATE INDEX IF NOT EXISTS admin_operations_created_idx "
    "ON admin_operations (created_at DESC, id DESC)",
    "CREATE INDEX IF NOT EXISTS admin_operations_running_idx ON admin_operations (status) "
    "WHERE status = 'running'",
    "CREATE INDEX IF NOT EXISTS event_attempts_event_idx ON event_attempts (event_id, id)",
    "CREATE INDEX IF NOT EXISTS event_attempts_finished_idx ON event_attempts (finished_at)",
    "CREATE INDEX IF NOT EXISTS eventproc_workers_seen_idx ON eventproc_workers (last_seen_at)",
    "CREATE INDEX IF NOT EXISTS handler_stats_minute_idx ON handler_stats (minute)",
)


def upgrade() -> None:
    for statement in (*_TABLES, *_INDEXES):
        op.execute(statement)
