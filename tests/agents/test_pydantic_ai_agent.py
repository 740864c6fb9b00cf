"""pydantic-ai agents named in a profile, driven offline by pydantic-ai's own test models."""

from __future__ import annotations

import asyncio
import sys

import pytest

from tests.agents.conftest import AppFactory, ModuleWriter, final_texts, of_type, run_prompt
from tests.server.test_attachments import PNG, upload

pytest.importorskip("pydantic_ai", reason="the pydantic-ai extra is not installed")

from pydantic_ai.messages import (
    BinaryContent,
    ModelRequest,
    ModelResponse,
    SystemPromptPart,
    TextContent,
    TextPart,
    UserPromptPart,
)
from pydantic_ai.models.test import TestModel

AGENTS = '''
import asyncio

from pydantic_ai import Agent
from pydantic_ai.messages import ModelRequest, ToolReturnPart, UserPromptPart
from pydantic_ai.models.function import DeltaThinkingPart, DeltaToolCall, FunctionModel

SEEN = []


async def model(messages, info):
    SEEN.append(messages)
    returns = [p for p in messages[-1].parts if isinstance(p, ToolReturnPart)]
    if returns:
        yield f"The tool said: {returns[0].content}"
        return
    prompts = [
        p.content if isinstance(p.content, str) else p.content[0]  # text, then attachments
        for m in messages
        if isinstance(m, ModelRequest)
        for p in m.parts
        if isinstance(p, UserPromptPart)
    ]
    prompt = prompts[-1]
    if prompt == "weather":
        yield {0: DeltaToolCall(name="forecast", json_args='{"city": "Paris"}')}
    elif prompt == "calc":
        yield {0: DeltaToolCall(name="calculator", json_args='{"expression": "6*7"}')}
    elif prompt == "think":
        yield {0: DeltaThinkingPart(content="Let me think. ")}
        yield "Thought "
        yield "it through."
    elif prompt == "fail":
        raise RuntimeError("model exploded")
    elif prompt == "hang":
        yield "waiting "
        await asyncio.sleep(3600)
    else:
        yield "You said: "
        yield " | ".join(prompts)


agent = Agent(FunctionModel(stream_function=model), instructions="Agent instructions.")
paul = Agent(FunctionModel(stream_function=model), system_prompt="You are Paul.")


@agent.tool_plain
def forecast(city: str) -> str:
    """Tomorrow's weather in a city."""
    return f"sunny in {city}"
'''


def profiles(module: str) -> str:
    return f"""
    profiles:
      - slug: agent
        default_prompt: Profile prompt.
        tools: [calculator]
        agent: "{module}:agent"
      - slug: paul
        agent: "{module}:paul"
    """


async def test_text_streams_as_deltas_and_usage_reaches_llm_final(
    write_module: ModuleWriter, make_app: AppFactory
):
    module = write_module(AGENTS)
    async with make_app(profiles(module)) as client:
        _, frames = await run_prompt(client, "pai-1", "hello")
        assert frames[-1]["type"] == "run.finished"
        assert [f["delta"] for f in of_type(frames, "llm.delta")] == ["You said: ", "hello"]
        (final,) = of_type(frames, "llm.final")
        assert final["text"] == "You said: hello"
        assert final["usage"]["input_tokens"] > 0 and final["usage"]["output_tokens"] > 0
        # The profile's system prompt reaches the model with the agent's own instructions.
        request = sys.modules[module].SEEN[-1][-1]
        assert "Profile prompt." in request.instructions
        assert "Agent instructions." in request.instructions


async def test_a_second_turn_gets_the_first_as_message_history(
    write_module: ModuleWriter, make_app: AppFactory
):
    module = write_module(AGENTS)
    async with make_app(profiles(module)) as client:
        await run_prompt(client, "pai-2", "first question")
        _, frames = await run_prompt(client, "pai-2", "second")
        assert final_texts(frames) == ["You said: first question | second"]
        history = sys.modules[module].SEEN[-1]
        answers = [
            p.content
            for m in history
            if isinstance(m, ModelResponse)
            for p in m.parts
            if isinstance(p, TextPart)
        ]
        assert answers == ["You said: first question"]


