"""The pack's schema hook and tables, on both backends."""

import asyncio
import json
import re
import uuid
from typing import Any

from sqlalchemy import inspect, select, update

from eventproc.store import Store
from yachtparty import registry
from yachtparty.tables import PACK_TABLES, credit_events, users

EXISTING_USERS = {
    "sqlite": """
        CREATE TABLE users (
            id CHAR(36) PRIMARY KEY,
            phone_number VARCHAR(20) NOT NULL UNIQUE,
            first_name VARCHAR(100),
            last_name VARCHAR(100),
            verified BOOLEAN DEFAULT 0,
            expertise JSON,
            credit_balance INTEGER DEFAULT 0,
            last_active_at VARCHAR(32),
            created_at VARCHAR(32),
            updated_at VARCHAR(32),
            nickname TEXT
        )
    """,
    "postgres": """
        CREATE TABLE users (
            id uuid PRIMARY KEY,
            phone_number varchar(20) NOT NULL UNIQUE,
            first_name varchar(100),
            last_name varchar(100),
            verified boolean DEFAULT false,
            expertise text[],
            credit_balance int DEFAULT 0,
            last_active_at timestamptz,
            created_at timestamptz DEFAULT now(),
            updated_at timestamptz DEFAULT now(),
            nickname text
        )
    """,
}
EXISTING_CONVERSATIONS = """
    CREATE TABLE conversations (
        id {uuid} PRIMARY KEY,
        user_id {uuid} NOT NULL REFERENCES users(id),
        phone_number varchar(20) NOT NULL,
        status varchar(50) DEFAULT 'active',
        last_message_at {time},
        created_at {time},
        updated_at {time}
    )
"""


async def _tables(store: Store) -> set[str]:
    async with store.engine.connect() as conn:
        return await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))


async def _columns(store: Store, table: str) -> dict[str, Any]:
    async with store.engine.connect() as conn:
        columns = await conn.run_sync(lambda sync: inspect(sync).get_columns(table))
    return {column["name"]: column for column in columns}


async def test_migrate_creates_the_pack_tables_and_is_idempotent(empty_store: Store) -> None:
    await empty_store.migrate(registry.schema_hooks)
    assert set(PACK_TABLES) <= await _tables(empty_store)
    assert len(PACK_TABLES) == 8
    user_id = uuid.uuid4()
    async with empty_store.engine.begin() as conn:
        await conn.execute(users.insert().values(id=user_id, phone_number="+15550001"))
    await empty_store.migrate(registry.schema_hooks)
    await empty_store.migrate(registry.schema_hooks)
    async with empty_store.engine.connect() as conn:
        rows = (await conn.execute(select(users.c.id, users.c.credit_balance))).all()
    assert [tuple(row) for row in rows] == [(user_id, 0)]
    assert "metadata" in await _columns(empty_store, "conversations")


async def test_existing_tables_and_data_are_left_alone(empty_store: Store, backend: str) -> None:
    user_id, conversation_id = uuid.uuid4(), uuid.uuid4()
    uuid_type, time_type = (
        ("uuid", "timestamptz") if backend == "postgres" else ("CHAR(36)", "TEXT")
    )
    async with empty_store.engine.begin() as conn:
        await conn.exec_driver_sql(EXISTING_USERS[backend])
        await conn.exec_driver_sql(EXISTING_CONVERSATIONS.format(uuid=uuid_type, time=time_type))
        await conn.exec_driver_sql(
            "INSERT INTO users (id, phone_number, first_name, nickname, credit_balance) "
            f"VALUES ('{user_id}', '+15550002', 'Existing', 'exi', 70)"
        )
        await conn.exec_driver_sql(
            "INSERT INTO conversations (id, user_id, phone_number) "
            f"VALUES ('{conversation_id}', '{user_id}', '+15550002')"
        )

    await empty_store.migrate(registry.schema_hooks)

    async with empty_store.engine.connect() as conn:
        kept = (
            await conn.exec_driver_sql(
                f"SELECT first_name, nickname, credit_balance FROM users WHERE id = '{user_id}'"
            )
        ).all()
        conversation = (
            await conn.exec_driver_sql(
                f"SELECT metadata FROM conversations WHERE id = '{conversation_id}'"
            )
        ).all()
    assert [tuple(row) for row in kept] == [("Existing", "exi", 70)]
    assert [tuple(row) for row in conversation] == [(None,)]
    assert "nickname" in await _columns(empty_store, "users")  # not recreated
    assert "metadata" in await _columns(empty_store, "conversations")  # added
    assert set(PACK_TABLES) <= await _tables(empty_store)  # the rest created

    await empty_store.migrate(registry.schema_hooks)  # and again: nothing to do
    async with empty_store.engine.connect() as conn:
        count = (await conn.exec_driver_sql("SELECT count(*) FROM users")).scalar_one()
    assert count == 1


