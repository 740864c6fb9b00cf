"""examples/extending_app.py (docs/extending.md) through the real in-process app: its
extractor records each run, its identity middleware reaches the engine and refreshes on every
model call, and its tool runs through the offline engine's ``use <tool> {json}``."""

from __future__ import annotations

import contextlib
import json
import textwrap
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from examples.extending_app import Directory, ExtendingApp, Person

from tests.agents.conftest import ModuleWriter, final_texts, of_type, run_prompt
from tests.server.conftest import AppClient
from webchat.server import create_app
from webchat.settings import ServerSettings

# Says which system messages it was given, as JSON: what the middlewares made of the turn.
ECHO_AGENT = """
import json

async def agent(request):
    yield json.dumps([m["content"] for m in request.messages if m["role"] == "system"])
"""

PROFILES = """
profiles:
  - slug: offline
    default_prompt: Be brief.
    tools: [remember]
    middlewares: [{{name: identity, config: {{user: alice}}}}]
    step_settings: {{api_type: offline, tokens_per_second: 0}}
  - slug: echo
    default_prompt: Be brief.
    allow_overrides: true
    agent: "{agent}:agent"
    middlewares: [{{name: identity, config: {{user: alice}}}}]
  - slug: echo-no-prompt
    agent: "{agent}:agent"
    middlewares: [{{name: identity, config: {{user: alice}}}}]
"""


@contextlib.asynccontextmanager
async def serve(tmp_path: Path, agent: str, extension: ExtendingApp) -> AsyncIterator[AppClient]:
    path = tmp_path / f"profiles-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(textwrap.dedent(PROFILES.format(agent=agent)))
    app = create_app(ServerSettings(db=":memory:", profiles=path), setup=extension.setup)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with AppClient(transport=transport, base_url="http://127.0.0.1") as client:
            client.app = app
            yield client


def system_messages(frames: list[dict[str, Any]]) -> list[str]:
    (text,) = final_texts(frames)
    messages: list[str] = json.loads(text)
    return messages


async def test_the_tool_runs_and_the_extractor_records_the_run(
    write_module: ModuleWriter, tmp_path: Path
) -> None:
    records = tmp_path / "records.jsonl"
    extension = ExtendingApp(records)
    async with serve(tmp_path, write_module(ECHO_AGENT), extension) as client:
        inference_id, frames = await run_prompt(
            client, "ext-tool", 'use remember {"note": "buy milk"}', profile="offline"
        )
    assert frames[-1]["type"] == "run.finished"
    assert [r["result"] for r in of_type(frames, "tool.result")] == ["noted (1 notes)"]
    assert extension.notes.items == ["buy milk"]

    (record,) = extension.recorder.records
    assert record["conv_id"] == "ext-tool"
    assert record["inference_id"] == inference_id
    assert record["prompt"] == 'use remember {"note": "buy milk"}'
    assert record["status"] == "finished" and record["error"] is None
    (call,) = record["tool_calls"]
    assert call["name"] == "remember"
    assert json.loads(call["input"]) == {"note": "buy milk"}
    assert call["result"] == "noted (1 notes)" and call["error"] is None
    # Two model calls (ask for the tool, then answer): both finals, in order, as the UI got them.
    assert record["answer"] == "\n".join(final_texts(frames))
    assert record["answer"].endswith("remember returned noted (1 notes)")
    assert [json.loads(line) for line in records.read_text().splitlines()] == [record]


async def test_the_identity_reaches_the_agent_and_refreshes_without_a_rebuild(
    write_module: ModuleWriter, tmp_path: Path
) -> None:
    extension = ExtendingApp(directory=Directory({"alice": Person("Alice", "admin")}))
    async with serve(tmp_path, write_module(ECHO_AGENT), extension) as client:
        _, frames = await run_prompt(client, "ext-id", "who am I?", profile="echo")
        assert system_messages(frames) == [
            "Be brief.",
            "You are talking to Alice (alice), role: admin.",
        ]

        # The directory changes: the next model call sees it, the transcript keeps one line.
        extension.directory.set("alice", Person("Alice", "owner"))
        _, frames = await run_prompt(client, "ext-id", "and now?", profile="echo")
        assert system_messages(frames) == [
            "Be brief.",
            "You are talking to Alice (alice), role: owner.",
        ]
        assert client.service.manager.get("ext-id").rebuilds == 0

        # Another identity for one request: an override of the middleware's config.
        bob = {"middlewares": [{"name": "identity", "config": {"user": "bob"}}]}
        _, frames = await run_prompt(client, "ext-id", "and bob?", profile="echo", overrides=bob)
        assert system_messages(frames) == [
            "Be brief.",
            "You are talking to an unknown user (bob).",
        ]

        # Its config model rejects a bad config before anything runs.
        bad = {"middlewares": [{"name": "identity", "config": {"usr": "bob"}}]}
        response = await client.post(
            "/chat/echo", json={"prompt": "x", "conv_id": "ext-id", "overrides": bad}
        )
        assert response.status_code == 400, response.text
        assert "identity" in response.json()["error"]

    statuses = [r["status"] for r in extension.recorder.records]
    assert statuses == ["finished", "finished", "finished"]


async def test_without_a_profile_prompt_the_history_keeps_only_the_identity(
    write_module: ModuleWriter, tmp_path: Path
) -> None:
    extension = ExtendingApp()
    async with serve(tmp_path, write_module(ECHO_AGENT), extension) as client:
        await run_prompt(client, "ext-np", "hi", profile="echo-no-prompt")
        _, frames = await run_prompt(client, "ext-np", "again", profile="echo-no-prompt")
    assert system_messages(frames) == ["You are talking to Alice (alice), role: admin."]