async def test_the_agents_own_system_prompt_survives_into_later_turns(
    write_module: ModuleWriter, make_app: AppFactory
):
    module = write_module(AGENTS)
    async with make_app(profiles(module)) as client:
        for prompt in ("one", "two"):
            await run_prompt(client, "pai-3", prompt, profile="paul")
            first = sys.modules[module].SEEN[-1][0]
            assert isinstance(first, ModelRequest)
            systems = [p.content for p in first.parts if isinstance(p, SystemPromptPart)]
            assert systems == ["You are Paul."]


async def test_its_tool_calls_and_returns_show_as_tool_cards(
    write_module: ModuleWriter, make_app: AppFactory
):
    module = write_module(AGENTS)
    async with make_app(profiles(module)) as client:
        _, frames = await run_prompt(client, "pai-4", "weather")
        assert frames[-1]["type"] == "run.finished"
        (start,) = of_type(frames, "tool.start")
        assert (start["name"], start["input"]) == ("forecast", {"city": "Paris"})
        (result,) = of_type(frames, "tool.result")
        assert result["result"] == "sunny in Paris" and result["id"] == start["id"]
        assert final_texts(frames)[-1] == "The tool said: sunny in Paris"
        # The second turn's history carries the call and its return.
        _, frames = await run_prompt(client, "pai-4", "again")
        assert "weather | again" in final_texts(frames)[-1]


async def test_the_profiles_tools_are_offered_to_the_agent(
    write_module: ModuleWriter, make_app: AppFactory
):
    module = write_module(AGENTS)
    async with make_app(profiles(module)) as client:
        _, frames = await run_prompt(client, "pai-5", "calc")
        (start,) = of_type(frames, "tool.start")
        assert start["name"] == "calculator"
        (result,) = of_type(frames, "tool.result")
        assert result["result"] == "42"
        assert final_texts(frames)[-1] == "The tool said: 42"


async def test_thinking_shows_as_thinking_frames(write_module: ModuleWriter, make_app: AppFactory):
    module = write_module(AGENTS)
    async with make_app(profiles(module)) as client:
        _, frames = await run_prompt(client, "pai-6", "think")
        thinking = "".join(f.get("delta", "") for f in of_type(frames, "llm.thinking.delta"))
        assert thinking == "Let me think. "
        assert final_texts(frames) == ["Thought it through."]


async def test_a_failing_model_fails_the_run_with_its_message(
    write_module: ModuleWriter, make_app: AppFactory
):
    module = write_module(AGENTS)
    async with make_app(profiles(module)) as client:
        _, frames = await run_prompt(client, "pai-7", "fail")
        (failed,) = of_type(frames, "run.failed")
        assert "model exploded" in failed["error"]
        assert "Traceback" not in str(frames)


async def test_cancel_ends_the_run_with_run_cancelled(
    write_module: ModuleWriter, make_app: AppFactory
):
    module = write_module(AGENTS)
    async with make_app(profiles(module)) as client:
        response = await client.post("/chat/agent", json={"prompt": "hang", "conv_id": "pai-8"})
        inference_id = response.json()["inference_id"]
        conversation = client.service.manager.get("pai-8")
        async with asyncio.timeout(10):
            await conversation.wait_for_frame(lambda f: f.type == "llm.delta")
        assert (await client.post("/api/conversations/pai-8/cancel")).json()["cancelled"]
        await client.run_to_end("pai-8")
        frames = [f for f in await client.timeline("pai-8") if f["inference_id"] == inference_id]
        assert frames[-1]["type"] == "run.cancelled"
        (final,) = of_type(frames, "llm.final")
        assert final["interrupted"] is True and final["text"] == "waiting "