async def test_columns_have_each_backends_types(yp: Any) -> None:
    user_id = await yp.add_expert(["ai", "saas"])
    conversation_id = await yp.add_conversation(user_id)
    request_id = await yp.add_request(target_user_ids=[user_id], expertise_needed=["ai"])
    async with yp.store.engine.connect() as conn:
        if yp.backend == "postgres":
            found = (
                await conn.exec_driver_sql(
                    "SELECT table_name, column_name, data_type, udt_name "
                    "FROM information_schema.columns WHERE table_schema = current_schema()"
                )
            ).all()
            types = {(row[0], row[1]): (row[2], row[3]) for row in found}
            assert types["users", "id"] == ("uuid", "uuid")
            assert types["users", "expertise"] == ("ARRAY", "_text")
            assert types["community_requests", "target_user_ids"] == ("ARRAY", "_uuid")
            assert types["agent_tasks", "context_json"] == ("jsonb", "jsonb")
            assert types["conversations", "metadata"] == ("jsonb", "jsonb")
            assert types["users", "last_active_at"][0] == "timestamp with time zone"
            return
        raw = (
            await conn.exec_driver_sql(
                f"SELECT id, expertise, created_at FROM users WHERE id = '{user_id}'"
            )
        ).one()
        request = (
            await conn.exec_driver_sql(
                f"SELECT target_user_ids FROM community_requests WHERE id = '{request_id}'"
            )
        ).one()
        conversation = (
            await conn.exec_driver_sql(
                f"SELECT user_id FROM conversations WHERE id = '{conversation_id}'"
            )
        ).one()
    assert raw[0] == str(user_id)  # dashed text
    assert json.loads(raw[1]) == ["ai", "saas"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", raw[2])
    assert json.loads(request[0]) == [str(user_id)]
    assert conversation[0] == str(user_id)


async def _credit(yp: Any, user_id: uuid.UUID, amount: int, *, processed: bool) -> uuid.UUID:
    return await yp.insert(
        credit_events,
        user_id=user_id,
        event_type="manual",
        amount=amount,
        reference_type="test",
        reference_id=uuid.uuid4(),
        idempotency_key=f"test:{uuid.uuid4()}",
        processed=processed,
    )


async def _balance(yp: Any, user_id: uuid.UUID) -> int:
    row = await yp.one(users, users.c.id == user_id)
    return int(row["credit_balance"])


async def test_credit_trigger_keeps_the_balance_the_sum_of_processed_credits(yp: Any) -> None:
    alice, bob = await yp.add_user(), await yp.add_user()
    await _credit(yp, alice, 50, processed=True)
    await _credit(yp, alice, 25, processed=True)
    pending = await _credit(yp, alice, 1000, processed=False)
    await _credit(yp, bob, 7, processed=True)
    assert (await _balance(yp, alice), await _balance(yp, bob)) == (75, 7)

    async with yp.store.engine.begin() as conn:
        await conn.execute(
            update(credit_events).where(credit_events.c.id == pending).values(processed=True)
        )
    assert await _balance(yp, alice) == 1075
    async with yp.store.engine.begin() as conn:  # moved to bob: both recomputed
        await conn.execute(
            update(credit_events).where(credit_events.c.id == pending).values(user_id=bob)
        )
    assert (await _balance(yp, alice), await _balance(yp, bob)) == (75, 1007)
    async with yp.store.engine.begin() as conn:  # no longer processed
        await conn.execute(
            update(credit_events).where(credit_events.c.id == pending).values(processed=False)
        )
    assert await _balance(yp, bob) == 7


async def test_concurrent_credits_for_one_user_are_all_counted(yp: Any) -> None:
    user_id = await yp.add_user()
    first_inserted = asyncio.Event()

    async def credit(amount: int, *, hold: bool) -> None:
        async with yp.store.engine.begin() as conn:
            await conn.execute(
                credit_events.insert().values(
                    id=uuid.uuid4(),
                    user_id=user_id,
                    event_type="manual",
                    amount=amount,
                    reference_type="test",
                    reference_id=uuid.uuid4(),
                    idempotency_key=f"test:{uuid.uuid4()}",
                    processed=True,
                )
            )
            if hold:
                first_inserted.set()
                await asyncio.sleep(0.3)  # the other transaction writes meanwhile

    async def second() -> None:
        await first_inserted.wait()
        await credit(5, hold=False)

    await asyncio.gather(credit(10, hold=True), second())
    assert await _balance(yp, user_id) == 15
