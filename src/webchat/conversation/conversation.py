"""A conversation: what one chat owns, and how a run travels through it.

Flow of a run: ``start_run`` -> session -> engine (middlewares, tool loop) -> sink ->
transport topic -> subscription -> stream coordinator (seq, frames) -> resume buffer and
connection pool -> browsers. The user's prompt and the run's start and end are published on
the same path as model events, so every client (and every replay) sees one ordered timeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from webchat.conversation.buffer import FrameBuffer
from webchat.conversation.builder import ComposedEngine
from webchat.conversation.compaction import StoredDeltas, compact
from webchat.conversation.config import EngineConfig
from webchat.conversation.frames import Frame
from webchat.conversation.pool import Client, Connection, ConnectionPool
from webchat.conversation.stream import StreamCoordinator
from webchat.engines import Handler, RunContext
from webchat.events import (
    EventSink,
    RunCancelledEvent,
    RunFailedEvent,
    RunFinishedEvent,
    RunStartedEvent,
    UserMessageEvent,
)
from webchat.sessions import InferenceHandle, Session
from webchat.transport import Subscription
from webchat.turns import BlockKind, Turn

TERMINAL_FRAMES = frozenset({"run.finished", "run.failed", "run.cancelled"})
RECENT_FRAMES = 1024
"""How far back ``has_ended`` looks: a run's terminal frame is among its latest frames."""


def ends_run(inference_id: str) -> Callable[[Frame], bool]:
    """A predicate matching the terminal frame of ``inference_id``."""
    return lambda f: f.inference_id == inference_id and f.type in TERMINAL_FRAMES


FrameListener = Callable[[str, Sequence[Frame]], None]
"""Sees every frame of a conversation right after it is dispatched (e.g. to persist it)."""


def user_message(turn: Turn, ctx: RunContext) -> UserMessageEvent:
    """The run's prompt as its clients see it: the text, the turn it continues and the
    attachments of its user block."""
    prompt = next((b for b in reversed(turn.blocks) if b.kind == BlockKind.USER), None)
    return UserMessageEvent(
        meta=ctx.meta(),
        text=prompt.text if prompt is not None else "",
        parent_turn_id=turn.metadata.parent_turn_id,
        attachments=prompt.attachments if prompt is not None else [],
    )


def lifecycle_runner(engine: ComposedEngine, on_done: Callable[[], None]) -> Handler:
    """Wrap an engine so each run publishes its prompt, its start, and exactly one ending."""

    async def run(turn: Turn, ctx: RunContext) -> Turn:
        try:
            return await _run(turn, ctx)
        finally:
            on_done()

    async def _run(turn: Turn, ctx: RunContext) -> Turn:
        began = time.monotonic()
        try:  # a cancel or failure at any point, even while announcing, still ends the run
            await ctx.publish(user_message(turn, ctx))
            await ctx.publish(RunStartedEvent(meta=ctx.meta(), profile=engine.config.profile_slug))
            result = await engine.run_inference(turn, ctx)
        except asyncio.CancelledError:
            await ctx.publish(RunCancelledEvent(meta=ctx.meta(), reason="cancelled"))
            raise
        except Exception as exc:
            await ctx.publish(RunFailedEvent(meta=ctx.meta(), error=str(exc) or type(exc).__name__))
            raise
        await ctx.publish(
            RunFinishedEvent(
                meta=ctx.meta(stop_reason=result.metadata.stop_reason),
                duration_ms=round((time.monotonic() - began) * 1000),
            )
        )
        return result

    return run


