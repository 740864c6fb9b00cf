"""What ``import webchat`` offers: the public extension API, pinned."""

import importlib
import subprocess
import sys

import pytest

import webchat

PUBLIC = [
    "AgentRequest",
    "Engine",
    "EngineBuilder",
    "Event",
    "EventMeta",
    "InfoEvent",
    "LogEvent",
    "Middleware",
    "PartialEvent",
    "PartialThinkingEvent",
    "ProviderKeys",
    "RunContext",
    "ServerSettings",
    "StepSettings",
    "Tool",
    "ToolCall",
    "ToolCallEvent",
    "ToolCallExecutionResultEvent",
    "ToolError",
    "ToolResult",
    "ToolResultEvent",
    "Turn",
    "Usage",
    "__version__",
    "create_app",
    "tool",
]


def test_all_is_the_pinned_sorted_list():
    assert sorted(webchat.__all__) == PUBLIC
    assert len(set(webchat.__all__)) == len(webchat.__all__)


@pytest.mark.parametrize("name", PUBLIC)
def test_each_public_name_resolves(name: str):
    value = getattr(webchat, name)
    assert value is not None
    if name != "__version__":
        # The very object its defining module exports, not a copy.
        module = importlib.import_module(webchat._EXPORTS[name])
        assert value is getattr(module, name)
        assert name in getattr(module, "__all__", [name])


def test_star_import_gives_exactly_the_public_names():
    namespace: dict[str, object] = {}
    exec("from webchat import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == PUBLIC


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        webchat.no_such_name  # noqa: B018


def test_import_webchat_stays_light():
    # A fresh interpreter: importing the package imports none of its submodules.
    code = "import sys, webchat; print(sorted(m for m in sys.modules if m.startswith('webchat')))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "['webchat']"
