import asyncio
import hashlib
import json
import math
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server.conftest import AppClient, ClientFactory
from tests.support.redis_server import start_redis_server
from webchat.server import create_app
from webchat.settings import ServerSettings


async def test_health_and_profiles_without_secrets(make_client: ClientFactory):
    async with make_client(openai_api_key="sk-test-SECRET-7") as client:
        assert (await client.get("/healthz")).json()["status"] == "ok"
        response = await client.get("/api/chat/profiles")
        assert response.status_code == 200
        profiles = {p["slug"]: p for p in response.json()}
        assert set(profiles) == {"default", "slow", "queue", "interrupting", "locked", "gpt"}
        assert profiles["default"]["allow_overrides"] and profiles["default"]["default"]
        assert profiles["queue"]["busy_policy"] == "enqueue"
        assert profiles["gpt"]["model"] == "gpt-test"
        assert "SECRET" not in response.text


async def test_a_run_emits_the_whole_lifecycle(client: AppClient):
    response = await client.post("/chat", json={"prompt": "calc: 6*7", "conv_id": "c-1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "running" and body["conv_id"] == "c-1"
    assert body["run_id"] == body["session_id"]
    assert body["inference_id"] and body["turn_id"]
    await client.run_to_end("c-1")
    frames = await client.timeline("c-1")
    types = [f["type"] for f in frames]
    assert types[:2] == ["chat.user_message", "run.started"]
    assert types.count("run.finished") == 1
    assert not {"run.failed", "run.cancelled"} & set(types)
    assert [t for t in types if t.startswith("tool.")] == [
        "tool.start",
        "tool.delta",
        "tool.result",
        "tool.done",
    ]
    seqs = [f["seq"] for f in frames]
    assert seqs == sorted(set(seqs))
    assert all(f["inference_id"] == body["inference_id"] for f in frames)
    # The history is compacted: each finished answer is its llm.final, not its deltas.
    assert "llm.delta" not in types
    assert frames[-2]["type"] == "llm.final" and frames[-2]["text"] == "The result of 6*7 is 42."

    info = (await client.get("/api/conversations/c-1")).json()
    assert info["session_id"] == body["session_id"]
    assert info["profile"] == "default" and info["running"] is False
    assert info["last_seq"] == seqs[-1]
    assert len(info["turns"]) == 1
    assert info["signature"]["profile_slug"] == "default"
    listed = (await client.get("/api/conversations")).json()["conversations"]
    assert listed[0]["conv_id"] == "c-1" and listed[0]["title"] == "calc: 6*7"


async def test_timeline_since_returns_only_later_frames(client: AppClient):
    await client.post("/chat", json={"prompt": "hello", "conv_id": "c-2"})
    await client.run_to_end("c-2")
    everything = await client.timeline("c-2")
    middle = everything[len(everything) // 2]["seq"]
    later = await client.timeline("c-2", since=middle)
    assert later == [f for f in everything if f["seq"] > middle]


async def test_server_assigns_a_conv_id_when_absent(client: AppClient):
    body = (await client.post("/chat", json={"prompt": "hi"})).json()
    assert len(body["conv_id"]) == 36
    await client.run_to_end(body["conv_id"])


@pytest.mark.parametrize(
    ("path", "payload", "status", "fragment"),
    [
        ("/chat", b"{not json", 400, "not valid JSON"),
        ("/chat", {"conv_id": "x"}, 422, "prompt"),
        ("/chat", {"prompt": 42}, 422, "prompt"),
        ("/chat", {"prompt": ""}, 422, "prompt"),
        ("/chat/nope", {"prompt": "hi"}, 404, "unknown profile"),
        ("/chat/locked", {"prompt": "hi", "overrides": {"system_prompt": "x"}}, 403, "overrides"),
        ("/chat", {"prompt": "hi", "overrides": {"tools": ["rm"]}}, 400, "unknown tool"),
        (
            "/chat",
            {"prompt": "hi", "overrides": {"middlewares": [{"name": "x"}]}},
            400,
            "middleware",
        ),
        ("/chat", {"prompt": "hi", "overrides": {"step_settings": {"model": "x"}}}, 400, "model"),
        ("/chat", {"prompt": "hi", "overrides": {"colour": 1}}, 400, "colour"),
        ("/chat", {"prompt": "hi", "conv_id": "../etc"}, 400, "conv_id"),
        ("/chat", {"prompt": "x" * 100_001}, 413, "limit is 100000"),
    ],
)
async def test_bad_requests_get_clear_json_errors(
    client: AppClient, path, payload, status, fragment
):
    if isinstance(payload, bytes):
        response = await client.post(
            path, content=payload, headers={"content-type": "application/json"}
        )
    else:
        response = await client.post(path, json=payload)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]
    assert client.service.manager.find("x") is None


async def test_body_limits_apply_with_and_without_content_length(make_client: ClientFactory):
    async with make_client(max_body_bytes=2048, max_prompt_chars=10) as client:
        big = json.dumps({"prompt": "y" * 5000}).encode()
        declared = await client.post(
            "/chat", content=big, headers={"content-type": "application/json"}
        )
        assert declared.status_code == 413 and "2048 bytes" in declared.json()["error"]

        async def chunks():
            for i in range(0, len(big), 512):
                yield big[i : i + 512]

        chunked = await client.post(
            "/chat", content=chunks(), headers={"content-type": "application/json"}
        )
        assert chunked.status_code == 413
        too_long = await client.post("/chat", json={"prompt": "z" * 11})
        assert too_long.status_code == 413 and "limit is 10" in too_long.json()["error"]


async def test_unknown_conversation_is_404_everywhere(client: AppClient):
    for method, path in [
        ("GET", "/api/conversations/ghost"),
        ("GET", "/api/conversations/ghost/timeline"),
        ("POST", "/api/conversations/ghost/cancel"),
    ]:
        response = await client.request(method, path)
        assert response.status_code == 404, path
        assert "unknown conversation" in response.json()["error"]


async def test_busy_reject_returns_409_with_the_active_run(client: AppClient):
    first = (await client.post("/chat/slow", json={"prompt": "long", "conv_id": "b-1"})).json()
    busy = await client.post("/chat/slow", json={"prompt": "again", "conv_id": "b-1"})
    assert busy.status_code == 409
    detail = busy.json()
    assert detail["inference_id"] == first["inference_id"]
    assert isinstance(detail["last_seq"], int)
    assert "already active" in detail["error"]
    await client.post("/api/conversations/b-1/cancel")


async def test_busy_enqueue_runs_queued_prompts_in_order(client: AppClient):
    first = await client.post("/chat/queue", json={"prompt": "one", "conv_id": "q-1"})
    second = await client.post("/chat/queue", json={"prompt": "two", "conv_id": "q-1"})
    third = await client.post("/chat/queue", json={"prompt": "three", "conv_id": "q-1"})
    assert first.status_code == 200
    assert (second.status_code, second.json()["queue_position"]) == (202, 1)
    assert (third.status_code, third.json()["queue_position"]) == (202, 2)
    assert second.json()["status"] == "queued"
    conversation = client.service.manager.get("q-1")
    async with asyncio.timeout(20):
        while len(conversation.session.turns) < 3 or conversation.queued:
            await client.run_to_end("q-1")
            await asyncio.sleep(0)  # let the scheduler start the next queued run
    frames = await client.timeline("q-1")
    prompts = [f["text"] for f in frames if f["type"] == "chat.user_message"]
    assert prompts == ["one", "two", "three"]
    finished = [f["inference_id"] for f in frames if f["type"] == "run.finished"]
    assert finished == [r.json()["inference_id"] for r in (first, second, third)]


async def test_busy_interrupt_cancels_the_active_run_then_starts(client: AppClient):
    first = (
        await client.post("/chat/interrupting", json={"prompt": "long", "conv_id": "i-1"})
    ).json()
    second = await client.post("/chat/interrupting", json={"prompt": "instead", "conv_id": "i-1"})
    assert second.status_code == 200
    cancelled = await client.post("/api/conversations/i-1/cancel")
    assert cancelled.json()["inference_id"] == second.json()["inference_id"]
    await client.run_to_end("i-1")
    frames = await client.timeline("i-1")
    endings = [
        (f["type"], f["inference_id"])
        for f in frames
        if f["type"].startswith("run.") and f["type"] != "run.started"
    ]
    assert endings == [
        ("run.cancelled", first["inference_id"]),
        ("run.cancelled", second.json()["inference_id"]),
    ]
    prompts = [f["text"] for f in frames if f["type"] == "chat.user_message"]
    assert prompts == ["long", "instead"]


async def test_idempotency_key_returns_the_first_response_and_starts_nothing(client: AppClient):
    headers = {"Idempotency-Key": "key-123"}
    one = await client.post("/chat", json={"prompt": "hi", "conv_id": "k-1"}, headers=headers)
    two = await client.post("/chat", json={"prompt": "hi", "conv_id": "k-1"}, headers=headers)
    assert one.status_code == two.status_code == 200
    assert one.json() == two.json()
    await client.run_to_end("k-1")
    assert client.service.runs_started == 1
    assert len(client.service.manager.get("k-1").session.turns) == 1
    other = await client.post(
        "/chat", json={"prompt": "hi", "conv_id": "k-1"}, headers={"Idempotency-Key": "key-456"}
    )
    assert other.json()["inference_id"] != one.json()["inference_id"]
    await client.run_to_end("k-1")


async def test_cancel_ends_the_run_with_run_cancelled(client: AppClient):
    run = (await client.post("/chat/slow", json={"prompt": "long", "conv_id": "x-1"})).json()
    conversation = client.service.manager.get("x-1")
    async with asyncio.timeout(5):
        await conversation.wait_for_frame(lambda f: f.type == "llm.delta")
    response = await client.post("/api/conversations/x-1/cancel")
    assert response.json() == {
        "conv_id": "x-1",
        "cancelled": True,
        "inference_id": run["inference_id"],
    }
    await client.run_to_end("x-1")
    frames = await client.timeline("x-1")
    assert [f["type"] for f in frames].count("run.cancelled") == 1
    assert not any(f["type"] in ("run.finished", "run.failed") for f in frames)
    again = await client.post("/api/conversations/x-1/cancel")
    assert again.json()["cancelled"] is False


async def test_provider_failure_ends_with_run_failed_and_no_secret(make_client: ClientFactory):
    async with make_client(openai_api_key="sk-test-SECRET-9") as client:
        run = await client.post("/chat/gpt", json={"prompt": "hi", "conv_id": "f-1"})
        assert run.status_code == 200
        await client.run_to_end("f-1")
        frames = await client.timeline("f-1")
        failed = [f for f in frames if f["type"] == "run.failed"]
        assert len(failed) == 1 and "openai" in failed[0]["error"]
        assert "error" in [f["type"] for f in frames]
        info = await client.get("/api/conversations/f-1")
        assert "hmac-sha256:" in info.text  # a keyed fingerprint of the key, not the key
        plain = hashlib.sha256(b"sk-test-SECRET-9").hexdigest()[:12]
        for text in (info.text, json.dumps(frames)):
            assert "SECRET" not in text and plain not in text
        # A failure leaves the conversation usable.
        assert info.json()["running"] is False
        assert info.json()["turns"][0]["metadata"]["error"]


async def test_override_change_rebuilds_and_is_visible(client: AppClient):
    await client.post("/chat", json={"prompt": "a", "conv_id": "r-1"})
    await client.run_to_end("r-1")
    await client.post(
        "/chat", json={"prompt": "b", "conv_id": "r-1", "overrides": {"system_prompt": "New."}}
    )
    await client.run_to_end("r-1")
    info = (await client.get("/api/conversations/r-1")).json()
    assert info["rebuilds"] == 1
    assert info["signature"]["system_prompt"] == "New."
    assert len(info["turns"]) == 2


async def test_metrics_are_prometheus_text(client: AppClient):
    await client.post("/chat", json={"prompt": "hi", "conv_id": "m-1"})
    await client.run_to_end("m-1")
    text = (await client.get("/metrics")).text
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    for name in (
        "webchat_conversations",
        "webchat_active_runs",
        "webchat_connected_clients",
        "webchat_frames_sent_total",
        "webchat_dropped_slow_clients_total",
        "webchat_rebuilds_total",
    ):
        assert name in values
    assert values["webchat_conversations"] == 1
    assert "# TYPE webchat_rebuilds_total counter" in text


async def test_ui_is_served_at_root_and_under_a_prefix(make_client: ClientFactory):
    async with make_client() as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
    async with make_client(root="/chat-ui") as client:
        assert (await client.get("/chat-ui/")).status_code == 200
        assert (await client.get("/chat-ui/healthz")).status_code == 200
        assert (await client.get("/healthz")).status_code == 404


async def test_an_internal_failure_is_json_and_settles_the_idempotency_key(
    client: AppClient, monkeypatch: pytest.MonkeyPatch
):
    async def broken(conv_id: str, inference_id: str) -> str | None:
        raise ConnectionError("coordination store unreachable")

    monkeypatch.setattr(client.service.coordination, "try_lock", broken)
    headers = {"Idempotency-Key": "key-broken"}
    first = await client.post("/chat", json={"prompt": "hi", "conv_id": "e-1"}, headers=headers)
    assert first.status_code == 500
    assert first.json() == {"error": "internal error: ConnectionError"}
    async with asyncio.timeout(5):  # a retry gets the same answer instead of waiting forever
        again = await client.post("/chat", json={"prompt": "hi", "conv_id": "e-1"}, headers=headers)
    assert (again.status_code, again.json()) == (500, first.json())


# -- idempotency keys are bound to their request -------------------------------------------


@pytest.fixture(params=["memory", "redis"])
async def both_coordinations(
    request: pytest.FixtureRequest, make_client: ClientFactory
) -> AsyncIterator[AppClient]:
    """The app with LocalCoordination, then with RedisCoordination (a real redis-server)."""
    settings: dict[str, Any] = {}
    if request.param == "redis":
        settings = {"transport": "redis", "redis_url": request.getfixturevalue("redis_url")}
    async with make_client(**settings) as client:
        yield client


async def test_a_reused_idempotency_key_with_another_request_is_refused(
    both_coordinations: AppClient,
):
    client = both_coordinations
    conv_id, key = f"k-{uuid.uuid4().hex[:8]}", {"Idempotency-Key": uuid.uuid4().hex}
    body = {"prompt": "hi", "conv_id": conv_id}
    first = await client.post("/chat/default", json=body, headers=key)
    assert first.status_code == 200, first.text
    assert first.cookies.get("chat_profile") == "default"
    await client.run_to_end(conv_id)

    refused = {"error": "Idempotency-Key reused with a different request"}
    for path, other in [
        ("/chat/default", {"prompt": "something else", "conv_id": conv_id}),
        ("/chat/default", {"prompt": "hi", "conv_id": conv_id, "overrides": {"temperature": 1}}),
        ("/chat/slow", body),  # another path, and another profile
        ("/chat", body),  # another path, though it resolves to the same profile
        ("/chat/nope", body),  # a profile that does not exist: no cookie for it
        ("/chat/профиль", body),  # nor for one that is not even Latin-1
    ]:
        response = await client.post(path, json=other, headers=key)
        assert (response.status_code, response.json()) == (422, refused), (path, other)
        assert response.headers["content-type"] == "application/json"
        assert "set-cookie" not in response.headers, path

    # The same request again (keys reordered, spacing changed) still gets the first response.
    same = json.dumps({"conv_id": conv_id, "prompt": "hi"}, indent=2)
    again = await client.post(
        "/chat/default", content=same, headers={**key, "content-type": "application/json"}
    )
    assert (again.status_code, again.json()) == (200, first.json())
    assert client.service.runs_started == 1


async def test_the_cookie_profile_is_part_of_the_request_a_key_is_bound_to(
    both_coordinations: AppClient,
):
    client = both_coordinations
    conv_id, key = f"k-{uuid.uuid4().hex[:8]}", {"Idempotency-Key": uuid.uuid4().hex}
    body = {"prompt": "hi", "conv_id": conv_id}
    first = await client.post("/chat", json=body, headers={**key, "Cookie": "chat_profile=default"})
    assert first.status_code == 200, first.text
    await client.run_to_end(conv_id)
    other = await client.post("/chat", json=body, headers={**key, "Cookie": "chat_profile=queue"})
    assert other.status_code == 422
    assert other.json() == {"error": "Idempotency-Key reused with a different request"}
    # Without the cookie the request resolves to the default profile: the same request.
    again = await client.post("/chat", json=body, headers=key)
    assert (again.status_code, again.json()) == (200, first.json())


# -- every error is {"error": ...} ---------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/no/such/route", 404),
        ("POST", "/api/nothing", 404),
        ("GET", "/static/no-such-file.js", 404),
        ("DELETE", "/healthz", 405),
        ("GET", "/chat", 405),
        ("POST", "/static/app.js", 405),
    ],
)
async def test_unknown_routes_and_methods_answer_json_errors(
    client: AppClient, method: str, path: str, status: int
):
    response = await client.request(method, path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and body["error"], body
    if status == 405:
        assert response.headers["allow"]


async def test_invalid_path_and_query_parameters_are_json_422s(client: AppClient):
    for path in (
        "/api/conversations/-starts-badly",
        "/api/conversations/" + "a" * 129,
        "/api/conversations/ok/timeline?since=-1",
        f"/api/conversations/ok/timeline?since={2**63}",
        "/api/conversations?limit=0",
    ):
        response = await client.get(path)
        assert response.status_code == 422, path
        assert response.json()["error"].startswith("invalid request: "), path


# -- reads never create --------------------------------------------------------------------


async def test_describing_a_stored_conversation_does_not_load_it(
    make_client: ClientFactory, tmp_path: Path
):
    db = str(tmp_path / "chat.sqlite3")
    async with make_client(db=db) as client:
        await client.post("/chat", json={"prompt": "calc: 6*7", "conv_id": "d-1"})
        await client.run_to_end("d-1")
        live = (await client.get("/api/conversations/d-1")).json()

    async with make_client(db=db) as client:
        response = await client.get("/api/conversations/d-1")
        assert response.status_code == 200, response.text
        assert client.service.manager.find("d-1") is None
        assert len(client.service.manager) == 0
        stored = response.json()
        assert stored == {**live, "clients": 0, "rebuilds": 0}
        assert len(stored["turns"]) == 1 and stored["running"] is False
        # Still a 404 for what was never stored, and still nothing created.
        assert (await client.get("/api/conversations/d-2")).status_code == 404
        assert len(client.service.manager) == 0


async def test_an_unexpected_failure_anywhere_is_a_json_500(profiles_file: Path):
    """Redis gone under a running app: the route fails, the answer is still JSON."""
    redis = start_redis_server()  # its own server: the shared one stays up for other tests
    try:
        settings = ServerSettings(
            db=":memory:", profiles=profiles_file, transport="redis", redis_url=redis.url
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
                redis.stop()
                for path in ("/api/conversations", "/api/conversations/gone/timeline"):
                    response = await http.get(path)
                    assert response.status_code == 500, path
                    assert response.headers["content-type"] == "application/json"
                    assert response.json() == {"error": "internal error: ConnectionError"}
    finally:
        redis.cleanup()


async def test_profiles_offer_their_starters(make_client: Any, tmp_path: Path) -> None:
    profiles = tmp_path / "starters.yaml"
    profiles.write_text(
        "profiles:\n"
        "  - slug: helper\n"
        '    starters: ["Explain a regex", "calc: 2+2"]\n'
        "  - slug: plain\n"
    )
    async with make_client(profiles=profiles) as client:
        listed = {p["slug"]: p["starters"] for p in (await client.get("/api/chat/profiles")).json()}
    assert listed == {"helper": ["Explain a regex", "calc: 2+2"], "plain": []}


async def test_a_finished_run_says_how_long_it_took(client: AppClient) -> None:
    """Stored with the frame, so an answer read from history shows its duration too."""
    started = await client.post("/chat", json={"prompt": "hi", "conv_id": "timed"})
    assert started.status_code == 200
    await client.run_to_end("timed")
    frames = await client.timeline("timed")
    finished = [f for f in frames if f["type"] == "run.finished"]
    assert len(finished) == 1
    assert isinstance(finished[0]["duration_ms"], int) and finished[0]["duration_ms"] >= 0


async def test_a_finished_answer_is_stored_as_its_final_not_its_deltas(client: AppClient):
    response = await client.post("/chat", json={"prompt": "calc: 6*7", "conv_id": "stored"})
    assert response.status_code == 200, response.text
    await client.run_to_end("stored")
    store = client.service.store
    await store.flush()
    kept = [json.loads(text)["event"]["type"] for _, text in await store.frames_since("stored", 0)]
    assert "llm.delta" in kept, "deleted only later: another process may still need them"
    assert client.service.manager.prune_stored_deltas(math.inf) > 0
    await store.flush()
    stored = [json.loads(text)["event"] for _, text in await store.frames_since("stored", 0)]
    types = [f["type"] for f in stored]
    assert "llm.delta" not in types, "the deltas of a finished stream are deleted"
    assert types.count("llm.final") == 2
    assert [f["text"] for f in stored if f["type"] == "llm.final"] == [
        "Let me calculate that.",
        "The result of 6*7 is 42.",
    ]
