"""Exactly-once stress: do clients of two processes receive exactly the stored timeline?

Two real ``webchat serve --transport redis`` processes and one real ``redis-server`` (the
test suite's own cluster harness). Two kinds of trials, run concurrently:

- **join races**: a client joins process B with ``since=0`` while process A starts a run in a
  brand-new conversation (both fired together, with a random jitter of a few milliseconds);
- **cross-process reconnects**: a client follows a run, disconnecting after a random number of
  frames and reconnecting to the *other* process with ``since=<last seq>``, until the run's
  terminal frame.

After each run, what the client received is compared with the conversation's timeline as
*each* process serves it (``GET /api/conversations/{id}/timeline``). Both are compacted or
coalesced differently (a timeline has a finished answer as its ``llm.final``, a client that
fell behind gets deltas folded together), so deltas are not compared frame by frame: a frame
of the timeline that is not a delta and the client never got is **lost**, a seq it got twice is
**duplicated**, and a received frame that is not a delta and not the timeline's frame of that
seq, deltas that do not add up to their stream's text (a gap, a repeat), a transcript that
differs from the timeline's (``tests.support.client_view``) or a timeline that differs between
the processes is **mismatched**. Target: 0, 0 and 0.

    python -m bench.consistency                       # 1,000 join races + 1,000 reconnects
    python -m bench.consistency --joins 200 --reconnects 200 --time-limit 120

The test suite (tests/scaleout/test_consistency.py) runs the same ``run_trials`` on fewer trials.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from tests.support.client_view import assert_deltas_add_up, assert_same_transcript, is_delta
from websockets.asyncio.client import ClientConnection, connect

TERMINAL = frozenset({"run.finished", "run.failed", "run.cancelled"})
READ_TIMEOUT = 20.0


@dataclass
class Tally:
    """What a batch of trials found."""

    trials: int = 0
    frames: int = 0
    lost: int = 0
    duplicated: int = 0
    mismatched: int = 0
    failed: int = 0
    """Trials that could not complete (a request failed or a read timed out)."""
    examples: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.trials += other.trials
        self.frames += other.frames
        self.lost += other.lost
        self.duplicated += other.duplicated
        self.mismatched += other.mismatched
        self.failed += other.failed
        self.examples += other.examples[: max(0, 5 - len(self.examples))]

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.mismatched or self.failed)


def compare(
    connections: list[list[dict[str, Any]]], timelines: dict[str, list[dict[str, Any]]], label: str
) -> Tally:
    """Count what a client's ``connections`` (the frames of each, in order) lost, doubled or
    got wrong against every process's timeline."""
    received = [frame for frames in connections for frame in frames]
    tally = Tally(trials=0, frames=len(received))
    names = list(timelines)
    reference = timelines[names[0]]
    for name in names[1:]:
        if timelines[name] != reference:
            tally.mismatched += 1
            tally.examples.append(f"{label}: timeline of {name} != timeline of {names[0]}")
    by_seq = {int(f["seq"]): f for f in reference}
    counts = Counter(int(f["seq"]) for f in received)
    tally.duplicated = sum(n - 1 for n in counts.values() if n > 1)
    missing = sorted(seq for seq, f in by_seq.items() if seq not in counts and not is_delta(f))
    tally.lost = len(missing)
    wrong = [f for f in received if not is_delta(f) and by_seq.get(int(f["seq"])) != f]
    shown: list[str] = []
    for check in (
        lambda: assert_same_transcript(received, reference),
        lambda: assert_deltas_add_up(*connections),
    ):
        try:
            check()
        except AssertionError as exc:
            shown.append(str(exc).splitlines()[0])
    tally.mismatched += len(wrong) + len(shown)
    if tally.lost or tally.duplicated or wrong or shown:
        doubled = sorted(seq for seq, n in counts.items() if n > 1)[:5]
        tally.examples.append(
            f"{label}: lost {tally.lost} (e.g. {[by_seq[s]['type'] for s in missing[:5]]}), "
            f"duplicated {tally.duplicated} (seqs {doubled}), mismatched {len(wrong)} frames"
            f"{''.join(f'; {problem}' for problem in shown)}"
        )
    return tally