async def test_the_example_agent_with_test_model(examples_importable, make_app: AppFactory):
    import agent_pydantic_ai

    yaml = """
    profiles:
      - slug: agent
        agent: "agent_pydantic_ai:agent"
    """
    async with make_app(yaml) as client:
        with agent_pydantic_ai.agent.override(model=TestModel(custom_output_text="Sunny.")):
            _, frames = await run_prompt(client, "pai-example", "Weather in Paris?")
        assert frames[-1]["type"] == "run.finished"
        (start,) = of_type(frames, "tool.start")
        assert start["name"] == "forecast"
        (result,) = of_type(frames, "tool.result")
        assert "Sunny and 21" in result["result"]
        last = of_type(frames, "llm.final")[-1]
        assert last["text"] == "Sunny."
        assert last["usage"]["input_tokens"] > 0


def user_prompts(messages: list[object]) -> list[UserPromptPart]:
    return [
        p
        for m in messages
        if isinstance(m, ModelRequest)
        for p in m.parts
        if isinstance(p, UserPromptPart)
    ]


async def test_attachments_reach_the_model_as_image_and_named_text_content(
    write_module: ModuleWriter, make_app: AppFactory
):
    """Uploaded through the server, given to the agent's model (pydantic-ai's FunctionModel
    records what it got): the image as BinaryContent with its bytes, the text file as text
    content that starts with its name; the next run's history still carries both."""
    module = write_module(AGENTS)
    async with make_app(profiles(module)) as client:
        image = (await upload(client, "pai-att", "cat.png", PNG)).json()["id"]
        notes = (await upload(client, "pai-att", "notes.md", b"# Plan\nship it")).json()["id"]
        _, frames = await run_prompt(
            client, "pai-att", "what are these?", attachments=[image, notes]
        )
        assert frames[-1]["type"] == "run.finished", frames[-1]
        (prompt,) = user_prompts(sys.modules[module].SEEN[-1])
        text, picture, named = prompt.content
        assert text == "what are these?"
        assert isinstance(picture, BinaryContent)
        assert (picture.media_type, picture.data) == ("image/png", PNG)
        assert isinstance(named, TextContent)
        assert named.content == "notes.md:\n# Plan\nship it"
        assert named.metadata == {"attachment": "notes.md"}

        _, frames = await run_prompt(client, "pai-att", "and now?")
        assert final_texts(frames) == ["You said: what are these? | and now?"]
        first, latest = user_prompts(sys.modules[module].SEEN[-1])
        assert latest.content == "and now?"
        assert first.content == prompt.content


def test_history_conversion_puts_each_block_in_its_message():
    from webchat.agents.pydantic_ai_agent import to_message_history
    from webchat.turns import Block, Turn

    turn = Turn(
        blocks=[
            Block.system("Sys."),
            Block.user("q1"),
            Block.llm_text("let me look"),
            Block.tool_call("c1", "lookup", {"q": "x"}),
            Block.tool_use("c1", {"found": 1}),
            Block.reasoning("hidden"),
            Block.llm_text("found 1"),
            Block.user("q2"),
        ]
    )
    history = to_message_history(turn, ["Agent sys."])
    kinds = [type(m).__name__ for m in history]
    assert kinds == ["ModelRequest", "ModelResponse", "ModelRequest", "ModelResponse"]
    first = history[0]
    assert isinstance(first, ModelRequest)
    assert [type(p).__name__ for p in first.parts] == ["SystemPromptPart", "UserPromptPart"]
    assert isinstance(first.parts[1], UserPromptPart) and first.parts[1].content == "q1"
    tool_return = history[2].parts[0]
    assert (tool_return.tool_name, tool_return.content) == ("lookup", {"found": 1})
    assert [p.content for p in history[3].parts] == ["found 1"]  # no reasoning replayed
    assert to_message_history(Turn(blocks=[Block.system("S"), Block.user("q")]), ["A"]) == []
