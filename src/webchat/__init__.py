"""webchat: chat with LLM agents in the browser, every token and tool call streamed live.

The names below are the public extension API: ``create_app`` and ``ServerSettings`` to run
the server, ``EngineBuilder`` (with ``Tool``/``tool`` and ``Middleware``) to extend it,
``AgentRequest`` for agents written as async generators, ``Engine``/``RunContext``/``Turn`` for
engines of one's own, and the event classes an agent may yield. They are imported on first
use, so ``import webchat`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from webchat.agents import AgentRequest
    from webchat.conversation import EngineBuilder, ProviderKeys
    from webchat.engines import Engine, RunContext, StepSettings
    from webchat.events import (
        Event,
        EventMeta,
        InfoEvent,
        LogEvent,
        PartialEvent,
        PartialThinkingEvent,
        ToolCall,
        ToolCallEvent,
        ToolCallExecutionResultEvent,
        ToolResult,
        ToolResultEvent,
        Usage,
    )
    from webchat.middleware import Middleware
    from webchat.server import create_app
    from webchat.settings import ServerSettings
    from webchat.tools import Tool, ToolError, tool
    from webchat.turns import Turn

_EXPORTS: dict[str, str] = {
    "AgentRequest": "webchat.agents",
    "Engine": "webchat.engines",
    "EngineBuilder": "webchat.conversation",
    "Event": "webchat.events",
    "EventMeta": "webchat.events",
    "InfoEvent": "webchat.events",
    "LogEvent": "webchat.events",
    "Middleware": "webchat.middleware",
    "PartialEvent": "webchat.events",
    "PartialThinkingEvent": "webchat.events",
    "ProviderKeys": "webchat.conversation",
    "RunContext": "webchat.engines",
    "ServerSettings": "webchat.settings",
    "StepSettings": "webchat.engines",
    "Tool": "webchat.tools",
    "ToolCall": "webchat.events",
    "ToolCallEvent": "webchat.events",
    "ToolCallExecutionResultEvent": "webchat.events",
    "ToolError": "webchat.tools",
    "ToolResult": "webchat.events",
    "ToolResultEvent": "webchat.events",
    "Turn": "webchat.turns",
    "Usage": "webchat.events",
    "create_app": "webchat.server",
    "tool": "webchat.tools",
}
"""Public name -> the module that defines (and exports) it."""

__all__ = [
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


def __getattr__(name: str) -> object:
    """Import a public name on first use (PEP 562) and keep it as a module attribute."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
