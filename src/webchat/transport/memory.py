"""The embedded transport: one process, no setup, the default.

Publishing never waits for subscribers: each subscription has an unbounded queue, so a slow
reader costs memory, not latency for the run or the other readers. Readers are expected to
keep up (the stream coordinator drains its subscription promptly and applies its own bounded
per-client queues).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from webchat.events import Event
from webchat.transport._subscription import QueuedSubscription
from webchat.transport.base import TransportClosedError, TransportMessage, clock_seq


@dataclass(slots=True)
class _Topic:
    retained: deque[TransportMessage]
    seq: int = 0
    # A dict keeps subscription order, so subscribers are woken in the order they joined.
    subscribers: dict[_MemorySubscription, None] = field(default_factory=dict)


class _MemorySubscription(QueuedSubscription):
    def __init__(self, owner: InMemoryTransport, topic: _Topic, name: str) -> None:
        super().__init__(name)
        self._owner = owner
        self._topic = topic

    def _deliver(self, message: TransportMessage) -> None:
        self._queue.put_nowait(message)

    async def _stop(self) -> None:
        self._topic.subscribers.pop(self, None)
        self._owner._forget_if_unused(self.topic, self._topic)


class InMemoryTransport:
    """Per-topic increasing ``seq`` (``id`` is its string) with bounded replay.

    A seq is the previous one plus one, or ``clock_seq()`` if that is larger: seqs stay dense
    within a burst, and a restarted server continues above every seq it persisted before.

    The last ``retain`` messages of each topic are kept for ``after_seq`` replay; older ones are
    gone, so a resume from before them starts at the oldest retained message. A topic that
    never carried a message is forgotten with its last subscriber (a join of an unknown
    conversation costs nothing once it left); the others are kept for the transport's lifetime.
    """

    def __init__(self, retain: int = 10_000) -> None:
        if retain < 0:
            raise ValueError("retain must be >= 0")
        self._retain = retain
        self._topics: dict[str, _Topic] = {}
        self._closed = False

    def _topic(self, name: str) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = _Topic(retained=deque(maxlen=self._retain))
        return topic

    def _forget_if_unused(self, name: str, topic: _Topic) -> None:
        # ``seq == 0``: nothing was ever published, so no seq floor is lost with it.
        if not topic.subscribers and topic.seq == 0 and self._topics.get(name) is topic:
            del self._topics[name]

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError("transport is closed")

    async def publish(self, topic: str, payload: bytes) -> TransportMessage:
        return self._publish(topic, payload, None)

    async def publish_event(self, topic: str, event: Event) -> TransportMessage:
        """Publish the event object itself: its JSON is made only if a reader asks for it."""
        return self._publish(topic, None, event)

    def _publish(self, topic: str, payload: bytes | None, event: Event | None) -> TransportMessage:
        self._check_open()
        state = self._topic(topic)
        state.seq = max(state.seq + 1, clock_seq())
        message = TransportMessage(topic, str(state.seq), state.seq, payload, event=event)
        state.retained.append(message)
        for subscription in state.subscribers:
            subscription._deliver(message)
        return message

    async def subscribe(self, topic: str, *, after_seq: int | None = None) -> QueuedSubscription:
        self._check_open()
        state = self._topic(topic)
        subscription = _MemorySubscription(self, state, topic)
        # Replay and registration happen without an await in between, so no publish can
        # slip between them: that is the whole join-race guarantee for this backend.
        if after_seq is not None:
            for message in state.retained:
                if message.seq > after_seq:
                    subscription._deliver(message)
        state.subscribers[subscription] = None
        return subscription

    async def delete_topic(self, topic: str) -> None:
        """Forget the topic and its retained messages (its conversation was deleted), so a
        new conversation under the same id does not replay them. Subscribers still reading it
        receive nothing more."""
        self._check_open()
        self._topics.pop(topic, None)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for state in list(self._topics.values()):
            for subscription in list(state.subscribers):
                await subscription.close()
        self._topics.clear()
