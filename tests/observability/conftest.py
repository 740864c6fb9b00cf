"""Fixtures of the observability tests: the server tests' in-process apps, the browser
tests' Chromium, and an OpenTelemetry SDK whose spans are kept in memory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.browser.conftest import browser, page  # noqa: F401  (fixtures)
from tests.server.conftest import client, make_client, profiles_file  # noqa: F401  (fixtures)

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="session")
def tracer_provider() -> TracerProvider:
    """The process's tracer provider (OpenTelemetry lets one be set once per process)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    assert trace.get_tracer_provider() is provider, "another tracer provider was set first"
    return provider


class Spans:
    """The spans ended since the test began."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self.exporter = exporter

    def all(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def of_run(self, inference_id: str) -> ReadableSpan:
        (span,) = [
            s
            for s in self.all()
            if (s.attributes or {}).get("webchat.inference_id") == inference_id
        ]
        return span

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        parent_id = parent.context.span_id
        return [s for s in self.all() if s.parent is not None and s.parent.span_id == parent_id]


@pytest.fixture
def spans(tracer_provider: TracerProvider) -> Iterator[Spans]:
    _EXPORTER.clear()
    yield Spans(_EXPORTER)
    _EXPORTER.clear()
