"""Prometheus metrics of one app: its own ``CollectorRegistry``, never the global one.

Several apps may live in one process (tests, an app mounted twice): each keeps its own
registry, so one app's runs never show in another's ``/metrics``. The service's counters
and gauges are computed when scraped (they are read from memory and the store, see
``ChatService.metrics``) and exposed by a collector; what can only be observed at the moment
it happens (a first token, a run's end, a tool call, a frame reaching a client) goes into
histograms that the hooks of ``webchat.observability.hooks`` fill.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "PREFIX", "SERVICE_HELP", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The classic text format, which ``generate_latest`` writes (and every scraper reads)."""

PREFIX = "webchat_"
SERVICE_HELP: dict[str, str] = {
    "conversations": "Conversations held in this process's memory.",
    "active_runs": "Runs in progress in this process.",
    "connected_clients": "WebSocket clients connected to this process.",
    "frames_sent_total": "Frames sent to WebSocket clients.",
    "dropped_slow_clients_total": "Clients closed (4008) for not keeping up with their frames.",
    "rebuilds_total": "Engines rebuilt because a conversation's configuration signature changed.",
    "runs_started_total": "Runs started by this process.",
    "feedback_up": "Answers rated up (stored; goes down when a rating changes or is deleted).",
    "feedback_down": "Answers rated down (stored; goes down when a rating changes or is deleted).",
}
"""``# HELP`` of each value of ``ChatService.metrics`` and ``ConversationManagement.metrics``
(a name ending in ``_total`` is a counter, any other a gauge)."""


class ServiceCollector(Collector):
    """The service's values of the scrape being rendered, as counters and gauges."""

    def __init__(self) -> None:
        self.values: Mapping[str, float] = {}

    def describe(self) -> Iterable[Metric]:
        return ()  # the names depend on what the service reports; never collect to find out

    def collect(self) -> Iterable[Metric]:
        for name, value in self.values.items():
            documentation = SERVICE_HELP.get(name, name.replace("_", " ").capitalize() + ".")
            if name.endswith("_total"):
                yield CounterMetricFamily(PREFIX + name, documentation, value=value)
            else:
                yield GaugeMetricFamily(PREFIX + name, documentation, value=value)


class Metrics:
    """The registry of one app, its histograms, and its process metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._service = ServiceCollector()
        self.registry.register(self._service)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.time_to_first_token = Histogram(
            PREFIX + "time_to_first_token_seconds",
            "Seconds from the start of a model call to its first streamed token.",
            ["api_type"],
            registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
        )
        self.run_duration = Histogram(
            PREFIX + "run_duration_seconds",
            "Seconds a run took, from its start to its end, by how it ended.",
            ["status"],
            registry=self.registry,
            buckets=(0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
        )
        self.tool_call_duration = Histogram(
            PREFIX + "tool_call_duration_seconds",
            "Seconds a tool call took, by tool and outcome (ok or error).",
            ["tool", "outcome"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60),
        )
        self.delivery_latency = Histogram(
            PREFIX + "delivery_latency_seconds",
            "Seconds from an event's publish to its frame being sent to a WebSocket client.",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.send_queue_depth = Histogram(
            PREFIX + "ws_send_queue_depth",
            "Frames waiting in a WebSocket client's send queue, sampled as a frame is queued.",
            registry=self.registry,
            buckets=(0, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
        )

    def render(self, service_values: Mapping[str, float]) -> bytes:
        """The Prometheus text exposition with ``service_values`` as the service's values.

        Blocking (process metrics read ``/proc``): call it from a worker thread. Two scrapes
        at once may both render the later values, which are still a true snapshot.
        """
        self._service.values = dict(service_values)
        return generate_latest(self.registry)
