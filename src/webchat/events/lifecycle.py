"""Run lifecycle events: the user's prompt and how a run starts and ends.

They travel through the same sink and transport as model events, so a conversation's timeline
has a single ordered path and a resuming client replays prompts and run status like any frame.
Their ``type`` strings are this server's own; geppetto consumers see them as unknown events.
"""

from __future__ import annotations

from typing import Literal

from webchat.events.models import Event


class UserMessageEvent(Event):
    type: Literal["chat.user_message"] = "chat.user_message"
    text: str = ""


class RunStartedEvent(Event):
    type: Literal["run.started"] = "run.started"
    profile: str | None = None


class RunFinishedEvent(Event):
    type: Literal["run.finished"] = "run.finished"


class RunFailedEvent(Event):
    type: Literal["run.failed"] = "run.failed"
    error: str = ""


class RunCancelledEvent(Event):
    type: Literal["run.cancelled"] = "run.cancelled"
    reason: str = ""


LIFECYCLE_EVENTS: tuple[type[Event], ...] = (
    UserMessageEvent,
    RunStartedEvent,
    RunFinishedEvent,
    RunFailedEvent,
    RunCancelledEvent,
)
