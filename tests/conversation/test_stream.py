import asyncio
import logging
from collections.abc import Callable

import pytest

from webchat.conversation.frames import (
    FRAMES_PER_EVENT,
    Frame,
    message_seq_of,
    transport_after_seq,
)
from webchat.conversation.stream import StreamCoordinator
from webchat.engines import OfflineEngine, RunContext, StepSettings
from webchat.events import (
    EventMeta,
    LogEvent,
    PartialThinkingEvent,
    RunFinishedEvent,
    RunStartedEvent,
    UserMessageEvent,
)
from webchat.tools import ToolLoop, ToolRegistry, calculator_tool
from webchat.transport import InMemoryTransport, TopicSink, TransportMessage, topic_for
from webchat.turns import Block, Turn

CONV = "conv-1"
TOPIC = topic_for(CONV)


class Collector:
    """``on_frames`` target that lets a test wait for a condition on what arrived."""

    def __init__(self) -> None:
        self.batches: list[list[Frame]] = []
        self._changed = asyncio.Event()

    def __call__(self, frames: list[Frame]) -> None:
        self.batches.append(list(frames))
        self._changed.set()

    @property
    def frames(self) -> list[Frame]:
        return [f for batch in self.batches for f in batch]

    def types(self) -> list[str]:
        return [f.type for f in self.frames]

    async def wait_for(self, predicate: Callable[[list[Frame]], bool]) -> None:
        async with asyncio.timeout(5):
            while not predicate(self.frames):
                self._changed.clear()
                await self._changed.wait()

    async def wait_for_type(self, frame_type: str, count: int = 1) -> None:
        await self.wait_for(lambda frames: [f.type for f in frames].count(frame_type) >= count)


def log_event(n: int) -> bytes:
    return LogEvent(meta=EventMeta(message_id=f"m{n}"), message=f"log {n}").to_json().encode()


def messages(frames: list[Frame]) -> list[str]:
    return [f.data["message"] for f in frames]


@pytest.fixture
async def transport():
    backend = InMemoryTransport()
    yield backend
    await backend.close()


@pytest.fixture
async def no_leaked_tasks():
    before = asyncio.all_tasks()
    yield
    leaked = asyncio.all_tasks() - before - {asyncio.current_task()}
    assert not leaked, f"tasks still pending: {leaked}"


async def test_offline_run_streams_frames_in_order(transport, no_leaked_tasks):
    subscription = await transport.subscribe(TOPIC)
    collector = Collector()
    coordinator = StreamCoordinator(CONV, subscription, on_frames=collector)
    await coordinator.start()
    assert coordinator.running

    sink = TopicSink.for_conversation(transport, CONV)
    ids = {"session_id": "s1", "inference_id": "i1", "turn_id": "t1"}
    ctx = RunContext(sinks=(sink,), **ids)
    await sink.publish_event(UserMessageEvent(meta=ctx.meta(), text="tell me a story"))
    await sink.publish_event(RunStartedEvent(meta=ctx.meta(), profile="default"))
    engine = OfflineEngine(StepSettings(api_type="offline", answer_tokens=40))
    turn = await engine.run_inference(Turn(blocks=[Block.user("tell me a story")]), ctx)
    await sink.publish_event(RunFinishedEvent(meta=ctx.meta()))
    await collector.wait_for_type("run.finished")

    frames = collector.frames
    types = collector.types()
    assert types[:3] == ["chat.user_message", "run.started", "llm.start"]
    assert types[3:-2] == ["llm.delta"] * 40
    assert types[-2:] == ["llm.final", "run.finished"]
    seqs = [f.seq for f in frames]
    assert seqs == sorted(set(seqs)) and seqs[0] > 0
    assert coordinator.last_seq == seqs[-1]
    deltas = [f for f in frames if f.type == "llm.delta"]
    final = next(f for f in frames if f.type == "llm.final")
    assert "".join(f.data["delta"] for f in deltas) == final.data["text"]
    assert final.data["text"] == turn.blocks[-1].text
    assert all(f.data.keys() == {"delta"} for f in deltas), "a delta carries only itself"
    # Every llm frame of the model call is grouped under its message id; ids reach the wire.
    assert len({f.id for f in frames if f.type.startswith("llm.")}) == 1
    assert all((f.session_id, f.inference_id, f.turn_id) == ("s1", "i1", "t1") for f in frames)
    assert all(f.conv_id == CONV for f in frames)
    await coordinator.close()


