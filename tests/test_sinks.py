from webchat.conversation.builder import EngineBuilder
from webchat.engines import RunContext
from webchat.events import (
    CollectingSink,
    Event,
    EventSink,
    ExtractorSink,
    FanoutSink,
    FilterSink,
    FinalEvent,
    LogEvent,
    PartialEvent,
    Usage,
)
from webchat.profiles import Profile, ProfileRegistry
from webchat.transport import InMemoryTransport
from webchat.turns import Block, Turn


async def test_fanout_delivers_to_every_sink_in_order():
    a, b = CollectingSink(), CollectingSink()
    sink = FanoutSink([a, b])
    for i in range(3):
        await sink.publish_event(LogEvent(message=str(i)))
    assert [e.message for e in a.events] == ["0", "1", "2"]  # type: ignore[attr-defined]
    assert a.events == b.events


async def test_filter_passes_only_what_it_keeps():
    inner = CollectingSink()
    sink = FilterSink(inner, lambda e: e.type != "partial")
    await sink.publish_event(PartialEvent(delta="x"))
    await sink.publish_event(FinalEvent(text="x"))
    assert inner.types() == ["final"]


async def test_extractor_sees_every_event_and_passes_it_on():
    inner = CollectingSink()
    usage = Usage()

    def total(event: Event) -> None:
        nonlocal usage
        if isinstance(event, FinalEvent) and event.meta.usage is not None:
            usage = usage + event.meta.usage

    sink = ExtractorSink(inner, total)
    for n in (3, 4):
        final = FinalEvent(text="t")
        final.meta.usage = Usage(input_tokens=n, output_tokens=1)
        await sink.publish_event(final)
    assert (usage.input_tokens, usage.output_tokens) == (7, 2)
    assert inner.types() == ["final", "final"]


async def test_builder_sink_wrappers_see_a_conversations_events():
    seen: list[tuple[str, str]] = []

    def watch(conv_id: str, sink: EventSink) -> EventSink:
        async def record(event: Event) -> None:
            seen.append((conv_id, event.type))

        return ExtractorSink(sink, record)

    transport = InMemoryTransport()
    registry = ProfileRegistry([Profile(slug="p")])
    builder = EngineBuilder(registry, transport, sink_wrappers=(watch,))
    engine, sink = builder.build_from_config("conv-9", builder.build_config("p"))
    await engine.run_inference(Turn(blocks=[Block.user("hi")]), RunContext(sinks=(sink,)))
    await transport.close()
    assert seen[0] == ("conv-9", "start") and seen[-1] == ("conv-9", "final")
