"""Attachments reach each provider as its own content parts, through the real SDKs against
the fake servers (which record what was sent), and Python agents get them in ``messages``."""

from __future__ import annotations

import base64
from typing import Any

from pydantic import SecretStr

from tests.support import fake_anthropic, fake_openai
from tests.support.http_server import serve_app
from webchat.agents.binding import AgentBinding
from webchat.engines import RunContext, StepSettings
from webchat.engines.anthropic_messages import AnthropicMessagesEngine, build_messages
from webchat.engines.attachments import describe_attachments, format_size
from webchat.engines.openai_chat import OpenAIChatEngine, turn_to_messages
from webchat.events import CollectingSink
from webchat.turns import Block, Turn

PNG = b"\x89PNG\r\n\x1a\n" + b"\x07" * 40
IMAGE = {"id": "img1", "name": "cat.png", "media_type": "image/png", "size": 48, "kind": "image"}
NOTE = {"id": "txt1", "name": "notes.md", "media_type": "text/markdown", "size": 6, "kind": "text"}
DATA = {"img1": PNG, "txt1": b"# Hi\n\n"}
B64 = base64.b64encode(PNG).decode()


def turn_with_attachments(*refs: dict[str, Any], data: dict[str, bytes] = DATA) -> Turn:
    turn = Turn(blocks=[Block.system("Be brief."), Block.user("What is this?", list(refs))])
    turn.set_attachment_data(data)
    return turn


def ctx() -> RunContext:
    return RunContext(sinks=(CollectingSink(),), session_id="s", inference_id="i", turn_id="t")


def test_openai_messages_have_image_url_and_named_text_parts() -> None:
    messages = turn_to_messages(turn_with_attachments(IMAGE, NOTE))
    assert messages[1] == {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{B64}"}},
            {"type": "text", "text": "notes.md:\n# Hi\n\n"},
        ],
    }
    # Without attachments a user message stays a plain string, as before.
    assert turn_to_messages(Turn(blocks=[Block.user("hi")])) == [{"role": "user", "content": "hi"}]


def test_missing_bytes_are_named_not_dropped() -> None:
    messages = turn_to_messages(turn_with_attachments(IMAGE, data={}))
    content = messages[1]["content"]
    assert isinstance(content, list)
    assert content[1] == {"type": "text", "text": "[attachment cat.png is no longer available]"}


def test_stored_turns_never_hold_the_bytes() -> None:
    turn = turn_with_attachments(IMAGE)
    assert B64 not in turn.model_dump_json()
    assert Turn.model_validate_json(turn.model_dump_json()).attachment_data == {}


def test_anthropic_gets_image_blocks_before_the_text() -> None:
    system, messages = build_messages(turn_with_attachments(IMAGE, NOTE))
    assert system == "Be brief."
    assert messages == [
        {
            "role": "user",
            "content": [
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": B64},
                },
                {"type": "text", "text": "notes.md:\n# Hi\n\n"},
                {"type": "text", "text": "What is this?"},
            ],
        }
    ]


def test_agents_receive_openai_content_parts() -> None:
    binding = AgentBinding(path="pkg.mod:agent", conv_id="c1", profile="agent")
    request = binding.request(turn_with_attachments(IMAGE), ctx())
    content = request.messages[-1]["content"]
    assert content[1] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{B64}"}}
    assert request.prompt == "What is this?"


def test_the_acknowledgement_reads_well() -> None:
    assert describe_attachments([]) == ""
    assert describe_attachments([{**IMAGE, "size": 12 * 1024}]) == "I received 1 image, png, 12 KB."
    many = [IMAGE, {**IMAGE, "media_type": "image/jpeg", "size": 1_300_000}, NOTE]
    assert describe_attachments(many) == (
        "I received 2 images (png, 48 bytes; jpeg, 1.2 MB) and 1 text file, notes.md, 6 bytes."
    )
    assert [format_size(n) for n in (1, 2, 1023, 1024, 1536, 5 * 1024 * 1024)] == [
        "1 byte",
        "2 bytes",
        "1023 bytes",
        "1 KB",
        "2 KB",
        "5.0 MB",
    ]


async def test_the_openai_fake_receives_an_image_url_part() -> None:
    scenario = fake_openai.Scenario(events=fake_openai.text_events(["A cat."]))
    async with serve_app(fake_openai.make_app(scenario)) as url:
        settings = StepSettings(
            api_type="openai",
            model="gpt-test",
            base_url=f"{url}/v1",
            api_key=SecretStr("sk-test"),
            max_retries=0,
            timeout=5.0,
        )
        engine = OpenAIChatEngine(settings)
        try:
            result = await engine.run_inference(turn_with_attachments(IMAGE, NOTE), ctx())
        finally:
            await engine.aclose()
    assert result.assistant_text() == "A cat."
    (sent,) = scenario.requests
    parts = sent["messages"][-1]["content"]
    assert {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{B64}"}} in parts
    assert {"type": "text", "text": "notes.md:\n# Hi\n\n"} in parts


async def test_the_anthropic_fake_receives_an_image_block() -> None:
    fake = fake_anthropic.FakeAnthropic(
        fake_anthropic.Scenario(steps=fake_anthropic.text_stream(["A cat."]))
    )
    async with serve_app(fake.app) as url:
        settings = StepSettings(
            api_type="anthropic",
            model="claude-test",
            base_url=url,
            api_key=SecretStr("sk-ant-test"),
            max_retries=0,
            timeout=5.0,
        )
        engine = AnthropicMessagesEngine(settings)
        try:
            result = await engine.run_inference(turn_with_attachments(IMAGE), ctx())
        finally:
            fake.release()
            await engine.aclose()
    assert result.assistant_text() == "A cat."
    (sent,) = fake.requests
    content = sent.body["messages"][-1]["content"]
    assert content[0] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": B64},
    }
    assert content[-1] == {"type": "text", "text": "What is this?"}
