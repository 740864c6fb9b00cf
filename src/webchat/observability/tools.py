"""What the tool loop reports about one tool call: its span and its duration."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from webchat.observability.hooks import observe_tool_call
from webchat.observability.tracing import tool_call

__all__ = ["ToolCallObservation", "observe_tool"]

UNKNOWN_TOOL = "unknown"
"""The metric label of a call to a tool the registry does not have: the model chose that
name, and label values must stay a bounded set."""


class ToolCallObservation:
    def __init__(self) -> None:
        self.result = ""
        self.error: str | None = None

    def finish(self, result: str, error: str | None) -> None:
        self.result, self.error = result, error


@contextlib.contextmanager
def observe_tool(
    name: str, call_id: str, arguments: str, *, registered: bool
) -> Iterator[ToolCallObservation]:
    """Around one tool call; the caller says how it ended with ``finish``."""
    observation = ToolCallObservation()
    started = time.monotonic()
    with tool_call(name, call_id, arguments) as span:
        try:
            yield observation
        finally:
            span.finish(observation.result, observation.error)
            observe_tool_call(
                time.monotonic() - started,
                name if registered else UNKNOWN_TOOL,
                ok=observation.error is None,
            )
