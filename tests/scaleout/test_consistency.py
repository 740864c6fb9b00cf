"""Exactly once, on any process: what a client receives shows the stored timeline, every
frame but deltas as stored and under its seq, deltas adding up to the text without a gap or a
repeat (the stress of ``python -m bench.consistency``, on fewer trials)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from typing import Any

import httpx
import redis.asyncio as aredis
from bench.consistency import run_trials

from tests.scaleout.cluster import Cluster
from tests.support.client_view import assert_deltas_add_up, assert_exactly_once
from tests.support.ws_client import Viewer, viewer
from webchat.events import EventMeta, RunFinishedEvent, RunStartedEvent, UserMessageEvent
from webchat.transport import RedisStreamsTransport, topic_for


async def test_join_races_and_cross_process_reconnects_lose_and_double_nothing(
    cluster: Cluster,
) -> None:
    race, resume = await run_trials(
        {"a": cluster.a.url, "b": cluster.b.url},
        joins=120,
        reconnects=120,
        concurrency=6,
        time_limit=120,
    )
    for tally in (race, resume):
        assert tally.clean, tally
        assert tally.trials == 120, tally
    assert race.frames > 0 and resume.frames > 0


async def test_a_process_meeting_a_conversation_mid_run_reads_it_from_its_first_event(
    cluster: Cluster,
) -> None:
    """A run already publishing (here: an outside producer, as process A would) before B has
    the conversation: B's ``since=0`` client and B's timeline start at the first event."""
    conv_id = f"midrun-{uuid.uuid4().hex[:10]}"
    producer = RedisStreamsTransport(cluster.redis.url)
    meta = EventMeta(session_id="s-1", inference_id="i-1", turn_id="t-1")
    topic = topic_for(conv_id)
    try:
        await producer.publish(topic, UserMessageEvent(meta=meta, text="hi").to_json().encode())
        await producer.publish(topic, RunStartedEvent(meta=meta).to_json().encode())
        async with viewer(cluster.b.ws_url, conv_id, since=0) as on_b:
            await producer.publish(topic, RunFinishedEvent(meta=meta).to_json().encode())
            await on_b.read_run("i-1")
            async with httpx.AsyncClient(base_url=cluster.b.url) as http:
                response = await http.get(f"/api/conversations/{conv_id}/timeline")
        assert [f["type"] for f in on_b.frames] == [
            "chat.user_message",
            "run.started",
            "run.finished",
        ]
        assert response.json()["frames"] == on_b.frames
    finally:
        await producer.close()
        plain = aredis.Redis.from_url(cluster.redis.url)
        await plain.delete(topic)
        await plain.aclose()


async def _run_through_a_redis_restart(cluster: Cluster) -> tuple[list[Viewer], list[Any]]:
    """A long run watched on both processes while Redis restarts under it; returns the
    viewers and each process's timeline afterwards."""
    conv_id = f"restart-{uuid.uuid4().hex[:10]}"
    async with (
        httpx.AsyncClient(base_url=cluster.a.url, timeout=15) as a,
        httpx.AsyncClient(base_url=cluster.b.url, timeout=15) as b,
        viewer(cluster.a.ws_url, conv_id) as on_a,
        viewer(cluster.b.ws_url, conv_id) as on_b,
    ):
        response = await a.post("/chat/slow", json={"prompt": "a long answer", "conv_id": conv_id})
        inference_id = response.json()["inference_id"]
        for client in (on_a, on_b):
            await client.read_deltas(5, inference_id)
        await asyncio.to_thread(cluster.redis.restart)
        for client in (on_a, on_b):
            await client.read_run(inference_id, timeout=60)
        timelines = []  # while B's client is connected, B holds the conversation
        for http in (a, b):
            response = await http.get(f"/api/conversations/{conv_id}/timeline")
            timelines.append(response.json()["frames"])
    return [on_a, on_b], timelines


def _assert_each_frame_once(viewers: list[Viewer], timelines: list[Any]) -> None:
    """Both clients (joined before the run) show what each process serves, and got every
    token once: their deltas make each final's text."""
    on_a, on_b = viewers
    assert any(f["type"] == "llm.final" for f in on_a.frames)
    assert_deltas_add_up(on_a.frames)
    assert_exactly_once(on_a.frames, on_b.frames)
    # What each process serves (from memory: the store in Redis may have lost the first part).
    assert timelines[0] == timelines[1]
    assert_exactly_once(on_a.frames, timelines[0])


async def test_a_redis_restart_that_loses_everything_mid_run_shows_each_frame_once(
    cluster: Cluster,
) -> None:
    viewers, timelines = await _run_through_a_redis_restart(cluster)
    assert strictly_increasing([f["seq"] for f in viewers[0].frames])
    _assert_each_frame_once(viewers, timelines)


async def test_a_redis_restart_with_persistence_mid_run_shows_each_frame_once(
    cluster: Cluster,
) -> None:
    cluster.redis.persistent = True
    try:
        await asyncio.to_thread(cluster.redis.restart)
        viewers, timelines = await _run_through_a_redis_restart(cluster)
    finally:
        cluster.redis.persistent = False
    _assert_each_frame_once(viewers, timelines)


def strictly_increasing(values: list[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))
