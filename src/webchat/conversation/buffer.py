"""The recent frames of a conversation, kept so a (re)connecting client can catch up.

A client joining with ``since=<seq>`` gets ``since(seq)`` as its backlog, then the live stream.
Memory is bounded: the oldest frames are evicted, and ``covers`` tells whether a backlog is
still complete or the client must be served from the persisted timeline instead.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

from webchat.conversation.frames import Frame


class FrameBuffer:
    """Frames in strictly increasing seq order, at most ``max_frames`` of them.

    ``after_seq`` says the buffer starts complete only after that seq: a buffer created for a
    conversation restored from storage does not hold its earlier frames, and must not claim to.
    """

    def __init__(self, max_frames: int = 10_000, *, after_seq: int = 0) -> None:
        if max_frames < 1:
            raise ValueError("max_frames must be >= 1")
        if after_seq < 0:
            raise ValueError("after_seq must be >= 0")
        self.max_frames = max_frames
        self._frames: deque[Frame] = deque(maxlen=max_frames)
        # Every frame with a seq above this one that was ever appended is still held.
        self._complete_after = after_seq
        self._last_seq = after_seq

    def append(self, frame: Frame) -> None:
        if frame.seq <= self._last_seq:
            raise ValueError(
                f"frame seq {frame.seq} is not after the buffer's last seq {self._last_seq}"
            )
        if len(self._frames) == self.max_frames:
            self._complete_after = self._frames[0].seq
        self._frames.append(frame)
        self._last_seq = frame.seq

    def extend(self, frames: Iterable[Frame]) -> None:
        for frame in frames:
            self.append(frame)

    def since(self, seq: int) -> list[Frame]:
        """Held frames with a seq greater than ``seq``, oldest first."""
        # Clients mostly ask for the recent tail, so walk back from the newest frame.
        newer: list[Frame] = []
        for frame in reversed(self._frames):
            if frame.seq <= seq:
                break
            newer.append(frame)
        newer.reverse()
        return newer

    def covers(self, seq: int) -> bool:
        """Whether ``since(seq)`` returns every frame after ``seq`` (none of them was evicted)."""
        return seq >= self._complete_after

    @property
    def complete_after(self) -> int:
        """Every frame after this seq is held (or still to come); older ones come from storage."""
        return self._complete_after

    @property
    def last_seq(self) -> int:
        """The newest seq appended (``after_seq``, 0 by default, while nothing was)."""
        return self._last_seq

    @property
    def first_seq(self) -> int | None:
        """The oldest held seq, ``None`` when empty."""
        return self._frames[0].seq if self._frames else None

    def __len__(self) -> int:
        return len(self._frames)

    def __iter__(self) -> Iterator[Frame]:
        return iter(self._frames)

    def __reversed__(self) -> Iterator[Frame]:
        return reversed(self._frames)
