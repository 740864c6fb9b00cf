"""Metrics, traces and logs: what an operator needs to see a deployment at work.

``metrics`` (a Prometheus registry per app), ``tracing`` (OpenTelemetry spans, optional),
``logs`` (context ids, ``--log-format json``), ``readiness`` (``/readyz``), and the hooks the
measured code calls (``hooks``, ``runs``, ``tools``). See the README's "Observability".
"""

from webchat.observability.hooks import (
    observe_delivery_latency,
    observe_run_duration,
    observe_send_queue_depth,
    observe_time_to_first_token,
    observe_tool_call,
)
from webchat.observability.logs import log_context, log_fields
from webchat.observability.metrics import Metrics
from webchat.observability.runtime import Observability, activate, current

__all__ = [
    "Metrics",
    "Observability",
    "activate",
    "current",
    "log_context",
    "log_fields",
    "observe_delivery_latency",
    "observe_run_duration",
    "observe_send_queue_depth",
    "observe_time_to_first_token",
    "observe_tool_call",
]