class Follower:
    """One WebSocket client that keeps every frame it received, across reconnects."""

    def __init__(self, conv_id: str) -> None:
        self.conv_id = conv_id
        self.frames: list[dict[str, Any]] = []
        self.connections: list[list[dict[str, Any]]] = []
        """The frames of each connection, in order (``frames`` is all of them)."""
        self.last_seq = 0
        self.ended: set[str] = set()

    async def join(self, ws_base: str, since: int | None) -> ClientConnection:
        query: dict[str, str] = {"conv_id": self.conv_id}
        if since is not None:
            query["since"] = str(since)
        # An unbounded receive queue: a follower that stops reading mid-stream and closes must
        # still see the server's close frame behind the unread ones (no 10 s close timeout).
        ws = await connect(
            f"{ws_base}/ws?{urlencode(query)}", max_size=None, max_queue=None, open_timeout=10
        )
        hello = json.loads(await asyncio.wait_for(ws.recv(), READ_TIMEOUT))["event"]
        if hello["type"] != "ws.hello":
            raise RuntimeError(f"expected ws.hello, got {hello}")
        self.connections.append([])
        return ws

    async def read(
        self, ws: ClientConnection, *, until: str | None = None, limit: int | None = None
    ) -> bool:
        """Read frames until ``until``'s terminal frame (True) or ``limit`` frames (False)."""
        read = 0
        while limit is None or read < limit:
            if until is not None and until in self.ended:
                return True
            event = json.loads(await asyncio.wait_for(ws.recv(), READ_TIMEOUT))["event"]
            if not isinstance(event.get("seq"), int):
                continue  # ws.pong, or an error frame without a seq
            self.frames.append(event)
            self.connections[-1].append(event)
            self.last_seq = event["seq"]
            read += 1
            if event["type"] in TERMINAL and event.get("inference_id"):
                self.ended.add(event["inference_id"])
        return until is not None and until in self.ended


async def _start_run(http: httpx.AsyncClient, conv_id: str, profile: str) -> str:
    response = await http.post(f"/chat/{profile}", json={"prompt": "hello", "conv_id": conv_id})
    if response.status_code != 200:
        raise RuntimeError(f"POST /chat answered {response.status_code}: {response.text}")
    inference_id: str = response.json()["inference_id"]
    return inference_id


async def _timelines(https: dict[str, httpx.AsyncClient], conv_id: str) -> dict[str, list[Any]]:
    timelines = {}
    for name, http in https.items():
        response = await http.get(f"/api/conversations/{conv_id}/timeline")
        response.raise_for_status()
        timelines[name] = response.json()["frames"]
    return timelines


async def _settled_timelines(
    https: dict[str, httpx.AsyncClient], conv_id: str, inference_id: str
) -> dict[str, list[Any]]:
    """The timelines once each process has the run's terminal frame (stores write behind)."""
    async with asyncio.timeout(READ_TIMEOUT):
        while True:
            timelines = await _timelines(https, conv_id)
            if all(
                any(f["type"] in TERMINAL and f.get("inference_id") == inference_id for f in t)
                for t in timelines.values()
            ):
                return timelines
            await asyncio.sleep(0.02)


async def join_race(
    ws_bases: dict[str, str], https: dict[str, httpx.AsyncClient], rng: random.Random
) -> Tally:
    """A joins-at-``since=0`` on B racing a run start on A, in a new conversation."""
    conv_id = f"race-{uuid.uuid4().hex[:12]}"
    follower = Follower(conv_id)
    names = list(ws_bases)
    runner, joiner = names[0], names[1]
    jitter = rng.uniform(0, 0.004)

    async def start() -> str:
        if rng.random() < 0.5:
            await asyncio.sleep(jitter)
        return await _start_run(https[runner], conv_id, "default")

    async def join() -> ClientConnection:
        if rng.random() < 0.5:
            await asyncio.sleep(jitter)
        return await follower.join(ws_bases[joiner], since=0)

    inference_id, ws = await asyncio.gather(start(), join())
    async with ws:
        await follower.read(ws, until=inference_id)
    timelines = await _settled_timelines(https, conv_id, inference_id)
    tally = compare(follower.connections, timelines, f"join race {conv_id}")
    tally.trials = 1
    return tally


