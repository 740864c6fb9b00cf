import traceback

import pytest

from webchat.engines import EngineError, RunContext, StepSettings, stream_inference
from webchat.events import CollectingSink, ErrorEvent
from webchat.turns import Turn

SECRET = "sk-test-SECRET-0123456789"


async def test_provider_error_traceback_never_carries_the_sdk_text():
    sink = CollectingSink()

    async def produce(stream):
        await stream.add_text("partial ")
        raise RuntimeError(f"request failed with key {SECRET}")

    with pytest.raises(EngineError) as info:
        await stream_inference(
            Turn(),
            RunContext(sinks=(sink,)),
            StepSettings(),
            produce,
            lambda exc: EngineError("provider failed", provider="test"),
        )
    rendered = "".join(traceback.format_exception(info.value))
    assert "provider failed" in rendered
    assert SECRET not in rendered
    last = sink.events[-1]
    assert isinstance(last, ErrorEvent) and last.error_string == "provider failed"
    assert SECRET not in "".join(e.to_json() for e in sink.events)
