"""Branches over HTTP: regenerate and edit fork a turn, and every branch is kept.

``POST /chat`` takes ``parent_turn_id``; describe returns the tree (``tip``, ``children``)
and, with ``branch``, one branch; the timeline filters by ``branch`` with seq unchanged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

from tests.server.conftest import AppClient, ClientFactory
from tests.support.fake_openai import Scenario, make_app, text_events
from tests.support.http_server import serve_app
from webchat.chat.coordination import PendingRun


async def post(client: AppClient, conv_id: str, prompt: str, **body: Any) -> dict[str, Any]:
    """Start a run and wait for its end; the run's response body."""
    profile = body.pop("profile", None)
    path = f"/chat/{profile}" if profile else "/chat"
    response = await client.post(path, json={"prompt": prompt, "conv_id": conv_id, **body})
    assert response.status_code == 200, response.text
    await client.run_to_end(conv_id)
    accepted: dict[str, Any] = response.json()
    return accepted


async def describe(client: AppClient, conv_id: str, **params: str) -> dict[str, Any]:
    response = await client.get(f"/api/conversations/{conv_id}", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def parent(turn: dict[str, Any]) -> str | None:
    value: str | None = turn["metadata"]["parent_turn_id"]
    return value


def user_texts(turn: dict[str, Any]) -> list[str]:
    return [b["payload"]["text"] for b in turn["blocks"] if b["kind"] == "user"]


async def regenerated(client: AppClient, conv_id: str) -> tuple[str, str, str]:
    """one -> two, then two regenerated: the ids of (first, second, its sibling)."""
    first = await post(client, conv_id, "one")
    second = await post(client, conv_id, "two")
    assert second["parent_turn_id"] == first["turn_id"]
    # Regenerate the last answer: fork from the parent of its turn.
    info = await describe(client, conv_id)
    last = info["turns"][-1]
    assert last["id"] == second["turn_id"] == info["tip"]
    again = await post(client, conv_id, "two", parent_turn_id=parent(last))
    assert again["parent_turn_id"] == first["turn_id"]
    return first["turn_id"], second["turn_id"], again["turn_id"]


async def test_regenerate_keeps_both_answers_as_siblings(client: AppClient) -> None:
    first, second, sibling = await regenerated(client, "br-1")
    info = await describe(client, "br-1")
    assert [t["id"] for t in info["turns"]] == [first, second, sibling]  # creation order
    assert [parent(t) for t in info["turns"]] == [None, first, first]
    assert info["tip"] == sibling and info["branch"] is None
    assert info["children"] == {"": [first], first: [second, sibling], second: [], sibling: []}

    # A run without a parent continues the newest branch.
    third = await post(client, "br-1", "three")
    assert third["parent_turn_id"] == sibling
    info = await describe(client, "br-1")
    assert info["tip"] == third["turn_id"]
    assert user_texts(info["turns"][-1]) == ["one", "two", "three"]
    history = info["turns"][2]["blocks"]  # the sibling's transcript, and nothing else
    assert info["turns"][-1]["blocks"][: len(history)] == history


async def test_describe_and_timeline_return_one_branch(client: AppClient) -> None:
    first, second, sibling = await regenerated(client, "br-2")
    for tip in (second, sibling):
        info = await describe(client, "br-2", branch=tip)
        assert [t["id"] for t in info["turns"]] == [first, tip]
        assert info["branch"] == tip and info["tip"] == sibling
        assert set(info["children"]) == {"", first, second, sibling}  # the whole tree still

    everything = (await client.get("/api/conversations/br-2/timeline")).json()
    assert {f["turn_id"] for f in everything["frames"]} == {first, second, sibling}
    for tip, other in ((second, sibling), (sibling, second)):
        response = await client.get("/api/conversations/br-2/timeline", params={"branch": tip})
        assert response.status_code == 200, response.text
        body = response.json()
        assert {f["turn_id"] for f in body["frames"]} == {first, tip}
        assert [f for f in everything["frames"] if f["turn_id"] != other] == body["frames"]
        assert body["last_seq"] == everything["last_seq"]  # seq stays global

    # ``since`` works as ever: only later frames, of the branch.
    since = next(f["seq"] for f in everything["frames"] if f["turn_id"] == second)
    later = await client.get(
        "/api/conversations/br-2/timeline", params={"since": since, "branch": sibling}
    )
    frames = later.json()["frames"]
    assert frames and all(f["seq"] > since and f["turn_id"] == sibling for f in frames)


async def test_unknown_turn_ids_are_400s(client: AppClient) -> None:
    await post(client, "br-3", "one")
    before = (await client.get("/api/conversations/br-3")).json()
    response = await client.post(
        "/chat", json={"prompt": "x", "conv_id": "br-3", "parent_turn_id": "no-such-turn"}
    )
    assert response.status_code == 400
    assert "no-such-turn" in response.json()["error"]
    assert response.json()["parent_turn_id"] == "no-such-turn"
    assert (await client.get("/api/conversations/br-3")).json() == before  # nothing ran
    assert client.service.runs_started == 1

    for path in ("/api/conversations/br-3", "/api/conversations/br-3/timeline"):
        response = await client.get(path, params={"branch": "no-such-turn"})
        assert response.status_code == 400, path
        assert "no-such-turn" in response.json()["error"]
    # An unknown conversation is still a 404, whatever the branch.
    response = await client.get("/api/conversations/br-none", params={"branch": "x"})
    assert response.status_code == 404


async def test_an_empty_parent_starts_a_new_root(client: AppClient) -> None:
    first = await post(client, "br-4", "one")
    await post(client, "br-4", "two")
    edited = await post(client, "br-4", "one, edited", parent_turn_id="")
    assert "parent_turn_id" not in edited  # null: a root
    info = await describe(client, "br-4", branch=edited["turn_id"])
    assert [user_texts(t) for t in info["turns"]] == [["one, edited"]]
    assert parent(info["turns"][0]) is None
    assert info["children"][""] == [first["turn_id"], edited["turn_id"]]


async def test_a_queued_run_keeps_its_parent(client: AppClient) -> None:
    first = await post(client, "br-5", "one", profile="queue")
    running = await client.post(
        "/chat/queue", json={"prompt": "two", "conv_id": "br-5", "parent_turn_id": ""}
    )
    assert running.status_code == 200 and running.json()["status"] == "running"
    assert "parent_turn_id" not in running.json()  # a root
    queued = await client.post(
        "/chat/queue",
        json={"prompt": "three", "conv_id": "br-5", "parent_turn_id": first["turn_id"]},
    )
    assert queued.status_code == 202
    assert queued.json()["parent_turn_id"] == first["turn_id"]
    conversation = client.service.manager.get("br-5")
    async with asyncio.timeout(20):
        while len(conversation.turns) < 3 or conversation.queued:
            await client.run_to_end("br-5")
            await asyncio.sleep(0)
    info = await describe(client, "br-5")
    assert [parent(t) for t in info["turns"]] == [None, None, first["turn_id"]]
    assert [user_texts(t) for t in info["turns"]][2] == ["one", "three"]


async def test_a_queued_run_may_continue_the_running_turn(client: AppClient) -> None:
    running = await client.post("/chat/queue", json={"prompt": "one", "conv_id": "br-6"})
    turn_id = running.json()["turn_id"]
    queued = await client.post(
        "/chat/queue", json={"prompt": "two", "conv_id": "br-6", "parent_turn_id": turn_id}
    )
    assert queued.status_code == 202, queued.text
    conversation = client.service.manager.get("br-6")
    async with asyncio.timeout(20):
        while len(conversation.turns) < 2 or conversation.queued:
            await client.run_to_end("br-6")
            await asyncio.sleep(0)
    assert conversation.turns[1].metadata.parent_turn_id == turn_id


def test_queue_entries_from_before_branches_still_decode() -> None:
    old = {"profile_slug": "queue", "prompt": "hi", "overrides": None, "inference_id": "i-1"}
    assert PendingRun(**json.loads(json.dumps(old))).parent_turn_id is None
    pending = PendingRun("queue", "hi", None, "i-1", parent_turn_id="t-1")
    assert PendingRun(**json.loads(json.dumps(dataclasses.asdict(pending)))) == pending


async def test_branches_survive_a_restart(make_client: ClientFactory, tmp_path: Path) -> None:
    db = str(tmp_path / "chat.sqlite3")
    async with make_client(db=db) as client:
        first, second, _ = await regenerated(client, "br-7")
        root = await post(client, "br-7", "one, edited", parent_turn_id="")
        live = await describe(client, "br-7")

    async with make_client(db=db) as client:
        stored = await describe(client, "br-7")  # from the store: not loaded
        assert client.service.manager.find("br-7") is None
        assert {k: stored[k] for k in ("turns", "tip", "children")} == {
            k: live[k] for k in ("turns", "tip", "children")
        }
        assert stored["children"][""] == [first, root["turn_id"]]
        branch = await describe(client, "br-7", branch=second)
        assert [t["id"] for t in branch["turns"]] == [first, second]
        # Loaded again, the tree is the same, and an old branch can be continued.
        more = await post(client, "br-7", "three", parent_turn_id=second)
        assert more["parent_turn_id"] == second
        info = await describe(client, "br-7")
        assert info["children"][second] == [more["turn_id"]]
        assert user_texts(info["turns"][-1]) == ["one", "two", "three"]
        assert info["turns"][:-1] == live["turns"]


async def test_the_model_receives_only_the_branch_it_continues(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    scenario = Scenario(events=text_events(["an ", "answer"]))
    async with serve_app(make_app(scenario)) as url:
        profiles = tmp_path / "fake.yaml"
        profiles.write_text(
            "profiles:\n"
            "  - slug: fake\n"
            "    step_settings: {api_type: openai, model: gpt-fake, "
            f'base_url: "{url}/v1", timeout: 5, max_retries: 0}}\n'
        )
        async with make_client(profiles=profiles, openai_api_key="sk-test") as client:
            first = await post(client, "br-8", "first question")
            await post(client, "br-8", "second question")

            def sent() -> list[tuple[str, str]]:
                messages = scenario.requests[-1]["messages"]
                return [(m["role"], m["content"]) for m in messages if m["role"] != "system"]

            # Edit the first message: a new root, so nothing came before it.
            edited = await post(client, "br-8", "first question, edited", parent_turn_id="")
            assert sent() == [("user", "first question, edited")]
            # Regenerate the second answer: the first exchange only, then the question.
            await post(client, "br-8", "second question", parent_turn_id=first["turn_id"])
            assert sent() == [
                ("user", "first question"),
                ("assistant", "an answer"),
                ("user", "second question"),
            ]
            # Continue the edited branch: its own history, none of the other one's.
            await post(client, "br-8", "and then?", parent_turn_id=edited["turn_id"])
            assert sent() == [
                ("user", "first question, edited"),
                ("assistant", "an answer"),
                ("user", "and then?"),
            ]
            assert len(scenario.requests) == 5


async def test_the_prompt_frame_names_the_turn_it_continues(client: AppClient) -> None:
    """Another open tab places a new branch live: its ``chat.user_message`` frame says which
    turn the run continues (no key for a run that starts a root)."""
    first = await post(client, "live", "one")
    second = await post(client, "live", "two")
    fork = await post(client, "live", "two again", parent_turn_id=first["turn_id"])
    frames = (await client.get("/api/conversations/live/timeline")).json()["frames"]
    prompts = {f["turn_id"]: f for f in frames if f["type"] == "chat.user_message"}
    assert "parent_turn_id" not in prompts[first["turn_id"]]
    assert prompts[second["turn_id"]]["parent_turn_id"] == first["turn_id"]
    assert prompts[fork["turn_id"]]["parent_turn_id"] == first["turn_id"]
