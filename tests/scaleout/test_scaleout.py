"""Two ``webchat serve --transport redis`` processes, one Redis: they behave as one server.

Each test follows one point of the scale-out contract with real processes and real clients
(``httpx``, ``websockets``). Every wait is for a specific frame or state under a deadline;
the only fixed sleep is the length of the Redis outage itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import redis.asyncio as aredis

from tests.scaleout.cluster import Cluster, ServerProcess
from tests.support import ws_client
from tests.support.client_view import assert_exactly_once, is_delta
from tests.support.ws_client import TERMINAL, Viewer, terminal_frames
from webchat.conversation.frames import frame_seq
from webchat.transport.redis_streams import seq_from_entry_id

WAIT = 20.0
LEASE_BOUND = 15.0
"""A killed owner's run must be closed within this many seconds (lease 10 s + reaper 2 s)."""


# -- clients -------------------------------------------------------------------------------


def new_conv(kind: str) -> str:
    return f"so-{kind}-{uuid.uuid4().hex[:10]}"


@contextlib.asynccontextmanager
async def viewer(server: ServerProcess, conv_id: str, **params: Any) -> AsyncIterator[Viewer]:
    async with ws_client.viewer(server.ws_url, conv_id, wait=WAIT, **params) as client:
        yield client


@contextlib.asynccontextmanager
async def http_clients(cluster: Cluster) -> AsyncIterator[tuple[httpx.AsyncClient, ...]]:
    async with (
        httpx.AsyncClient(base_url=cluster.a.url, timeout=WAIT) as a,
        httpx.AsyncClient(base_url=cluster.b.url, timeout=WAIT) as b,
    ):
        yield a, b


async def post_run(
    http: httpx.AsyncClient,
    conv_id: str,
    prompt: str,
    profile: str = "default",
    *,
    expect: int = 200,
    **body: Any,
) -> dict[str, Any]:
    # Always name the profile: ``/chat`` would use the one a previous call left in a cookie.
    response = await http.post(
        f"/chat/{profile}", json={"prompt": prompt, "conv_id": conv_id, **body}
    )
    assert response.status_code == expect, (response.status_code, response.text)
    data: dict[str, Any] = response.json()
    return data


async def get_json(http: httpx.AsyncClient, path: str, **params: Any) -> dict[str, Any]:
    response = await http.get(path, params=params)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def poll_json(
    http: httpx.AsyncClient, path: str, ready: Callable[[dict[str, Any]], Any], timeout: float = 5
) -> dict[str, Any]:
    """GET ``path`` until ``ready(body)`` is truthy (under a deadline); returns that body."""
    async with asyncio.timeout(timeout):
        while not ready(body := await get_json(http, path)):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    return body


def has_turns(count: int) -> Callable[[dict[str, Any]], bool]:
    return lambda info: len(info["turns"]) >= count


async def describe(http: httpx.AsyncClient, conv_id: str) -> dict[str, Any]:
    return await get_json(http, f"/api/conversations/{conv_id}")


async def timeline(http: httpx.AsyncClient, conv_id: str, since: int = 0) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = (
        await get_json(http, f"/api/conversations/{conv_id}/timeline", since=since)
    )["frames"]
    return frames


def user_texts(turn: dict[str, Any]) -> list[str]:
    return [b["payload"]["text"] for b in turn["blocks"] if b["kind"] == "user"]


def seqs(frames: list[dict[str, Any]]) -> list[int]:
    return [int(f["seq"]) for f in frames]


