"""Runs for clients that speak another protocol (OpenAI Chat Completions, AG-UI).

Such a client sends a whole transcript and wants one run's output back as a stream, not a
conversation id to follow over a WebSocket. ``external_run`` makes that a normal webchat run,
so profiles, middlewares, tools, quotas, ownership and busy policies all apply unchanged:

- **Bound** (a conversation id: AG-UI's ``threadId``, or OpenAI's ``X-Webchat-Conversation``):
  the new user message at the end of the transcript is run in that conversation, exactly like
  ``POST /chat``, so the web UI shows it live and keeps it. The conversation's own history is
  what the model sees; earlier messages of the transcript only seed a conversation that has
  none yet (a new id).
- **Ephemeral** (no id): a fresh conversation is seeded with the transcript's earlier messages,
  runs the last one, and is deleted when the call ends, as a stateless API promises: nothing of
  it stays in storage, in the listings or in the transport.

Either way the caller reads the run's frames as a client of the conversation (the same path a
WebSocket takes), filtered to its own inference, up to and including the terminal frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from webchat.auth.principal import Principal
from webchat.chat.management import ConversationManagement
from webchat.chat.scheduler import RunAccepted, RunRequest
from webchat.conversation import Client, Conversation
from webchat.conversation.conversation import TERMINAL_FRAMES
from webchat.conversation.frames import StreamEnvelopes
from webchat.errors import InvalidRequestError, UnknownConversationError, WebchatError
from webchat.events import new_id
from webchat.profiles import Profile
from webchat.turns import Block, BlockKind, Turn

if TYPE_CHECKING:  # the service imports the scheduler this module uses: no cycle at run time
    from webchat.chat.service import ChatService

__all__ = [
    "EPHEMERAL_PREFIX",
    "ClientToolsNotAllowedError",
    "ExternalRun",
    "FrameFeed",
    "RunEndedUnseenError",
    "check_client_tools",
    "external_run",
    "split_transcript",
]

log = logging.getLogger("webchat.chat")

EPHEMERAL_PREFIX = "ephemeral-"
"""Conversation ids of unbound calls: never shown to anyone, deleted when the call ends."""


class ClientToolsNotAllowedError(InvalidRequestError):
    """The client defined tools; the profile runs only its own (server-side) tools."""


class RunEndedUnseenError(WebchatError):
    """The conversation closed this client before the run's last frame reached it (the
    server is restarting, or the conversation was deleted)."""

    status_code = 503


def check_client_tools(profile: Profile, tools: Sequence[Any] | None, param: str) -> None:
    """Refuse client-defined tools unless the profile accepts (and ignores) them: a tool the
    model calls runs on the server, and a client's tool has no code here."""
    if tools and not profile.openai_api.client_tools:
        raise ClientToolsNotAllowedError(
            f"profile {profile.slug!r} runs its own server-side tools; client-defined tools "
            "are not accepted (the profile's openai_api.client_tools is false)",
            param=param,
        )


def split_transcript(blocks: Sequence[Block]) -> tuple[list[Block], str]:
    """(the blocks before the new prompt, the prompt): the transcript must end with a user
    message, the one to run."""
    if not blocks or blocks[-1].kind != BlockKind.USER:
        raise InvalidRequestError("the last message must be the user's message to answer")
    prompt = blocks[-1].text
    if not prompt.strip():
        raise InvalidRequestError("the last user message has no text")
    return list(blocks[:-1]), prompt


def seed_turn(history: Sequence[Block]) -> Turn:
    """One root turn holding a transcript the client brought (every turn is a whole
    transcript, so the run forks it like any other)."""
    turn = Turn(blocks=[b.model_copy(deep=True) for b in history])
    turn.metadata.parent_turn_id = None
    turn.metadata.stop_reason = "stop"
    return turn


class FrameFeed:
    """A conversation client that hands frames to one reader instead of a socket.

    ``send_text`` never waits: the pool must never be slowed by this reader (which writes to
    an HTTP client at its own pace), and a run's frames are bounded by the run itself.
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._envelopes = StreamEnvelopes()  # deltas come short: the run is told by the ids

    async def send_text(self, data: str, /) -> None:
        self._queue.put_nowait(data)

    async def close(self, code: int = 1000, reason: str = "", /) -> None:
        self._queue.put_nowait(None)

    async def next_event(self) -> dict[str, Any] | None:
        """The next frame's ``event`` object; None once the conversation closed this feed."""
        text = await self._queue.get()
        if text is None:
            return None
        decoded = json.loads(text)
        event = decoded.get("event") if isinstance(decoded, dict) else None
        return self._envelopes.fill(event) if isinstance(event, dict) else {}


@dataclass
class ExternalRun:
    """A started (or queued) run and the frames of it this caller is fed."""

    conversation: Conversation
    accepted: RunAccepted
    feed: FrameFeed
    ephemeral: bool

    @property
    def conv_id(self) -> str:
        return self.conversation.conv_id

    @property
    def inference_id(self) -> str:
        return self.accepted.inference_id

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """This run's frames (``event`` objects), its terminal frame last."""
        while True:
            event = await self.feed.next_event()
            if event is None:
                raise RunEndedUnseenError("the conversation was closed before the run ended")
            if event.get("inference_id") != self.inference_id:
                continue
            yield event
            if event.get("type") in TERMINAL_FRAMES:
                return


@contextlib.asynccontextmanager
async def external_run(
    service: ChatService,
    user: Principal,
    profile: Profile,
    transcript: Sequence[Block],
    conv_id: str | None = None,
) -> AsyncIterator[ExternalRun]:
    """Run the transcript's last user message (see the module docstring); raises the
    ``WebchatError`` a ``POST /chat`` would get before anything is yielded. Leaving the
    context detaches the caller; an ephemeral conversation is then deleted (its run
    cancelled first if it is still going: nobody is left to read it)."""
    history, prompt = split_transcript(transcript)
    ephemeral = conv_id is None
    conv_id = conv_id or EPHEMERAL_PREFIX + new_id()
    feed = FrameFeed()
    attached: tuple[Conversation, Client] | None = None
    try:
        # A conversation id nobody has used yet starts from the client's transcript.
        if history and await service.access.owner(conv_id) is None:
            await _seed(service, user, profile, conv_id, history)
        attached = await service.connect(feed, conv_id, profile.slug, None, user=user)
        request = RunRequest(prompt=prompt, conv_id=conv_id)
        accepted = await service.submit(profile.slug, request, user)
        yield ExternalRun(attached[0], accepted, feed, ephemeral)
    finally:
        # Shielded: a client that went away cancels the response, not the clean-up.
        with anyio.CancelScope(shield=True):
            if attached is not None:
                await service.disconnect(*attached)
            if ephemeral:
                await _discard(service, user, conv_id)


async def _seed(
    service: ChatService, user: Principal, profile: Profile, conv_id: str, history: list[Block]
) -> None:
    await service.access.claim(conv_id, user, to_write=True)
    conversation = await service.manager.get_or_create(conv_id, profile.slug)
    if not conversation.turns and not conversation.is_running:
        conversation.adopt_history([seed_turn(history)])


async def _discard(service: ChatService, user: Principal, conv_id: str) -> None:
    """Delete an ephemeral conversation everywhere; one that never became history (its run
    was refused) is only dropped from memory and its ownership claim removed."""
    try:
        await ConversationManagement(service).delete(conv_id, user)
    except UnknownConversationError:
        await service.manager.forget(conv_id)
        await service.store.delete_conversation(conv_id)
    except Exception:
        log.exception("could not delete ephemeral conversation %s", conv_id)
