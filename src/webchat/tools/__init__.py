"""Tools: typed Python functions the model may call, their registry, and the tool loop."""

from webchat.tools.calculator import calculator, calculator_tool, evaluate
from webchat.tools.loop import ToolLoop, ToolLoopError, ToolLoopSettings
from webchat.tools.registry import Tool, ToolArgumentsError, ToolError, ToolRegistry, tool

__all__ = [
    "Tool",
    "ToolArgumentsError",
    "ToolError",
    "ToolLoop",
    "ToolLoopError",
    "ToolLoopSettings",
    "ToolRegistry",
    "calculator",
    "calculator_tool",
    "evaluate",
    "tool",
]
