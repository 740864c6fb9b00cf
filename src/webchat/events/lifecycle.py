"""Run lifecycle events: the user's prompt and how a run starts and ends.

They travel through the same sink and transport as model events, so a conversation's timeline
has a single ordered path and a resuming client replays prompts and run status like any frame.
Their ``type`` strings are this server's own; geppetto consumers see them as unknown events,
which they can decode (nothing here writes a top-level ``error``). geppetto's own run events
(``run-started`` ...) are in ``webchat.events.canonical``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from webchat.events.models import Event


class UserMessageEvent(Event):
    """The prompt of a run, as every client of the conversation sees it arrive: with the
    turn it continues (so another tab can place a new branch live) and its attachments."""

    type: Literal["chat.user_message"] = "chat.user_message"
    text: str = ""
    parent_turn_id: str | None = None
    attachments: list[dict[str, Any]] = Field(default_factory=list)


class RunStartedEvent(Event):
    type: Literal["run.started"] = "run.started"
    profile: str | None = None


class RunFinishedEvent(Event):
    type: Literal["run.finished"] = "run.finished"
    duration_ms: int | None = None
    """How long the run took, from its prompt to its end: shown on every answer, including
    ones a client only reads from history."""


class RunFailedEvent(Event):
    """The run ended with an error; its message travels as ``error_string`` (geppetto's name).

    ``RunFailedEvent(error=...)`` and older entries' top-level ``error`` string are read as
    ``error_string`` (see ``Event``); ``error`` stays readable as a property.
    """

    type: Literal["run.failed"] = "run.failed"
    error_string: str = ""

    @property
    def error(self) -> str:
        return self.error_string


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
