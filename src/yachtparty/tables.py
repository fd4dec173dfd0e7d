"""The pack's 8 tables, the same Core definitions on PostgreSQL and SQLite, and their schema hook.

PostgreSQL gets native types (uuid, text[]/uuid[], jsonb, timestamptz) and a
plpgsql credit-balance trigger; SQLite gets dashed-text uuids, JSON-text
arrays, UTC timestamps as ``'%Y-%m-%d %H:%M:%f'`` text and an equivalent
trigger. :func:`create_schema` runs on every ``eventproc migrate`` and service
start: it creates only what is absent and leaves existing tables and their
data alone; the only change it makes to an existing table is adding
``conversations.metadata`` when it is missing.
"""

import logging
import uuid
from datetime import datetime

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
    inspect,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import CreateIndex, CreateTable

from eventproc.columns import GUID, JSONDoc, TextArray, UTCDateTime, UUIDArray, new_uuid, utc_now
from yachtparty.registry import registry

logger = logging.getLogger(__name__)

# -- tables ------------------------------------------------------------------

metadata = MetaData()


def _id() -> Column[uuid.UUID]:
    return Column("id", GUID(), primary_key=True, server_default=new_uuid())


def _created_at() -> Column[datetime]:
    return Column("created_at", UTCDateTime(), server_default=utc_now())


def _updated_at() -> Column[datetime]:
    return Column("updated_at", UTCDateTime(), server_default=utc_now())


def _user_ref(name: str, *, nullable: bool = True) -> Column[uuid.UUID]:
    return Column(name, GUID(), ForeignKey("users.id"), nullable=nullable)


users = Table(
    "users",
    metadata,
    _id(),
    Column("phone_number", String(20), nullable=False, unique=True),
    Column("first_name", String(100)),
    Column("last_name", String(100)),
    Column("verified", Boolean, server_default=false()),
    Column("expertise", TextArray()),
    Column("credit_balance", Integer, server_default=text("0")),
    Column("last_active_at", UTCDateTime()),
    _created_at(),
    _updated_at(),
)

conversations = Table(
    "conversations",
    metadata,
    _id(),
    _user_ref("user_id", nullable=False),
    Column("phone_number", String(20), nullable=False),
    Column("status", String(50), server_default=text("'active'")),
    Column("last_message_at", UTCDateTime()),
    Column("metadata", JSONDoc),
    _created_at(),
    _updated_at(),
)
Index("yp_conversations_user_status_idx", conversations.c.user_id, conversations.c.status)

agent_tasks = Table(
    "agent_tasks",
    metadata,
    _id(),
    Column("task_type", String(100), nullable=False),
    Column("agent_type", String(50), nullable=False),
    _user_ref("user_id"),
    Column("context_id", GUID()),
    Column("context_type", String(50)),
    Column("scheduled_for", UTCDateTime(), nullable=False),
    Column("priority", String(20), server_default=text("'medium'")),
    Column("status", String(50), server_default=text("'pending'")),
    Column("retry_count", Integer, server_default=text("0")),
    Column("max_retries", Integer, server_default=text("3")),
    Column("context_json", JSONDoc, nullable=False),
    Column("result_json", JSONDoc),
    Column("error_log", Text),
    _created_at(),
    Column("created_by", String(100)),
    Column("completed_at", UTCDateTime()),
)
Index("yp_agent_tasks_due_idx", agent_tasks.c.status, agent_tasks.c.scheduled_for)
Index("yp_agent_tasks_user_idx", agent_tasks.c.user_id)

community_requests = Table(
    "community_requests",
    metadata,
    _id(),
    Column("requesting_agent_type", String(50), nullable=False),
    _user_ref("requesting_user_id"),
    Column("context_id", GUID()),
    Column("context_type", String(50)),
    Column("question", Text, nullable=False),
    Column("category", String(100)),
    Column("expertise_needed", TextArray()),
    Column("target_user_ids", UUIDArray()),
    Column("status", String(50), server_default=text("'open'")),
    Column("responses_count", Integer, server_default=text("0")),
    Column("requester_context", Text),
    Column("desired_outcome", String),
    Column("urgency", String, server_default=text("'medium'")),
    Column("request_summary", String(100)),
    _created_at(),
    Column("expires_at", UTCDateTime()),
)
Index(
    "yp_community_requests_open_idx",
    community_requests.c.status,
    community_requests.c.created_at,
)

solution_workflows = Table(
    "solution_workflows",
    metadata,
    _id(),
    _user_ref("user_id", nullable=False),
    Column("request_description", Text, nullable=False),
    Column("current_step", String(100), nullable=False),
    Column("status", String(50), server_default=text("'in_progress'")),
    Column("completed_at", UTCDateTime()),
    _created_at(),
    _updated_at(),
)
Index("yp_solution_workflows_user_idx", solution_workflows.c.user_id)

intro_opportunities = Table(
    "intro_opportunities",
    metadata,
    _id(),
    _user_ref("connector_user_id", nullable=False),
    _user_ref("innovator_id"),
    Column("prospect_id", GUID()),
    Column("first_name", String(255), nullable=False),
    Column("last_name", String(255), nullable=False),
    Column("status", String(50), server_default=text("'open'")),
    Column("intro_completed_at", UTCDateTime()),
    Column("bounty_credits", Integer, server_default=text("50")),
    _created_at(),
    _updated_at(),
)
Index("yp_intro_opportunities_connector_idx", intro_opportunities.c.connector_user_id)

