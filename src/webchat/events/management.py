"""Events about a conversation itself, not about a run in it.

``conversation.deleted`` is published on the conversation's own topic when it is deleted, so
every process following the conversation learns it in order, after every frame before it:
each one hands it to its clients as a frame and then lets the conversation go (see
``ConversationManager.forget``). Like the lifecycle events, its ``type`` is this server's own;
geppetto consumers see an unknown event, which they can decode.
"""

from __future__ import annotations

from typing import Literal

from webchat.events.models import Event


class ConversationDeletedEvent(Event):
    type: Literal["conversation.deleted"] = "conversation.deleted"


MANAGEMENT_EVENTS: tuple[type[Event], ...] = (ConversationDeletedEvent,)
