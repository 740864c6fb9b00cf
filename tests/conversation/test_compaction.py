"""Compaction shows the same transcript in fewer frames, from any resume point."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.support.client_view import ClientView
from webchat.conversation.compaction import compact, merge_deltas
from webchat.conversation.frames import Frame


def frame(seq: int, kind: str, key: str | None = None, **data: Any) -> Frame:
    return Frame(seq=seq, type=kind, data=data, conv_id="c", id=key, turn_id="t1")


def wire(frames: list[Frame]) -> list[dict[str, Any]]:
    return [f.event() for f in frames]


def random_run(rng: random.Random) -> list[Frame]:
    """A run's frames: messages streaming text and thinking (sometimes two at once), tool
    calls streaming their arguments, finals that know or do not know the text, logs."""
    frames: list[Frame] = []
    seq = rng.randint(1, 50)

    def add(kind: str, key: str | None = None, **data: Any) -> None:
        nonlocal seq
        seq += rng.choice((1, 1, 2, 4, 7))
        frames.append(frame(seq, kind, key, **data))

    add("chat.user_message", "u", text="hi")
    add("run.started", "r", profile="p")
    open_streams: dict[str, str] = {}
    for step in range(rng.randint(0, 60)):
        choice = rng.random()
        if choice < 0.08 or not open_streams:
            key = f"m{step}"
            open_streams[key] = ""
            add("llm.start", key, model="x")
        elif choice < 0.55:
            key = rng.choice(list(open_streams))
            delta = rng.choice(("a", "bc", " d", "é", ""))
            open_streams[key] += delta
            add("llm.delta", key, delta=delta)
        elif choice < 0.65:
            key = rng.choice(list(open_streams))
            add("llm.thinking.delta", key, delta=rng.choice(("h", "m ")))
        elif choice < 0.72:
            key = rng.choice(list(open_streams))
            text = open_streams.pop(key)
            if rng.random() < 0.5:
                add("llm.thinking.final", key, text="thought")
            add("llm.final", key, text=text if rng.random() < 0.8 else None)
        elif choice < 0.85:
            add("tool.delta", "t", status="pending", delta=rng.choice(('{"a"', ": 1}")))
        elif choice < 0.9:
            add("tool.start", "t", name="calc", input=rng.choice((None, {"a": 1})))
        elif choice < 0.95:
            add("tool.delta", "t", status="running")
        else:
            add("log", None, level="info", message="note")
    add("run.finished", "r")
    return frames


@pytest.mark.parametrize("seed", range(40))
def test_a_compacted_backlog_shows_what_the_full_stream_shows_from_every_resume_point(seed):
    frames = random_run(random.Random(seed))
    full = ClientView().apply_all(wire(frames)).shows()
    for cut in range(len(frames) + 1):
        # A client had the first `cut` frames live, then resumed: its backlog is compacted.
        resumed = ClientView().apply_all(wire(frames[:cut]) + wire(compact(frames[cut:])))
        assert resumed.shows() == full, f"seed {seed}, resumed after frame {cut}"
        # A client hydrated from a compacted history, then got the rest live.
        hydrated = ClientView().apply_all(wire(compact(frames[:cut])) + wire(frames[cut:]))
        assert hydrated.shows() == full, f"seed {seed}, hydrated up to frame {cut}"


def test_a_finished_answer_is_one_frame_whatever_its_length():
    frames = [frame(1, "llm.start", "m")]
    frames += [frame(2 + i, "llm.delta", "m", delta="tok ") for i in range(2000)]
    frames.append(frame(3000, "llm.final", "m", text="tok " * 2000))
    compacted = compact(frames)
    assert [f.type for f in compacted] == ["llm.start", "llm.final"]
    assert compacted[-1].seq == 3000


def test_an_open_stream_is_merged_into_one_frame_under_its_last_seq():
    frames = [frame(1, "llm.start", "m")] + [
        frame(2 + i, "llm.delta", "m", delta=str(i)) for i in range(10)
    ]
    compacted = compact(frames)
    assert [(f.type, f.seq) for f in compacted] == [("llm.start", 1), ("llm.delta", 11)]
    assert compacted[-1].data == {"delta": "0123456789"}
    assert compacted[-1].event()["seq"] == 11


def test_a_final_that_does_not_know_the_text_keeps_the_deltas():
    frames = [frame(1, "llm.delta", "m", delta="a"), frame(2, "llm.delta", "m", delta="b")]
    frames.append(frame(3, "llm.final", "m", text=None))
    assert [(f.type, f.data.get("delta")) for f in compact(frames)] == [
        ("llm.delta", "ab"),
        ("llm.final", None),
    ]


def test_status_deltas_are_never_merged_or_dropped():
    frames = [
        frame(1, "tool.delta", "t", status="running"),
        frame(2, "tool.delta", "t", status="running"),
        frame(3, "tool.start", "t", name="calc", input={"a": 1}),
    ]
    assert compact(frames) == frames


def test_merging_keeps_the_last_envelope_and_other_fields():
    first = frame(5, "tool.delta", "t", status="pending", delta="{")
    second = frame(9, "tool.delta", "t", status="pending", delta="}")
    merged = merge_deltas([first, second])
    assert merged.event() == {**second.event(), "delta": "{}"}


def test_stored_deltas_of_a_stream_are_released_by_its_end_only():
    from webchat.conversation.compaction import StoredDeltas

    stored = StoredDeltas()
    assert (
        stored.superseded([frame(1, "llm.start", "m"), frame(2, "llm.delta", "m", delta="a")]) == []
    )
    assert stored.superseded([frame(3, "llm.thinking.delta", "m", delta="h")]) == []
    assert stored.superseded([frame(4, "llm.delta", "m", delta="b")]) == []
    # An end that does not know the text releases nothing: the deltas are the only record.
    assert stored.superseded([frame(5, "llm.final", "m", text=None)]) == []
    assert stored.superseded([frame(6, "llm.thinking.final", "m", text="h")]) == [3]
    assert stored.superseded([frame(7, "llm.delta", "m", delta="c")]) == []
    assert stored.superseded([frame(8, "llm.final", "m", text="abc")]) == [2, 4, 7]
    assert stored.superseded([frame(9, "llm.final", "m", text="abc")]) == []
    # Argument deltas end with the tool call's whole input; status deltas are never stored
    # as deltas to release.
    batch = [
        frame(10, "tool.delta", "t", status="pending", delta="{"),
        frame(11, "tool.delta", "t", status="running"),
        frame(12, "tool.start", "t", name="calc", input={"a": 1}),
    ]
    assert stored.superseded(batch) == [10]