credit_events = Table(
    "credit_events",
    metadata,
    _id(),
    _user_ref("user_id", nullable=False),
    Column("event_type", String(100), nullable=False),
    Column("amount", Integer, nullable=False),
    Column("reference_type", String(50), nullable=False),
    Column("reference_id", GUID(), nullable=False),
    Column("idempotency_key", String(255), nullable=False, unique=True),
    Column("description", Text),
    _created_at(),
    Column("processed", Boolean, server_default=false()),
)
Index("yp_credit_events_user_idx", credit_events.c.user_id)

agent_actions_log = Table(
    "agent_actions_log",
    metadata,
    _id(),
    Column("agent_type", String(50), nullable=False),
    Column("action_type", String(100), nullable=False),
    _user_ref("user_id"),
    Column("context_id", GUID()),
    Column("context_type", String(50)),
    Column("input_data", JSONDoc),
    Column("output_data", JSONDoc),
    Column("error", Text),
    _created_at(),
)
Index("yp_agent_actions_log_user_idx", agent_actions_log.c.user_id)

PACK_TABLES: tuple[str, ...] = tuple(table.name for table in metadata.sorted_tables)
"""The pack's table names, parents before children."""


# -- the credit-balance trigger ------------------------------------------------
# users.credit_balance is the sum of the user's processed credit events,
# recomputed whenever a processed row is written (inserted, or updated with
# processed / amount / user_id changed). Created together with credit_events
# only: an existing Yachtparty database keeps its own trigger.

# The user's row is locked before the sum is read: two transactions crediting
# one user then serialize, and (READ COMMITTED, volatile function) the later
# one's sum sees the earlier one's row, so no credit is lost. FOR NO KEY UPDATE
# does not conflict with the key-share lock the foreign-key check holds.
_PG_CREDIT_FUNCTION = """
CREATE OR REPLACE FUNCTION yachtparty_credit_balance_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    affected uuid[];
BEGIN
    IF TG_OP = 'UPDATE' THEN
        affected := ARRAY[NEW.user_id, OLD.user_id];
    ELSE
        affected := ARRAY[NEW.user_id];
    END IF;
    PERFORM 1 FROM users WHERE id = ANY(affected) ORDER BY id FOR NO KEY UPDATE;
    UPDATE users u
    SET credit_balance = (
        SELECT COALESCE(SUM(c.amount), 0) FROM credit_events c
        WHERE c.user_id = u.id AND c.processed
    )
    WHERE u.id = ANY(affected);
    RETURN NULL;
END
$$
"""

_PG_CREDIT_TRIGGERS = (
    """
    CREATE TRIGGER yachtparty_credit_balance_insert_v1
    AFTER INSERT ON credit_events
    FOR EACH ROW WHEN (NEW.processed)
    EXECUTE FUNCTION yachtparty_credit_balance_v1()
    """,
    """
    CREATE TRIGGER yachtparty_credit_balance_update_v1
    AFTER UPDATE OF processed, amount, user_id ON credit_events
    FOR EACH ROW WHEN (NEW.processed OR OLD.processed)
    EXECUTE FUNCTION yachtparty_credit_balance_v1()
    """,
)

_SQLITE_BALANCE = """
    UPDATE users
    SET credit_balance = (
        SELECT COALESCE(SUM(c.amount), 0) FROM credit_events c
        WHERE c.user_id = users.id AND c.processed
    )
"""

_SQLITE_CREDIT_TRIGGERS = (
    f"""
    CREATE TRIGGER IF NOT EXISTS yachtparty_credit_balance_insert_v1
    AFTER INSERT ON credit_events
    FOR EACH ROW WHEN NEW.processed
    BEGIN
        {_SQLITE_BALANCE} WHERE users.id = NEW.user_id;
    END
    """,
    f"""
    CREATE TRIGGER IF NOT EXISTS yachtparty_credit_balance_update_v1
    AFTER UPDATE OF processed, amount, user_id ON credit_events
    FOR EACH ROW WHEN NEW.processed OR OLD.processed
    BEGIN
        {_SQLITE_BALANCE} WHERE users.id IN (NEW.user_id, OLD.user_id);
    END
    """,
)


def _credit_trigger_statements(dialect: str) -> tuple[str, ...]:
    if dialect == "postgresql":
        return (_PG_CREDIT_FUNCTION, *_PG_CREDIT_TRIGGERS)
    return _SQLITE_CREDIT_TRIGGERS


# -- the schema hook -------------------------------------------------------------


def _existing_tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def _column_names(connection: Connection, table: str) -> set[str]:
    return {column["name"] for column in inspect(connection).get_columns(table)}


@registry.on_migrate
async def create_schema(connection: AsyncConnection) -> None:
    """Create the pack's absent tables (with their indexes and triggers); keep the rest.

    Runs inside the migration transaction, one statement per ``execute``
    (asyncpg prepares each). Idempotent: a second run changes nothing.
    """
    dialect = connection.dialect.name
    existing = await connection.run_sync(_existing_tables)
    for table in metadata.sorted_tables:
        if table.name in existing:
            continue
        await connection.execute(CreateTable(table, if_not_exists=True))
        for index in sorted(table.indexes, key=lambda item: str(item.name)):
            await connection.execute(CreateIndex(index, if_not_exists=True))
        if table is credit_events:
            for statement in _credit_trigger_statements(dialect):
                await connection.exec_driver_sql(statement)
        logger.info("Created table %s", table.name)
    if "conversations" in existing:
        columns = await connection.run_sync(_column_names, "conversations")
        if "metadata" not in columns:
            column_type = JSONDoc.compile(dialect=connection.dialect)
            await connection.exec_driver_sql(
                f"ALTER TABLE conversations ADD COLUMN metadata {column_type}"
            )
            logger.info("Added conversations.metadata")