async def test_tool_loop_frames(transport, no_leaked_tasks):
    subscription = await transport.subscribe(TOPIC)
    collector = Collector()
    coordinator = StreamCoordinator(CONV, subscription, on_frames=collector)
    await coordinator.start()
    ctx = RunContext(sinks=(TopicSink.for_conversation(transport, CONV),), session_id="s")
    loop = ToolLoop(OfflineEngine().run_inference, ToolRegistry([calculator_tool()]))
    await loop.run(Turn(blocks=[Block.user("calc: 6*7")]), ctx)
    await collector.wait_for_type("llm.final", 2)
    tool_frames = [f for f in collector.frames if f.type.startswith("tool.")]
    assert [f.type for f in tool_frames] == ["tool.start", "tool.delta", "tool.result", "tool.done"]
    assert len({f.id for f in tool_frames}) == 1
    assert tool_frames[0].data == {"name": "calculator", "input": {"expression": "6*7"}}
    assert tool_frames[2].data["result"] == "42"
    assert "42" in [f for f in collector.frames if f.type == "llm.final"][-1].data["text"]
    await coordinator.close()


async def test_frame_seqs_derive_from_message_seqs(transport):
    subscription = await transport.subscribe(TOPIC)
    collector = Collector()
    coordinator = StreamCoordinator(CONV, subscription, on_frames=collector)
    await coordinator.start()
    meta = EventMeta(message_id="m")
    published: list[TransportMessage] = []
    for delta, completion in (("a", "a"), ("b", "ab")):
        event = PartialThinkingEvent(meta=meta, delta=delta, completion=completion)
        published.append(await transport.publish(TOPIC, event.to_json().encode()))
    await collector.wait_for(lambda frames: len(frames) == 3)
    first, second = collector.batches
    assert [f.type for f in first] == ["llm.thinking.start", "llm.thinking.delta"]
    assert {message_seq_of(f.seq) for f in first} == {published[0].seq}
    assert [message_seq_of(f.seq) for f in second] == [published[1].seq]
    assert second[0].seq == published[1].seq * FRAMES_PER_EVENT + 1
    await coordinator.close()


async def test_stop_keeps_the_subscription_for_a_successor(transport, no_leaked_tasks):
    subscription = await transport.subscribe(TOPIC)
    first = Collector()
    old = StreamCoordinator(CONV, subscription, on_frames=first)
    await old.start()
    for n in (1, 2, 3):
        await transport.publish(TOPIC, log_event(n))
    await first.wait_for(lambda frames: len(frames) == 3)
    await old.stop()
    assert not old.running
    assert not subscription.closed

    # Published while nobody reads: the successor must get these, and only these.
    for n in (4, 5):
        await transport.publish(TOPIC, log_event(n))
    second = Collector()
    new = StreamCoordinator(
        CONV, subscription, on_frames=second, start_seq=old.last_seq, translator=old.translator
    )
    await new.start()
    await transport.publish(TOPIC, log_event(6))
    await second.wait_for(lambda frames: len(frames) == 3)
    assert messages(first.frames) == ["log 1", "log 2", "log 3"]
    assert messages(second.frames) == ["log 4", "log 5", "log 6"]
    assert second.frames[0].seq > first.frames[-1].seq

    # A rebuild that re-reads the whole topic on a new subscription duplicates nothing.
    replay = await transport.subscribe(TOPIC, after_seq=transport_after_seq(0))
    await new.close()
    assert subscription.closed
    third = Collector()
    rebuilt = StreamCoordinator(CONV, replay, on_frames=third, start_seq=new.last_seq)
    await rebuilt.start()
    await transport.publish(TOPIC, log_event(7))
    await third.wait_for(lambda frames: len(frames) >= 1)
    assert messages(third.frames) == ["log 7"]
    await rebuilt.close()


