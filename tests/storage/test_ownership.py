"""Conversation ownership: one contract, checked on SQLite and on a real Redis.

``claim_owner`` decides who may use a conversation, so it is tested the way it will be
attacked: many concurrent claimants (tasks on one SQLite store, separate clients on Redis, as
separate processes would be), a restart between claim and check, and records from before
ownership existed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.storage.helpers import OpenStore, make_record
from tests.support.redis_server import RedisServer
from webchat.storage import NullStore, Store
from webchat.storage.redis_store import RedisStore


@pytest.fixture
async def store(open_store: OpenStore) -> Store:
    return await open_store()


async def test_first_claim_wins_and_later_claims_learn_the_owner(store: Store) -> None:
    assert await store.owner_of("conv-1") is None
    assert await store.claim_owner("conv-1", "alice") == "alice"
    assert await store.claim_owner("conv-1", "bob") == "alice"
    assert await store.claim_owner("conv-1", "alice") == "alice"
    assert await store.owner_of("conv-1") == "alice"
    assert await store.owner_of("conv-2") is None
    assert await store.claim_owner("conv-2", "bob") == "bob"


async def test_concurrent_claims_have_exactly_one_winner(open_store: OpenStore) -> None:
    # Two stores on the same data: for Redis two clients (as two processes would have), for
    # SQLite two connections to one file, each also racing its own tasks.
    first, second = await open_store(), await open_store()
    claimants = [f"user-{i}" for i in range(20)]
    results = await asyncio.gather(
        *(
            (first if i % 2 else second).claim_owner("conv-1", user)
            for i, user in enumerate(claimants)
        )
    )
    assert len(set(results)) == 1
    (winner,) = set(results)
    assert winner in claimants
    assert await first.owner_of("conv-1") == winner
    assert await second.owner_of("conv-1") == winner


async def test_concurrent_claims_on_one_store(store: Store) -> None:
    results = await asyncio.gather(*(store.claim_owner("conv-1", f"u{i}") for i in range(20)))
    assert len(set(results)) == 1
    assert await store.owner_of("conv-1") == results[0]


async def test_a_claim_survives_reopening(open_store: OpenStore) -> None:
    store = await open_store()
    assert await store.claim_owner("conv-1", "alice") == "alice"
    await store.close()

    again = await open_store()
    assert await again.owner_of("conv-1") == "alice"
    assert await again.claim_owner("conv-1", "mallory") == "alice"


async def test_owner_of_falls_back_to_the_record(store: Store) -> None:
    store.save_conversation(make_record("conv-1", owner="alice"))
    store.save_conversation(make_record("conv-legacy"))  # from before ownership: owner ""
    assert await store.owner_of("conv-1") == "alice"
    assert await store.owner_of("conv-legacy") is None
    # A record's owner is an owner: claiming cannot take the conversation away from them...
    assert await store.claim_owner("conv-1", "mallory") == "alice"
    # ...while an unowned record goes to its first claimant.
    assert await store.claim_owner("conv-legacy", "bob") == "bob"
    assert await store.owner_of("conv-legacy") == "bob"


async def test_the_claim_wins_over_the_record(store: Store) -> None:
    assert await store.claim_owner("conv-1", "alice") == "alice"
    store.save_conversation(make_record("conv-1", owner="bob"))  # a buggy caller
    assert await store.owner_of("conv-1") == "alice"


async def test_records_keep_their_owner(open_store: OpenStore) -> None:
    store = await open_store()
    record = make_record("conv-1", owner="alice")
    store.save_conversation(record)
    assert await store.get_conversation("conv-1") == record
    await store.close()
    again = await open_store()
    assert await again.get_conversation("conv-1") == record


async def test_list_and_count_by_owner(store: Store) -> None:
    for conv_id, owner, updated in [
        ("a1", "alice", 5.0),
        ("b1", "bob", 6.0),
        ("a2", "alice", 9.0),
        ("a3", "alice", 1.0),
        ("old", "", 7.0),
    ]:
        store.save_conversation(make_record(conv_id, owner=owner, updated_at=updated))

    async def ids(owner: str | None = None, limit: int = 100, offset: int = 0) -> list[str]:
        records = await store.list_conversations(owner=owner, limit=limit, offset=offset)
        return [r.conv_id for r in records]

    assert await ids() == ["a2", "old", "b1", "a1", "a3"]
    assert await ids(owner="alice") == ["a2", "a1", "a3"]
    assert await ids(owner="alice", limit=1, offset=1) == ["a1"]
    assert await ids(owner="alice", limit=0) == []
    assert await ids(owner="bob") == ["b1"]
    assert await ids(owner="carol") == []
    assert [r.owner for r in await store.list_conversations(owner="alice")] == ["alice"] * 3
    assert await store.count_conversations("alice") == 3
    assert await store.count_conversations("bob") == 1
    assert await store.count_conversations("carol") == 0

    # Saving again keeps one entry; a record that changes hands leaves its old owner's list.
    store.save_conversation(make_record("a1", owner="alice", updated_at=10.0))
    assert await ids(owner="alice") == ["a1", "a2", "a3"]
    store.save_conversation(make_record("old", owner="bob", updated_at=11.0))
    store.save_conversation(make_record("a3", owner="bob", updated_at=12.0))
    assert await ids(owner="bob") == ["a3", "old", "b1"]
    assert await ids(owner="alice") == ["a1", "a2"]
    assert (await store.count_conversations("alice"), await store.count_conversations("bob")) == (
        2,
        3,
    )


async def test_an_empty_owner_cannot_be_claimed(store: Store) -> None:
    with pytest.raises(ValueError):
        await store.claim_owner("conv-1", "")
    assert await store.owner_of("conv-1") is None


async def test_null_store_keeps_claims_in_memory() -> None:
    store: Store = NullStore()
    await store.open()
    store.save_conversation(make_record("conv-1", owner="alice"))
    assert await store.owner_of("conv-1") is None  # records are not kept...
    results = await asyncio.gather(*(store.claim_owner("conv-1", f"u{i}") for i in range(20)))
    assert set(results) == {"u0"}  # ...claims are
    assert await store.owner_of("conv-1") == "u0"
    assert await store.claim_owner("conv-1", "bob") == "u0"
    assert await store.count_conversations("u0") == 0
    assert await store.list_conversations(owner="u0") == []
    with pytest.raises(ValueError):
        await store.claim_owner("conv-2", "")
    await store.close()
    assert await NullStore().owner_of("conv-1") is None  # nothing is shared between stores


async def test_a_redis_claim_survives_a_redis_restart(tmp_path: Path) -> None:
    # Durable means "no TTL, plain key": with persistence on, a restarted Redis still knows.
    server = RedisServer(directory=tmp_path)
    server.persistent = True
    server.start()
    try:
        store = RedisStore(server.url)
        await store.open()
        assert await store.claim_owner("conv-1", "alice") == "alice"
        assert await store.redis.ttl("webchat:owner:conv-1") == -1
        await store.close()

        server.restart()
        again = RedisStore(server.url)
        await again.open()
        try:
            assert await again.claim_owner("conv-1", "mallory") == "alice"
        finally:
            await again.close()
    finally:
        server.cleanup()
