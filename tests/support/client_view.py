"""What a client shows after applying frames, as the web UI applies them.

Used to check that a transcript reached by other frames (a compacted backlog, merged deltas
of a slow client) shows the same as the full stream of frames.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ClientView:
    text: dict[str, str] = field(default_factory=dict)
    thinking: dict[str, str] = field(default_factory=dict)
    tool_input: dict[str, str] = field(default_factory=dict)
    others: list[tuple[str, Any]] = field(default_factory=list)
    """Every frame that is not a text delta, as (type, id), in the order received."""
    last_seq: int = 0
    _arguments: dict[str, str] = field(default_factory=dict)

    def apply(self, frame: dict[str, Any]) -> None:
        kind, key = frame["type"], frame.get("id")
        assert frame["seq"] > self.last_seq, f"seq went back: {frame}"
        self.last_seq = frame["seq"]
        if kind == "llm.delta":
            self.text[key] = self.text.get(key, "") + frame["delta"]
            return
        if kind == "llm.thinking.delta":
            self.thinking[key] = self.thinking.get(key, "") + frame["delta"]
            return
        if kind == "tool.delta" and "delta" in frame:
            self._arguments[key] = self._arguments.get(key, "") + frame["delta"]
            self.tool_input[key] = self._arguments[key]
            return
        self.others.append((kind, key))
        if kind == "llm.final" and isinstance(frame.get("text"), str):
            self.text[key] = frame["text"]
        elif kind == "llm.thinking.final" and isinstance(frame.get("text"), str):
            self.thinking[key] = frame["text"]
        elif kind == "tool.start":
            # The whole input replaces what streamed before it.
            self._arguments.pop(key, None)
            self.tool_input[key] = json.dumps(frame.get("input"))

    def apply_all(self, frames: list[dict[str, Any]]) -> ClientView:
        for frame in frames:
            self.apply(frame)
        return self

    def shows(self) -> tuple[Any, ...]:
        """What is on screen (not how it got there)."""
        return (self.text, self.thinking, self.tool_input, self.others, self.last_seq)


def transcript(frames: list[dict[str, Any]]) -> tuple[Any, ...]:
    """What a client shows after ``frames`` (see ``ClientView.shows``)."""
    return ClientView().apply_all(frames).shows()


def assert_same_transcript(*streams: list[dict[str, Any]]) -> None:
    """Each list of frames shows the same transcript: the exactness clients can rely on when
    backlogs are compacted and a slow client's deltas are folded together."""
    first, *others = (transcript(frames) for frames in streams)
    for index, other in enumerate(others, start=1):
        assert other == first, f"stream {index} shows another transcript than stream 0"


ENDS = {
    "llm.final": "llm.delta",
    "llm.thinking.final": "llm.thinking.delta",
    "tool.start": "tool.delta",
}
"""Each frame type that carries a stream's whole text, and the delta type of that stream."""


def is_delta(frame: dict[str, Any]) -> bool:
    """A frame that only appends text to a stream (``tool.delta`` status changes do not)."""
    return frame["type"] in ENDS.values() and "delta" in frame


def without_deltas(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The frames that compaction and coalescing never touch: every client and every timeline
    must have each of them, field for field, under the same seq."""
    return [frame for frame in frames if not is_delta(frame)]


def assert_deltas_add_up(*connections: list[dict[str, Any]]) -> None:
    """The deltas one client received over its ``connections`` (each one's frames, in order)
    are each stream's text without a gap, a repeat or a stray piece.

    ``ClientView`` cannot see a lost delta once the final has replaced the text, so this
    checks the pieces themselves: a connection that got a delta of a stream gets every later
    one (merged or not) up to the stream's end, so where it also got the end, the deltas of
    all connections so far make the whole text. A connection that got only the end (its
    backlog left the deltas out) may follow one that got the beginning: those deltas must
    then be where the text starts. (The first connection must have joined before the
    streams it got deltas of began, or with a ``since`` before them.)
    """
    streamed: dict[tuple[str, Any], str] = {}
    ended: set[tuple[str, Any]] = set()
    for number, frames in enumerate(connections):
        live: set[tuple[str, Any]] = set()
        for frame in frames:
            if is_delta(frame):
                key = (frame["type"], frame.get("id"))
                assert key not in ended, f"a delta after its stream ended: {frame}"
                streamed[key] = streamed.get(key, "") + frame["delta"]
                live.add(key)
                continue
            if frame["type"] not in ENDS:
                continue
            key = (ENDS[frame["type"]], frame.get("id"))
            got = streamed.get(key, "")
            if frame["type"] == "tool.start":
                if frame.get("input") is None:
                    continue  # the call opened; its arguments still stream
                ended.add(key)
                if key in live:
                    assert json.loads(got) == frame["input"], (number, frame, got)
                continue
            whole = frame.get("text")
            if not isinstance(whole, str):
                continue  # the end did not know the text: the deltas are all there is
            ended.add(key)
            if key in live:
                assert got == whole, f"connection {number}: deltas {got!r} != {frame}"
            else:
                assert whole.startswith(got), f"connection {number}: {got!r} not in {frame}"


def assert_exactly_once(
    reference: list[dict[str, Any]], *connections: list[dict[str, Any]]
) -> None:
    """One client's ``connections`` (its frames per connection, in order) received the
    conversation of ``reference`` (another client's frames, or a timeline) exactly once: no
    seq twice or out of order (``ClientView``), the same transcript up to the same last seq,
    every frame that is not a delta as it is in ``reference``, and deltas that add up."""
    received = [frame for frames in connections for frame in frames]
    assert_same_transcript(received, reference)
    assert without_deltas(received) == without_deltas(reference)
    assert_deltas_add_up(*connections)
