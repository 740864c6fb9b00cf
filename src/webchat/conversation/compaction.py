"""Compaction: the same transcript in fewer frames, for a client that catches up.

Frames carry deltas, so a reload that replayed every frame would cost one frame per token.
A client catching up does not need the steps, only where they lead. So a backlog is sent
compacted:

- the deltas of a stream that ends later in the same backlog are left out: ``llm.final``
  carries the whole text of its message, ``llm.thinking.final`` the whole thinking, and a
  ``tool.start`` with its ``input`` the whole arguments;
- what is left of a stream still open is merged: consecutive deltas of one message (or tool
  call) become one frame with their concatenated text, under the seq of the last one.

Both keep what a client ends up showing exactly as the full replay would, and keep the last
seq of the backlog (the resume point), because the frame that supersedes or ends a run of
deltas always comes after it. A client that resumes from inside a merged run is impossible:
the seqs inside it were never sent.

The same merge serves the fan-out (``merge_deltas``): a client whose queue already holds a
delta of a message gets the next one folded into it, so a slow network costs bytes, not
frames.
"""

from __future__ import annotations

from collections.abc import Sequence

from webchat.conversation.frames import Frame, remember

STREAM_DELTAS = {
    "llm.delta": "llm.final",
    "llm.thinking.delta": "llm.thinking.final",
    "tool.delta": "tool.start",
}
"""Each delta frame type, and the frame type that carries the whole text it streams."""


def is_delta(frame: Frame) -> bool:
    """A frame that only appends text to a stream (merging two of them loses nothing)."""
    if frame.type not in STREAM_DELTAS:
        return False
    # ``tool.delta`` also reports status changes ("running"): only argument deltas merge.
    return frame.type != "tool.delta" or "delta" in frame.data


_ENDS = {end: delta for delta, end in STREAM_DELTAS.items()}


def _superseded_deltas(frame: Frame) -> str | None:
    """The delta type whose earlier frames ``frame`` makes redundant (it carries the whole
    text they built), or None."""
    delta_type = _ENDS.get(frame.type)
    if delta_type is None:
        return None
    if frame.type == "tool.start":
        whole = frame.data.get("input") is not None
    else:
        whole = isinstance(frame.data.get("text"), str)  # None: the end did not know it
    return delta_type if whole else None


def mergeable(first: Frame, second: Frame) -> bool:
    """Two deltas of the same stream, ``second`` right after ``first``."""
    return (
        first.type == second.type
        and first.id == second.id
        and first.conv_id == second.conv_id
        and is_delta(first)
        and is_delta(second)
    )


def merge_deltas(frames: Sequence[Frame]) -> Frame:
    """One delta frame for consecutive deltas of one stream: their text, the last one's seq
    and envelope (``frames`` must be non-empty and pairwise ``mergeable``)."""
    last = frames[-1]
    if len(frames) == 1:
        return last
    data = dict(last.data)
    data["delta"] = "".join(str(frame.data.get("delta", "")) for frame in frames)
    return Frame(
        seq=last.seq,
        type=last.type,
        data=data,
        conv_id=last.conv_id,
        id=last.id,
        session_id=last.session_id,
        inference_id=last.inference_id,
        turn_id=last.turn_id,
        short=last.short,
    )


def compact(frames: Sequence[Frame]) -> list[Frame]:
    """``frames`` (in seq order) as a client catching up needs them; see the module doc."""
    ended: set[tuple[str, str | None]] = set()  # (delta type, id) of streams ended later
    kept: list[Frame] = []
    for frame in reversed(frames):
        if is_delta(frame):
            if (frame.type, frame.id) in ended:
                continue
        elif (delta_type := _superseded_deltas(frame)) is not None:
            ended.add((delta_type, frame.id))
        kept.append(frame)
    kept.reverse()
    if len(kept) < 2:
        return kept
    merged: list[Frame] = []
    run: list[Frame] = []
    for frame in kept:
        if run and mergeable(run[-1], frame):
            run.append(frame)
            continue
        if run:
            merged.append(merge_deltas(run))
            run = []
        if is_delta(frame):
            run.append(frame)
        else:
            merged.append(frame)
    if run:
        merged.append(merge_deltas(run))
    return merged


class StoredDeltas:
    """The seqs of stored deltas of each stream still open, so that when its end is stored
    they can be removed: the end carries their whole text, and a history read from storage
    then costs a frame per message, not per token (a crash mid-message keeps every delta).
    """

    __slots__ = ("_open",)

    def __init__(self) -> None:
        # Made at the first delta: an idle conversation holds no dict for it.
        self._open: dict[tuple[str, str | None], list[int]] | None = None

    def superseded(self, frames: Sequence[Frame]) -> list[int]:
        """Note the deltas among ``frames``; return the seqs of stored deltas their ends made
        redundant (the ends themselves are among ``frames``)."""
        done: list[int] = []
        for frame in frames:
            if is_delta(frame):
                if self._open is None:
                    self._open = {}
                key = (frame.type, frame.id)
                seqs = self._open.get(key)
                if seqs is None:
                    # Bounded: a stream whose end never comes keeps its deltas stored.
                    seqs = []
                    remember(self._open, key, seqs)
                seqs.append(frame.seq)
            elif self._open and (delta_type := _superseded_deltas(frame)) is not None:
                done += self._open.pop((delta_type, frame.id), ())
        return done
