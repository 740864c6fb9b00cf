"""examples/agent_generator.py against the scripted OpenAI-compatible server (no key)."""

from __future__ import annotations

import pytest

from tests.agents.conftest import AppFactory, final_texts, of_type, run_prompt
from tests.support.client_view import assert_same_transcript
from tests.support.fake_openai import Scenario, text_events
from tests.support.fake_openai import make_app as fake_openai_app
from tests.support.http_server import serve_app

PROFILES = """
profiles:
  - slug: agent
    default_prompt: Be brief.
    tools: [calculator]
    agent: "agent_generator:agent"
    step_settings: {model: gpt-fake}
"""


async def test_the_generator_example_streams_from_an_openai_compatible_server(
    examples_importable, make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
):
    scenario = Scenario(events=text_events(["Hi", " there", "!"], usage=(12, 3)))
    async with serve_app(fake_openai_app(scenario)) as url:
        monkeypatch.setenv("OPENAI_BASE_URL", f"{url}/v1")
        async with make_app(PROFILES) as client:
            inference_id, frames = await run_prompt(client, "example-gen", "hello")
            stored = await client.timeline("example-gen")
    assert frames[-1]["type"] == "run.finished"
    assert [f["delta"] for f in of_type(frames, "llm.delta")] == ["Hi", " there", "!"]
    # The history is compacted (the final stands for the deltas) and shows the same.
    assert of_type(stored, "llm.delta") == []
    assert_same_transcript([f for f in stored if f.get("inference_id") == inference_id], frames)
    (final,) = of_type(frames, "llm.final")
    assert final["text"] == "Hi there!" == "".join(final_texts(frames))
    assert (final["usage"]["input_tokens"], final["usage"]["output_tokens"]) == (12, 3)
    (sent,) = scenario.requests
    assert sent["model"] == "gpt-fake" and sent["stream"] is True
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello"},
    ]
    assert [t["function"]["name"] for t in sent["tools"]] == ["calculator"]