async def test_resume_from_a_frame_in_the_middle_of_an_event(transport):
    meta = EventMeta(message_id="m")
    event = PartialThinkingEvent(meta=meta, delta="a", completion="a")
    first = await transport.publish(TOPIC, event.to_json().encode())
    await transport.publish(TOPIC, log_event(1))
    # The client got the first frame (llm.thinking.start) of the first message only.
    since = FRAMES_PER_EVENT * first.seq + 0
    subscription = await transport.subscribe(TOPIC, after_seq=transport_after_seq(since))
    collector = Collector()
    coordinator = StreamCoordinator(CONV, subscription, on_frames=collector, start_seq=since)
    await coordinator.start()
    await collector.wait_for(lambda frames: len(frames) == 2)
    assert collector.types() == ["llm.thinking.delta", "log"]
    await coordinator.close()


async def test_close_closes_the_subscription(transport, no_leaked_tasks):
    subscription = await transport.subscribe(TOPIC)
    collector = Collector()
    coordinator = StreamCoordinator(CONV, subscription, on_frames=collector)
    await coordinator.start()
    await coordinator.close()
    assert subscription.closed
    assert not coordinator.running
    await transport.publish(TOPIC, log_event(1))
    await coordinator.close()  # idempotent
    assert collector.frames == []


async def test_malformed_payloads_are_skipped(transport, caplog):
    subscription = await transport.subscribe(TOPIC)
    collector = Collector()
    coordinator = StreamCoordinator(CONV, subscription, on_frames=collector)
    await coordinator.start()
    with caplog.at_level(logging.WARNING, logger="webchat.conversation.stream"):
        await transport.publish(TOPIC, log_event(1))
        await transport.publish(TOPIC, b"not json at all")
        await transport.publish(TOPIC, b'{"no": "type"}')
        await transport.publish(TOPIC, b'{"type": "tool-call", "tool_call": 3}')
        await transport.publish(TOPIC, log_event(2))
        await collector.wait_for(lambda frames: len(frames) == 2)
    assert messages(collector.frames) == ["log 1", "log 2"]
    assert coordinator.skipped_messages == 3
    assert coordinator.running
    assert len([r for r in caplog.records if "skipping message" in r.getMessage()]) == 3
    await coordinator.close()


async def test_failing_on_frames_is_logged_and_the_stream_goes_on(transport, caplog):
    subscription = await transport.subscribe(TOPIC)
    collector = Collector()

    def on_frames(frames: list[Frame]) -> None:
        collector(frames)
        if frames[0].data["message"] == "log 1":
            raise RuntimeError("buffer exploded")

    coordinator = StreamCoordinator(CONV, subscription, on_frames=on_frames)
    await coordinator.start()
    with caplog.at_level(logging.ERROR, logger="webchat.conversation.stream"):
        await transport.publish(TOPIC, log_event(1))
        await transport.publish(TOPIC, log_event(2))
        await collector.wait_for(lambda frames: len(frames) == 2)
    assert any(r.exc_info and "on_frames failed" in r.getMessage() for r in caplog.records)
    await coordinator.close()


class BrokenSubscription:
    """Delivers one message, then fails the way a dead backend would."""

    def __init__(self, message: TransportMessage) -> None:
        self.message: TransportMessage | None = message
        self.closed = False

    def __aiter__(self) -> "BrokenSubscription":
        return self

    async def __anext__(self) -> TransportMessage:
        if self.message is not None:
            message, self.message = self.message, None
            return message
        raise ConnectionError("backend went away")

    async def close(self) -> None:
        self.closed = True


