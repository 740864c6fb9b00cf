"""Tools named by import path, tried through the offline engine's ``use <tool> {json}``."""

from __future__ import annotations

import pytest

from tests.agents.conftest import AppFactory, ModuleWriter, final_texts, of_type, run_prompt
from webchat.agents import load_tool
from webchat.engines import OfflineEngine, RunContext, StepSettings, ToolDefinition
from webchat.events import CollectingSink
from webchat.turns import Block, BlockKind, Turn

TOOLS = '''
import asyncio

def shout(text: str) -> str:
    """Shout a text back in capitals."""
    return text.upper() + "!"

async def add(a: int, b: int = 1) -> int:
    """Add two integers."""
    await asyncio.sleep(0)
    return a + b

def calculator(expression: str) -> str:
    """A second tool named like the built-in one."""
    return expression
'''


def profiles(module: str) -> str:
    return f"""
    profiles:
      - slug: agent
        allow_overrides: true
        tools: [calculator, "{module}:shout", "{module}:add"]
        step_settings: {{api_type: offline}}
    """


def test_a_function_by_path_becomes_a_tool_like_tool_fn(write_module: ModuleWriter):
    module = write_module(TOOLS)
    shout = load_tool(f"{module}:shout")
    assert shout.name == "shout"
    assert shout.definition.description == "Shout a text back in capitals."
    assert shout.definition.parameters["properties"]["text"]["type"] == "string"
    assert shout.definition.parameters["required"] == ["text"]
    add = load_tool(f"{module}:add")
    assert add.is_async and add.definition.parameters["required"] == ["a"]


@pytest.mark.parametrize(
    ("prompt", "name", "arguments", "result"),
    [
        ('use shout {"text": "hello"}', "shout", {"text": "hello"}, "HELLO!"),
        ('please use add {"a": 2, "b": 40} now', "add", {"a": 2, "b": 40}, "42"),
    ],
)
async def test_sync_and_async_functions_by_path_run_through_the_offline_engine(
    write_module: ModuleWriter,
    make_app: AppFactory,
    prompt: str,
    name: str,
    arguments: dict,
    result: str,
):
    module = write_module(TOOLS)
    async with make_app(profiles(module)) as client:
        _, frames = await run_prompt(client, f"path-{name}", prompt)
        assert frames[-1]["type"] == "run.finished"
        (start,) = of_type(frames, "tool.start")
        assert (start["name"], start["input"]) == (name, arguments)
        (tool_result,) = of_type(frames, "tool.result")
        assert tool_result["result"] == result and tool_result["error"] is None
        assert result in final_texts(frames)[-1]


async def test_overrides_may_only_name_paths_the_profiles_declare(
    write_module: ModuleWriter, make_app: AppFactory
):
    module = write_module(TOOLS)
    async with make_app(profiles(module)) as client:
        rejected = await client.post(
            "/chat/agent",
            json={"prompt": "x", "conv_id": "ov-1", "overrides": {"tools": ["os:getcwd"]}},
        )
        assert rejected.status_code == 400
        assert "not declared by any profile" in rejected.json()["error"]

        only_shout = {"tools": [f"{module}:shout"]}
        _, frames = await run_prompt(client, "ov-2", 'use add {"a": 1}', overrides=only_shout)
        assert not of_type(frames, "tool.start")
        assert "not offered" in final_texts(frames)[-1]
        _, frames = await run_prompt(client, "ov-2", 'use shout {"text": "ok"}')
        assert [f["name"] for f in of_type(frames, "tool.start")] == ["shout"]


async def test_two_tools_with_one_name_in_a_profile_fail_at_start(
    write_module: ModuleWriter, make_app: AppFactory
):
    module = write_module(TOOLS)
    clash = (
        profiles(module)
        + f"""
      - slug: clash
        tools: [calculator, "{module}:calculator"]
    """
    )
    with pytest.raises(ValueError, match="profile 'clash'") as failed:
        async with make_app(clash):
            pass
    assert "calculator" in str(failed.value)


# -- the offline engine's ``use`` on its own ---------------------------------------------------

LOOKUP = ToolDefinition("lookup", "find things", {"type": "object"})


async def offline(turn: Turn, tools=(LOOKUP,)) -> tuple[Turn, CollectingSink]:
    sink = CollectingSink()
    ctx = RunContext(sinks=(sink,), session_id="s", inference_id="i", turn_id="t", tools=tools)
    return await OfflineEngine(StepSettings(api_type="offline")).run_inference(turn, ctx), sink


async def test_use_requests_the_offered_tool_with_the_json_arguments():
    turn, sink = await offline(Turn(blocks=[Block.user('use lookup {"q": "x y", "n": [1]}')]))
    call = turn.blocks[-1]
    assert call.kind == BlockKind.TOOL_CALL
    assert call.payload["name"] == "lookup"
    assert call.payload["args"] == {"q": "x y", "n": [1]}
    assert turn.metadata.stop_reason == "tool_calls"
    assert "tool-call" in sink.types()


async def test_use_answers_with_the_result_or_the_error_once_it_is_in():
    asked, _ = await offline(Turn(blocks=[Block.user('use lookup {"q": "x"}')]))
    call_id = asked.blocks[-1].payload["id"]
    answered, _ = await offline(
        asked.model_copy(deep=True).append(Block.tool_use(call_id, {"found": 3}))
    )
    assert answered.blocks[-1].text == 'lookup returned {"found": 3}'
    failed, _ = await offline(
        asked.model_copy(deep=True).append(Block.tool_use(call_id, "error: nope", error="nope"))
    )
    assert failed.blocks[-1].text == "lookup failed: nope"


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ('use missing {"q": 1}', "The tool missing is not offered in this conversation"),
        ("use lookup {not json}", "I could not read the arguments for lookup"),
        ("use lookup [1, 2]", None),  # no object: a plain answer
    ],
)
async def test_use_of_an_unoffered_tool_or_bad_json_is_said_plainly(prompt, expected):
    turn, _ = await offline(Turn(blocks=[Block.user(prompt)]))
    last = turn.blocks[-1]
    assert last.kind == BlockKind.LLM_TEXT
    if expected is None:
        assert last.text.startswith("Offline reply")
    else:
        assert last.text.startswith(expected)
