"""Composable wrappers around engines; the first listed is the outermost."""

from webchat.middleware.base import Middleware, compose
from webchat.middleware.logging import turn_logging_middleware
from webchat.middleware.reorder import reorder_tool_results, tool_result_reorder_middleware
from webchat.middleware.system_prompt import apply_system_prompt, system_prompt_middleware

__all__ = [
    "Middleware",
    "apply_system_prompt",
    "compose",
    "reorder_tool_results",
    "system_prompt_middleware",
    "tool_result_reorder_middleware",
    "turn_logging_middleware",
]
