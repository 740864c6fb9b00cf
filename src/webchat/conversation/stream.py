"""The stream coordinator: one reader turning a conversation's transport messages into frames.

It is the only place frame seqs are assigned (see ``frames``), and it hands each event's frames
to ``on_frames`` synchronously, so the conversation can append them to its buffer and
broadcast them to its pool with no ``await`` in between: a client joining at any moment sees
each frame either in its backlog or live, never both, never neither.

Frames whose seq is not above the last one emitted are skipped. That makes replays harmless:
after an engine rebuild, a new coordinator (on a fresh subscription that re-reads from an
earlier ``after_seq``, or on the same subscription) continues without duplicating anything.

A message that was *written* twice (a publish retried because Redis went away before it
answered, although it had stored the entry) carries one uuid under two entry ids, i.e. two
seqs. The coordinator remembers the uuids of the latest messages and drops such a second
copy, so a token is never shown twice under a new seq; every process reading the stream drops
the same copy, so they stay identical.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from webchat.conversation.frames import FRAMES_PER_EVENT, Frame, FrameTranslator, frame_seq
from webchat.events import EventParseError
from webchat.transport import Subscription, TransportMessage

logger = logging.getLogger(__name__)

RECENT_UUIDS = 128
"""How many message uuids a coordinator remembers: a retried publish lands right after the
copy it repeats (its publisher waits for it), so a short window catches every such copy."""


class RecentUuids:
    """The uuids of the latest messages, bounded; shared by successive coordinators."""

    __slots__ = ("_order", "_seen")

    def __init__(self, size: int = RECENT_UUIDS) -> None:
        self._order: deque[str] = deque(maxlen=size)
        self._seen: set[str] = set()

    def add(self, uuid: str) -> bool:
        """Remember ``uuid``; False if it was already remembered (a repeated message)."""
        if uuid in self._seen:
            return False
        if len(self._order) == self._order.maxlen:
            self._seen.discard(self._order[0])
        self._order.append(uuid)
        self._seen.add(uuid)
        return True


class StreamCoordinator:
    """Reads ``subscription`` (already live) in one task it owns.

    Pass the previous coordinator's ``translator``, ``recent`` and ``last_seq`` when replacing
    it, so per-message state (streamed thinking), remembered uuids and the seq floor carry over.

    ``stop`` leaves the subscription open for a successor: both backends keep a message that
    was pending in a cancelled ``__anext__`` queued, so nothing is lost between the two.
    """

    def __init__(
        self,
        conv_id: str,
        subscription: Subscription,
        *,
        on_frames: Callable[[list[Frame]], None],
        start_seq: int = 0,
        translator: FrameTranslator | None = None,
        recent: RecentUuids | None = None,
    ) -> None:
        self.conv_id = conv_id
        self.subscription = subscription
        self.on_frames = on_frames
        self.translator = translator or FrameTranslator(conv_id)
        self.recent = recent or RecentUuids()
        self._last_seq = start_seq
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self.skipped_messages = 0
        """Messages that could not be decoded or translated (each one was logged)."""

    @property
    def last_seq(self) -> int:
        """The seq of the last frame handed to ``on_frames`` (or ``start_seq``)."""
        return self._last_seq

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def error(self) -> BaseException | None:
        """What ended the reader, if it crashed (it was logged too)."""
        return self._error

    async def start(self) -> None:
        """Start the reader task and return once it is running."""
        if self.running:
            raise RuntimeError("stream coordinator already started")
        # A bare future, dropped once the reader runs: a conversation keeps nothing of its
        # start-up (an ``asyncio.Event`` held by a done callback cost ~1 KiB per conversation).
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._error = None
        task = self._task = asyncio.create_task(self._read(started), name=f"stream {self.conv_id}")

        def release(_: object) -> None:
            if not started.done():
                started.set_result(None)

        # Also released if the task ends before its first step (cancelled), so this never hangs.
        task.add_done_callback(release)
        try:
            await started
        finally:
            task.remove_done_callback(release)

    async def wait(self) -> None:
        """Wait until the reader ends by itself (subscription ended, or a crash)."""
        if self._task is not None:
            await asyncio.wait([self._task])

    async def stop(self) -> None:
        """Stop reading; the subscription stays open and usable."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])

    async def close(self) -> None:
        """Stop reading and close the subscription."""
        await self.stop()
        await self.subscription.close()

    async def _read(self, started: asyncio.Future[None]) -> None:
        if not started.done():
            started.set_result(None)
        del started  # not kept alive by this frame for the conversation's lifetime
        try:
            async for message in self.subscription:
                self._handle(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._error = exc
            logger.exception(
                "stream of conversation %s crashed after seq %d", self.conv_id, self._last_seq
            )
        else:
            logger.debug("stream of conversation %s ended", self.conv_id)

    def _handle(self, message: TransportMessage) -> None:
        # Synchronous from decoding to on_frames: a cancel can only land between messages.
        if frame_seq(message.seq, FRAMES_PER_EVENT - 1) <= self._last_seq:
            # Fully emitted before (a replay): skipping it also keeps the translator's state
            # from being fed the same event twice.
            return
        if message.uuid and not self.recent.add(message.uuid):
            self.skipped_messages += 1
            logger.warning(
                "skipping message %s of %s (conversation %s): a second copy of message %s",
                message.id,
                message.topic,
                self.conv_id,
                message.uuid,
            )
            return
        try:
            event = message.to_event()
        except EventParseError as exc:
            self.skipped_messages += 1
            logger.warning(
                "skipping message %s of %s (conversation %s): %s",
                message.id,
                message.topic,
                self.conv_id,
                exc,
            )
            return
        try:
            frames = self.translator.to_frames(event, message.seq)
        except Exception:
            self.skipped_messages += 1
            logger.exception(
                "skipping %r event %s of conversation %s: translation failed",
                event.type,
                message.id,
                self.conv_id,
            )
            return
        frames = [frame for frame in frames if frame.seq > self._last_seq]
        if not frames:
            return
        self._last_seq = frames[-1].seq
        try:
            self.on_frames(frames)
        except Exception:
            logger.exception(
                "on_frames failed for seqs %d..%d of conversation %s",
                frames[0].seq,
                frames[-1].seq,
                self.conv_id,
            )
