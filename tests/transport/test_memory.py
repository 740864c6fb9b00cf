"""In-memory specifics: bounded replay and a publisher that never waits."""

from __future__ import annotations

from tests.transport.helpers import close, take
from webchat.transport import InMemoryTransport
from webchat.transport.base import clock_seq


async def test_replay_is_limited_to_the_retained_messages(topic: str) -> None:
    transport = InMemoryTransport(retain=5)
    published = [await transport.publish(topic, f"m{i}".encode()) for i in range(12)]
    seqs = [m.seq for m in published]
    assert seqs == sorted(set(seqs))
    assert [m.id for m in published] == [str(s) for s in seqs]

    sub = await transport.subscribe(topic, after_seq=0)
    assert await take(sub, 5) == published[-5:]
    await close(transport)


async def test_publish_never_waits_for_a_slow_subscriber(topic: str) -> None:
    transport = InMemoryTransport()
    sub = await transport.subscribe(topic)
    # Nobody reads while 20k messages go out; publishing still completes.
    published = [await transport.publish(topic, b"x") for _ in range(20_000)]
    assert await take(sub, 20_000) == published
    await close(transport)


async def test_seqs_continue_above_a_previous_process(topic: str) -> None:
    # A restarted server must never reuse seqs it persisted before: seqs follow the clock.
    before = clock_seq()
    first = await InMemoryTransport().publish(topic, b"a")
    between = clock_seq()
    restarted = await InMemoryTransport().publish(topic, b"b")
    assert before <= first.seq <= between <= restarted.seq


async def test_topics_are_independent(topic: str) -> None:
    transport = InMemoryTransport()
    sub = await transport.subscribe(topic)
    await transport.publish(topic + "-other", b"elsewhere")
    mine = await transport.publish(topic, b"here")
    assert await take(sub, 1) == [mine]
    await close(transport)


async def test_a_topic_that_never_carried_a_message_is_forgotten_with_its_last_reader():
    """Joins of unknown conversations must not leave a topic behind each."""
    transport = InMemoryTransport()
    for i in range(100):
        subscription = await transport.subscribe(f"chat:join-{i}")
        await subscription.close()
    used = await transport.subscribe("chat:used")
    await transport.publish("chat:used", b"x")
    await used.close()
    assert list(transport._topics) == ["chat:used"]  # it keeps its messages for replay
    await transport.close()
