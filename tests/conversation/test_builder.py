import asyncio

import pytest
from pydantic import BaseModel

from webchat.conversation.builder import ComposedEngine, EngineBuilder, ProviderKeys
from webchat.engines import RunContext
from webchat.errors import InvalidRequestError, OverridesNotAllowedError, UnknownProfileError
from webchat.events import parse_event
from webchat.profiles import Profile, ProfileRegistry
from webchat.transport import InMemoryTransport, topic_for
from webchat.turns import Block, BlockKind, Turn

PROFILES = ProfileRegistry(
    [
        Profile(
            slug="open",
            default_prompt="Base prompt.",
            allow_overrides=True,
            tools=["calculator"],
            overridable_settings=["temperature"],
        ),
        Profile(slug="locked", default_prompt="Locked."),
        Profile(slug="gpt", step_settings={"api_type": "openai", "model": "gpt-x"}),
    ]
)


class LevelConfig(BaseModel, extra="forbid"):
    level: str = "info"


@pytest.fixture
async def transport():
    t = InMemoryTransport()
    yield t
    await t.close()


@pytest.fixture
def builder(transport):
    return EngineBuilder(PROFILES, transport)


def test_profile_defaults_become_the_config(builder):
    config = builder.build_config("open")
    assert config.profile_slug == "open"
    assert config.system_prompt == "Base prompt."
    assert config.tools == ("calculator",)
    assert config.middlewares == ()


def test_overrides_replace_prompt_middlewares_tools_and_allowed_settings(builder):
    config = builder.build_config(
        "open",
        {
            "system_prompt": "Override.",
            "middlewares": [{"name": "logging", "config": {}}],
            "tools": [],
            "step_settings": {"temperature": 0.3},
        },
    )
    assert config.system_prompt == "Override."
    assert [m.name for m in config.middlewares] == ["logging"]
    assert config.tools == ()
    assert config.step_settings.temperature == 0.3


@pytest.mark.parametrize(
    ("profile", "overrides", "error", "fragment"),
    [
        ("nope", None, UnknownProfileError, "unknown profile"),
        ("locked", {"system_prompt": "x"}, OverridesNotAllowedError, "does not allow overrides"),
        ("open", {"middlewares": [{"name": "nosuch"}]}, InvalidRequestError, "unknown middleware"),
        ("open", {"tools": ["rm_rf"]}, InvalidRequestError, "unknown tool"),
        ("open", {"step_settings": {"base_url": "http://evil"}}, InvalidRequestError, "base_url"),
        ("open", {"step_settings": {"temperature": 9}}, InvalidRequestError, "temperature"),
        ("open", {"colour": "red"}, InvalidRequestError, "colour"),
        ("open", {"middlewares": "logging"}, InvalidRequestError, "middlewares"),
        (
            "open",
            {"middlewares": [{"name": "logging", "config": {"x": float("nan")}}]},
            InvalidRequestError,
            "not JSON-serializable",
        ),
        (
            "open",
            {"middlewares": [{"name": "logging", "config": {"x": object()}}]},
            InvalidRequestError,
            "not JSON-serializable",
        ),
    ],
)
def test_bad_requests_get_specific_errors(builder, profile, overrides, error, fragment):
    with pytest.raises(error, match=fragment) as info:
        builder.build_config(profile, overrides)
    assert info.value.status_code in (400, 403, 404)


def test_registered_middleware_config_is_validated(builder):
    builder.register_middleware("levels", lambda cfg: lambda h: h, config_model=LevelConfig)
    builder.build_config("open", {"middlewares": [{"name": "levels", "config": {"level": "x"}}]})
    with pytest.raises(InvalidRequestError, match="invalid config for middleware 'levels'"):
        builder.build_config("open", {"middlewares": [{"name": "levels", "config": {"lvl": 1}}]})


def test_provider_key_comes_from_settings_and_only_its_fingerprint_is_signed(transport):
    builder = EngineBuilder(PROFILES, transport, provider_keys=ProviderKeys(openai="sk-SECRET-42"))
    config = builder.build_config("gpt")
    assert config.step_settings.api_key is not None
    assert config.step_settings.api_key.get_secret_value() == "sk-SECRET-42"
    assert "sk-SECRET-42" not in builder.signature(config)
    assert "sk-SECRET-42" not in repr(config)


async def test_middleware_order_reorder_then_listed_then_system_prompt(builder):
    seen: list[str] = []

    def probe(name: str):
        def factory(config):
            def wrap(inner):
                async def handle(turn: Turn, ctx: RunContext) -> Turn:
                    has_system = any(b.kind == BlockKind.SYSTEM for b in turn.blocks)
                    first_is_call = turn.blocks[1].kind == BlockKind.TOOL_CALL
                    seen.append(f"{name}:system={has_system}:reordered={first_is_call}")
                    return await inner(turn, ctx)

                return handle

            return wrap

        return factory

    builder.register_middleware("first", probe("first"))
    builder.register_middleware("second", probe("second"))
    config = builder.build_config(
        "open", {"middlewares": [{"name": "first"}, {"name": "second"}], "tools": []}
    )
    engine, _ = builder.build_from_config("c1", config)
    # A transcript whose tool result is out of place: reorder (outermost) fixes it first.
    turn = Turn(
        blocks=[
            Block.user("q"),
            Block.llm_text("thinking aloud"),
            Block.tool_use("a", 1),
            Block.tool_call("a", "calculator", {}),
        ]
    )
    turn.blocks = [turn.blocks[0], turn.blocks[3], turn.blocks[2], turn.blocks[1]]
    turn.blocks[1], turn.blocks[2] = turn.blocks[2], turn.blocks[1]
    out = await engine.run_inference(turn, RunContext())
    assert seen == [
        "first:system=False:reordered=True",
        "second:system=False:reordered=True",
    ]
    assert out.blocks[0].kind == BlockKind.SYSTEM and out.blocks[0].text == "Base prompt."


async def test_built_engine_publishes_to_the_conversation_topic(builder, transport):
    config = builder.build_config("open")
    engine, sink = builder.build_from_config("conv-42", config)
    assert isinstance(engine, ComposedEngine) and engine.config == config
    subscription = await transport.subscribe(topic_for("conv-42"))
    turn = await engine.run_inference(
        Turn(blocks=[Block.user("calc: 6*7")]), RunContext(sinks=(sink,))
    )
    assert "42" in turn.blocks[-1].text
    types = []
    async with asyncio.timeout(5):
        async for message in subscription:
            event = parse_event(message.payload)
            types.append(event.type)
            if event.type == "final" and "42" in getattr(event, "text", ""):
                break
    assert "tool-call-execute" in types and "tool-call-execution-result" in types
    await subscription.close()


async def test_only_configured_tools_are_offered(builder):
    offered = []

    def capture(config):
        def wrap(inner):
            async def handle(turn, ctx):
                offered.append([t.name for t in ctx.tools])
                return await inner(turn, ctx)

            return handle

        return wrap

    builder.register_middleware("capture", capture)
    for tools in (["calculator"], []):
        config = builder.build_config(
            "open", {"tools": tools, "middlewares": [{"name": "capture"}]}
        )
        engine, _ = builder.build_from_config("c", config)
        await engine.run_inference(Turn(blocks=[Block.user("hi")]), RunContext())
    assert offered == [["calculator"], []]
