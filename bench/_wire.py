"""Wire helpers shared by the benchmark clients and the bare baseline server.

No webchat imports here: the baseline server imports this module and must stay a bare
Starlette app. ``bench.common`` checks that the constants agree with webchat's.

How latency is measured
-----------------------
Frames carry no timestamp, but their ``seq`` does: a frame's seq is ``message_seq * 4 +
slot`` and a transport message's seq is ``(ms since SEQ_EPOCH_MS) * 1000 + n``, where ``ms``
is the wall-clock millisecond of the publish (in memory: ``time.time_ns()`` when
``InMemoryTransport.publish`` ran; Redis: the millisecond of the ``XADD``). So a client that
stamps each frame with ``time.time_ns()`` on arrival knows the publish time to within one
millisecond: it lies in ``[ms, ms + 1)``. Latencies are reported as ``arrival - (ms + 0.5)``,
i.e. with a resolution of +-0.5 ms. The baseline server stamps its frames the same way, so
both sides are measured with the same ruler.
"""

from __future__ import annotations

import time

SEQ_EPOCH_MS = 1_735_689_600_000
SEQ_PER_MS = 1000
FRAMES_PER_EVENT = 4
HALF_MS_NS = 500_000


def clock_seq() -> int:
    """The message seq of "now", as ``webchat.transport.base.clock_seq`` computes it."""
    return (time.time_ns() // 1_000_000 - SEQ_EPOCH_MS) * SEQ_PER_MS


def publish_ns(frame_seq: int) -> int:
    """Midpoint (ns since the Unix epoch) of the millisecond the frame's message was published."""
    message_seq = frame_seq // FRAMES_PER_EVENT
    return (message_seq // SEQ_PER_MS + SEQ_EPOCH_MS) * 1_000_000 + HALF_MS_NS


def frame_type(text: str) -> str:
    """The ``event.type`` of a frame's JSON text, without decoding the whole frame."""
    start = text.find('"type":"')
    if start < 0:
        return ""
    start += 8
    return text[start : text.index('"', start)]


def frame_seq(text: str) -> int | None:
    """The ``event.seq`` of a frame's JSON text (``None`` for ``ws.hello``, ``ws.pong``)."""
    start = text.find('"seq":')
    if start < 0:
        return None
    start += 6
    end = start
    while end < len(text) and text[end].isdigit():
        end += 1
    return int(text[start:end]) if end > start else None