def strictly_increasing(values: list[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


def up_to(frames: list[dict[str, Any]], since: int) -> list[dict[str, Any]]:
    """What a client that resumes with ``since`` had before (its first connection)."""
    return [f for f in frames if f["seq"] <= since]


def streamed_text(frames: list[dict[str, Any]], inference_id: str) -> str:
    """The text the run's deltas carried (deltas say only their message id, not the run)."""
    messages = {f["id"] for f in frames if f["type"] == "llm.start"}
    messages &= {f["id"] for f in frames if f.get("inference_id") == inference_id}
    return "".join(f["delta"] for f in frames if f["type"] == "llm.delta" and f["id"] in messages)


async def wait_for_key(redis_url: str, key: str, timeout: float = 10.0) -> str:
    """The value of ``key`` once it exists in Redis (polled under a deadline)."""
    probe = aredis.from_url(redis_url)
    try:
        async with asyncio.timeout(timeout):
            while (value := await probe.get(key)) is None:  # noqa: ASYNC110 (another process)
                await asyncio.sleep(0.05)
    finally:
        await probe.aclose()
    return value.decode() if isinstance(value, bytes) else str(value)


# -- shared state --------------------------------------------------------------------------


async def test_any_process_continues_a_conversation_with_its_full_history(
    cluster: Cluster,
) -> None:
    conv_id = new_conv("state")
    overrides = {"system_prompt": "Answer in one sentence."}
    prompts = ["calc: 6*7", "what did I just ask?", "and one more thing"]
    async with asyncio.timeout(60), http_clients(cluster) as (a, b):
        async with viewer(cluster.a, conv_id) as on_a:
            first = await post_run(a, conv_id, prompts[0], overrides=overrides)
            assert (await on_a.read_run(first["inference_id"]))["type"] == "run.finished"
            session_id = first["session_id"]
            info_a = await describe(a, conv_id)

            # B never saw this conversation: it comes from the shared store, as A left it (A
            # writes it a moment after its clients see run.finished, hence the polling).
            info_b = await poll_json(b, f"/api/conversations/{conv_id}", has_turns(1))
            assert info_b["session_id"] == session_id == info_a["session_id"]
            assert info_b["profile"] == "default"
            assert info_b["signature"] == info_a["signature"]
            assert "Answer in one sentence." in json.dumps(info_b["signature"])
            assert [user_texts(t) for t in info_b["turns"]] == [prompts[:1]]
            final_text = info_b["turns"][0]["blocks"][-1]["payload"]["text"]
            assert final_text == "The result of 6*7 is 42."
            listed = (await get_json(b, "/api/conversations"))["conversations"]
            assert [c["title"] for c in listed if c["conv_id"] == conv_id] == [prompts[0]]

            # The next run on B continues A's history; A's client sees it.
            second = await post_run(b, conv_id, prompts[1], overrides=overrides)
            assert second["session_id"] == session_id
            assert (await on_a.read_run(second["inference_id"]))["type"] == "run.finished"
            info_a = await poll_json(a, f"/api/conversations/{conv_id}", has_turns(2))
            assert [user_texts(t) for t in info_a["turns"]] == [prompts[:1], prompts[:2]]

            # And A continues B's.
            third = await post_run(a, conv_id, prompts[2], overrides=overrides)
            assert third["session_id"] == session_id
            assert (await on_a.read_run(third["inference_id"]))["type"] == "run.finished"

        for http in (a, b):  # the other process catches up from the store
            info = await poll_json(http, f"/api/conversations/{conv_id}", has_turns(3))
            assert info["session_id"] == session_id
            assert info["signature"] == info_a["signature"]
            assert [user_texts(t) for t in info["turns"]] == [
                prompts[:1],
                prompts[:2],
                prompts[:3],
            ]
            assert [t["id"] for t in info["turns"]] == [
                first["turn_id"],
                second["turn_id"],
                third["turn_id"],
            ]
        path = f"/api/conversations/{conv_id}/timeline"
        last = on_a.frames[-1]
        timeline_b = await poll_json(b, path, lambda d: d["frames"] and d["frames"][-1] == last)
        assert await timeline(a, conv_id) == timeline_b["frames"]
        assert_exactly_once(on_a.frames, timeline_b["frames"])


# -- one run per conversation; a killed owner ----------------------------------------------


async def test_one_run_per_conversation_and_a_killed_owner_frees_it_by_lease_expiry(
    cluster: Cluster,
) -> None:
    conv_id = new_conv("kill")
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(60), http_clients(cluster) as (a, b):
        async with viewer(cluster.b, conv_id) as on_b:
            run = await post_run(a, conv_id, "a very long answer please", "slow")
            await on_b.read_deltas(3, run["inference_id"])  # B's client follows A's run

            # The lock is deployment-wide: neither process starts a second run.
            for http in (b, a):
                busy = await post_run(http, conv_id, "me too", "slow", expect=409)
                assert busy["inference_id"] == run["inference_id"]

            cluster.a.kill()  # SIGKILL: the owner releases nothing
            killed_at = loop.time()
            end = await on_b.read_run(run["inference_id"], timeout=LEASE_BOUND + 5)
            elapsed = loop.time() - killed_at
            assert end["type"] == "run.failed", end
            assert elapsed <= LEASE_BOUND, f"closed {elapsed:.1f}s after the kill"
            assert end["session_id"] == run["session_id"]

            # Usable again, from the surviving process.
            after = await post_run(b, conv_id, "are you still there?")
            assert after["session_id"] == run["session_id"]
            assert (await on_b.read_run(after["inference_id"]))["type"] == "run.finished"

        assert on_b.terminals(run["inference_id"]) == ["run.failed"]
        frames = await timeline(b, conv_id)
        assert terminal_frames(frames, run["inference_id"]) == ["run.failed"]
        assert terminal_frames(frames, after["inference_id"]) == ["run.finished"]
        assert strictly_increasing(seqs(frames))


# -- cancel anywhere -----------------------------------------------------------------------


async def test_cancel_on_any_process_stops_the_run_where_it_executes(cluster: Cluster) -> None:
    conv_id = new_conv("cancel")
    async with asyncio.timeout(60), http_clients(cluster) as (a, b):
        async with viewer(cluster.a, conv_id) as on_a, viewer(cluster.b, conv_id) as on_b:
            for runner, canceller in ((a, b), (b, a)):
                run = await post_run(runner, conv_id, "a very long answer please", "slow")
                inference_id = run["inference_id"]
                await on_a.read_deltas(3, inference_id)

                response = await canceller.post(f"/api/conversations/{conv_id}/cancel")
                assert response.status_code == 200, response.text
                assert response.json() == {
                    "conv_id": conv_id,
                    "cancelled": True,
                    "inference_id": inference_id,
                }
                for client in (on_a, on_b):
                    end = await client.read_run(inference_id)
                    assert end["type"] == "run.cancelled", end
                    assert 3 <= len(streamed_text(client.frames, inference_id).split()) < 400

                # The lock was let go: a new run starts at once, on either process.
                follow = await post_run(canceller, conv_id, "short one")
                for client in (on_a, on_b):
                    assert (await client.read_run(follow["inference_id"]))["type"] == (
                        "run.finished"
                    )

            idle = await a.post(f"/api/conversations/{conv_id}/cancel")
            assert idle.status_code == 200
            assert idle.json()["cancelled"] is False

        assert_exactly_once(on_a.frames, on_b.frames)
        frames = await timeline(b, conv_id)
        runs = {f["inference_id"] for f in frames if f["type"] == "run.started"}
        assert len(runs) == 4
        assert sorted(t for i in runs for t in terminal_frames(frames, i)) == [
            "run.cancelled",
            "run.cancelled",
            "run.finished",
            "run.finished",
        ]


# -- same frames, same seqs; resume anywhere ----------------------------------------------


async def test_clients_on_two_processes_get_the_same_frames_and_resume_on_either(
    cluster: Cluster,
) -> None:
    conv_id = new_conv("frames")
    async with asyncio.timeout(60), http_clients(cluster) as (a, b):
        async with viewer(cluster.a, conv_id) as on_a, viewer(cluster.b, conv_id) as on_b:
            first = await post_run(a, conv_id, "calc: 12*12")
            for client in (on_a, on_b):
                assert (await client.read_run(first["inference_id"]))["type"] == "run.finished"
            second = await post_run(b, conv_id, "tell me more")
            for client in (on_a, on_b):
                assert (await client.read_run(second["inference_id"]))["type"] == "run.finished"

        # The same frames in the same order under the same seqs, but for deltas one of them
        # may have got folded together (a client that fell behind).
        assert_exactly_once(on_a.frames, on_b.frames)
        assert strictly_increasing(seqs(on_a.frames))
        types = [f["type"] for f in on_a.frames]
        assert {"tool.start", "tool.result", "llm.delta", "llm.final"} <= set(types)
        assert types.count("run.finished") == 2
        assert all(f["conv_id"] == conv_id for f in on_a.frames)

        # Resume from the middle (the first run's end) and from the start, on each process.
        middle = int(on_a.of(first["inference_id"], "run.finished")[0]["seq"])
        for server in cluster.servers:
            for since in (middle, 0):
                async with viewer(server, conv_id, since=since) as resumed:
                    await resumed.read_run(second["inference_id"])
                assert resumed.frames[0]["seq"] > since, (server.name, since)
                assert_exactly_once(on_a.frames, up_to(on_a.frames, since), resumed.frames)
                # Both runs ended: the backlog has each answer as its final, no deltas.
                assert not any(map(is_delta, resumed.frames)), (server.name, since)
        whole = await timeline(a, conv_id)
        assert whole == await timeline(b, conv_id)
        assert_exactly_once(on_a.frames, whole)
        later = await timeline(b, conv_id, since=middle)
        assert later[0]["seq"] > middle
        assert_exactly_once(on_a.frames, up_to(on_a.frames, middle), later)

        # A conversation only A has in memory: B resumes it from the shared store.
        only_a = new_conv("frames-a")
        async with viewer(cluster.a, only_a) as watcher:
            run = await post_run(a, only_a, "calc: 2+3")
            await watcher.read_run(run["inference_id"])
        cut = int(watcher.frames[len(watcher.frames) // 2]["seq"])
        for since in (0, cut):
            async with viewer(cluster.b, only_a, since=since) as resumed:
                await resumed.read_run(run["inference_id"])
            assert resumed.frames[0]["seq"] > since, since
            assert_exactly_once(watcher.frames, up_to(watcher.frames, since), resumed.frames)


# -- busy policy and idempotency -----------------------------------------------------------


async def test_busy_policy_and_idempotency_keys_hold_across_processes(cluster: Cluster) -> None:
    conv_id = new_conv("busy")
    async with asyncio.timeout(60), http_clients(cluster) as (a, b):
        async with viewer(cluster.a, conv_id) as on_a, viewer(cluster.b, conv_id) as on_b:
            slow = await post_run(a, conv_id, "a very long answer please", "slow")
            await on_b.read_deltas(2, slow["inference_id"])

            # reject (the slow profile's policy), from the other process
            busy = await post_run(b, conv_id, "me too", "slow", expect=409)
            assert busy["inference_id"] == slow["inference_id"]
            assert busy["conv_id"] == conv_id

            # enqueue: one queue for the deployment, whichever process took the request
            queued_1 = await post_run(b, conv_id, "first in line", "queue", expect=202)
            queued_2 = await post_run(a, conv_id, "second in line", "queue", expect=202)
            assert (queued_1["status"], queued_1["queue_position"]) == ("queued", 1)
            assert (queued_2["status"], queued_2["queue_position"]) == ("queued", 2)
            assert (await describe(b, conv_id))["queued"] == 2
            assert (await describe(a, conv_id))["queued"] == 2

            cancelled = await b.post(f"/api/conversations/{conv_id}/cancel")
            assert cancelled.json()["inference_id"] == slow["inference_id"]
            for client in (on_a, on_b):
                assert (await client.read_run(slow["inference_id"]))["type"] == "run.cancelled"
                for queued in (queued_1, queued_2):
                    end = await client.read_run(queued["inference_id"])
                    assert end["type"] == "run.finished", end
            assert (await describe(b, conv_id))["queued"] == 0

            order = [
                (f["inference_id"], f["type"])
                for f in on_a.frames
                if f["type"] in ("chat.user_message", *TERMINAL)
            ]
            assert order == [
                (slow["inference_id"], "chat.user_message"),
                (slow["inference_id"], "run.cancelled"),
                (queued_1["inference_id"], "chat.user_message"),
                (queued_1["inference_id"], "run.finished"),
                (queued_2["inference_id"], "chat.user_message"),
                (queued_2["inference_id"], "run.finished"),
            ]
            assert_exactly_once(on_a.frames, on_b.frames)

            # Idempotency keys: one after the other, on different processes ...
            key = {"Idempotency-Key": f"key-{uuid.uuid4().hex}"}
            body = {"prompt": "only once", "conv_id": conv_id}
            once = await a.post("/chat/default", json=body, headers=key)
            assert once.status_code == 200, once.text
            for client in (on_a, on_b):
                await client.read_run(once.json()["inference_id"])
            again = await b.post("/chat/default", json=body, headers=key)
            assert (again.status_code, again.json()) == (once.status_code, once.json())

            # ... and at the same time on both.
            key = {"Idempotency-Key": f"key-{uuid.uuid4().hex}"}
            body = {"prompt": "only once, concurrently", "conv_id": conv_id}
            both = await asyncio.gather(
                *(http.post("/chat/default", json=body, headers=key) for http in (a, b))
            )
            assert [r.status_code for r in both] == [200, 200], [r.text for r in both]
            assert both[0].json() == both[1].json()
            for client in (on_a, on_b):
                await client.read_run(both[0].json()["inference_id"])
            assert_exactly_once(on_a.frames, on_b.frames)

        frames = await timeline(a, conv_id)
        prompts = [f["text"] for f in frames if f["type"] == "chat.user_message"]
        assert prompts == [
            "a very long answer please",
            "first in line",
            "second in line",
            "only once",
            "only once, concurrently",
        ]


# -- an outside producer -------------------------------------------------------------------


async def test_events_appended_by_an_outside_producer_reach_clients_on_every_process(
    cluster: Cluster,
) -> None:
    conv_id = new_conv("producer")
    meta = {
        "message_id": str(uuid.uuid4()),
        "session_id": "go-session",
        "inference_id": "go-inference",
        "turn_id": "go-turn",
        "model": "go-agent-model",
    }
    usage = {"input_tokens": 7, "output_tokens": 2}
    events = [
        {"type": "start", "meta": meta},
        {"type": "partial", "meta": meta, "delta": "Hello", "completion": "Hello"},
        {"type": "partial", "meta": meta, "delta": " world", "completion": "Hello world"},
        {
            "type": "final",
            "meta": {**meta, "stop_reason": "stop", "usage": usage},
            "text": "Hello world",
        },
        {"type": "info", "meta": {"message_id": str(uuid.uuid4())}, "message": "from Go"},
    ]
    producer = aredis.from_url(cluster.redis.url)
    try:
        async with (
            asyncio.timeout(60),
            http_clients(cluster) as (a, b),
            viewer(cluster.a, conv_id) as on_a,
            viewer(cluster.b, conv_id) as on_b,
        ):
            entry_ids = [
                await producer.xadd(f"chat:{conv_id}", {"payload": json.dumps(event)})
                for event in events
            ]
            for client in (on_a, on_b):
                await client.read_until(lambda e: e["type"] == "log")

            # Each delta as its own frame: only deltas queued behind a send that had to wait
            # are folded, and two small frames on loopback never wait.
            assert on_a.frames == on_b.frames
            frames = on_a.frames
            assert [f["type"] for f in frames] == [
                "llm.start",
                "llm.delta",
                "llm.delta",
                "llm.final",
                "log",
            ]
            message_seqs = [seq_from_entry_id(i) for i in entry_ids]
            slots = [0, 0, 0, 1, 0]  # llm.final takes slot 1 of its event
            expected = [frame_seq(m, s) for m, s in zip(message_seqs, slots, strict=True)]
            assert seqs(frames) == expected
            assert {f["inference_id"] for f in frames[:4]} == {"go-inference"}
            assert {f["session_id"] for f in frames[:4]} == {"go-session"}
            assert frames[0]["model"] == "go-agent-model"
            assert [f["delta"] for f in frames[1:3]] == ["Hello", " world"]
            assert frames[3]["text"] == "Hello world"
            assert frames[3]["usage"] == usage and frames[3]["stop_reason"] == "stop"
            assert frames[4]["message"] == "from Go"

            # History comes compacted: the final stands for the deltas it ends.
            stored = await timeline(a, conv_id)
            assert stored == await timeline(b, conv_id)
            assert [f["type"] for f in stored] == ["llm.start", "llm.final", "log"]
            assert_exactly_once(frames, stored)
            async with viewer(cluster.b, conv_id, since=0) as late:
                await late.read_until(lambda e: e["type"] == "log")
            assert late.frames == stored
    finally:
        await producer.aclose()


# -- Redis goes away -----------------------------------------------------------------------


async def test_redis_outage_mid_run_ends_each_run_once_and_both_processes_recover(
    cluster: Cluster,
) -> None:
    conv_id = new_conv("outage")
    async with asyncio.timeout(80), http_clients(cluster) as (a, b):
        async with viewer(cluster.a, conv_id) as on_a, viewer(cluster.b, conv_id) as on_b:
            run = await post_run(a, conv_id, "a very long answer please", "slow")
            inference_id = run["inference_id"]
            for client in (on_a, on_b):
                await client.read_deltas(5, inference_id)
            since = int(on_a.of(inference_id, "chat.user_message")[0]["seq"]) - 1

            await asyncio.to_thread(cluster.redis.stop)
            for http in (a, b):  # the processes keep serving what needs no Redis
                assert (await http.get("/healthz")).status_code == 200
            await asyncio.sleep(1.5)  # the length of the outage
            await asyncio.to_thread(cluster.redis.start)  # same port, empty

            # The run goes on, and its owner takes its lock back from the empty Redis: still
            # one run at a time.
            lock = await wait_for_key(cluster.redis.url, f"webchat:run:{conv_id}")
            assert lock.endswith(f"|{inference_id}"), lock
            marker = await wait_for_key(cluster.redis.url, f"webchat:active:{conv_id}")
            assert marker == inference_id
            busy = await post_run(b, conv_id, "me too", "slow", expect=409)
            assert busy["inference_id"] == inference_id

            # The live clients see the run end, once (failed, or finished once Redis is back).
            for client in (on_a, on_b):
                end = await client.read_run(inference_id, timeout=30)
                assert end["type"] in ("run.failed", "run.finished"), end

            # Clients resuming with ``since`` on either process see everything sent before.
            for server in cluster.servers:
                async with viewer(server, conv_id, since=since) as resumed:
                    await resumed.read_run(inference_id)
                assert resumed.frames[0]["seq"] > since, server.name
                assert_exactly_once(on_a.frames, up_to(on_a.frames, since), resumed.frames)
                assert resumed.terminals(inference_id) == [end["type"]]

            # Both processes run new turns afterwards; the old run never ends twice.
            for http in (a, b):
                after = await post_run(http, conv_id, "are you back?")
                for client in (on_a, on_b):
                    done = await client.read_run(after["inference_id"])
                    assert done["type"] == "run.finished", done
            other = new_conv("outage-after")
            async with viewer(cluster.b, other) as fresh:
                later = await post_run(a, other, "calc: 1+1")
                assert (await fresh.read_run(later["inference_id"]))["type"] == "run.finished"

        assert_exactly_once(on_a.frames, on_b.frames)
        assert strictly_increasing(seqs(on_a.frames))
        for client in (on_a, on_b):
            assert client.terminals(inference_id) == [end["type"]]
        for http in (a, b):
            assert terminal_frames(await timeline(http, conv_id), inference_id) == [end["type"]]
