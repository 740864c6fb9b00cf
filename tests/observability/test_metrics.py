"""``/metrics`` through prometheus_client, and ``/readyz``."""

from __future__ import annotations

import contextvars
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.server.auth_support import make_team
from tests.server.conftest import AppClient, ClientFactory
from tests.support.redis_server import RedisServer
from webchat.observability import (
    activate,
    observe_delivery_latency,
    observe_send_queue_depth,
)

SERVICE_METRICS = {
    "webchat_conversations": "gauge",
    "webchat_active_runs": "gauge",
    "webchat_connected_clients": "gauge",
    "webchat_frames_sent": "counter",
    "webchat_dropped_slow_clients": "counter",
    "webchat_rebuilds": "counter",
    "webchat_runs_started": "counter",
    "webchat_feedback_up": "gauge",
    "webchat_feedback_down": "gauge",
}
HISTOGRAMS = {
    "webchat_time_to_first_token_seconds",
    "webchat_run_duration_seconds",
    "webchat_tool_call_duration_seconds",
    "webchat_delivery_latency_seconds",
    "webchat_ws_send_queue_depth",
}


async def scrape(client: AppClient) -> str:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text


def samples(text: str, name: str) -> list[Sample]:
    return [
        sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def value(text: str, name: str, **labels: str) -> float:
    """The sample of ``name`` with ``labels``; 0 when there is none (a labelled histogram
    has no samples for labels it never saw)."""
    found = [s for s in samples(text, name) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) <= 1, found
    return found[0].value if found else 0.0


async def run(client: AppClient, prompt: str, conv_id: str) -> str:
    response = await client.post("/chat", json={"prompt": prompt, "conv_id": conv_id})
    assert response.status_code == 200, response.text
    await client.run_to_end(conv_id)
    inference_id: str = response.json()["inference_id"]
    return inference_id


async def test_metrics_parse_with_help_and_type_and_the_histograms_fill(client: AppClient):
    before = await scrape(client)
    assert value(before, "webchat_run_duration_seconds_count", status="finished") == 0
    await run(client, "calc: 6*7", "metrics-1")
    text = await scrape(client)
    families = {family.name: family for family in text_string_to_metric_families(text)}

    for name, kind in SERVICE_METRICS.items():
        assert families[name].type == kind, name
        assert families[name].documentation, name
    for name in HISTOGRAMS:
        assert families[name].type == "histogram", name
        assert families[name].documentation, name
    for line in text.splitlines():  # every family's HELP comes with its TYPE
        if line.startswith("# HELP "):
            assert f"# TYPE {line.split()[2]} " in text, line
    assert value(text, "webchat_conversations") == 1
    assert value(text, "webchat_runs_started_total") == 1
    assert value(text, "webchat_frames_sent_total") >= 0

    # One run, two model calls (the tool call between them), one tool call.
    assert value(text, "webchat_run_duration_seconds_count", status="finished") == 1
    assert value(text, "webchat_time_to_first_token_seconds_count", api_type="offline") == 2
    count = "webchat_tool_call_duration_seconds_count"
    assert value(text, count, tool="calculator", outcome="ok") == 1
    # Process metrics (prometheus_client's process, platform and GC collectors).
    assert value(text, "process_resident_memory_bytes") > 0
    assert samples(text, "python_info")
    assert samples(text, "python_gc_collections_total")


async def test_a_failing_tool_and_a_failed_run_are_labelled(client: AppClient):
    await run(client, "calc: 1/0", "metrics-2")
    text = await scrape(client)
    count = "webchat_tool_call_duration_seconds_count"
    assert value(text, count, tool="calculator", outcome="error") == 1
    assert not [s for s in samples(text, count) if s.labels.get("outcome") == "ok"]


async def test_each_app_counts_only_its_own_runs(make_client: ClientFactory):
    async with make_client() as first, make_client() as second:
        await run(first, "hello", "mine")
        assert (
            value(await scrape(first), "webchat_run_duration_seconds_count", status="finished") == 1
        )
        other = await scrape(second)
        assert not [s for s in samples(other, "webchat_run_duration_seconds_count") if s.value > 0]
        assert value(other, "webchat_runs_started_total") == 0


async def test_delivery_hooks_report_to_the_active_app(make_client: ClientFactory):
    """The connection pool calls these two hooks; they reach the app whose context runs."""
    async with make_client() as first, make_client() as second:
        # Outside any app (an empty context): recorded nowhere, and no error.
        contextvars.Context().run(observe_delivery_latency, 0.5)
        with activate(first.app.state.observability):
            observe_delivery_latency(0.003)
            observe_send_queue_depth(7)
        text = await scrape(first)
        assert value(text, "webchat_delivery_latency_seconds_count") == 1
        assert value(text, "webchat_delivery_latency_seconds_bucket", le="0.005") == 1
        assert value(text, "webchat_delivery_latency_seconds_bucket", le="0.0025") == 0
        assert value(text, "webchat_ws_send_queue_depth_bucket", le="10.0") == 1
        assert value(text, "webchat_ws_send_queue_depth_bucket", le="5.0") == 0
        other = await scrape(second)
        assert value(other, "webchat_delivery_latency_seconds_count") == 0


async def test_readyz_and_metrics_need_no_credentials(make_client: ClientFactory, tmp_path: Path):
    team = make_team(tmp_path)
    async with make_client(auth="users", users=team.path) as client:
        assert (await client.get("/api/conversations")).status_code == 401
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ready", "checks": {"store": "ok"}}
        assert (await client.get("/metrics")).status_code == 200


async def test_readyz_says_503_with_a_reason_while_redis_is_down(
    make_client: ClientFactory, redis_server: RedisServer, redis_url: str
):
    async with make_client(transport="redis", redis_url=redis_url) as client:
        ready = await client.get("/readyz")
        assert ready.json() == {"status": "ready", "checks": {"store": "ok", "redis": "ok"}}
        redis_server.stop()
        try:
            down = await client.get("/readyz")
            assert (await client.get("/healthz")).status_code == 200  # alive all the same
        finally:
            redis_server.start()
        assert down.status_code == 503, down.text
        body = down.json()
        assert body["status"] == "unavailable"
        assert body["checks"] == {"store": "down", "redis": "down"}
        assert "redis: unavailable (ConnectionError)" in body["error"]
        assert (await client.get("/readyz")).status_code == 200
