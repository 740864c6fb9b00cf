"""Agent and tool paths are checked when the profiles load; the agent is part of the signature."""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.agents.conftest import AppFactory, ModuleWriter, final_texts, run_prompt
from webchat.agents import AgentImportError, load_agent
from webchat.conversation.builder import EngineBuilder
from webchat.profiles import ProfileFileError, ProfileRegistry
from webchat.server import create_app
from webchat.settings import ServerSettings
from webchat.transport import InMemoryTransport

KINDS = """
CONSTANT = "not an agent"

def plain(request):
    return "hi"

async def coroutine(request):
    return "hi"

async def two_args(request, extra):
    yield "hi"

class NeedsArguments:
    def __init__(self, url):
        self.url = url

    async def run_inference(self, turn, ctx):
        return turn

def untyped(x):
    return x
"""


@pytest.mark.parametrize(
    ("attribute", "reason"),
    [
        ("missing", "has no attribute 'missing'"),
        ("CONSTANT", "is str, not an async generator function"),
        ("plain", "is function, not an async generator function"),
        ("coroutine", "must be 'async def' and use 'yield'"),
        ("two_args", "must take exactly one argument"),
        ("NeedsArguments", "cannot be built without arguments"),
    ],
)
def test_an_unusable_agent_stops_create_app_naming_profile_and_path(
    write_module: ModuleWriter, tmp_path, attribute: str, reason: str
):
    module = write_module(KINDS)
    path = f"{module}:{attribute}"
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(f'profiles:\n  - slug: mine\n    agent: "{path}"\n')
    with pytest.raises(ProfileFileError) as caught:
        create_app(ServerSettings(db=":memory:", profiles=profiles))
    message = str(caught.value)
    assert "profile 'mine'" in message and repr(path) in message
    assert reason in message


def test_a_missing_or_broken_module_is_reported_as_such(write_module: ModuleWriter):
    broken = write_module("raise RuntimeError('boom at import')\n")
    with pytest.raises(AgentImportError, match="RuntimeError: boom at import"):
        load_agent(f"{broken}:agent")
    with pytest.raises(AgentImportError, match="cannot import module 'no_such_module_w1'"):
        load_agent("no_such_module_w1:agent")
    with pytest.raises(AgentImportError, match="not an import path"):
        load_agent("no colon here")


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("{module}:missing", "has no attribute"),
        ("{module}:untyped", "needs a type hint"),
        ("{module}:CONSTANT", "not a function or a Tool"),
        ("no_such_tools_module_w1:search", "cannot import module"),
    ],
)
def test_an_unusable_tool_path_stops_create_app_naming_profile_and_path(
    write_module: ModuleWriter, tmp_path, entry: str, reason: str
):
    path = entry.format(module=write_module(KINDS))
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(f'profiles:\n  - slug: tooled\n    tools: [calculator, "{path}"]\n')
    with pytest.raises(ProfileFileError) as caught:
        create_app(ServerSettings(db=":memory:", profiles=profiles))
    message = str(caught.value)
    assert "profile 'tooled'" in message and repr(path) in message and reason in message


def test_the_cli_reports_a_bad_agent_and_exits_2(write_module: ModuleWriter, tmp_path):
    from typer.testing import CliRunner

    from webchat.cli import app

    profiles = tmp_path / "profiles.yaml"
    profiles.write_text('profiles:\n  - slug: mine\n    agent: "no_such_module_w2:agent"\n')
    result = CliRunner().invoke(app, ["profiles", "--profiles", str(profiles)])
    assert result.exit_code == 2
    assert "no_such_module_w2:agent" in result.output and "'mine'" in result.output


GREETERS = """
async def hello(request):
    yield "hello from A"

async def bonjour(request):
    yield "bonjour from B"
"""


async def test_the_agent_path_is_part_of_the_signature(write_module: ModuleWriter):
    module = write_module(GREETERS)
    profiles = ProfileRegistry.from_yaml_text(
        textwrap.dedent(f"""
        profiles:
          - slug: a
            agent: "{module}:hello"
          - slug: b
            agent: "{module}:bonjour"
          - slug: plain
        """)
    )
    transport = InMemoryTransport()
    try:
        builder = EngineBuilder(profiles, transport)
        a, b = builder.build_config("a"), builder.build_config("b")
        assert json.loads(builder.signature(a))["agent"] == f"{module}:hello"
        assert builder.signature(a) != builder.signature(b)
        assert builder.signature(
            a.model_copy(update={"agent": f"{module}:bonjour", "profile_slug": "b"})
        ) == builder.signature(b)
        # No agent: no key at all, so existing conversations keep their signatures.
        assert "agent" not in json.loads(builder.signature(builder.build_config("plain")))
    finally:
        await transport.close()


async def test_switching_to_a_profile_with_another_agent_rebuilds(
    write_module: ModuleWriter, make_app: AppFactory
):
    module = write_module(GREETERS)
    yaml = f"""
    profiles:
      - slug: a
        agent: "{module}:hello"
      - slug: b
        agent: "{module}:bonjour"
    """
    async with make_app(yaml) as client:
        _, frames = await run_prompt(client, "switch-1", "hi", profile="a")
        assert final_texts(frames) == ["hello from A"]
        _, frames = await run_prompt(client, "switch-1", "hi", profile="b")
        assert final_texts(frames) == ["bonjour from B"]
        info = (await client.get("/api/conversations/switch-1")).json()
        assert info["rebuilds"] == 1
        assert info["signature"]["agent"] == f"{module}:bonjour"
        assert len(info["turns"]) == 2


ENGINES = """
from webchat.engines import EngineError, StepSettings, stream_inference
from webchat.turns import BlockKind


class AddingEngine:
    \"\"\"Asks the calculator for 2+3, then reports what it said.\"\"\"

    def __init__(self):
        self.calls = 0

    async def run_inference(self, turn, ctx):
        self.calls += 1
        last_user = max(i for i, b in enumerate(turn.blocks) if b.kind == BlockKind.USER)
        results = [b for b in turn.blocks[last_user:] if b.kind == BlockKind.TOOL_USE]

        async def produce(stream):
            if not results:
                call_id = f"add-{ctx.inference_id}"
                stream.add_tool_call(call_id, "calculator", '{"expression": "2+3"}')
                stream.stop_reason = "tool_calls"
            else:
                await stream.add_text(f"the calculator said {results[-1].payload['result']}")
                stream.stop_reason = "stop"

        return await stream_inference(
            turn, ctx, StepSettings(model="adding"), produce, lambda exc: EngineError(str(exc))
        )


SHARED = AddingEngine()
"""


@pytest.mark.parametrize("attribute", ["AddingEngine", "SHARED"])
async def test_an_engine_object_or_class_runs_inside_the_tool_loop(
    write_module: ModuleWriter, make_app: AppFactory, attribute: str
):
    module = write_module(ENGINES)
    yaml = f"""
    profiles:
      - slug: agent
        tools: [calculator]
        agent: "{module}:{attribute}"
    """
    async with make_app(yaml) as client:
        _, frames = await run_prompt(client, "engine-1", "add")
        assert frames[-1]["type"] == "run.finished"
        assert [f["name"] for f in frames if f["type"] == "tool.start"] == ["calculator"]
        assert [f["result"] for f in frames if f["type"] == "tool.result"] == ["5"]
        assert final_texts(frames)[-1] == "the calculator said 5"
        starts = [f for f in frames if f["type"] == "llm.start"]
        assert starts[0]["model"] == "adding"
