"""SQLite frame writes: batched per tick against taken as they come.

Runs in one process against a SQLite file in a temporary directory (WAL, ``synchronous=
NORMAL``, as ``webchat serve`` opens it), with the frames a run's stream coordinator appends:
one small ``llm.delta`` frame per call. Two writers alternate round by round:

- ``unbatched``: ``batch_interval=0``, the writer takes whatever is queued the moment it wakes
  (what it did before batching: at a token rate below what a commit costs, one transaction,
  and one worker-thread hop, per frame);
- ``batched``: the default tick (``batch_interval=0.02``).

Two loads:

- ``paced``: C conversations each appending a frame every 50 ms (20 tokens/s) for a few
  seconds, as many concurrent runs do: process CPU per stored frame (loop and writer
  threads), and transactions per 1,000 frames;
- ``burst``: one stream appending a frame per loop turn as fast as it can, then a flush:
  frames stored per second.

    python -m bench.storage [--quick]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common

NAME = "storage"
MODES = {"unbatched": 0.0, "batched": 0.02}


def _frames(conv_id: str, count: int) -> list[Any]:
    from webchat.conversation.frames import Frame

    return [
        Frame(seq=seq, type="llm.delta", data={"delta": " word"}, conv_id=conv_id)
        for seq in range(1, count + 1)
    ]


async def _paced(path: Path, interval: float, convs: int, seconds: float) -> dict[str, float]:
    from webchat.storage import SQLiteStore

    store = SQLiteStore(path, batch_interval=interval)
    await store.open()
    per_conv = int(seconds * 20)
    frames = {f"c{i}": _frames(f"c{i}", per_conv) for i in range(convs)}
    transactions = 0
    apply = store._apply

    def counted(batch: list[Any]) -> tuple[int, int]:
        nonlocal transactions
        transactions += 1  # one transaction per batch (more only when a batch fails)
        return apply(batch)

    store._apply = counted  # type: ignore[method-assign]

    async def run(conv_id: str, offset: float) -> None:
        await asyncio.sleep(offset)
        for frame in frames[conv_id]:
            store.append_frames(conv_id, [frame])
            await asyncio.sleep(0.05)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(run(c, i * 0.05 / convs) for i, c in enumerate(frames)))
    await store.flush()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    total = convs * per_conv
    errors = store.write_errors
    await store.close()
    if errors:
        raise RuntimeError(f"{errors} writes failed")
    return {
        "cpu_us_per_frame": cpu / total * 1e6,
        "cpu_percent": cpu / wall * 100,
        "transactions_per_1000_frames": transactions / total * 1000,
    }


async def _burst(path: Path, interval: float, count: int) -> float:
    from webchat.storage import SQLiteStore

    store = SQLiteStore(path, batch_interval=interval)
    await store.open()
    frames = _frames("burst", count)
    started = time.perf_counter()
    for frame in frames:
        store.append_frames("burst", [frame])
        await asyncio.sleep(0)
    await store.flush()
    elapsed = time.perf_counter() - started
    await store.close()
    return count / elapsed


def main() -> None:
    parser = common.base_parser(__doc__ or NAME, transports=False)
    parser.add_argument("--rounds", type=int, default=None, help="rounds per mode")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    convs, seconds = (100, 1.0) if args.quick else (500, 3.0)
    burst = 5_000 if args.quick else 50_000
    machine = common.machine_info()
    print(common.machine_line(machine), flush=True)
    samples: dict[str, dict[str, list[float]]] = {m: {} for m in MODES}
    with tempfile.TemporaryDirectory() as directory:
        for n in range(rounds):
            for mode, interval in MODES.items():  # alternating: both see the same load
                path = Path(directory) / f"{mode}-{n}.sqlite3"
                paced = asyncio.run(_paced(path, interval, convs, seconds))
                for key, value in paced.items():
                    samples[mode].setdefault(key, []).append(value)
                burst_path = Path(directory) / f"burst-{mode}-{n}.sqlite3"
                fps = asyncio.run(_burst(burst_path, interval, burst))
                samples[mode].setdefault("burst_frames_per_s", []).append(fps)
                print(f"round {n + 1} {mode}: {paced} burst {fps:,.0f} frames/s", flush=True)
    results = {
        mode: {key: statistics.median(values) for key, values in by_key.items()}
        for mode, by_key in samples.items()
    }
    keys = list(results["batched"])
    rows = [
        [
            key,
            results["unbatched"][key],
            results["batched"][key],
            common.ratio(results["batched"][key], results["unbatched"][key]),
        ]
        for key in keys
    ]
    title = (
        f"SQLite frame writes (paced: {convs} conversations x 20 frames/s for {seconds:g} s; "
        f"burst: {burst:,} frames; medians of {rounds} rounds)"
    )
    print()
    print(common.table(title, ["measure", "unbatched", "batched", "batched / unbatched"], rows))
    data = {"benchmark": NAME, "machine": machine, "python": sys.version, "results": results}
    print(f"\nwrote {common.write_results(NAME, data, args.out)}")


if __name__ == "__main__":
    main()