class Conversation:
    """Session, engine, sink, subscription, stream, pool and resume buffer of one ``conv_id``.

    Engine, sink, subscription and stream are replaced together by the manager on a rebuild;
    session (history), pool (clients) and buffer (seq) live as long as the conversation.
    """

    def __init__(
        self,
        conv_id: str,
        *,
        config: EngineConfig,
        signature: str,
        engine: ComposedEngine,
        sink: EventSink,
        subscription: Subscription,
        close_on_replace: bool,
        buffer_frames: int = 10_000,
        overrides: Mapping[str, Any] | None = None,
        session_id: str | None = None,
        turns: Sequence[Turn] = (),
        start_seq: int = 0,
        frame_listener: FrameListener | None = None,
    ) -> None:
        self.conv_id = conv_id
        self.overrides = dict(overrides) if overrides else None
        self.frame_listener = frame_listener
        self.config = config
        self.signature = signature
        """``config``'s signature as the builder made it (keyed by the deployment's key)."""
        self.engine = engine
        self.sink = sink
        self.subscription = subscription
        self.close_on_replace = close_on_replace
        self.rebuilds = 0
        self.queued = 0
        """Runs waiting for the active one to end (kept by the run scheduler)."""
        self._dispatched = asyncio.Event()
        self.last_activity = time.monotonic()
        self.buffer = FrameBuffer(buffer_frames, after_seq=start_seq)
        self.stored_deltas = StoredDeltas()
        """Deltas stored of streams still open: their end removes them from storage."""
        self.pool = ConnectionPool(on_idle=self.touch)
        self.session = Session(
            lifecycle_runner(engine, self.touch),
            session_id=session_id,
            turns=turns,
            sinks=[sink],
        )
        self.stream = StreamCoordinator(
            conv_id, subscription, on_frames=self._dispatch, start_seq=start_seq
        )

    @property
    def profile_slug(self) -> str:
        return self.config.profile_slug

    @property
    def last_seq(self) -> int:
        return self.buffer.last_seq

    @property
    def is_running(self) -> bool:
        return self.session.is_running

    @property
    def session_id(self) -> str:
        return self.session.session_id

    @property
    def active_inference_id(self) -> str | None:
        """The id of the running inference, if any."""
        active = self.session.active
        return active.inference_id if active is not None else None

    @property
    def turns(self) -> list[Turn]:
        """The session's history (the live list, not a copy)."""
        return self.session.turns

    @property
    def client_count(self) -> int:
        return self.pool.count

    def adopt_history(self, turns: list[Turn]) -> None:
        """Take ``turns`` (e.g. stored by another process) as this conversation's history.

        Turns are appended in creation order whatever branch they are on, so a longer stored
        list is a superset of this one, and the tree (each turn's parent) comes with it.
        """
        self.session.adopt(turns)

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def _dispatch(self, frames: Sequence[Frame]) -> None:
        # Synchronous on purpose: buffer and pool see each frame with no await in between,
        # which is what makes ``attach`` (backlog, then live) free of gaps and duplicates.
        for frame in frames:
            self.buffer.append(frame)
            self.pool.broadcast(frame)
        if self.frame_listener is not None:
            self.frame_listener(self.conv_id, frames)
        self._dispatched.set()

    async def wait_for_frame(self, predicate: Callable[[Frame], bool]) -> Frame:
        """The first buffered frame matching ``predicate``, waiting for it if needed."""
        checked = -1  # seq up to which frames have been looked at
        while True:
            frames = self.buffer if checked < 0 else self.buffer.since(checked)
            found = next((f for f in frames if predicate(f)), None)
            if found is not None:
                return found
            checked = self.buffer.last_seq
            self._dispatched.clear()
            await self._dispatched.wait()

    def has_ended(self, inference_id: str) -> bool:
        """Whether this conversation has dispatched the run's terminal frame."""
        ends = ends_run(inference_id)
        return any(ends(f) for f in itertools.islice(reversed(self.buffer), RECENT_FRAMES))

    async def wait_for_end_frame(self, inference_id: str, timeout: float = 2.0) -> bool:
        """Wait until the run's terminal frame has been dispatched (and so persisted)."""
        try:
            async with asyncio.timeout(timeout):
                await self.wait_for_frame(ends_run(inference_id))
        except TimeoutError:
            return False
        return True

    def attach(
        self,
        conn: Connection,
        since: int | None = None,
        *,
        older: Sequence[Frame] = (),
        hello: str | None = None,
    ) -> Client:
        """Add a client: ``hello``, then every frame after ``since``, then live frames.

        ``older`` are frames after ``since`` that the buffer no longer holds (read from
        storage by the caller); the rest comes from the buffer in the same synchronous step
        as the registration, so no frame is missed or sent twice.
        """
        self.touch()
        backlog = self.backlog(since, older) if since is not None else []
        return self.pool.add(conn, backlog, since=since, hello=hello)

    def backlog(self, since: int, older: Sequence[Frame] = ()) -> list[Frame]:
        """Every frame after ``since``, compacted (``compaction``: streams that ended as one
        frame each): from ``older`` (storage) what the buffer cannot hold, then the buffer.

        The seam is fixed by the buffer, not by what storage returned: storage may already
        hold frames this process has not dispatched yet (another process wrote them), and
        those must come live, in order, not ahead of a gap.
        """
        boundary = self.buffer.complete_after
        frames = [f for f in older if since < f.seq <= boundary]
        return compact(frames + self.buffer.since(since))

    def detach(self, client: Client) -> None:
        self.pool.remove(client)
        self.touch()

    def start_run(
        self,
        prompt: str,
        *,
        inference_id: str | None = None,
        parent_turn_id: str | None = None,
    ) -> InferenceHandle:
        """Start an inference continuing ``parent_turn_id`` (``None``: the current branch's
        tip; ``""``: a new root; see ``Session.parent_for``). Raises ``SessionBusyError``
        when one is already running, ``UnknownTurnError`` for an unknown parent."""
        self.touch()
        return self.session.start_inference(
            prompt, inference_id=inference_id, parent_turn_id=parent_turn_id
        )

    def cancel_inference(self, inference_id: str) -> None:
        """Cancel the running inference if it is ``inference_id`` (without waiting)."""
        active = self.session.active
        if active is not None and active.inference_id == inference_id:
            active.cancel()

    def replace_engine(
        self,
        config: EngineConfig,
        signature: str,
        overrides: Mapping[str, Any] | None,
        engine: ComposedEngine,
        sink: EventSink,
        subscription: Subscription,
        close_on_replace: bool,
    ) -> None:
        """Swap in a rebuilt engine; the caller has stopped the old stream and starts the new."""
        self.config = config
        self.overrides = dict(overrides) if overrides else None
        self.signature = signature
        self.engine = engine
        self.sink = sink
        self.subscription = subscription
        self.close_on_replace = close_on_replace
        self.session.runner = lifecycle_runner(engine, self.touch)
        self.session.sinks = (sink,)
        self.stream = StreamCoordinator(
            self.conv_id,
            subscription,
            on_frames=self._dispatch,
            start_seq=self.stream.last_seq,
            translator=self.stream.translator,  # a message streaming across the swap stays whole
            recent=self.stream.recent,
        )
        self.rebuilds += 1

    async def release_stream(self) -> None:
        """Stop reading; close the subscription only if it is this conversation's own (a
        shared in-memory subscription outlives rebuilds)."""
        if self.close_on_replace:
            await self.stream.close()
        else:
            await self.stream.stop()

    async def cancel_run(self, timeout: float = 2.0) -> None:
        """Cancel a running inference and wait until its terminal frame was dispatched."""
        active = self.session.active
        if active is not None:
            active.cancel()
            with contextlib.suppress(Exception):
                await active.wait()
            # Let run.cancelled travel through the transport to the buffer, pool and store.
            await self.wait_for_end_frame(active.inference_id, timeout)

    async def close_clients(self, code: int, reason: str, *, drain: float = 0.0) -> None:
        """Disconnect every client with ``code``, after up to ``drain`` seconds of sending."""
        await self.pool.close(code, reason, drain=drain)

    async def close(self) -> None:
        """Cancel a running inference, stop streaming, disconnect clients, release the engine."""
        await self.cancel_run()
        await self.release_stream()
        await self.pool.close()
        await self.engine.aclose()
