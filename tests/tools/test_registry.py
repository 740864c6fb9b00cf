import asyncio
import threading

import pytest

from webchat.tools import Tool, ToolArgumentsError, ToolRegistry, tool


def add(a: int, b: int = 2) -> int:
    """Add two integers."""
    return a + b


async def shout(text: str, times: int = 1) -> str:
    await asyncio.sleep(0)
    return (text.upper() + " ") * times


def test_schema_is_derived_from_the_signature():
    definition = Tool(add).definition
    assert definition.name == "add"
    assert definition.description == "Add two integers."
    params = definition.parameters
    assert params["type"] == "object"
    assert params["properties"]["a"]["type"] == "integer"
    assert params["properties"]["b"]["default"] == 2
    assert params["required"] == ["a"]
    assert params["additionalProperties"] is False


async def test_sync_tool_runs_off_the_event_loop():
    seen: list[bool] = []

    def where() -> str:
        seen.append(threading.current_thread() is threading.main_thread())
        return "ok"

    assert await Tool(where).call({}) == "ok"
    assert seen == [False]


async def test_async_tool_and_json_string_arguments():
    t = Tool(shout)
    assert await t.call('{"text": "hi", "times": 2}') == "HI HI "
    assert await t.call({"text": "a"}) == "A "


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ({"b": 1}, "a: Field required"),
        ({"a": "not a number"}, "a: Input should be a valid integer"),
        ({"a": 1, "c": 3}, "c: Extra inputs are not permitted"),
        ("{broken", "not valid JSON"),
        ([1, 2], "must be a JSON object"),
    ],
)
async def test_arguments_are_validated_before_the_call(arguments, fragment):
    called = []

    def guarded(a: int, b: int = 0) -> int:
        called.append(a)
        return a

    with pytest.raises(ToolArgumentsError) as info:
        await Tool(guarded).call(arguments)
    assert fragment in str(info.value)
    assert called == []


def test_untyped_parameters_are_refused():
    def untyped(x):  # type: ignore[no-untyped-def]
        return x

    with pytest.raises(TypeError, match="needs a type hint"):
        Tool(untyped)


def test_registry_names_definitions_and_duplicates():
    registry = ToolRegistry([Tool(add)])
    registry.register(shout)

    @tool(name="renamed", description="custom")
    def other(x: str) -> str:
        return x

    registry.register(other)
    assert registry.names() == ["add", "shout", "renamed"]
    assert [d.name for d in registry.definitions(["renamed", "add"])] == ["add", "renamed"]
    assert "shout" in registry and "nope" not in registry
    with pytest.raises(ValueError, match="already registered"):
        registry.register(add)
