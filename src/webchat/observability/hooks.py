"""The calls the measured code makes: cheap, never raising, and no-ops outside an app.

Each one reports to the app active in the caller's context (``runtime.current``).
"""

from __future__ import annotations

from webchat.observability.runtime import current

__all__ = [
    "observe_delivery_latency",
    "observe_run_duration",
    "observe_send_queue_depth",
    "observe_time_to_first_token",
    "observe_tool_call",
]


def observe_time_to_first_token(seconds: float, api_type: str) -> None:
    """A model call streamed its first token ``seconds`` after it started."""
    if (observability := current()) is not None:
        observability.metrics.time_to_first_token.labels(api_type=api_type).observe(seconds)


def observe_run_duration(seconds: float, status: str) -> None:
    """A run ended (``status``: finished, failed or cancelled) after ``seconds``."""
    if (observability := current()) is not None:
        observability.metrics.run_duration.labels(status=status).observe(seconds)


def observe_tool_call(seconds: float, tool: str, *, ok: bool) -> None:
    """A tool call ended. ``tool`` must be a registered name (bounded label values)."""
    if (observability := current()) is not None:
        outcome = "ok" if ok else "error"
        observability.metrics.tool_call_duration.labels(tool=tool, outcome=outcome).observe(seconds)


def observe_delivery_latency(seconds: float) -> None:
    """A frame reached a client's socket ``seconds`` after its event was published."""
    if (observability := current()) is not None:
        observability.metrics.delivery_latency.observe(max(seconds, 0.0))


def observe_send_queue_depth(depth: int) -> None:
    """A frame was queued for a client whose queue then held ``depth`` frames."""
    if (observability := current()) is not None:
        observability.metrics.send_queue_depth.observe(depth)
