"""In-process micro-benchmarks of the costs the changes to pool, frames and stream target.

The end-to-end benchmarks share two cores with their clients (and, on a shared machine, with
whatever else runs), so a gain of a few percent drowns in their noise. These run in one
process, with no sockets, and measure one thing each:

- ``frame``: building the frames of one ``llm.delta`` event (translation + JSON), us/event;
- ``broadcast``: the pool's own cost to deliver one frame to one client, us (N fake
  connections whose send completes at once, as a socket with room does; a producer
  broadcasts a frame and yields, like the stream coordinator);
- ``idle_conversation``: Python heap per idle conversation (``tracemalloc``), bytes, after
  joining and leaving 2,000 conversations through ``ChatService`` (in-memory transport and
  SQLite).

Run it against another checkout with ``PYTHONPATH=<checkout>/src python -m bench.micro``.

    python -m bench.micro [--quick]
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from bench import common

NAME = "micro"


class _InstantConnection:
    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent = 0

    async def send_text(self, data: str, /) -> None:
        self.sent += 1

    async def close(self, code: int = 1000, reason: str = "", /) -> None:
        pass


def bench_frame(repeat: int) -> float:
    from webchat.conversation.frames import FrameTranslator
    from webchat.events import EventMeta, PartialEvent

    words = ("the quick brown fox jumps over a lazy dog " * 20).split()
    meta = EventMeta(session_id="s" * 36, inference_id="i" * 36, turn_id="t" * 36, model="offline")
    event = PartialEvent(meta=meta, delta=" dog", completion=" ".join(words[:150]))
    translator = FrameTranslator("bench-conversation")
    best = []
    for _ in range(5):
        started = time.perf_counter()
        for seq in range(repeat):
            translator.to_frames(event, seq)
        best.append((time.perf_counter() - started) / repeat * 1e6)
    return min(best)


async def _broadcast(clients: int, frames: int) -> float:
    from webchat.conversation.frames import Frame
    from webchat.conversation.pool import ConnectionPool

    pool = ConnectionPool()
    conns = [_InstantConnection() for _ in range(clients)]
    for conn in conns:
        pool.add(conn)
    await asyncio.sleep(0)
    items = [
        Frame(seq=seq, type="llm.delta", data={"delta": " x"}, conv_id="c")
        for seq in range(1, frames + 1)
    ]
    started = time.perf_counter()
    for item in items:
        pool.broadcast(item)
        await asyncio.sleep(0)
    for _ in range(10_000):  # bounded: writers still busy get a few more loop turns
        if all(conn.sent == frames for conn in conns):
            break
        await asyncio.sleep(0)
    else:
        raise RuntimeError("the pool did not deliver every frame")
    elapsed = time.perf_counter() - started
    await pool.close()
    return elapsed / (frames * clients) * 1e6


def bench_broadcast(clients: int, frames: int) -> float:
    import uvloop

    return min(uvloop.run(_broadcast(clients, frames)) for _ in range(5))


async def _idle_conversations(count: int) -> float:
    from webchat.server.app import create_app
    from webchat.server.protocol import hello_text
    from webchat.settings import ServerSettings

    with tempfile.TemporaryDirectory() as directory:
        profiles = common.Workspace(Path(directory)).profiles()
        app = create_app(ServerSettings(db=str(Path(directory) / "m.sqlite3"), profiles=profiles))
        async with app.router.lifespan_context(app):
            service = app.state.service
            for i in range(50):  # warm up caches and lazy imports
                conversation, client = await service.connect(
                    _InstantConnection(), f"warm-{i}", "tiny", None, hello=hello_text
                )
                conversation.detach(client)
            await asyncio.sleep(0.2)
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.take_snapshot()
            for i in range(count):
                conversation, client = await service.connect(
                    _InstantConnection(), f"idle-{i}", "tiny", None, hello=hello_text
                )
                conversation.detach(client)
            await asyncio.sleep(0.5)  # let the store's writer catch up
            gc.collect()
            after = tracemalloc.take_snapshot()
            tracemalloc.stop()
            grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    return grown / count


def main() -> None:
    parser = common.base_parser(__doc__ or NAME, transports=False)
    args = parser.parse_args()
    repeat = 2_000 if args.quick else 20_000
    machine = common.machine_info()
    import webchat

    source = str(Path(webchat.__file__).resolve().parent.parent)
    print(common.machine_line(machine), flush=True)
    print(f"webchat from {source}", flush=True)
    results: dict[str, Any] = {"frame_us_per_event": bench_frame(repeat)}
    for clients in (1, 10, 100):
        frames = max(200, (20_000 if not args.quick else 2_000) // clients)
        results[f"broadcast_us_per_client_frame_n{clients}"] = bench_broadcast(clients, frames)
    samples = [
        asyncio.run(_idle_conversations(500 if args.quick else 2_000))
        for _ in range(1 if args.quick else 3)
    ]
    results["idle_conversation_bytes"] = statistics.median(samples)
    rows = [[name, value] for name, value in results.items()]
    print()
    print(common.table(f"micro-benchmarks (webchat from {source})", ["measure", "value"], rows))
    data = {
        "benchmark": NAME,
        "machine": machine,
        "webchat_source": source,
        "python": sys.version,
        "results": results,
    }
    print(f"\nwrote {common.write_results(NAME, data, args.out)}")


if __name__ == "__main__":
    main()