async def reconnect_run(
    ws_bases: dict[str, str],
    https: dict[str, httpx.AsyncClient],
    rng: random.Random,
    reconnects: int,
) -> Tally:
    """Follow one run, reconnecting to the other process ``reconnects`` times on the way."""
    conv_id = f"resume-{uuid.uuid4().hex[:12]}"
    follower = Follower(conv_id)
    names = list(ws_bases)
    current = rng.randrange(2)
    ws = await follower.join(ws_bases[names[current]], since=0)
    done_reconnects = 0
    try:
        inference_id = await _start_run(https[names[rng.randrange(2)]], conv_id, "stress")
        while True:
            ended = await follower.read(
                ws,
                until=inference_id,
                limit=None if done_reconnects >= reconnects else rng.randint(1, 12),
            )
            if ended:
                break
            await ws.close()
            current = 1 - current
            ws = await follower.join(ws_bases[names[current]], since=follower.last_seq)
            done_reconnects += 1
    finally:
        await ws.close()
    timelines = await _settled_timelines(https, conv_id, inference_id)
    tally = compare(follower.connections, timelines, f"reconnects {conv_id}")
    tally.trials = done_reconnects
    return tally


async def run_trials(
    servers: dict[str, str],
    *,
    joins: int,
    reconnects: int,
    concurrency: int = 8,
    reconnects_per_run: int = 10,
    time_limit: float = 600.0,
    seed: int = 1,
) -> tuple[Tally, Tally]:
    """Run the trials against ``servers`` (name -> ``http://host:port``, exactly two).

    The servers need profiles ``default`` (a quick run) and ``stress`` (a run of a few hundred
    frames), as the scale-out cluster's profiles file has. Returns (join races, reconnects).
    """
    rng = random.Random(seed)
    ws_bases = {name: url.replace("http", "ws", 1) for name, url in servers.items()}
    race_tally, resume_tally = Tally(), Tally()
    deadline = time.monotonic() + time_limit
    jobs: list[tuple[str, int]] = [("join", 1)] * joins
    left = reconnects
    while left > 0:
        jobs.append(("reconnect", min(reconnects_per_run, left)))
        left -= reconnects_per_run
    rng.shuffle(jobs)
    queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    async with contextlib.AsyncExitStack() as stack:
        https = {
            name: await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=30))
            for name, url in servers.items()
        }

        async def worker(index: int) -> None:
            worker_rng = random.Random(seed * 1000 + index)
            while not queue.empty() and time.monotonic() < deadline:
                kind, count = queue.get_nowait()
                try:
                    if kind == "join":
                        race_tally.add(await join_race(ws_bases, https, worker_rng))
                    else:
                        tally = await reconnect_run(ws_bases, https, worker_rng, count)
                        resume_tally.add(tally)
                        if tally.trials < count:  # the run ended first (a backlog is compacted)
                            queue.put_nowait(("reconnect", count - tally.trials))
                except Exception as exc:
                    target = race_tally if kind == "join" else resume_tally
                    target.failed += 1
                    if len(target.examples) < 5:
                        target.examples.append(f"{kind} trial failed: {exc!r}")

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return race_tally, resume_tally


def report(race: Tally, resume: Tally, seconds: float) -> str:
    lines = [
        f"{'trials':<28}{'count':>8}{'frames':>10}{'lost':>7}{'duplicated':>12}"
        f"{'mismatched':>12}{'failed':>8}",
    ]
    for name, tally in (("join races (B, since=0)", race), ("cross-process reconnects", resume)):
        lines.append(
            f"{name:<28}{tally.trials:>8}{tally.frames:>10}{tally.lost:>7}"
            f"{tally.duplicated:>12}{tally.mismatched:>12}{tally.failed:>8}"
        )
    lines.append(f"elapsed {seconds:.1f} s")
    for tally in (race, resume):
        lines += [f"  {example}" for example in tally.examples]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--joins", type=int, default=1000)
    parser.add_argument("--reconnects", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds, at most")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.scaleout.cluster import Cluster

    with tempfile.TemporaryDirectory(prefix="webchat-consistency-") as directory:
        cluster = Cluster(Path(directory))
        try:
            cluster.ensure_up()
            started = time.monotonic()
            race, resume = asyncio.run(
                run_trials(
                    {"a": cluster.a.url, "b": cluster.b.url},
                    joins=args.joins,
                    reconnects=args.reconnects,
                    concurrency=args.concurrency,
                    time_limit=args.time_limit,
                    seed=args.seed,
                )
            )
            print(report(race, resume, time.monotonic() - started))
        finally:
            cluster.stop()
    return 0 if race.clean and resume.clean else 1


if __name__ == "__main__":
    raise SystemExit(main())
