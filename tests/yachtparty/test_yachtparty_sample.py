"""The sample world and traffic generator, and the outcome of every event it makes."""

import uuid
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import func, select

from eventproc import Outcome
from yachtparty import registry
from yachtparty.sample import (
    BAD_INVALID_UUID,
    BAD_KINDS,
    BAD_MISSING_FIELD,
    BAD_MISSING_USER,
    BAD_UNKNOWN_TYPE,
    OK,
    SampleIntro,
    SampleRequest,
    SampleUser,
    SampleWorkflow,
    SampleWorld,
    by_kind,
    expected_outcome,
    load_sample_data,
    traffic,
)
from yachtparty.tables import (
    community_requests,
    conversations,
    credit_events,
    intro_opportunities,
    solution_workflows,
    users,
)


def _offline_world() -> SampleWorld:
    """A world built by hand: traffic() needs no database."""
    ids = [uuid.UUID(int=n + 1) for n in range(12)]
    people = tuple(
        SampleUser(
            id=ids[n],
            phone_number=f"+1555000{n:04d}",
            first_name="A",
            last_name="B",
            verified=n % 2 == 0,
            expertise=("ai", "saas") if n % 2 == 0 else (),
            conversation_id=uuid.UUID(int=100 + n),
        )
        for n in range(6)
    )
    return SampleWorld(
        users=people,
        workflows=(SampleWorkflow(ids[7], ids[0], "Find a CRM"),),
        intros=(SampleIntro(ids[8], ids[1], ids[2], ids[9]),),
        requests=(SampleRequest(ids[10], ids[3], ids[7], ("ai",)),),
    )


def test_traffic_covers_all_11_types_and_every_bad_kind() -> None:
    events = traffic(_offline_world(), 200, bad_share=0.1, seed=5)
    assert len(events) == 200
    kinds = by_kind(events)
    assert len(kinds[OK]) == 180
    assert {kind: len(kinds[kind]) for kind in BAD_KINDS} == {kind: 5 for kind in BAD_KINDS}
    good_types = {event.event_type for event in kinds[OK]}
    assert good_types == set(registry.event_types)
    assert all(e.event_type not in registry for e in kinds[BAD_UNKNOWN_TYPE])
    # Bad events never share an aggregate with good ones (a dead letter blocks its aggregate).
    good_aggregates = {e.aggregate_id for e in kinds[OK]}
    for kind in BAD_KINDS:
        assert all(e.aggregate_id not in good_aggregates for e in kinds[kind] if e.aggregate_id)
    for event in kinds[BAD_MISSING_FIELD]:
        assert event.metadata is not None
        assert event.metadata["field"] not in event.payload
    for event in kinds[BAD_INVALID_UUID]:
        assert event.metadata is not None
        assert event.payload[event.metadata["field"]] == "not-a-uuid"


def test_even_a_short_stream_has_every_type() -> None:
    events = traffic(_offline_world(), 11, bad_share=0)
    assert sorted(e.event_type for e in events) == sorted(registry.event_types)


def test_traffic_is_deterministic_per_seed() -> None:
    world = _offline_world()

    def shape(seed: int) -> list[tuple[str, Any, Any]]:
        return [(e.event_type, e.payload, e.metadata) for e in traffic(world, 60, seed=seed)]

    assert shape(3) == shape(3)
    assert shape(3) != shape(4)


def test_traffic_validates_its_arguments() -> None:
    with pytest.raises(ValueError):
        traffic(_offline_world(), 10, bad_share=1.5)
    with pytest.raises(ValueError):
        traffic(SampleWorld((), (), (), ()), 10)


async def test_load_sample_data_is_deterministic_and_idempotent(yp: Any) -> None:
    async with yp.store.engine.begin() as conn:
        world = await load_sample_data(conn, users=24, seed=9)
    async with yp.store.engine.begin() as conn:
        again = await load_sample_data(conn, users=24, seed=9)
    assert again == world
    counts = {}
    async with yp.store.engine.connect() as conn:
        for table in (users, conversations, solution_workflows, intro_opportunities):
            query = select(func.count()).select_from(table)
            counts[table.name] = (await conn.execute(query)).scalar_one()
        open_requests = (
            await conn.execute(select(func.count()).select_from(community_requests))
        ).scalar_one()
    assert counts["users"] == 24 == len(world.users)
    assert counts["conversations"] >= 24
    assert counts["solution_workflows"] == len(world.workflows) >= 1
    assert counts["intro_opportunities"] == len(world.intros)
    assert open_requests == len(world.requests)
    assert world.experts and all(expert.expertise for expert in world.experts)


async def test_every_sample_event_ends_in_its_designed_outcome(yp: Any) -> None:
    async with yp.store.engine.begin() as conn:
        world = await load_sample_data(conn, users=30, seed=2)
    events = traffic(world, 160, bad_share=0.1, seed=8)
    await yp.store.event_insert_many(events)
    await yp.process()

    outcomes: Counter[tuple[str, str]] = Counter()
    letters = {letter.event_id: letter for letter in await yp.store.dead_letter_list(1000)}
    for published in events:
        event = await yp.event(published.id)
        kind = (published.metadata or {})["sample"]
        outcomes[kind, str(event.outcome)] += 1
        assert event.outcome == expected_outcome(published), (kind, event)
        if kind in (BAD_MISSING_FIELD, BAD_INVALID_UUID):
            assert event.attempts == 1
            assert f"{published.metadata['field']}:" in letters[event.id].error_message
        elif kind == BAD_MISSING_USER:
            assert event.attempts == yp.retry.max_retries
            user_id = published.metadata["userId"]
            assert f"User {user_id} not found" in letters[event.id].error_message
        else:
            assert event.id not in letters
    assert outcomes[OK, Outcome.SUCCEEDED] == 144
    assert sum(n for (kind, _), n in outcomes.items() if kind != OK) == 16

    # Whatever the mix, every balance is the sum of the user's processed credits.
    async with yp.store.engine.connect() as conn:
        balances = dict((await conn.execute(select(users.c.id, users.c.credit_balance))).all())
        credits = (
            await conn.execute(
                select(credit_events.c.user_id, func.sum(credit_events.c.amount)).group_by(
                    credit_events.c.user_id
                )
            )
        ).all()
    assert credits, "the mix awards some credits"
    for user_id, total in credits:
        assert balances[user_id] == total
