"""Redis-specific behaviour, against a real redis-server."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import msgpack
import pytest
import redis.asyncio as aredis
import redis.exceptions

from tests.support.redis_server import start_redis_server
from tests.transport.helpers import WAIT, close, make_events, take
from webchat.events import FinalEvent, parse_event
from webchat.transport import (
    RedisStreamsTransport,
    TopicSink,
    entry_id_from_seq,
    seq_from_entry_id,
)
from webchat.transport.base import SEQ_EPOCH_MS


@pytest.fixture
async def plain(redis_url: str) -> AsyncIterator[aredis.Redis]:
    """A plain client, standing in for outside producers and for inspecting the server."""
    client = aredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def blocked_readers(plain: aredis.Redis) -> int:
    """How many connections are parked in XREAD BLOCK on the server right now."""
    clients = await plain.client_list()
    return sum(1 for c in clients if c.get("cmd") == "xread" and "b" in c.get("flags", ""))


async def wait_for_blocked_readers(plain: aredis.Redis, count: int) -> None:
    """Poll the server (there is no event to wait on) until exactly ``count`` readers block."""
    async with asyncio.timeout(WAIT):
        while True:
            if await blocked_readers(plain) == count:
                return
            await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    ("entry_id", "seq"),
    [
        (f"{SEQ_EPOCH_MS}-0", 0),
        (f"{SEQ_EPOCH_MS}-1", 1),
        (f"{SEQ_EPOCH_MS + 1}-0", 1000),
        ("1800000000123-7", (1_800_000_000_123 - SEQ_EPOCH_MS) * 1000 + 7),
    ],
)
def test_seq_and_entry_id_are_inverse(entry_id: str, seq: int) -> None:
    assert seq_from_entry_id(entry_id) == seq
    assert seq_from_entry_id(entry_id.encode()) == seq
    assert entry_id_from_seq(seq) == entry_id


def test_seqs_stay_exact_in_a_browser_for_decades() -> None:
    # Frame seqs are seq * 4 + slot; JSON numbers in a browser are exact below 2**53.
    year_2090_ms = 3_786_825_600_000
    assert seq_from_entry_id(f"{year_2090_ms}-999") * 4 + 3 < 2**53


@pytest.mark.parametrize("bad", ["", "12", "a-b", f"{SEQ_EPOCH_MS}-1000", "-1-0", "5-0"])
def test_seq_rejects_ids_it_cannot_represent(bad: str) -> None:
    with pytest.raises(ValueError):
        seq_from_entry_id(bad)


def test_entry_id_rejects_negative_seq() -> None:
    with pytest.raises(ValueError):
        entry_id_from_seq(-1)


async def test_two_processes_both_see_every_event_with_the_same_seq(
    redis_url: str, topic: str
) -> None:
    # Separate transports own separate pools, exactly like separate server processes.
    first, second, producer = (RedisStreamsTransport(redis_url) for _ in range(3))
    try:
        sub_a = await first.subscribe(topic)
        sub_b = await second.subscribe(topic)
        events = make_events(200)
        published = [await producer.publish(topic, e.to_json().encode()) for e in events]

        got_a, got_b = await asyncio.gather(take(sub_a, 200), take(sub_b, 200))

        assert got_a == published
        assert got_b == published
        assert [m.seq for m in got_a] == [m.seq for m in got_b]
        assert [parse_event(m.payload) for m in got_b] == events
    finally:
        for transport in (first, second, producer):
            await close(transport)


async def test_trimming_keeps_the_stream_near_maxlen(
    redis_url: str, topic: str, plain: aredis.Redis
) -> None:
    maxlen = 50
    transport = RedisStreamsTransport(redis_url, maxlen=maxlen)
    try:
        last = None
        for i in range(1000):
            last = await transport.publish(topic, f"m{i}".encode())
            if i % 100 == 99:
                assert await plain.xlen(topic) <= maxlen + 200
        length = await plain.xlen(topic)
        assert maxlen <= length <= maxlen + 200
        newest = await plain.xrevrange(topic, count=1)
        assert last is not None
        assert newest[0][0] == last.id.encode()
        assert newest[0][1][b"payload"] == b"m999"
    finally:
        await close(transport)


async def test_entries_carry_the_three_fields_watermill_unmarshals(
    redis_url: str, topic: str, plain: aredis.Redis
) -> None:
    """Go consumers (watermill-redisstream) need a uuid, msgpack metadata and the payload."""
    transport = RedisStreamsTransport(redis_url)
    try:
        sent = [await transport.publish(topic, f"m{i}".encode()) for i in range(3)]
        entries = await plain.xrange(topic)
        assert [e[0].decode() for e in entries] == [m.id for m in sent]
        uuids = set()
        for (_, fields), message in zip(entries, sent, strict=True):
            assert set(fields) == {b"_watermill_message_uuid", b"metadata", b"payload"}
            assert str(uuid.UUID(fields[b"_watermill_message_uuid"].decode())) == message.uuid
            assert msgpack.unpackb(fields[b"metadata"]) == {}
            assert fields[b"payload"] == message.payload
            uuids.add(message.uuid)
        assert len(uuids) == 3
        async with await transport.subscribe(topic, after_seq=0) as reader:
            read = [await anext(aiter(reader)) for _ in range(3)]
        assert [m.uuid for m in read] == [m.uuid for m in sent]
    finally:
        await close(transport)


async def test_outside_producer_entries_are_delivered_and_parse(
    redis_url: str, topic: str, plain: aredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    transport = RedisStreamsTransport(redis_url)
    try:
        sub = await transport.subscribe(topic)
        event = FinalEvent(text="from a Go agent")
        event.meta.session_id = "sess-go"
        # What a geppetto producer writes: one field, ``payload``, holding the event JSON.
        with caplog.at_level(logging.WARNING, logger="webchat.transport"):
            await plain.xadd(topic, {"other": "no payload here"})
            raw_id = await plain.xadd(topic, {"payload": event.to_json()})
            assert isinstance(raw_id, bytes)
            go_id = raw_id.decode()
            ours = await transport.publish(topic, b'{"type":"start"}')

            got = await take(sub, 2)

        assert got[0].id == go_id
        assert got[0].seq == seq_from_entry_id(go_id)
        assert parse_event(got[0].payload) == event
        assert got[1] == ours  # the entry without payload was skipped, not delivered
        assert any("no b'payload' field" in r.getMessage() for r in caplog.records)
        await close(sub)
    finally:
        await close(transport)


async def test_entry_ids_outside_the_seq_range_are_skipped(
    redis_url: str, topic: str, plain: aredis.Redis
) -> None:
    transport = RedisStreamsTransport(redis_url)
    try:
        await plain.xadd(topic, {"payload": b'{"type":"log"}'}, id="5-0")  # before the epoch
        await plain.xadd(topic, {"payload": b'{"type":"log"}'}, id=f"{SEQ_EPOCH_MS + 5}-1000")
        await plain.xadd(topic, {"payload": b'{"type":"info"}'}, id=f"{SEQ_EPOCH_MS + 6}-0")
        sub = await transport.subscribe(topic, after_seq=0)
        (got,) = await take(sub, 1)
        assert (got.id, got.seq, got.payload) == (
            f"{SEQ_EPOCH_MS + 6}-0",
            6000,
            b'{"type":"info"}',
        )
        await close(sub)
    finally:
        await close(transport)


async def test_slow_consumer_pauses_the_reader_without_loss(redis_url: str, topic: str) -> None:
    transport = RedisStreamsTransport(redis_url, buffer_size=5, read_count=3)
    try:
        sub = await transport.subscribe(topic)
        published = [await transport.publish(topic, f"m{i}".encode()) for i in range(100)]
        assert await take(sub, 100) == published
        await close(sub)
    finally:
        await close(transport)


async def test_subscriber_resumes_after_redis_restart(
    topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_redis_server()  # its own server: restarting the shared one would disturb others
    transport = RedisStreamsTransport(
        server.url, block_ms=200, backoff_max=0.5, publish_retry_for=0
    )
    try:
        sub = await transport.subscribe(topic)
        before = [await transport.publish(topic, f"before{i}".encode()) for i in range(5)]
        assert await take(sub, 5) == before

        await asyncio.to_thread(server.stop, kill=True)
        with pytest.raises(redis.exceptions.ConnectionError):
            await transport.publish(topic, b"while down")  # no retry window: fails at once
        await asyncio.to_thread(server.start)

        # The restarted server is empty; its new ids are later in time than our cursor.
        after = [await transport.publish(topic, f"after{i}".encode()) for i in range(5)]
        got = await take(sub, 5)
        assert got == after
        assert got[0].seq > before[-1].seq
        assert any("retry" in r.getMessage() for r in caplog.records), "reader never retried"
        await close(sub)
    finally:
        await close(transport)
        await asyncio.to_thread(server.cleanup)


async def test_close_interrupts_a_blocked_read_promptly(
    redis_url: str, topic: str, plain: aredis.Redis
) -> None:
    before = asyncio.all_tasks()
    transport = RedisStreamsTransport(redis_url, block_ms=30_000)
    sub = await transport.subscribe(topic)
    other = await transport.subscribe(topic)
    consumers = [asyncio.create_task(take(s, 1)) for s in (sub, other)]
    await wait_for_blocked_readers(plain, 2)

    # Far below the 30 s BLOCK: the reads must be interrupted, not waited out.
    async with asyncio.timeout(5):
        await close(sub)
        with pytest.raises(AssertionError, match="ended after 0"):
            await consumers[0]
        await close(transport)  # also closes ``other``
        with pytest.raises(AssertionError, match="ended after 0"):
            await consumers[1]
        await wait_for_blocked_readers(plain, 0)  # their connections are gone from the server

    assert asyncio.all_tasks() - before - {asyncio.current_task()} == set()


async def test_a_fatal_read_error_ends_the_iteration_with_it(
    redis_url: str, topic: str, plain: aredis.Redis
) -> None:
    await plain.set(topic, "not a stream")
    transport = RedisStreamsTransport(redis_url)
    try:
        sub = await transport.subscribe(topic, after_seq=0)
        async with asyncio.timeout(WAIT):
            with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
                await take(sub, 1)
            assert [m async for m in sub] == []
        await close(sub)
    finally:
        await close(transport)


async def test_publish_waits_out_a_short_outage(topic: str) -> None:
    server = start_redis_server()
    transport = RedisStreamsTransport(server.url, backoff_max=0.2, publish_retry_for=20)
    try:
        await transport.publish(topic, b"before")
        await asyncio.to_thread(server.stop, kill=True)
        pending = asyncio.create_task(transport.publish(topic, b"during"))
        await asyncio.sleep(0)  # the publish is now retrying against a dead server
        assert not pending.done()
        await asyncio.to_thread(server.start)
        async with asyncio.timeout(WAIT):
            message = await pending
        assert message.payload == b"during"
        sub = await transport.subscribe(topic, after_seq=0)
        assert [m.payload for m in await take(sub, 1)] == [b"during"]
        await close(sub)
    finally:
        await close(transport)
        server.cleanup()


async def test_more_subscriptions_than_redis_py_default_pool(redis_url: str) -> None:
    # Every live subscription holds a connection blocked in XREAD; 150 must all work.
    transport = RedisStreamsTransport(redis_url, block_ms=200)
    try:
        topics = [f"chat:many-{i}" for i in range(150)]
        subs = [await transport.subscribe(t) for t in topics]
        published = [await transport.publish(t, t.encode()) for t in topics]
        async with asyncio.timeout(WAIT):
            for sub, message in zip(subs, published, strict=True):
                assert await take(sub, 1) == [message]
        for sub in subs:
            await close(sub)
    finally:
        await close(transport)


# -- pipelined publishing -------------------------------------------------------------------


async def test_queued_entries_land_in_call_order_across_topics(
    redis_url: str, plain: aredis.Redis
) -> None:
    topics = [f"chat:pipe-{uuid.uuid4().hex}" for _ in range(3)]
    transport = RedisStreamsTransport(redis_url)
    try:
        # Queued without yielding in between: they share batches, yet keep call order.
        futures = [transport.publish_nowait(topics[i % 3], f"m{i}".encode()) for i in range(3000)]
        async with asyncio.timeout(WAIT):
            messages = await asyncio.gather(*futures)
        for n, topic in enumerate(topics):
            mine = [m for m in messages if m.topic == topic]
            assert [m.payload for m in mine] == [f"m{i}".encode() for i in range(n, 3000, 3)]
            assert [m.seq for m in mine] == sorted({m.seq for m in mine})
            stored = await plain.xrange(topic)
            assert [e[0].decode() for e in stored] == [m.id for m in mine]
            assert [e[1][b"_watermill_message_uuid"].decode() for e in stored] == [
                m.uuid for m in mine
            ]
            assert [seq_from_entry_id(e[0]) for e in stored] == [m.seq for m in mine]
    finally:
        await close(transport)
        await plain.delete(*topics)


async def test_an_error_reply_fails_only_its_own_entry(
    redis_url: str, topic: str, plain: aredis.Redis
) -> None:
    broken = f"chat:not-a-stream-{uuid.uuid4().hex}"
    await plain.set(broken, "a string, not a stream")
    transport = RedisStreamsTransport(redis_url)
    try:
        before = transport.publish_nowait(topic, b"before")
        bad = transport.publish_nowait(broken, b"lost")
        after = transport.publish_nowait(topic, b"after")
        async with asyncio.timeout(WAIT):
            done = await asyncio.gather(before, bad, after, return_exceptions=True)
        assert isinstance(done[1], redis.exceptions.ResponseError)
        assert "WRONGTYPE" in str(done[1])
        assert [e[1][b"payload"] for e in await plain.xrange(topic)] == [b"before", b"after"]
    finally:
        await close(transport)
        await plain.delete(broken)


async def test_close_writes_what_was_accepted(
    redis_url: str, topic: str, plain: aredis.Redis
) -> None:
    transport = RedisStreamsTransport(redis_url)
    futures = [transport.publish_nowait(topic, f"m{i}".encode()) for i in range(500)]
    await close(transport)
    assert all(f.done() and not f.cancelled() and f.exception() is None for f in futures)
    assert [e[1][b"payload"] for e in await plain.xrange(topic)] == [
        f"m{i}".encode() for i in range(500)
    ]


async def test_a_sink_streams_deltas_through_an_outage_and_waits_at_the_final(
    topic: str,
) -> None:
    server = start_redis_server()
    transport = RedisStreamsTransport(server.url, backoff_max=0.2, publish_retry_for=20)
    try:
        sink = TopicSink(transport, topic)
        events = make_events(6)  # start, four deltas, a thinking delta
        await sink.publish_event(events[0])
        await asyncio.to_thread(server.stop, kill=True)
        async with asyncio.timeout(WAIT):
            for event in events[1:]:
                await sink.publish_event(event)  # deltas: queued, not waited for
        last = FinalEvent(text="done")
        final = asyncio.create_task(sink.publish_event(last))
        await asyncio.sleep(0)
        assert not final.done()  # the final waits for everything before it
        await asyncio.to_thread(server.start)
        async with asyncio.timeout(WAIT):
            await final
        # The restarted server is empty: what it has is what was written after the outage.
        sub = await transport.subscribe(topic, after_seq=0)
        got = [parse_event(m.payload) for m in await take(sub, 6)]
        assert got == [*events[1:], last]
        await close(sub)
    finally:
        await close(transport)
        await asyncio.to_thread(server.cleanup)


async def test_a_sink_raises_a_lost_delta_at_its_next_sync_point(topic: str) -> None:
    server = start_redis_server()
    transport = RedisStreamsTransport(server.url, publish_retry_for=0)
    try:
        sink = TopicSink(transport, topic)
        events = make_events(5)
        await sink.publish_event(events[0])
        await asyncio.to_thread(server.stop, kill=True)
        async with asyncio.timeout(WAIT):
            for event in events[1:]:
                await sink.publish_event(event)
            with pytest.raises(redis.exceptions.ConnectionError):
                await sink.publish_event(FinalEvent(text="never written"))
    finally:
        await close(transport)
        await asyncio.to_thread(server.cleanup)


async def test_queued_entries_share_round_trips(redis_url: str, topic: str) -> None:
    """Counted on the wire: a proxy between the transport and Redis counts the reads it
    makes from the transport's side; one awaited XADD per entry would need one per entry."""
    upstream = redis_url.removeprefix("redis://").split("/")[0].split(":")
    reads = 0

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: bool) -> None:
        nonlocal reads
        try:
            while data := await reader.read(1 << 16):
                if count:
                    reads += 1
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    pipes: set[asyncio.Task[None]] = set()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(upstream[0], int(upstream[1]))
        for task in (
            asyncio.create_task(pipe(client_r, server_w, True)),
            asyncio.create_task(pipe(server_r, client_w, False)),
        ):
            pipes.add(task)

    proxy = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    transport = RedisStreamsTransport(f"redis://127.0.0.1:{port}/0")
    try:
        await transport.publish(topic, b"warm-up")  # the connection's handshake
        reads = 0
        futures = [transport.publish_nowait(topic, f"m{i}".encode()) for i in range(1000)]
        async with asyncio.timeout(WAIT):
            await asyncio.gather(*futures)
        assert reads < 100, f"{reads} reads for 1000 entries"
    finally:
        await close(transport)
        proxy.close()
        for task in pipes:
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)
        await proxy.wait_closed()
