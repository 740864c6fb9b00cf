"""OpenTelemetry spans of a run, checked with the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from opentelemetry.trace import StatusCode

from tests.observability.conftest import Spans
from tests.server.conftest import AppClient, ClientFactory

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


async def start(client: AppClient, prompt: str, conv_id: str, profile: str = "", **kw: Any) -> Any:
    path = f"/chat/{profile}" if profile else "/chat"
    response = await client.post(path, json={"prompt": prompt, "conv_id": conv_id}, **kw)
    assert response.status_code in (200, 202), response.text
    return response.json()


def attrs(span: Any) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_a_tool_run_makes_a_run_span_with_model_and_tool_children(
    client: AppClient, spans: Spans
):
    accepted = await start(client, "calc: 6*7", "traced")
    await client.run_to_end("traced")
    run = spans.of_run(accepted["inference_id"])
    assert run.name == "invoke_agent default"
    assert attrs(run)["gen_ai.operation.name"] == "invoke_agent"
    assert attrs(run)["gen_ai.conversation.id"] == "traced"
    assert attrs(run)["webchat.run.status"] == "finished"

    children = spans.children(run)
    models = [s for s in children if attrs(s)["gen_ai.operation.name"] == "chat"]
    tools = [s for s in children if attrs(s)["gen_ai.operation.name"] == "execute_tool"]
    assert len(models) == 2 and len(tools) == 1, [s.name for s in children]
    assert {s.context.trace_id for s in (run, *children)} == {run.context.trace_id}

    first, second = sorted(models, key=lambda s: s.start_time or 0)
    for model in models:
        assert model.name == f"chat {attrs(model)['gen_ai.request.model']}"
        assert attrs(model)["gen_ai.provider.name"] == "offline"
        assert attrs(model)["gen_ai.usage.input_tokens"] > 0
        assert attrs(model)["gen_ai.usage.output_tokens"] > 0
    assert attrs(first)["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert attrs(second)["gen_ai.response.finish_reasons"] == ("stop",)

    (tool,) = tools
    assert tool.name == "execute_tool calculator"
    assert attrs(tool)["gen_ai.tool.name"] == "calculator"
    assert attrs(tool)["gen_ai.tool.call.id"]
    assert first.end_time is not None and tool.start_time is not None
    assert first.end_time <= tool.start_time <= (second.start_time or 0)

    # No prompt, output, argument or result unless the deployment asks for them.
    for span in (run, *children):
        assert not [k for k in attrs(span) if k.endswith(("messages", "arguments", "result"))]


async def test_content_is_recorded_only_when_enabled(make_client: ClientFactory, spans: Spans):
    async with make_client(otel_capture_content=True) as client:
        accepted = await start(client, "calc: 6*7", "captured")
        await client.run_to_end("captured")
    run = spans.of_run(accepted["inference_id"])
    (prompt,) = json.loads(attrs(run)["gen_ai.input.messages"])
    assert prompt == {"role": "user", "parts": [{"type": "text", "content": "calc: 6*7"}]}
    assert "42" in attrs(run)["gen_ai.output.messages"]
    (tool,) = [s for s in spans.children(run) if s.name.startswith("execute_tool")]
    assert json.loads(attrs(tool)["gen_ai.tool.call.arguments"]) == {"expression": "6*7"}
    assert attrs(tool)["gen_ai.tool.call.result"] == "42"


async def test_a_failed_tool_marks_its_span_as_an_error(client: AppClient, spans: Spans):
    accepted = await start(client, "calc: 1/0", "broken")
    await client.run_to_end("broken")
    run = spans.of_run(accepted["inference_id"])
    (tool,) = [s for s in spans.children(run) if s.name.startswith("execute_tool")]
    assert tool.status.status_code == StatusCode.ERROR
    assert attrs(run)["webchat.run.status"] == "finished"  # the model read the error


async def test_a_callers_traceparent_is_the_runs_parent(client: AppClient, spans: Spans):
    accepted = await start(client, "hello", "continued", headers={"traceparent": TRACEPARENT})
    await client.run_to_end("continued")
    run = spans.of_run(accepted["inference_id"])
    assert format(run.context.trace_id, "032x") == TRACE_ID
    assert run.parent is not None and format(run.parent.span_id, "016x") == PARENT_ID


async def test_a_run_queued_on_one_process_and_run_on_another_is_one_trace(
    make_client: ClientFactory, redis_url: str, spans: Spans
):
    """B queues the run in Redis (policy enqueue) behind A's; A starts it when its own run
    ends. The queued request carried B's trace context, so A's run span continues it."""
    shared = {"transport": "redis", "redis_url": redis_url}
    async with make_client(**shared) as a, make_client(**shared) as b:
        first = await start(a, "first", "two-procs", profile="queue")
        queued = await start(
            b, "second", "two-procs", "queue", headers={"traceparent": TRACEPARENT}
        )
        assert queued["status"] == "queued", queued
        conversation = a.service.manager.get("two-procs")
        async with asyncio.timeout(20):
            await conversation.wait_for_end_frame(first["inference_id"])
            await a.run_to_end("two-procs")  # the queued run, started here on A
            await conversation.wait_for_end_frame(queued["inference_id"])
        frames = await a.timeline("two-procs")
    assert [f["type"] for f in frames if f["inference_id"] == queued["inference_id"]][-1] == (
        "run.finished"
    )
    run = spans.of_run(queued["inference_id"])
    assert format(run.context.trace_id, "032x") == TRACE_ID
    assert run.parent is not None and format(run.parent.span_id, "016x") == PARENT_ID
    assert spans.children(run), "the queued run's model call belongs to the same trace"
    assert spans.of_run(first["inference_id"]).context.trace_id != run.context.trace_id


def python(script: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_without_the_otel_extra_the_server_runs_untraced(tmp_path: Path):
    """``webchat[otel]`` adds the SDK; without it (only the API, which FastAPI itself
    needs), a tool run and ``/metrics`` work and no trace context is made or sent."""
    script = """
        import asyncio, sys
        sys.modules["opentelemetry.sdk"] = None  # as if not installed: its imports fail
        import httpx
        from webchat.observability import tracing
        from webchat.server import create_app
        from webchat.settings import ServerSettings

        async def main():
            app = create_app(ServerSettings(db=":memory:"))
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
                    r = await c.post("/chat", json={"prompt": "calc: 6*7", "conv_id": "x"})
                    assert r.status_code == 200, r.text
                    turn = await app.state.service.manager.get("x").session.active.wait()
                    m = await c.get("/metrics")
                    ok = '_count{outcome="ok",tool="calculator"} 1.0'
                    assert "webchat_tool_call_duration_seconds" + ok in m.text, m.text
            print("42" in turn.assistant_text(), tracing.inject())

        asyncio.run(main())
    """
    assert python(script, tmp_path) == "True {}"


def test_without_opentelemetry_at_all_runs_and_tools_still_work(tmp_path: Path):
    """The import guard: with no ``opentelemetry`` package, the runtime (a session, the
    tool loop, the offline engine) runs and every tracing call is a no-op."""
    script = """
        import asyncio, sys
        sys.modules["opentelemetry"] = None
        from webchat.engines import StepSettings, create_engine
        from webchat.observability import tracing
        from webchat.sessions import Session
        from webchat.tools import ToolLoop, ToolRegistry, calculator_tool

        async def main():
            engine = create_engine(StepSettings(api_type="offline", tokens_per_second=0))
            loop = ToolLoop(engine.run_inference, ToolRegistry([calculator_tool()]))
            turn = await Session(loop).start_inference("calc: 6*7").wait()
            with tracing.continue_trace({"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}):
                ids = tracing.current_trace_ids()
            print(tracing.ENABLED, "42" in turn.assistant_text(), tracing.inject(), ids)

        asyncio.run(main())
    """
    assert python(script, tmp_path) == "False True {} None"


async def test_a_provider_key_never_reaches_a_span(make_client: ClientFactory, spans: Spans):
    """Even with content capture on, a failing provider call (the one whose error could
    quote the request) leaves the key out of every attribute, event and status."""
    secret = "sk-test-SPAN-SECRET-7"
    async with make_client(openai_api_key=secret, otel_capture_content=True) as client:
        accepted = await start(client, "hello", "keyed", profile="gpt")
        await client.run_to_end("keyed")
    run = spans.of_run(accepted["inference_id"])
    assert attrs(run)["webchat.run.status"] == "failed"
    (model,) = spans.children(run)
    assert model.status.status_code == StatusCode.ERROR
    dumped = "\n".join(span.to_json() for span in spans.all())
    assert "gpt-test" in dumped  # the spans were read
    assert secret not in dumped and secret[3:] not in dumped
