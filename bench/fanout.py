"""Fan-out: one conversation, N WebSocket clients, the offline engine at full speed.

For each N, webchat (``python -m webchat serve``, its own process) and the baseline (bare
Starlette broadcasting the same captured frames, its own process) each run ``--rounds``
rounds after ``--warmup`` discarded ones. A round is one run: ``POST`` (webchat:
``/chat/fast``; baseline: ``/broadcast``), then every client reads until ``run.finished``.

Reported per N (medians over rounds; 10 rounds by default, 40 for N < 10): frames/s
delivered (all clients' frames / time from the ``POST`` to the last client's
``run.finished``), publish->client latency p50/p99 (see ``bench._wire``), CPU of the server
(whole process, and its event-loop thread alone), of the clients and of Redis (% of one core
over the rounds), server CPU per delivered frame, and webchat's ratio to the baseline.
``--before-src <checkout>/src`` adds another webchat ("before") to the alternating rounds.

    python -m bench.fanout [--transport memory|redis|both] [--clients 1,10,100] [--quick]
    python -m bench.fanout --profile            # cProfile of webchat at N=100
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pstats
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import common
from bench.clients import ClientPool, worker_count
from bench.common import ServerProcess, Workspace, median, percentile, ratio

NAME = "fanout"


@dataclass
class Target:
    """One server under test, its clients, and what its measured rounds added up to."""

    name: str
    server: ServerProcess
    conv_id: str
    pool: ClientPool | None = None
    per_round: list[dict[str, Any]] = field(default_factory=list)
    # /proc counts CPU in 10 ms ticks: CPU is summed over every measured round, not per round.
    cpu: dict[str, float] = field(default_factory=lambda: dict.fromkeys(_CPU_KEYS, 0.0))

    @property
    def urls(self) -> list[str]:
        if self.name != "baseline":
            return [f"{self.server.ws_url}/ws?conv_id={self.conv_id}&profile=fast"]
        return [f"{self.server.ws_url}/ws?conv={self.conv_id}"]


_CPU_KEYS = ("server", "server_loop", "client", "driver", "redis", "wall")


async def one_round(target: Target, http: Any, extra_pids: dict[str, int], keep: bool) -> None:
    assert target.pool is not None
    server = target.server
    await target.pool.arm()
    meter = common.CpuMeter({"server": server.pid, "driver": os.getpid(), **extra_pids})
    meter.start()
    t0 = time.time_ns()
    if target.name != "baseline":
        await common.start_run(http, server, "fast", target.conv_id)
    else:
        response = await http.post(f"{server.url}/broadcast", params={"conv": target.conv_id})
        response.raise_for_status()
    result = await target.pool.collect(timeout=120)
    meter.stop()
    if not keep:
        return
    target.cpu["wall"] += meter.wall
    target.cpu["client"] += result.cpu_seconds
    for name, used in meter.used.items():
        target.cpu[name] += used
    window = (result.last_end_ns - t0) / 1e9 if result.last_end_ns else meter.wall
    target.per_round.append(
        {
            "frames": result.frames,
            "seconds": window,
            "frames_per_s": result.frames / window if window > 0 else 0.0,
            "p50_ms": percentile(result.latencies_ms, 50),
            "p99_ms": percentile(result.latencies_ms, 99),
            "max_ms": max(result.latencies_ms, default=float("nan")),
            "server_cpu_s": meter.used.get("server", 0.0),
            "unfinished": result.unfinished,
            "close_codes": result.close_codes,
        }
    )


async def measure(
    targets: list[Target],
    *,
    clients: int,
    rounds: int,
    warmup: int,
    procs: int,
    compression: str | None,
    extra_pids: dict[str, int],
) -> list[dict[str, Any]]:
    """Rounds alternate between the targets, so both see the same background load."""
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(common.http_client())
        for target in targets:
            target.pool = await stack.enter_async_context(ClientPool(procs, compression))
            await target.pool.connect(target.urls * clients)
        for index in range(warmup + rounds):
            for target in targets:
                await one_round(target, http, extra_pids, keep=index >= warmup)
    rows = []
    for target in targets:
        per_round, cpu = target.per_round, target.cpu
        summary: dict[str, Any] = {key: median([r[key] for r in per_round]) for key in _MEDIAN_KEYS}
        for name in ("server", "server_loop", "client", "driver", "redis"):
            summary[f"{name}_cpu_pct"] = 100 * cpu[name] / cpu["wall"] if cpu["wall"] else 0.0
        frames = sum(r["frames"] for r in per_round)
        summary.update(
            target=target.name,
            clients=clients,
            client_procs=procs,
            server_cpu_us_per_frame=1e6 * cpu["server"] / frames if frames else float("nan"),
            frames_per_client=per_round[0]["frames"] / clients if per_round else 0,
            unfinished=sum(r["unfinished"] for r in per_round),
            rounds=per_round,
        )
        rows.append(summary)
    return rows


_MEDIAN_KEYS = ("frames_per_s", "p50_ms", "p99_ms", "max_ms", "seconds")


async def run_transport(
    ws: Workspace, transport: str, args: Any, tokens: int
) -> tuple[list[dict[str, Any]], Path | None]:
    profiles = ws.profiles(fast_tokens=tokens)
    rows: list[dict[str, Any]] = []
    prof_path = common.RESULTS_DIR / "fanout-webchat.prof" if args.profile else None
    if prof_path is not None:
        prof_path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(common.maybe_redis(ws, transport))
        extra = {"redis": redis.pid} if redis else {}
        redis_url = redis.url if redis else None
        webchat = stack.enter_context(
            common.webchat_server(
                ws, profiles, transport=transport, redis_url=redis_url, cprofile_to=prof_path
            )
        )
        before = None
        if args.before_src:
            before = stack.enter_context(
                common.webchat_server(
                    ws,
                    profiles,
                    transport=transport,
                    redis_url=redis_url,
                    name="webchat-before",
                    src=args.before_src,
                )
            )
        baseline = stack.enter_context(common.baseline_server(ws))
        frames = await common.capture_run(webchat, "fast", "fanout-capture")
        await common.load_baseline(baseline, frames)
        for clients in args.clients:
            conv_id = f"fanout-{transport}-{clients}-{time.monotonic_ns()}"
            targets = [Target("webchat", webchat, conv_id)]
            if before is not None:
                targets.append(Target("before", before, conv_id))
            if not args.profile:
                targets.append(Target("baseline", baseline, conv_id))
            measured = await measure(
                targets,
                clients=clients,
                # small N: more rounds, so CPU and percentiles rest on enough frames
                rounds=args.rounds * max(1, 4 if clients < 10 else 1),
                warmup=args.warmup,
                procs=worker_count(clients, args.client_procs),
                compression=None if args.no_compression else "deflate",
                extra_pids=extra,
            )
            for row in measured:
                row["transport"] = transport
                row["frames_per_run"] = len(frames)
                rows.append(row)
                print(
                    f"  {transport:6} {row['target']:8} N={clients:<4} "
                    f"{row['frames_per_s']:>9,.0f} frames/s  p50 {row['p50_ms']:.2f} ms  "
                    f"p99 {row['p99_ms']:.2f} ms  server CPU {row['server_cpu_pct']:.0f}% "
                    f"({row['server_cpu_us_per_frame']:.1f} us/frame)  "
                    f"client CPU {row['client_cpu_pct']:.0f}%",
                    flush=True,
                )
    return rows, prof_path


def add_ratios(rows: list[dict[str, Any]]) -> None:
    base = {(r["transport"], r["clients"]): r for r in rows if r["target"] == "baseline"}
    for row in rows:
        ref = base.get((row["transport"], row["clients"]))
        if row["target"] == "baseline" or ref is None:
            continue
        row["vs_baseline"] = {
            "frames_per_s": ratio(row["frames_per_s"], ref["frames_per_s"]),
            "p50_ms": ratio(row["p50_ms"], ref["p50_ms"]),
            "p99_ms": ratio(row["p99_ms"], ref["p99_ms"]),
            "server_cpu_pct": ratio(row["server_cpu_pct"], ref["server_cpu_pct"]),
            "server_cpu_us_per_frame": ratio(
                row["server_cpu_us_per_frame"], ref["server_cpu_us_per_frame"]
            ),
        }


def render(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    headers = [
        "transport", "server", "N", "frames/run", "frames/s", "x base",
        "p50 ms", "x base", "p99 ms", "x base", "srv CPU%", "loop CPU%", "srv us/frame", "x base",
        "cli CPU%", "redis CPU%",
    ]  # fmt: skip
    body = []
    for row in rows:
        vs = row.get("vs_baseline", {})
        body.append(
            [
                row["transport"],
                row["target"],
                row["clients"],
                row["frames_per_run"],
                row["frames_per_s"],
                vs.get("frames_per_s", float("nan")),
                row["p50_ms"],
                vs.get("p50_ms", float("nan")),
                row["p99_ms"],
                vs.get("p99_ms", float("nan")),
                row["server_cpu_pct"],
                row["server_loop_cpu_pct"],
                row["server_cpu_us_per_frame"],
                vs.get("server_cpu_us_per_frame", float("nan")),
                row["client_cpu_pct"],
                row["redis_cpu_pct"] if row["transport"] == "redis" else float("nan"),
            ]
        )
    title = "fan-out: one conversation, N clients, engine at full speed"
    title += "\n" + common.machine_line(machine)
    return common.table(title, headers, body)


def print_profile(path: Path, limit: int = 30) -> None:
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(limit)
    stats.sort_stats("cumulative").print_stats(limit)


def main() -> None:
    parser = common.base_parser(__doc__ or NAME)
    parser.add_argument("--clients", default=None, help="comma-separated N (default 1,10,100)")
    parser.add_argument("--rounds", type=int, default=None, help="measured rounds per N")
    parser.add_argument("--warmup", type=int, default=1, help="discarded rounds per N")
    parser.add_argument("--tokens", type=int, default=None, help="answer tokens per run (300)")
    parser.add_argument("--client-procs", type=int, default=None, help="client processes")
    parser.add_argument(
        "--no-compression", action="store_true", help="clients do not offer permessage-deflate"
    )
    parser.add_argument(
        "--profile", action="store_true", help="run webchat under cProfile (N=100, no baseline)"
    )
    parser.add_argument(
        "--before-src",
        default=None,
        help="also measure the webchat of this src directory (another checkout), as 'before'",
    )
    args = parser.parse_args()
    default_clients = "1,10" if args.quick else ("100" if args.profile else "1,10,100")
    args.clients = [int(n) for n in (args.clients or default_clients).split(",")]
    args.rounds = args.rounds or (2 if args.quick else 10)
    tokens = args.tokens or (100 if args.quick else 300)
    common.check_wire_constants()
    machine = common.machine_info()
    print(common.machine_line(machine), flush=True)
    rows: list[dict[str, Any]] = []
    prof_path = None
    with Workspace.create() as ws:
        for transport in common.transports_of(args.transport):
            more, prof_path = asyncio.run(run_transport(ws, transport, args, tokens))
            rows += more
    add_ratios(rows)
    print()
    print(render(rows, machine))
    data = {
        "benchmark": NAME,
        "machine": machine,
        "args": {
            "clients": args.clients,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "tokens": tokens,
            "compression": not args.no_compression,
            "profile": args.profile,
            "before_src": args.before_src,
        },
        "results": rows,
    }
    name = f"{NAME}-profile" if args.profile else NAME
    print(f"\nwrote {common.write_results(name, data, args.out)}")
    if prof_path is not None:
        print_profile(prof_path)
        print(f"profile: {prof_path}")


if __name__ == "__main__":
    main()
