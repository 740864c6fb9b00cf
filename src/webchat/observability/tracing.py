"""OpenTelemetry spans of runs, model calls and tool calls (extra ``webchat[otel]``).

Names and attributes follow the GenAI semantic conventions: a run is ``invoke_agent
{profile}``, a model call ``chat {model}`` (``gen_ai.request.model``, token usage, finish
reasons), a tool call ``execute_tool {name}``. Prompts, outputs, tool arguments and results
go into spans only when the app enables it (``otel_capture_content``): they are user data.

A trace crosses processes with what crosses Redis for its run: a queued run request carries
the W3C trace context of the request that queued it, so the process that runs it continues
the same trace. Without OpenTelemetry installed every function here is a no-op.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

from webchat.observability.runtime import current

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Span, SpanKind, Status, StatusCode

    ENABLED = True
except ImportError:  # the otel extra is not installed: no tracing
    ENABLED = False

__all__ = [
    "ENABLED",
    "ModelCallSpan",
    "RunSpan",
    "ToolCallSpan",
    "continue_trace",
    "current_trace_ids",
    "inject",
    "model_call",
    "start_run",
    "tool_call",
]

TRACER_NAME = "webchat"


def _capture() -> bool:
    observability = current()
    return observability is not None and observability.capture_content


def _messages(role: str, text: str) -> str:
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}])


def inject() -> dict[str, str]:
    """The current trace context as W3C headers (``traceparent``...), to send along."""
    carrier: dict[str, str] = {}
    if ENABLED:
        propagate.inject(carrier)
    return carrier


@contextlib.contextmanager
def continue_trace(carrier: Mapping[str, str] | None) -> Iterator[None]:
    """Make the trace context of ``carrier`` (W3C headers) current for the block."""
    if not ENABLED or not carrier:
        yield
        return
    token = otel_context.attach(propagate.extract(dict(carrier)))
    try:
        yield
    finally:
        otel_context.detach(token)


def current_trace_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span in hex, for log records; None without one."""
    if not ENABLED:
        return None
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")


class RunSpan:
    """The span of one run: started as it is admitted, ended once it is over (in another
    task), and current while its task is created, so the run's spans are its children."""

    def __init__(
        self,
        conv_id: str,
        inference_id: str,
        profile: str,
        prompt: str,
        carrier: Mapping[str, str] | None = None,
    ) -> None:
        self._span: Span | None = None
        if not ENABLED:
            return
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": profile,
            "gen_ai.conversation.id": conv_id,
            "webchat.inference_id": inference_id,
        }
        if _capture():
            attributes["gen_ai.input.messages"] = _messages("user", prompt)
        parent = propagate.extract(dict(carrier)) if carrier else None
        self._span = trace.get_tracer(TRACER_NAME).start_span(
            f"invoke_agent {profile}", context=parent, kind=SpanKind.INTERNAL, attributes=attributes
        )

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        if self._span is None:
            yield
            return
        with trace.use_span(self._span, end_on_exit=False):
            yield

    def end(self, status: str, error: BaseException | None = None, output: str = "") -> None:
        """``status``: finished, failed or cancelled."""
        span, self._span = self._span, None
        if span is None:
            return
        span.set_attribute("webchat.run.status", status)
        if output and _capture():
            span.set_attribute("gen_ai.output.messages", _messages("assistant", output))
        if status == "failed":
            span.set_status(Status(StatusCode.ERROR, str(error) if error else None))
            span.set_attribute("error.type", type(error).__name__ if error else "failed")
        span.end()


def start_run(
    conv_id: str,
    inference_id: str,
    profile: str,
    prompt: str,
    carrier: Mapping[str, str] | None = None,
) -> RunSpan:
    return RunSpan(conv_id, inference_id, profile, prompt, carrier)


class ModelCallSpan:
    """What a model call's span learns once the call is over."""

    def __init__(self, span: Span | None) -> None:
        self._span = span

    def finish(
        self, *, usage: Any = None, stop_reason: str | None = None, output: str = ""
    ) -> None:
        if self._span is None:
            return
        if usage is not None:
            self._span.set_attribute("gen_ai.usage.input_tokens", int(usage.input_tokens))
            self._span.set_attribute("gen_ai.usage.output_tokens", int(usage.output_tokens))
        if stop_reason:
            self._span.set_attribute("gen_ai.response.finish_reasons", [stop_reason])
        if output and _capture():
            self._span.set_attribute("gen_ai.output.messages", _messages("assistant", output))


@contextlib.contextmanager
def model_call(provider: str, model: str, prompt: str) -> Iterator[ModelCallSpan]:
    """A ``chat {model}`` span around one model call; an exception marks it failed."""
    if not ENABLED:
        yield ModelCallSpan(None)
        return
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
    }
    if prompt and _capture():
        attributes["gen_ai.input.messages"] = _messages("user", prompt)
    tracer = trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(
        f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes
    ) as span:
        yield ModelCallSpan(span)


class ToolCallSpan:
    def __init__(self, span: Span | None) -> None:
        self._span = span

    def finish(self, result: str, error: str | None) -> None:
        if self._span is None:
            return
        if error is not None:
            self._span.set_status(Status(StatusCode.ERROR, error))
            self._span.set_attribute("error.type", "tool_error")
        if _capture():
            self._span.set_attribute("gen_ai.tool.call.result", result)


@contextlib.contextmanager
def tool_call(name: str, call_id: str, arguments: str) -> Iterator[ToolCallSpan]:
    """An ``execute_tool {name}`` span around one tool call."""
    if not ENABLED:
        yield ToolCallSpan(None)
        return
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": name,
        "gen_ai.tool.call.id": call_id,
        "gen_ai.tool.type": "function",
    }
    if _capture():
        attributes["gen_ai.tool.call.arguments"] = arguments
    tracer = trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(f"execute_tool {name}", attributes=attributes) as span:
        yield ToolCallSpan(span)
