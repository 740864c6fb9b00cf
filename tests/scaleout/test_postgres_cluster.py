"""Two ``webchat serve --transport redis --db postgresql://…`` processes: PostgreSQL is the
store of record, Redis carries the streams, locks and queues.

The module's cluster runs on a real PostgreSQL database (the session's server) and a real
Redis. Scale-out tests of ``test_scaleout`` and ``test_branches`` are collected here again, on
this cluster (``cluster_processes`` below replaces the package's), and one more shows what
Postgres adds: a Redis flush loses no history.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aredis

from tests.scaleout.cluster import Cluster
from tests.scaleout.test_branches import test_branches_made_on_one_process_are_whole_on_the_other
from tests.scaleout.test_scaleout import (
    describe,
    has_turns,
    http_clients,
    new_conv,
    poll_json,
    post_run,
    seqs,
    strictly_increasing,
    test_any_process_continues_a_conversation_with_its_full_history,
    test_busy_policy_and_idempotency_keys_hold_across_processes,
    test_cancel_on_any_process_stops_the_run_where_it_executes,
    test_clients_on_two_processes_get_the_same_frames_and_resume_on_either,
    test_one_run_per_conversation_and_a_killed_owner_frees_it_by_lease_expiry,
    timeline,
    user_texts,
    viewer,
)
from tests.support.client_view import assert_exactly_once, transcript
from tests.support.postgres import PostgresServer

__all__ = [  # collected again here, on Redis + PostgreSQL
    "test_any_process_continues_a_conversation_with_its_full_history",
    "test_branches_made_on_one_process_are_whole_on_the_other",
    "test_busy_policy_and_idempotency_keys_hold_across_processes",
    "test_cancel_on_any_process_stops_the_run_where_it_executes",
    "test_clients_on_two_processes_get_the_same_frames_and_resume_on_either",
    "test_one_run_per_conversation_and_a_killed_owner_frees_it_by_lease_expiry",
]


PASSWORD = "hunter2-never-logged"
"""In the URL the processes are given (the test server trusts local connections, so any
password is accepted): it must never reach a log."""


@pytest.fixture(scope="module")
def database_url(postgres_server: PostgresServer) -> str:
    url = postgres_server.create_database()
    user, _, rest = url.partition("@")
    return f"{user}:{PASSWORD}@{rest}"


@pytest.fixture(scope="module")
def cluster_processes(
    tmp_path_factory: pytest.TempPathFactory, database_url: str
) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("pg-cluster"), extra_args=("--db", database_url))
    try:
        cluster.ensure_up()
        yield cluster
    finally:
        cluster.stop()


async def stored_frames(database_url: str, conv_id: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT json FROM frames WHERE conv_id = $1 ORDER BY seq", conv_id)
    finally:
        await conn.close()
    return [json.loads(row["json"])["event"] for row in rows]


async def wait_stored(database_url: str, conv_id: str, *connections: list[dict[str, Any]]) -> None:
    """Until PostgreSQL holds what a client saw over its ``connections`` (the processes write
    a moment after their clients see a frame), under the test's deadline: every frame but
    deltas as the client got it, and the same text (the store may keep a stream as its end)."""
    seen = [frame for frames in connections for frame in frames]
    expected = transcript(seen)
    while transcript(stored := await stored_frames(database_url, conv_id)) != expected:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    assert_exactly_once(stored, *connections)


async def test_history_survives_a_redis_flush(cluster: Cluster, database_url: str) -> None:
    conv_id = new_conv("flush")
    prompts = ["calc: 6*7", "and after the flush?"]
    path = f"/api/conversations/{conv_id}/timeline"
    async with asyncio.timeout(90):
        async with http_clients(cluster) as (a, b):
            # A runs it; B's client watches it live.
            async with viewer(cluster.b, conv_id) as on_b:
                first = await post_run(a, conv_id, prompts[0])
                assert (await on_b.read_run(first["inference_id"]))["type"] == "run.finished"
            live = on_b.frames
            info = await poll_json(b, f"/api/conversations/{conv_id}", has_turns(1))
            assert [user_texts(t) for t in info["turns"]] == [prompts[:1]]
            # Every frame a client saw is in PostgreSQL; no record is in Redis.
            await wait_stored(database_url, conv_id, live)
            history = await timeline(a, conv_id)
            assert history and history[-1] == live[-1]
            probe = aredis.from_url(cluster.redis.url)
            try:
                assert await probe.keys("webchat:conv:*") == []
                await probe.flushall()
            finally:
                await probe.aclose()

        # A restarted B knows the conversation from PostgreSQL alone.
        cluster.b.terminate()
        cluster.ensure_up()
        async with http_clients(cluster) as (a, b):
            info_b = await describe(b, conv_id)
            assert info_b["session_id"] == first["session_id"]
            assert [t["id"] for t in info_b["turns"]] == [first["turn_id"]]
            assert await timeline(b, conv_id) == history
            listed = (await b.get("/api/conversations")).json()["conversations"]
            assert [c["title"] for c in listed if c["conv_id"] == conv_id] == [prompts[0]]

            # And the conversation goes on, with its history, seen live on A.
            async with viewer(cluster.a, conv_id, since=live[-1]["seq"]) as on_a:
                second = await post_run(b, conv_id, prompts[1])
                assert second["session_id"] == first["session_id"]
                assert (await on_a.read_run(second["inference_id"]))["type"] == "run.finished"
            after = await poll_json(b, f"/api/conversations/{conv_id}", has_turns(2))
            assert [user_texts(t) for t in after["turns"]] == [prompts[:1], prompts[:2]]
            whole = live + on_a.frames
            assert strictly_increasing(seqs(whole))
            await wait_stored(database_url, conv_id, live, on_a.frames)
            ends = await poll_json(a, path, lambda d: d["frames"][-1] == whole[-1])
            assert ends["frames"][: len(history)] == history
            assert await timeline(b, conv_id) == ends["frames"]


async def test_the_database_password_is_never_logged(cluster: Cluster) -> None:
    async with asyncio.timeout(30), http_clients(cluster) as (a, _):
        conv_id = new_conv("secret")
        async with viewer(cluster.a, conv_id) as on_a:
            run = await post_run(a, conv_id, "calc: 1+1")
            await on_a.read_run(run["inference_id"])
    for server in cluster.servers:
        log = server.log_tail(chars=10**8)
        assert "ready: transport=redis db=postgresql://webchat:***@127.0.0.1" in log
        assert PASSWORD not in log
