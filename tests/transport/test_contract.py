"""The Transport contract, run against both backends."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.transport.helpers import WAIT, close, make_events, take
from webchat.events import EventSink, parse_event
from webchat.transport import (
    InMemoryTransport,
    RedisStreamsTransport,
    Subscription,
    TopicSink,
    Transport,
    TransportClosedError,
    TransportMessage,
    create_transport,
    topic_for,
)


def test_topic_for_uses_the_chat_prefix() -> None:
    assert topic_for("abc-123") == "chat:abc-123"


async def test_event_sequence_arrives_in_order_with_identical_payloads(
    transport: Transport, topic: str
) -> None:
    events = make_events(300)
    sub = await transport.subscribe(topic)
    published = [await transport.publish(topic, e.to_json().encode()) for e in events]

    got = await take(sub, len(events))

    assert got == published
    assert [m.payload for m in got] == [e.to_json().encode() for e in events]
    assert [parse_event(m.payload) for m in got] == events
    assert all(m.topic == topic for m in got)
    seqs = [m.seq for m in got]
    assert all(a < b for a, b in itertools.pairwise(seqs)), "seq must strictly increase"
    await close(sub)


async def test_after_seq_replays_the_rest_then_continues_live(
    transport: Transport, topic: str
) -> None:
    first = [await transport.publish(topic, f"m{i}".encode()) for i in range(30)]
    cut = first[9].seq

    sub = await transport.subscribe(topic, after_seq=cut)
    assert await take(sub, 20) == first[10:]
    live = [await transport.publish(topic, f"live{i}".encode()) for i in range(10)]
    assert await take(sub, 10) == live
    # Nothing is delivered twice: the next message is the next one published.
    marker = await transport.publish(topic, b"marker")
    assert await take(sub, 1) == [marker]

    everything = await transport.subscribe(topic, after_seq=0)
    assert await take(everything, 41) == [*first, *live, marker]

    await close(sub)
    await close(everything)


async def test_publish_right_after_subscribe_is_never_lost(
    transport: Transport, topic: str
) -> None:
    for i in range(100):
        sub = await transport.subscribe(topic)
        published = await transport.publish(topic, f"p{i}".encode())
        # The first delivery is exactly that message: nothing missed, nothing older replayed.
        assert await take(sub, 1) == [published]
        await close(sub)


async def test_subscribing_while_publishing_gives_each_reader_a_gapless_suffix(
    transport: Transport, topic: str
) -> None:
    total = 300
    started = 0  # publish calls begun; those begun after subscribe() returned must arrive
    published: list[TransportMessage] = []
    done = asyncio.Event()

    async def publisher() -> None:
        nonlocal started
        for i in range(total):
            started = i + 1
            published.append(await transport.publish(topic, str(i).encode()))
            await asyncio.sleep(0)  # the in-memory publish never yields by itself
        done.set()

    readers: list[tuple[int, Subscription]] = []
    task = asyncio.create_task(publisher())
    while not done.is_set() and len(readers) < 40:
        sub = await transport.subscribe(topic)
        readers.append((started, sub))
        await asyncio.sleep(0)
    await task
    assert len(readers) > 1

    for must_from, sub in readers:
        got: list[TransportMessage] = []
        async with asyncio.timeout(WAIT):
            async for message in sub:
                got.append(message)
                if message == published[-1]:
                    break
        first = published.index(got[0])
        assert first <= must_from, "a message published after subscribe() returned was lost"
        assert got == published[first:], "gap, duplicate or reordering"
        await close(sub)


async def test_close_ends_a_waiting_iteration_and_is_idempotent(
    transport: Transport, topic: str
) -> None:
    sub = await transport.subscribe(topic)
    received: list[TransportMessage] = []
    first_received = asyncio.Event()

    async def consume() -> None:
        async for message in sub:
            received.append(message)
            first_received.set()

    consumer = asyncio.create_task(consume())
    published = await transport.publish(topic, b"one")
    async with asyncio.timeout(WAIT):
        await first_received.wait()
        await close(sub)
        await consumer  # the iteration ends: the consumer returns instead of hanging
    await close(sub)
    assert received == [published]
    assert [m async for m in sub] == []


async def test_transport_close_ends_every_subscription(transport: Transport, topic: str) -> None:
    subs = [await transport.subscribe(topic) for _ in range(3)]
    consumers = [asyncio.create_task(take(s, 1)) for s in subs]
    await asyncio.sleep(0)
    async with asyncio.timeout(WAIT):
        await close(transport)
        results = await asyncio.gather(*consumers, return_exceptions=True)
    assert all(isinstance(r, AssertionError) for r in results), results  # ended, not delivered
    await close(transport)
    with pytest.raises(TransportClosedError):
        await transport.publish(topic, b"late")
    with pytest.raises(TransportClosedError):
        await transport.subscribe(topic)


async def test_topic_sink_events_parse_back_equal(transport: Transport) -> None:
    events = make_events(60)
    sink = TopicSink.for_conversation(transport, "conv-42")
    assert isinstance(sink, EventSink)
    assert sink.topic == "chat:conv-42"
    sub = await transport.subscribe(sink.topic)
    for event in events:
        await sink.publish_event(event)

    got = await take(sub, len(events))

    assert [parse_event(m.payload) for m in got] == events
    assert [m.to_event() for m in got] == events
    assert {m.topic for m in got} == {"chat:conv-42"}
    await close(sub)


async def test_create_transport_picks_the_backend(redis_url: str) -> None:
    memory = create_transport("memory", retain=5)
    assert isinstance(memory, InMemoryTransport)
    redis = create_transport("redis", redis_url, maxlen=100)
    assert isinstance(redis, RedisStreamsTransport)
    assert redis.maxlen == 100
    await close(memory)
    await close(redis)
    with pytest.raises(ValueError, match="redis_url"):
        create_transport("redis")
    with pytest.raises(ValueError, match="unknown"):
        create_transport("kafka")  # type: ignore[arg-type]
