"""The replaced service's tables, exactly as its README creates them, and rows for them."""

import asyncpg

SEED_SCHEMA = """
CREATE TABLE events (
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
);
CREATE TABLE event_dead_letters (
  id UUID PRIMARY KEY,
  event_id UUID NOT NULL,
  event_type VARCHAR(100) NOT NULL,
  payload JSONB NOT NULL,
  error_message TEXT NOT NULL,
  retry_count INTEGER NOT NULL,
  original_created_at TIMESTAMPTZ NOT NULL,
  created_at TIMESTAMPTZ DEFAULT now()
);
"""

# A publisher of the replaced service: plain SQL, seed columns only.
SEED_INSERT = (
    "INSERT INTO events (id, event_type, aggregate_id, payload, created_by) "
    "VALUES (gen_random_uuid(), 'seed.published', gen_random_uuid(), '{\"n\": 1}', 'publisher')"
)


async def create_seed_tables(conn: asyncpg.Connection, rows: int = 0) -> None:
    """The seed's tables with ``rows`` events (nine in ten processed, as in a live table)."""
    await conn.execute(SEED_SCHEMA)
    if rows:
        await conn.execute(
            """
            INSERT INTO events (id, event_type, aggregate_id, payload, metadata, processed,
                                created_at, created_by)
            SELECT gen_random_uuid(), 'seed.type' || (n % 11), gen_random_uuid(),
                   jsonb_build_object('n', n), '{}'::jsonb, n % 10 <> 0,
                   now() - make_interval(secs => $1 - n), 'seed'
            FROM generate_series(1, $1) AS n
            """,
            rows,
        )
