"""Managing conversations over HTTP: rename, delete, search, feedback and export.

In process (ASGI) for the routes and their ownership rules (``--auth users``: alice, bob and
the admin root); over real sockets for what a delete does to open tabs, in one process and
across two processes sharing a Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from websockets.exceptions import ConnectionClosed

from tests.server.auth_support import Team
from tests.server.conftest import AppClient, ClientFactory
from tests.support.live_server import LiveServer
from tests.support.ws_client import Viewer, viewer
from webchat.chat.management import DELETED_CODE, ConversationManagement
from webchat.settings import ServerSettings
from webchat.transport import topic_for

NASTY_QUERIES = ['"', "*", "NEAR(", 'NEAR("a" b', "a OR", "NOT", "(x", "x)", "t:x", "^x", "'"]

pytest_plugins = ["tests.server.auth_support"]  # the team and users_client fixtures


async def chat(
    client: AppClient,
    conv_id: str,
    prompt: str = "hello",
    *,
    headers: dict[str, str] | None = None,
    profile: str | None = None,
    wait: bool = True,
) -> dict[str, Any]:
    path = f"/chat/{profile}" if profile else "/chat"
    response = await client.post(path, json={"prompt": prompt, "conv_id": conv_id}, headers=headers)
    assert response.status_code in (200, 202), response.text
    if wait:
        await client.run_to_end(conv_id)
    body: dict[str, Any] = response.json()
    return body


async def turn_ids(client: AppClient, conv_id: str, **kw: Any) -> list[str]:
    described = await client.get(f"/api/conversations/{conv_id}", **kw)
    assert described.status_code == 200, described.text
    return [turn["id"] for turn in described.json()["turns"]]


async def searched(client: AppClient, q: str, **kw: Any) -> list[str]:
    response = await client.get("/api/conversations/search", params={"q": q}, **kw)
    assert response.status_code == 200, response.text
    return [c["conv_id"] for c in response.json()["conversations"]]


async def listed(client: AppClient, **kw: Any) -> list[str]:
    response = await client.get("/api/conversations", **kw)
    assert response.status_code == 200
    return [c["conv_id"] for c in response.json()["conversations"]]


# -- rename ---------------------------------------------------------------------------------


async def test_rename_answers_the_summary_and_survives_later_runs(client: AppClient) -> None:
    await chat(client, "c1", "what is a kettle")
    response = await client.patch("/api/conversations/c1", json={"title": "  Kettles\nand tea "})
    assert response.status_code == 200, response.text
    summary = response.json()
    assert summary["conv_id"] == "c1" and summary["title"] == "Kettles and tea"
    assert set(summary) == {"conv_id", "profile", "title", "owner", "updated_at", "running"}
    await chat(client, "c1", "and a teapot?")  # the run ends by saving the record again
    conversations = (await client.get("/api/conversations")).json()["conversations"]
    assert [(c["conv_id"], c["title"]) for c in conversations] == [("c1", "Kettles and tea")]


@pytest.mark.parametrize("body", [{"title": ""}, {"title": "  \n "}, {"title": "x" * 201}, {}])
async def test_a_bad_title_is_422(client: AppClient, body: dict[str, Any]) -> None:
    await chat(client, "c1")
    assert (await client.patch("/api/conversations/c1", json=body)).status_code == 422


async def test_renaming_an_unknown_conversation_is_404(client: AppClient) -> None:
    response = await client.patch("/api/conversations/nope", json={"title": "x"})
    assert response.status_code == 404
    assert response.json() == {"error": "unknown conversation 'nope'"}


# -- delete ---------------------------------------------------------------------------------


async def test_a_deleted_conversation_is_404_everywhere(client: AppClient) -> None:
    await chat(client, "c1", "calc: 2+3")
    await chat(client, "kept", "something else")
    (turn_id,) = await turn_ids(client, "c1")
    feedback = {"rating": "up", "comment": None}
    assert (
        await client.put(f"/api/conversations/c1/turns/{turn_id}/feedback", json=feedback)
    ).status_code == 200

    response = await client.delete("/api/conversations/c1")
    assert response.status_code == 200, response.text
    assert response.json() == {"conv_id": "c1", "deleted": True}

    unknown = {"error": "unknown conversation 'c1'"}
    for method, path, body in [
        ("GET", "/api/conversations/c1", None),
        ("GET", "/api/conversations/c1/timeline", None),
        ("POST", "/api/conversations/c1/cancel", None),
        ("PATCH", "/api/conversations/c1", {"title": "x"}),
        ("DELETE", "/api/conversations/c1", None),
        ("GET", "/api/conversations/c1/feedback", None),
        ("PUT", f"/api/conversations/c1/turns/{turn_id}/feedback", feedback),
        ("GET", "/api/conversations/c1/export", None),
        ("GET", "/api/conversations/c1/export?format=markdown", None),
    ]:
        answer = await client.request(method, path, json=body)
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.json() == unknown, (method, path)
    assert await listed(client) == ["kept"]
    assert await searched(client, "calc") == []
    service = client.service
    assert service.manager.find("c1") is None
    assert await service.store.get_conversation("c1") is None
    assert await service.store.load_turns("c1") == []
    assert await service.store.frames_since("c1", 0) == []
    assert await service.store.count_feedback() == {"up": 0, "down": 0}
    assert await ConversationManagement(service).metrics() == {
        "feedback_up": 0,
        "feedback_down": 0,
    }

    # The id can start over, from nothing (no old frame is replayed into it).
    await chat(client, "c1", "a fresh start")
    assert len(await turn_ids(client, "c1")) == 1
    frames = await client.timeline("c1")
    assert [f["text"] for f in frames if f["type"] == "chat.user_message"] == ["a fresh start"]
    assert not [f for f in frames if f["type"] == "conversation.deleted"]


async def test_delete_cancels_the_active_run_first(client: AppClient) -> None:
    started = await chat(client, "c1", "go on and on", profile="slow", wait=False)
    conversation = client.service.manager.get("c1")
    await conversation.wait_for_frame(lambda f: f.type == "llm.delta")
    response = await client.delete("/api/conversations/c1")
    assert response.status_code == 200, response.text
    assert client.service.manager.find("c1") is None
    assert not conversation.is_running
    assert conversation.has_ended(started["inference_id"])  # cancelled, not cut off
    assert await client.service.coordination.holder("c1") is None
    assert (await client.get("/api/conversations/c1")).status_code == 404


async def test_delete_drops_the_queued_runs(client: AppClient) -> None:
    first = await chat(client, "q1", "first", profile="queue", wait=False)
    queued = await chat(client, "q1", "second", profile="queue", wait=False)
    assert (first["status"], queued["status"]) == ("running", "queued")
    assert (await client.delete("/api/conversations/q1")).status_code == 200
    await asyncio.sleep(0.3)  # a queued run would have started by now
    assert client.service.manager.find("q1") is None
    assert await client.service.coordination.queue_length("q1") == 0
    assert await client.service.store.get_conversation("q1") is None


async def test_deleting_an_unknown_or_only_joined_conversation_is_404(client: AppClient) -> None:
    assert (await client.delete("/api/conversations/never")).status_code == 404


async def test_with_redis_the_stream_and_every_key_go(
    make_client: ClientFactory, redis_url: str
) -> None:
    async with make_client(transport="redis", redis_url=redis_url) as client:
        await chat(client, "redis-doomed", "calc: 1+1")
        (turn_id,) = await turn_ids(client, "redis-doomed")
        await client.put(
            f"/api/conversations/redis-doomed/turns/{turn_id}/feedback", json={"rating": "down"}
        )
        redis = client.service.transport.client  # type: ignore[attr-defined]
        assert await redis.exists(topic_for("redis-doomed"))
        assert (await client.delete("/api/conversations/redis-doomed")).status_code == 200
        assert not await redis.exists(topic_for("redis-doomed"))
        left = [k.decode() for k in await redis.keys("*redis-doomed*")]
        assert left == ["webchat:owner:redis-doomed"]  # ownership stays, nothing else
        assert (await client.get("/api/conversations/redis-doomed")).status_code == 404


# -- search ---------------------------------------------------------------------------------


async def test_search_finds_titles_and_messages_newest_first(client: AppClient) -> None:
    await chat(client, "kettle", "How does a kettle work?")
    await chat(client, "tea", "Which tea is best?")
    await chat(client, "tea", "And does it need a kettle?")
    assert await searched(client, "kettle") == ["tea", "kettle"]  # newest first
    assert await searched(client, "Which") == ["tea"]  # the title (the first prompt)
    assert await searched(client, "need") == ["tea"]  # a later message
    assert await searched(client, "Offline reply") == ["tea", "kettle"]  # the answers
    assert await searched(client, "KETT") == ["tea", "kettle"]  # words match as prefixes
    assert await searched(client, "kettle best") == []  # all words in one exchange
    response = await client.get("/api/conversations/search", params={"q": "kettle", "limit": 1})
    assert [c["conv_id"] for c in response.json()["conversations"]] == ["tea"]


@pytest.mark.parametrize("query", NASTY_QUERIES)
async def test_search_syntax_is_never_an_error(client: AppClient, query: str) -> None:
    await chat(client, "c1", 'say "NEAR" (x) OR y')
    response = await client.get("/api/conversations/search", params={"q": query})
    assert response.status_code == 200, response.text
    assert all(c["conv_id"] == "c1" for c in response.json()["conversations"])


async def test_search_needs_a_query(client: AppClient) -> None:
    assert (await client.get("/api/conversations/search")).status_code == 422
    assert (await client.get("/api/conversations/search?q=")).status_code == 422
    assert (await client.get("/api/conversations/search?q=x&limit=0")).status_code == 422


# -- feedback -------------------------------------------------------------------------------


async def test_feedback_round_trip_and_metrics(client: AppClient) -> None:
    await chat(client, "c1", "one")
    await chat(client, "c1", "two")
    first, second = await turn_ids(client, "c1")
    put = await client.put(
        f"/api/conversations/c1/turns/{first}/feedback",
        json={"rating": "up", "comment": "clear and short"},
    )
    assert put.status_code == 200, put.text
    saved = put.json()
    assert {k: saved[k] for k in ("conv_id", "turn_id", "rating", "comment")} == {
        "conv_id": "c1",
        "turn_id": first,
        "rating": "up",
        "comment": "clear and short",
    }
    await client.put(f"/api/conversations/c1/turns/{second}/feedback", json={"rating": "down"})
    shown = (await client.get("/api/conversations/c1/feedback")).json()
    assert shown == {
        first: {"rating": "up", "comment": "clear and short", "updated_at": saved["updated_at"]},
        second: {"rating": "down", "comment": None, "updated_at": shown[second]["updated_at"]},
    }
    management = ConversationManagement(client.service)
    assert await management.metrics() == {"feedback_up": 1, "feedback_down": 1}

    # Changed, then cleared.
    await client.put(f"/api/conversations/c1/turns/{first}/feedback", json={"rating": "down"})
    assert await management.metrics() == {"feedback_up": 0, "feedback_down": 2}
    cleared = await client.put(
        f"/api/conversations/c1/turns/{second}/feedback", json={"rating": None, "comment": ""}
    )
    assert cleared.status_code == 200
    assert (cleared.json()["rating"], cleared.json()["comment"]) == (None, None)
    assert set((await client.get("/api/conversations/c1/feedback")).json()) == {first}
    assert await management.metrics() == {"feedback_up": 0, "feedback_down": 1}


async def test_feedback_survives_a_restart(make_client: ClientFactory, tmp_path: Path) -> None:
    db = str(tmp_path / "webchat.db")
    async with make_client(db=db) as client:
        await chat(client, "c1")
        (turn_id,) = await turn_ids(client, "c1")
        await client.put(f"/api/conversations/c1/turns/{turn_id}/feedback", json={"rating": "up"})
    async with make_client(db=db) as client:
        shown = (await client.get("/api/conversations/c1/feedback")).json()
        assert shown[turn_id]["rating"] == "up"


@pytest.mark.parametrize(
    "body",
    [{"rating": "meh"}, {"comment": "x" * 2001}, {"rating": "up", "extra": 1}, {"rating": 1}],
)
async def test_bad_feedback_is_422(client: AppClient, body: dict[str, Any]) -> None:
    await chat(client, "c1")
    (turn_id,) = await turn_ids(client, "c1")
    response = await client.put(f"/api/conversations/c1/turns/{turn_id}/feedback", json=body)
    assert response.status_code == 422, response.text


async def test_feedback_on_an_unknown_turn_is_404(client: AppClient) -> None:
    await chat(client, "c1")
    response = await client.put(
        "/api/conversations/c1/turns/no-such-turn/feedback", json={"rating": "up"}
    )
    assert response.status_code == 404
    assert "unknown turn 'no-such-turn'" in response.json()["error"]
    assert (await client.get("/api/conversations/nope/feedback")).status_code == 404


# -- export ---------------------------------------------------------------------------------


async def test_export_as_json(client: AppClient) -> None:
    await chat(client, "c1", "calc: 2+3")
    await chat(client, "c1", "thanks")
    first, _ = await turn_ids(client, "c1")
    await client.put(
        f"/api/conversations/c1/turns/{first}/feedback", json={"rating": "up", "comment": "ok"}
    )
    response = await client.get("/api/conversations/c1/export")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-disposition"] == 'attachment; filename="c1.json"'
    assert response.headers["x-content-type-options"] == "nosniff"
    document = response.json()
    assert set(document) == {"conversation", "turns", "tip", "feedback", "exported_at"}
    assert document["conversation"]["conv_id"] == "c1"
    assert document["conversation"]["title"] == "calc: 2+3"
    assert [t["id"] for t in document["turns"]] == await turn_ids(client, "c1")
    assert document["feedback"][first]["comment"] == "ok"


async def test_export_as_markdown(client: AppClient) -> None:
    await chat(client, "c1", "calc: 2+3")
    await chat(client, "c1", "thanks `a` lot")
    first, _ = await turn_ids(client, "c1")
    await client.put(
        f"/api/conversations/c1/turns/{first}/feedback",
        json={"rating": "down", "comment": "too\nslow"},
    )
    response = await client.get("/api/conversations/c1/export", params={"format": "markdown"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/markdown")
    assert response.headers["content-disposition"] == 'attachment; filename="c1.md"'
    text = response.text
    assert text.startswith("# calc: 2+3\n")
    assert text.count("## User") == 2 and text.count("## Assistant") == 2
    assert '- Tool call `calculator`: `{"expression": "2+3"}`' in text
    assert "- Tool `calculator` returned `5`" in text
    assert "The result of 2+3 is 5." in text
    assert "> Feedback: 👎 down — too slow" in text
    assert "thanks `a` lot" in text
    # Each answer follows its own prompt; the first exchange is not repeated.
    assert text.index("calc: 2+3\n\n## Assistant") < text.index("thanks `a` lot")
    assert text.count("Let me calculate that.") == 1


async def test_markdown_follows_the_current_branch_and_json_keeps_every_turn(
    client: AppClient,
) -> None:
    await chat(client, "c1", "first question")
    await chat(client, "c1", "the answer I disliked")
    first, disliked = await turn_ids(client, "c1")
    regenerated = await client.post(
        "/chat", json={"prompt": "asked again", "conv_id": "c1", "parent_turn_id": first}
    )
    assert regenerated.status_code == 200, regenerated.text
    await client.run_to_end("c1")
    document = (await client.get("/api/conversations/c1/export")).json()
    assert [t["id"] for t in document["turns"]][:2] == [first, disliked]
    assert document["tip"] == regenerated.json()["turn_id"]
    parents = [t["metadata"]["parent_turn_id"] for t in document["turns"]]
    assert parents == [None, first, first]
    text = (await client.get("/api/conversations/c1/export?format=markdown")).text
    assert "first question" in text and "asked again" in text
    assert "disliked" not in text
    assert "*1 more turn(s) on other branches: see the JSON export.*" in text


async def test_export_format_is_json_or_markdown(client: AppClient) -> None:
    await chat(client, "c1")
    response = await client.get("/api/conversations/c1/export", params={"format": "pdf"})
    assert response.status_code == 422


# -- ownership ------------------------------------------------------------------------------


async def test_nobody_manages_another_users_conversation(
    users_client: AppClient, team: Team
) -> None:
    alice, bob, root = (team.headers(who) for who in ("alice", "bob", "root"))
    await chat(users_client, "alice-1", "alice's secret plan", headers=alice)
    (turn_id,) = await turn_ids(users_client, "alice-1", headers=alice)
    feedback = f"/api/conversations/alice-1/turns/{turn_id}/feedback"
    unknown = {"error": "unknown conversation 'alice-1'"}
    for method, path, body in [
        ("PATCH", "/api/conversations/alice-1", {"title": "mine now"}),
        ("DELETE", "/api/conversations/alice-1", None),
        ("PUT", feedback, {"rating": "down"}),
        ("GET", "/api/conversations/alice-1/feedback", None),
        ("GET", "/api/conversations/alice-1/export", None),
        ("GET", "/api/conversations/alice-1/export?format=markdown", None),
    ]:
        response = await users_client.request(method, path, json=body, headers=bob)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json() == unknown
    assert await searched(users_client, "secret", headers=bob) == []

    # The admin reads (search, feedback, export) but does not act.
    assert await searched(users_client, "secret", headers=root) == ["alice-1"]
    for path in ["/api/conversations/alice-1/feedback", "/api/conversations/alice-1/export"]:
        assert (await users_client.get(path, headers=root)).status_code == 200
    for method, path, body in [
        ("PATCH", "/api/conversations/alice-1", {"title": "admin's"}),
        ("DELETE", "/api/conversations/alice-1", None),
        ("PUT", feedback, {"rating": "down"}),
    ]:
        response = await users_client.request(method, path, json=body, headers=root)
        assert response.status_code == 403, (method, path, response.text)

    # alice's conversation is untouched; she does all of it herself.
    assert await searched(users_client, "secret", headers=alice) == ["alice-1"]
    assert (
        await users_client.get("/api/conversations/alice-1/feedback", headers=alice)
    ).json() == {}
    renamed = await users_client.patch(
        "/api/conversations/alice-1", json={"title": "Plan"}, headers=alice
    )
    assert renamed.json()["title"] == "Plan" and renamed.json()["owner"] == "alice"
    assert (await users_client.put(feedback, json={"rating": "up"}, headers=alice)).is_success
    deleted = await users_client.delete("/api/conversations/alice-1", headers=alice)
    assert deleted.status_code == 200
    # Still hers: bob cannot take the id over now that it is empty.
    taken = await users_client.post(
        "/chat", json={"prompt": "x", "conv_id": "alice-1"}, headers=bob
    )
    assert taken.status_code == 404


async def test_anonymous_management_is_401(users_client: AppClient) -> None:
    for method, path in [
        ("GET", "/api/conversations/search?q=x"),
        ("PATCH", "/api/conversations/c1"),
        ("DELETE", "/api/conversations/c1"),
        ("PUT", "/api/conversations/c1/turns/t1/feedback"),
        ("GET", "/api/conversations/c1/feedback"),
        ("GET", "/api/conversations/c1/export"),
    ]:
        assert (await users_client.request(method, path)).status_code == 401, path


# -- open tabs ------------------------------------------------------------------------------


@contextlib.contextmanager
def live(**settings: Any) -> Iterator[LiveServer]:
    settings.setdefault("port", 0)
    server = LiveServer(ServerSettings(**settings))
    app = server.server.config.app
    assert isinstance(app, FastAPI)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def closed_as_deleted(tab: Viewer) -> dict[str, Any]:
    """Read up to the ``conversation.deleted`` frame; the socket must then close with 4404."""
    frame = await tab.read_until(lambda e: e["type"] == "conversation.deleted")
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(tab.wait):
            while True:
                await tab.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
        DELETED_CODE,
        "conversation deleted",
    )
    return frame


async def test_every_open_tab_learns_of_the_delete(profiles_file: Path) -> None:
    with live(db=":memory:", profiles=profiles_file) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            run = (await http.post("/chat", json={"prompt": "hi", "conv_id": "tabs"})).json()
            async with (
                viewer(server.ws_url, "tabs", since=0) as first,
                viewer(server.ws_url, "tabs") as second,
            ):
                await first.read_run(run["inference_id"])
                deleted = await http.delete("/api/conversations/tabs")
                assert deleted.status_code == 200, deleted.text
                for tab in (first, second):
                    frame = await closed_as_deleted(tab)
                    assert frame["conv_id"] == "tabs"
                    assert frame["session_id"] == run["session_id"]
            assert (await http.get("/api/conversations/tabs")).status_code == 404


async def test_tabs_on_another_process_learn_of_the_delete(
    profiles_file: Path, redis_url: str
) -> None:
    shared = {"db": ":memory:", "profiles": profiles_file, "transport": "redis"}
    with (
        live(**shared, redis_url=redis_url) as one,
        live(**shared, redis_url=redis_url) as other,
    ):
        async with (
            httpx.AsyncClient(base_url=one.url) as http_one,
            httpx.AsyncClient(base_url=other.url) as http_other,
        ):
            run = await http_one.post("/chat", json={"prompt": "hi", "conv_id": "far"})
            assert run.status_code == 200
            async with (
                viewer(one.ws_url, "far", since=0) as near_tab,
                viewer(other.ws_url, "far", since=0) as far_tab,
            ):
                await far_tab.read_run(run.json()["inference_id"])
                deleted = await http_one.delete("/api/conversations/far")
                assert deleted.status_code == 200, deleted.text
                await closed_as_deleted(near_tab)
                await closed_as_deleted(far_tab)
            for http in (http_one, http_other):
                assert (await http.get("/api/conversations/far")).status_code == 404
                assert "far" not in json.dumps((await http.get("/api/conversations")).json())
