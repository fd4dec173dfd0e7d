"""eventproc's tables: the single source of truth for both backends.

Seed columns come first and keep their seed types; eventproc's processing
columns all have defaults, so a plain seed-style INSERT still works.
"""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    false,
    text,
)

from eventproc.store.types import GUID, JSONDoc, UTCDateTime, new_uuid, utc_now

metadata = MetaData()

events = Table(
    "events",
    metadata,
    Column("id", GUID(), primary_key=True, server_default=new_uuid()),
    Column("event_type", String(100), nullable=False),
    Column("aggregate_id", GUID()),
    Column("aggregate_type", String(50)),
    Column("payload", JSONDoc, nullable=False),
    Column("metadata", JSONDoc),
    Column("processed", Boolean, server_default=false()),
    Column("version", Integer, server_default=text("1")),
    Column("created_at", UTCDateTime(), server_default=utc_now()),
    Column("created_by", String(100)),
    # eventproc's processing columns
    Column("priority", SmallInteger, nullable=False, server_default=text("0")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", UTCDateTime()),
    Column("locked_by", Text),
    Column("locked_until", UTCDateTime()),
    Column("processed_at", UTCDateTime()),
    Column("outcome", Text),
    # Routing (the delivery model): set when the event's work moved to
    # event_deliveries (several subscriptions, or a single one that failed or
    # had to wait); NULL while the event is handled on this row, as before.
    # A routed event's next_attempt_at is 9999-12-31: never claimable here.
    Column("routed_at", UTCDateTime()),
    Column("deliveries_open", Integer),  # deliveries not finished yet (routed events)
)

# The claim reads pending rows in this order; the partial index keeps it small.
Index(
    "events_pending_idx",
    events.c.priority.desc(),
    events.c.created_at,
    events.c.id,
    postgresql_where=text("NOT processed"),
    sqlite_where=text("processed = 0"),
)
# The aggregate gate looks up the earliest pending event of an aggregate.
Index(
    "events_aggregate_pending_idx",
    events.c.aggregate_id,
    events.c.created_at,
    events.c.id,
    postgresql_where=text("NOT processed AND aggregate_id IS NOT NULL"),
    sqlite_where=text("processed = 0 AND aggregate_id IS NOT NULL"),
)
# The delivery model's gate: earlier events of the aggregate still on their rows.
Index(
    "events_aggregate_unrouted_idx",
    events.c.aggregate_id,
    events.c.created_at,
    events.c.id,
    postgresql_where=text("NOT processed AND routed_at IS NULL AND aggregate_id IS NOT NULL"),
    sqlite_where=text("processed = 0 AND routed_at IS NULL AND aggregate_id IS NOT NULL"),
)
# With AGGREGATE_FAILURE=block a dead-lettered event holds back its aggregate.
Index(
    "events_aggregate_dead_idx",
    events.c.aggregate_id,
    events.c.created_at,
    postgresql_where=text("outcome = 'dead_lettered'"),
    sqlite_where=text("outcome = 'dead_lettered'"),
)
Index("events_type_created_idx", events.c.event_type, events.c.created_at)

dead_letters = Table(
    "event_dead_letters",
    metadata,
    Column("id", GUID(), primary_key=True, server_default=new_uuid()),
    Column("event_id", GUID(), nullable=False),
    Column("event_type", String(100), nullable=False),
    Column("payload", JSONDoc, nullable=False),
    Column("error_message", Text, nullable=False),
    Column("retry_count", Integer, nullable=False),
    Column("original_created_at", UTCDateTime(), nullable=False),
    Column("created_at", UTCDateTime(), server_default=utc_now()),
    # eventproc's additions
    Column("error_detail", Text),
    Column("handler", Text),
    Column("replayed_at", UTCDateTime()),
    # The message with ids, numbers and quoted values normalised (eventproc.fingerprint).
    Column("error_fingerprint", Text),
)
Index("event_dead_letters_event_id_idx", dead_letters.c.event_id)
# Open dead letters (not replayed): what the gauges count.
Index(
    "event_dead_letters_open_idx",
    dead_letters.c.event_id,
    postgresql_where=text("replayed_at IS NULL"),
    sqlite_where=text("replayed_at IS NULL"),
)
Index("event_dead_letters_created_at_idx", dead_letters.c.created_at)
# The admin API's groups of open dead letters: (handler, fingerprint), newest last.
Index(
    "event_dead_letters_group_idx",
    dead_letters.c.handler,
    dead_letters.c.error_fingerprint,
    dead_letters.c.created_at,
    postgresql_where=text("replayed_at IS NULL"),
    sqlite_where=text("replayed_at IS NULL"),
)

# One row per (event, subscription) whose work is not done on the events row
# itself: every subscription of an event that fans out, and a single
# subscription once it failed or waited. Event columns the claim orders and
# gates by are copied, so that a delivery claim reads this table only.
deliveries = Table(
    "event_deliveries",
    metadata,
    Column("event_id", GUID(), primary_key=True),
    Column("handler", Text, primary_key=True),
    Column("event_type", String(100), nullable=False),
    Column("aggregate_id", GUID()),
    Column("event_created_at", UTCDateTime(), nullable=False),
    Column("priority", SmallInteger, nullable=False, server_default=text("0")),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    Column("outcome", Text),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", UTCDateTime()),
    Column("locked_by", Text),
    Column("locked_until", UTCDateTime()),
    Column("last_error", Text),
    Column("created_at", UTCDateTime(), server_default=utc_now()),
    Column("finished_at", UTCDateTime()),
)
Index(
    "event_deliveries_pending_idx",
    deliveries.c.priority.desc(),
    deliveries.c.event_created_at,
    deliveries.c.event_id,
    postgresql_where=text("status = 'pending'"),
    sqlite_where=text("status = 'pending'"),
)
# The per-(handler, aggregate) gate: earlier unfinished (or, with
# AGGREGATE_FAILURE=block, dead-lettered) deliveries of an aggregate.
Index(
    "event_deliveries_aggregate_idx",
    deliveries.c.aggregate_id,
    deliveries.c.event_created_at,
    deliveries.c.event_id,
    postgresql_where=text(
        "aggregate_id IS NOT NULL AND (status = 'pending' OR outcome = 'dead_lettered')"
    ),
    sqlite_where=text(
        "aggregate_id IS NOT NULL AND (status = 'pending' OR outcome = 'dead_lettered')"
    ),
)

# -- the admin surface (issue 15): audit, bulk operations, attempts, pauses, workers ------

# BIGSERIAL on PostgreSQL, SQLite's INTEGER PRIMARY KEY (its rowid) there.
_Serial = BigInteger().with_variant(Integer(), "sqlite")

# Every mutation through the admin API, written in the transaction of its effect.
admin_actions = Table(
    "admin_actions",
    metadata,
    Column("id", _Serial, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime(), nullable=False, server_default=utc_now()),
    Column("actor", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("target", JSONDoc),
    Column("reason", Text),
    Column("counts", JSONDoc),
    Column("result", Text, nullable=False),
    Column("operation_id", GUID()),
)
Index("admin_actions_at_idx", admin_actions.c.at.desc(), admin_actions.c.id.desc())

# A bulk operation: planned (a dry run), then running in batches, then finished.
operations = Table(
    "admin_operations",
    metadata,
    Column("id", GUID(), primary_key=True),
    Column("action", Text, nullable=False),
    Column("selector", JSONDoc, nullable=False),
    Column("max_items", Integer, nullable=False),
    Column("rate_per_second", Float, nullable=False),
    Column("status", Text, nullable=False),
    Column("plan_token_hash", Text, nullable=False),
    Column("plan_expires_at", UTCDateTime(), nullable=False),
    Column("planned_count", Integer, nullable=False),
    Column("total", Integer),
    Column("done_count", Integer, nullable=False, server_default=text("0")),
    Column("changed_count", Integer, nullable=False, server_default=text("0")),
    Column("actor", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("reason", Text),
    Column("created_at", UTCDateTime(), nullable=False, server_default=utc_now()),
    Column("started_at", UTCDateTime()),
    Column("finished_at", UTCDateTime()),
    Column("updated_at", UTCDateTime()),
    Column("locked_by", Text),
    Column("locked_until", UTCDateTime()),
    Column("cursor", Integer, nullable=False, server_default=text("0")),
    Column("error", Text),
)
Index("admin_operations_created_idx", operations.c.created_at.desc(), operations.c.id.desc())
Index(
    "admin_operations_running_idx",
    operations.c.status,
    postgresql_where=text("status = 'running'"),
    sqlite_where=text("status = 'running'"),
)

# The items an executed operation works through, frozen when it started.
operation_items = Table(
    "admin_operation_items",
    metadata,
    Column("operation_id", GUID(), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("event_id", GUID(), nullable=False),
    Column("handler", Text),
    Column("dead_letter_id", GUID()),
)

# Every attempt that did not succeed (a success is its row's own finished state).
attempts = Table(
    "event_attempts",
    metadata,
    Column("id", _Serial, primary_key=True, autoincrement=True),
    Column("event_id", GUID(), nullable=False),
    Column("handler", Text),
    Column("attempt", Integer, nullable=False),
    Column("worker", Text),
    Column("finished_at", UTCDateTime(), nullable=False, server_default=utc_now()),
    Column("duration_ms", Float),
    Column("outcome", Text, nullable=False),
    Column("error", Text),
    Column("detail", Text),
)
Index("event_attempts_event_idx", attempts.c.event_id, attempts.c.id)
Index("event_attempts_finished_idx", attempts.c.finished_at)

# A paused subscription's deliveries wait (pending) until it is resumed.
handler_pauses = Table(
    "handler_pauses",
    metadata,
    Column("handler", Text, primary_key=True),
    Column("paused_at", UTCDateTime(), nullable=False, server_default=utc_now()),
    Column("actor", Text, nullable=False),
    Column("reason", Text),
)

# Each worker process's heartbeat: who is running, since when, claiming or not.
workers = Table(
    "eventproc_workers",
    metadata,
    Column("id", Text, primary_key=True),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("version", Text, nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("last_seen_at", UTCDateTime(), nullable=False),
    Column("last_claim_at", UTCDateTime()),
)
Index("eventproc_workers_seen_idx", workers.c.last_seen_at)

# Per (handler, minute, worker): what each worker's handlers did, for rates and percentiles.
handler_stats = Table(
    "handler_stats",
    metadata,
    Column("handler", Text, primary_key=True),
    Column("minute", UTCDateTime(), primary_key=True),
    Column("worker", Text, primary_key=True),
    Column("succeeded", Integer, nullable=False, server_default=text("0")),
    Column("failed", Integer, nullable=False, server_default=text("0")),
    Column("duration_sum_ms", Float, nullable=False, server_default=text("0")),
    Column("duration_buckets", JSONDoc, nullable=False),
)
Index("handler_stats_minute_idx", handler_stats.c.minute)

EVENT_COLUMNS = tuple(column.name for column in events.columns)

# -- retention (issue 16): the pruner's lease and the events it archived ---------------

# One row per singleton chore (the pruner): who holds it until when, and its last pass.
leases = Table(
    "eventproc_leases",
    metadata,
    Column("name", Text, primary_key=True),
    Column("holder", Text),
    Column("expires_at", UTCDateTime()),
    Column("pass_started_at", UTCDateTime()),  # the last pass that found nothing left due
    Column("succeeded_at", UTCDateTime()),  # when that pass ended
)

# PRUNE_ARCHIVE=table: pruned events, every column as it was, and when they moved.
events_archive = Table(
    "events_archive",
    metadata,
    *(Column(c.name, c.type, nullable=c.nullable and not c.primary_key) for c in events.columns),
    Column("archived_at", UTCDateTime(), nullable=False, server_default=utc_now()),
)
Index("events_archive_id_idx", events_archive.c.id)
Index("events_archive_created_at_idx", events_archive.c.created_at)