async def test_reader_crash_is_logged_not_lost(caplog, no_leaked_tasks):
    subscription = BrokenSubscription(TransportMessage(TOPIC, "1", 1, log_event(1)))
    collector = Collector()
    coordinator = StreamCoordinator(CONV, subscription, on_frames=collector)
    with caplog.at_level(logging.ERROR, logger="webchat.conversation.stream"):
        await coordinator.start()
        async with asyncio.timeout(5):
            await coordinator.wait()
    assert messages(collector.frames) == ["log 1"]
    assert isinstance(coordinator.error, ConnectionError)
    assert not coordinator.running
    crash = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert crash and crash[0].exc_info is not None
    await coordinator.close()
    assert subscription.closed


async def test_translator_state_carries_over_to_a_successor(transport):
    # Thinking started under one coordinator is closed by llm.thinking.final under the next.
    subscription = await transport.subscribe(TOPIC)
    first = Collector()
    old = StreamCoordinator(CONV, subscription, on_frames=first)
    await old.start()
    meta = EventMeta(message_id="m")
    thinking = PartialThinkingEvent(meta=meta, delta="hm", completion="hm")
    await transport.publish(TOPIC, thinking.to_json().encode())
    await first.wait_for(lambda frames: len(frames) == 2)
    await old.stop()
    second = Collector()
    new = StreamCoordinator(
        CONV, subscription, on_frames=second, start_seq=old.last_seq, translator=old.translator
    )
    await new.start()
    await transport.publish(TOPIC, b'{"type": "final", "meta": {"message_id": "m"}, "text": "x"}')
    await second.wait_for(lambda frames: len(frames) == 2)
    assert second.types() == ["llm.thinking.final", "llm.final"]
    assert second.frames[0].data == {"text": "hm"}
    await new.close()


async def test_start_returns_when_the_reader_is_cancelled_before_its_first_step(
    transport, no_leaked_tasks
):
    subscription = await transport.subscribe(TOPIC)
    stream = StreamCoordinator(CONV, subscription, on_frames=Collector())
    starting = asyncio.create_task(stream.start())
    await asyncio.sleep(0)  # start() created the reader task, which has not run yet
    await stream.stop()  # cancels the reader before its first step
    async with asyncio.timeout(1):
        await starting
    assert not stream.running
    await stream.start()  # a coordinator stopped that early can start again
    assert stream.running
    await stream.close()


async def test_a_message_written_twice_under_one_uuid_is_emitted_once(redis_url, caplog):
    """A publish retried after its answer was lost leaves two entries with one uuid: the
    coordinator shows the token once, not a second time under a new seq."""
    import redis.asyncio as aredis

    from webchat.transport import RedisStreamsTransport

    topic = f"chat:dup-{id(caplog):x}"
    transport = RedisStreamsTransport(redis_url)
    plain = aredis.Redis.from_url(redis_url)
    collector = Collector()
    try:
        subscription = await transport.subscribe(topic, after_seq=0)
        coordinator = StreamCoordinator(CONV, subscription, on_frames=collector)
        await coordinator.start()
        first = await transport.publish(topic, log_event(1))
        # The retried copy, exactly as the retry writes it: same uuid, a new entry id.
        entries = await plain.xrange(topic)
        await plain.xadd(topic, entries[0][1])
        await transport.publish(topic, log_event(2))
        await collector.wait_for(lambda frames: len(frames) >= 2)
        await coordinator.close()
        assert [f.data["message"] for f in collector.frames] == ["log 1", "log 2"]
        assert message_seq_of(collector.frames[0].seq) == first.seq
        assert coordinator.skipped_messages == 1
        assert "second copy" in caplog.text
    finally:
        await plain.aclose()
        await transport.close()
