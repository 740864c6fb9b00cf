import pytest

from webchat.conversation.buffer import FrameBuffer
from webchat.conversation.frames import Frame


def frame(seq: int) -> Frame:
    return Frame(seq=seq, type="llm.delta", data={"delta": str(seq)}, conv_id="c")


def seqs(frames: list[Frame]) -> list[int]:
    return [f.seq for f in frames]


def test_empty_buffer():
    buffer = FrameBuffer()
    assert buffer.last_seq == 0
    assert buffer.first_seq is None
    assert buffer.since(0) == []
    assert buffer.covers(0)
    assert len(buffer) == 0


def test_since_returns_frames_after_seq_in_order():
    buffer = FrameBuffer()
    buffer.extend(frame(s) for s in (4, 5, 9, 12))
    assert seqs(buffer.since(0)) == [4, 5, 9, 12]
    assert seqs(buffer.since(5)) == [9, 12]
    assert seqs(buffer.since(6)) == [9, 12]  # seqs are sparse; since need not be one of them
    assert buffer.since(12) == []
    assert buffer.since(100) == []
    assert (buffer.first_seq, buffer.last_seq) == (4, 12)


def test_non_monotonic_append_is_rejected():
    buffer = FrameBuffer()
    buffer.append(frame(5))
    with pytest.raises(ValueError):
        buffer.append(frame(5))
    with pytest.raises(ValueError):
        buffer.append(frame(3))
    assert seqs(buffer.since(0)) == [5]
    assert buffer.last_seq == 5


def test_bounded_eviction_and_covers():
    buffer = FrameBuffer(max_frames=3)
    buffer.extend(frame(s) for s in (1, 2, 3))
    assert buffer.covers(0)
    buffer.extend(frame(s) for s in (4, 5))
    assert len(buffer) == 3
    assert seqs(buffer.since(0)) == [3, 4, 5]
    assert buffer.first_seq == 3
    # Frames 1 and 2 are gone: a backlog from before 2 would have a gap.
    assert not buffer.covers(0)
    assert not buffer.covers(1)
    assert buffer.covers(2)
    assert buffer.covers(5)
    assert buffer.covers(50)


def test_memory_stays_bounded():
    buffer = FrameBuffer(max_frames=100)
    buffer.extend(frame(s) for s in range(1, 10_001))
    assert len(buffer) == 100
    assert (buffer.first_seq, buffer.last_seq) == (9_901, 10_000)
    assert buffer.covers(9_900) and not buffer.covers(9_899)


def test_after_seq_does_not_claim_earlier_frames():
    buffer = FrameBuffer(after_seq=40)
    assert buffer.last_seq == 40
    assert not buffer.covers(10)
    assert buffer.covers(40)
    with pytest.raises(ValueError):
        buffer.append(frame(40))
    buffer.append(frame(41))
    assert seqs(buffer.since(10)) == [41]


def test_invalid_size_is_rejected():
    with pytest.raises(ValueError):
        FrameBuffer(max_frames=0)
