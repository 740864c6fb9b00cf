"""Who may do what with a conversation: its owner everything, an admin reads, others nothing.

A conversation belongs to whoever touched it first: the first run, or the first WebSocket
join of a conversation id nobody has used (so a watcher who opens a new chat cannot have it
taken from under them). The claim is atomic in the store, so two processes or two requests
racing for a new id agree on one owner. Someone else's conversation is *unknown* to a user
(404, as if it did not exist), never *forbidden* (403 would confirm that it exists). Only an
admin, who may see it, is told 403 when trying to act in it.

Conversations stored before ownership existed belong to ``LEGACY_OWNER``, the implicit user
of ``--auth none``: with authentication on, only admins see them.
"""

from __future__ import annotations

from collections import OrderedDict

from webchat.auth.principal import LOCAL_USER, Principal
from webchat.errors import ForbiddenError, QuotaExceededError, UnknownConversationError
from webchat.storage import Store

__all__ = ["LEGACY_OWNER", "ConversationAccess"]

LEGACY_OWNER = LOCAL_USER.id


class ConversationAccess:
    def __init__(
        self, store: Store, *, max_conversations: int | None, cached: int = 100_000
    ) -> None:
        """``max_conversations``: per-user cap on stored conversations (None: no cap).
        ``cached``: how many owners to remember (an owner never changes once claimed, so a
        remembered one is never stale; it saves every request its store round trips)."""
        self.store = store
        self.max_conversations = max_conversations
        self._cached = cached
        self._owners: OrderedDict[str, str] = OrderedDict()

    def _remember(self, conv_id: str, owner: str) -> str:
        self._owners[conv_id] = owner
        if len(self._owners) > self._cached:
            self._owners.popitem(last=False)
        return owner

    async def owner(self, conv_id: str) -> str | None:
        """The owner, or None for a conversation id nobody has used."""
        known = self._owners.get(conv_id)
        if known is not None:
            return known
        owner = await self.store.owner_of(conv_id)
        if owner:
            return self._remember(conv_id, owner)
        if await self.store.get_conversation(conv_id) is not None:
            return LEGACY_OWNER
        return None

    @staticmethod
    def _unknown(conv_id: str) -> UnknownConversationError:
        return UnknownConversationError(f"unknown conversation {conv_id!r}")

    async def check_read(self, conv_id: str, user: Principal) -> None:
        """Refuse (404) reading someone else's conversation; an unused id passes (the read
        itself answers 404 for it)."""
        owner = await self.owner(conv_id)
        if owner is not None and owner != user.id and not user.is_admin:
            raise self._unknown(conv_id)

    async def check_act(self, conv_id: str, user: Principal) -> None:
        """Refuse acting (cancel) in someone else's conversation."""
        owner = await self.owner(conv_id)
        if owner is not None and owner != user.id:
            if user.is_admin:
                raise ForbiddenError("admins may read other users' conversations, not act in them")
            raise self._unknown(conv_id)

    async def claim(self, conv_id: str, user: Principal, *, to_write: bool) -> None:
        """Make a new conversation id ``user``'s, or check it already is.

        ``to_write``: the caller will post into it (a run), which an admin may not do in
        another user's conversation; a join (``to_write=False``) only reads.
        """
        owner = await self.owner(conv_id)
        if owner is None:
            if self.max_conversations is not None:
                count = await self.store.count_conversations(user.id)
                if count >= self.max_conversations:
                    raise QuotaExceededError(
                        f"you have {count} conversations; the limit is {self.max_conversations}"
                    )
            owner = self._remember(conv_id, await self.store.claim_owner(conv_id, user.id))
        if owner == user.id:
            return
        if to_write:
            await self.check_act(conv_id, user)
        else:
            await self.check_read(conv_id, user)
