"""SubscriberFactory: how a conversation gets a reader of its topic, per transport.

It returns ``(subscription, close_on_replace)``. The in-memory backend hands out one shared
subscription per conversation that survives engine rebuilds (closing it on a rebuild would cut
the conversation off its own events), so it is returned with ``close_on_replace=False`` and
closed only by ``release`` when the conversation is evicted. Redis subscriptions are cheap
cursors owned by one stream coordinator: a rebuild closes the old one and opens a new one that
resumes after the last message seen.
"""

from __future__ import annotations

from webchat.transport import InMemoryTransport, Subscription, Transport, topic_for


class SubscriberFactory:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.shares_subscriptions = isinstance(transport, InMemoryTransport)
        self._shared: dict[str, Subscription] = {}

    async def __call__(
        self, conv_id: str, *, after_seq: int | None = None
    ) -> tuple[Subscription, bool]:
        if not self.shares_subscriptions:
            return await self.transport.subscribe(topic_for(conv_id), after_seq=after_seq), True
        subscription = self._shared.get(conv_id)
        if subscription is None:
            subscription = await self.transport.subscribe(topic_for(conv_id), after_seq=after_seq)
            self._shared[conv_id] = subscription
        return subscription, False

    async def release(self, conv_id: str) -> None:
        """Close the shared subscription of a conversation that is going away."""
        subscription = self._shared.pop(conv_id, None)
        if subscription is not None:
            await subscription.close()
