"""Bring your own agent: Python code named in a profile replaces the provider engine.

``agent: "package.module:attribute"`` in a profile names an async generator function, a
pydantic-ai ``Agent`` or an ``Engine`` (see ``factory``); ``tools: ["package.module:fn"]`` names
a typed function as a tool (see ``imports``). Middlewares, the tool loop and the event sink
still come from ``EngineBuilder``, the one place engines are composed.
"""

from webchat.agents.binding import AgentBinding
from webchat.agents.factory import (
    AgentFactory,
    AgentImportError,
    LoggedEngine,
    create_agent_engine,
    load_agent,
)
from webchat.agents.generator import AgentFunction, GeneratorAgentEngine
from webchat.agents.imports import ImportPathError, import_object, is_import_path, load_tool
from webchat.agents.output import AgentOutput
from webchat.agents.request import AgentRequest

__all__ = [
    "AgentBinding",
    "AgentFactory",
    "AgentFunction",
    "AgentImportError",
    "AgentOutput",
    "AgentRequest",
    "GeneratorAgentEngine",
    "ImportPathError",
    "LoggedEngine",
    "create_agent_engine",
    "import_object",
    "is_import_path",
    "load_agent",
    "load_tool",
]
