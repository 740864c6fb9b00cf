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
