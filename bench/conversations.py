"""Many conversations: C concurrent conversations, one client each, 20 tokens/s per run.

For each C, webchat and the baseline (bare Starlette sending the captured frames of one
webchat run on the offline engine's schedule, one task per conversation) each run
``--rounds`` rounds after ``--warmup`` discarded ones, alternating. A round starts one run in
every conversation (C ``POST`` requests, 50 at a time) and ends when every client has its
``run.finished``.

Reported per C: publish->client latency p50/p99 over every frame of every client, and
"steady" p50/p99 over the frames published after the last ``POST`` returned (streaming alone,
without the load of starting runs); medians of the per-round values (see ``bench._wire``).
Server CPU (% of one core over the rounds; whole process and event-loop thread) and per
delivered frame, server RSS (idle with the clients connected, and peak during the rounds),
client CPU, and webchat's ratio to the baseline. A target whose clients cannot join, or whose
runs do not end or fail, is reported as FAILED with the server's last errors.
``--before-src <checkout>/src`` adds another webchat ("before") to the alternating rounds;
``--gc-log`` reports webchat's full garbage-collection pauses (``bench/gclog``).

    python -m bench.conversations [--transport memory|redis|both] [--convs 10,100,500] [--quick]
    python -m bench.conversations --profile     # cProfile of webchat at C=500
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

from bench import common
from bench.clients import ClientPool, worker_count
from bench.common import MiB, ServerProcess, Workspace, median, percentile, ratio

NAME = "conversations"
RATE = 20.0
PROFILE_PATH = common.RESULTS_DIR / "conversations-webchat.prof"


@dataclass
class Target:
    """One server under test, its clients, and what its measured rounds added up to."""

    name: str  # "webchat", "before" (webchat from --before-src) or "baseline"
    server: ServerProcess
    conv_ids: list[str]
    pool: ClientPool | None = None
    per_round: list[dict[str, Any]] = field(default_factory=list)
    cpu: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(
            ("server", "server_loop", "client", "driver", "redis", "wall"), 0.0
        )
    )
    peak: dict[str, int] = field(default_factory=lambda: {"server": 0, "redis": 0})
    rss_idle: int = 0
    connect_seconds: float = 0.0
    error: str | None = None  # why its rounds stopped (runs that did not end, or failed)

    @property
    def is_webchat(self) -> bool:
        return self.name != "baseline"

    @property
    def urls(self) -> list[str]:
        base = self.server.ws_url
        if self.is_webchat:
            return [f"{base}/ws?conv_id={c}&profile=paced" for c in self.conv_ids]
        return [f"{base}/ws?conv={c}" for c in self.conv_ids]


def server_errors(server: ServerProcess) -> str:
    """The distinct warnings, errors and exceptions at the end of a server's log, shortened."""
    seen: list[str] = []
    for line in server.log_tail(400).splitlines():
        exception = re.match(r"^[\w.]+(Error|Exception): .*", line)
        if exception or " WARNING " in line or " ERROR " in line:
            message = line if exception else line.split(": ", 1)[-1]
            # Group the repeats of one message: ids and numbers become placeholders.
            message = re.sub(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", "<id>", message)
            message = re.sub(r"\d+", "N", message[:160])
            if message not in seen:
                seen.append(message)
    return " | ".join(seen[-3:]) or "(nothing logged)"


async def one_round(
    target: Target, http: Any, extra_pids: dict[str, int], keep: bool, timeout: float
) -> None:
    assert target.pool is not None
    server = target.server
    gate = asyncio.Semaphore(50)

    async def trigger(conv_id: str) -> None:
        async with gate:
            if target.is_webchat:
                await common.start_run(http, server, "paced", conv_id)
            else:
                response = await http.post(
                    f"{server.url}/stream", params={"conv": conv_id, "rate": RATE}
                )
                response.raise_for_status()

    await target.pool.arm()
    pids = {"server": server.pid, "driver": os.getpid(), **extra_pids}
    meter = common.CpuMeter(pids)
    rss_pids = {"server": server.pid, **extra_pids}
    with common.RssSampler(rss_pids) as sampler:
        meter.start()
        t0 = time.perf_counter()
        posted = await asyncio.gather(
            *(trigger(c) for c in target.conv_ids), return_exceptions=True
        )
        post_seconds = time.perf_counter() - t0
        posted_ns = time.time_ns()
        result = await target.pool.collect(timeout=timeout)
        meter.stop()
    post_errors = [p for p in posted if isinstance(p, BaseException)]
    if post_errors or not result.ok:
        target.error = (
            f"{len(post_errors)} POST failed, {result.unfinished} runs did not end within "
            f"{timeout:.0f}s, {result.failed_runs} runs failed"
            + (f" (first POST error: {post_errors[0]!r})" if post_errors else "")
        )
        if target.is_webchat:
            target.error += f"; server log: {server_errors(server)}"
        print(f"  {target.name} C={len(target.conv_ids)}: {target.error}", flush=True)
        return
    if not keep:
        return
    target.cpu["wall"] += meter.wall
    target.cpu["client"] += result.cpu_seconds
    for name, used in meter.used.items():
        target.cpu[name] += used
    for name, value in sampler.peak.items():
        target.peak[name] = max(target.peak[name], value)
    # Frames published once every run had been started: streaming alone, no run start-up.
    steady = [
        latency
        for latency, published in zip(result.latencies_ms, result.published_ns, strict=True)
        if published >= posted_ns
    ]
    target.per_round.append(
        {
            "frames": result.frames,
            "seconds": meter.wall,
            "frames_per_s": result.frames / meter.wall,
            "p50_ms": percentile(result.latencies_ms, 50),
            "p99_ms": percentile(result.latencies_ms, 99),
            "steady_frames": len(steady),
            "steady_p50_ms": percentile(steady, 50),
            "steady_p99_ms": percentile(steady, 99),
            "max_ms": max(result.latencies_ms, default=float("nan")),
            "post_seconds": post_seconds,
            "unfinished": result.unfinished,
            "close_codes": result.close_codes,
        }
    )


async def measure(
    targets: list[Target],
    *,
    convs: int,
    rounds: int,
    warmup: int,
    procs: int,
    extra_pids: dict[str, int],
    timeout: float,
) -> list[dict[str, Any]]:
    """Rounds alternate between the targets, so all see the same background load."""
    limits = common.httpx.Limits(max_connections=50, max_keepalive_connections=50)
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(common.http_client(limits=limits))
        for target in targets:
            target.pool = await stack.enter_async_context(ClientPool(procs))
            try:
                connected = await target.pool.connect(target.urls)
            except RuntimeError as exc:
                target.error = f"joining failed: {exc}"
                if target.is_webchat:
                    target.error += f"; server log: {server_errors(target.server)}"
                print(f"  {target.name} C={convs}: {target.error}", flush=True)
                continue
            target.connect_seconds = connected["seconds"]
            await asyncio.sleep(0.5)  # let the server settle after the handshakes
            target.rss_idle = common.rss_bytes(target.server.pid)
        for index in range(warmup + rounds):
            for target in targets:
                if target.error is None:
                    await one_round(target, http, extra_pids, index >= warmup, timeout)
    rows = []
    for target in targets:
        per_round, cpu = target.per_round, target.cpu
        if target.error is not None:
            per_round = []  # a failed target's numbers would mislead; report the failure
        summary: dict[str, Any] = {
            key: median([r[key] for r in per_round])
            for key in (
                "frames_per_s",
                "p50_ms",
                "p99_ms",
                "steady_p50_ms",
                "steady_p99_ms",
                "max_ms",
                "seconds",
                "post_seconds",
            )
        }
        for name in ("server", "server_loop", "client", "driver", "redis"):
            summary[f"{name}_cpu_pct"] = (
                100 * cpu[name] / cpu["wall"] if cpu["wall"] and per_round else float("nan")
            )
        frames = sum(r["frames"] for r in per_round)
        summary.update(
            target=target.name,
            error=target.error,
            convs=convs,
            client_procs=procs,
            server_cpu_us_per_frame=1e6 * cpu["server"] / frames if frames else float("nan"),
            connect_seconds=target.connect_seconds,
            rss_idle_mib=target.rss_idle / MiB,
            rss_peak_mib=target.peak["server"] / MiB,
            redis_rss_peak_mib=target.peak["redis"] / MiB,
            unfinished=sum(r["unfinished"] for r in per_round),
            rounds=per_round,
        )
        rows.append(summary)
    return rows


async def run_transport(ws: Workspace, transport: str, args: Any) -> list[dict[str, Any]]:
    profiles = ws.profiles(paced_rate=RATE, paced_tokens=args.tokens)
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(common.maybe_redis(ws, transport))
        extra = {"redis": redis.pid} if redis else {}
        redis_url = redis.url if redis else None
        webchat = stack.enter_context(
            common.webchat_server(
                ws,
                profiles,
                transport=transport,
                redis_url=redis_url,
                cprofile_to=PROFILE_PATH if args.profile else None,
                gc_log=args.gc_log,
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
                    gc_log=args.gc_log,
                )
            )
        baseline = stack.enter_context(common.baseline_server(ws))
        frames = await common.capture_run(webchat, "paced", "convs-capture")
        await common.load_baseline(baseline, frames)
        for convs in args.convs:
            tag = f"convs-{transport}-{convs}-{time.monotonic_ns()}"
            conv_ids = [f"{tag}-{i}" for i in range(convs)]
            targets = [Target("webchat", webchat, conv_ids)]
            if before is not None:
                targets.append(Target("before", before, conv_ids))
            if not args.profile:
                targets.append(Target("baseline", baseline, conv_ids))
            logged = {t.name: len(common.gc_pauses(t.server)) for t in targets}
            measured = await measure(
                targets,
                convs=convs,
                rounds=args.rounds,
                warmup=args.warmup,
                procs=worker_count(convs, args.client_procs),
                extra_pids=extra,
                timeout=20 + 3 * args.tokens / RATE,
            )
            for target, row in zip(targets, measured, strict=True):
                row["transport"] = transport
                row["frames_per_run"] = len(frames)
                if args.gc_log and target.is_webchat:
                    pauses = common.gc_pauses(target.server)[logged[target.name] :]
                    row["gc_gen2"] = {
                        "count": len(pauses),
                        "max_ms": max(pauses, default=0.0),
                        "total_ms": sum(pauses),
                    }
                rows.append(row)
                print(
                    f"  {transport:6} {row['target']:8} C={convs:<4} p50 {row['p50_ms']:.2f} ms  "
                    f"p99 {row['p99_ms']:.2f} ms  server CPU {row['server_cpu_pct']:.0f}% "
                    f"({row['server_cpu_us_per_frame']:.0f} us/frame)  "
                    f"RSS {row['rss_peak_mib']:.0f} MiB  client CPU "
                    f"{row['client_cpu_pct']:.0f}%",
                    flush=True,
                )
    return rows


def add_ratios(rows: list[dict[str, Any]]) -> None:
    base = {(r["transport"], r["convs"]): r for r in rows if r["target"] == "baseline"}
    for row in rows:
        ref = base.get((row["transport"], row["convs"]))
        if row["target"] == "baseline" or ref is None:
            continue
        row["vs_baseline"] = {
            key: ratio(row[key], ref[key])
            for key in (
                "p50_ms",
                "p99_ms",
                "steady_p50_ms",
                "steady_p99_ms",
                "server_cpu_pct",
                "server_cpu_us_per_frame",
                "rss_peak_mib",
            )
        }


def render(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    headers = [
        "transport", "server", "C", "frames/s", "p50 ms", "x base", "p99 ms", "x base",
        "steady p50", "p99", "x base p99",
        "srv CPU%", "x base", "loop CPU%", "srv us/frame", "RSS idle", "RSS peak", "x base",
        "cli CPU%", "redis CPU%",
    ]  # fmt: skip
    nan = float("nan")
    body = []
    for row in rows:
        vs = row.get("vs_baseline", {})
        body.append(
            [
                row["transport"],
                row["target"],
                row["convs"],
                row["frames_per_s"],
                row["p50_ms"],
                vs.get("p50_ms", nan),
                row["p99_ms"],
                vs.get("p99_ms", nan),
                row["steady_p50_ms"],
                row["steady_p99_ms"],
                vs.get("steady_p99_ms", nan),
                row["server_cpu_pct"],
                vs.get("server_cpu_pct", nan),
                row["server_loop_cpu_pct"],
                row["server_cpu_us_per_frame"],
                row["rss_idle_mib"],
                row["rss_peak_mib"],
                vs.get("rss_peak_mib", nan),
                row["client_cpu_pct"],
                row["redis_cpu_pct"] if row["transport"] == "redis" else nan,
            ]
        )
    title = (
        f"many conversations: C conversations, one client each, {RATE:g} tokens/s per run "
        f"(RSS in MiB)\n{common.machine_line(machine)}"
    )
    text = common.table(title, headers, body)
    for row in rows:
        if "gc_gen2" in row:
            gc = row["gc_gen2"]
            text += (
                f"\n{row['transport']} {row['target']} C={row['convs']}: {gc['count']} full GC "
                f"pauses, longest {gc['max_ms']:.0f} ms, {gc['total_ms']:.0f} ms in all"
            )
    for row in rows:
        if row.get("error"):
            text += f"\nFAILED {row['transport']} {row['target']} C={row['convs']}: {row['error']}"
    return text


def main() -> None:
    parser = common.base_parser(__doc__ or NAME)
    parser.add_argument("--convs", default=None, help="comma-separated C (default 10,100,500)")
    parser.add_argument("--rounds", type=int, default=None, help="measured rounds per C")
    parser.add_argument("--warmup", type=int, default=1, help="discarded rounds per C")
    parser.add_argument("--tokens", type=int, default=40, help="answer tokens per run")
    parser.add_argument("--client-procs", type=int, default=None, help="client processes")
    parser.add_argument(
        "--profile", action="store_true", help="run webchat under cProfile (C=500, no baseline)"
    )
    parser.add_argument(
        "--gc-log",
        action="store_true",
        help="log webchat's full garbage collections and report their pauses",
    )
    parser.add_argument(
        "--before-src",
        default=None,
        help="also measure the webchat of this src directory (another checkout), as 'before'",
    )
    args = parser.parse_args()
    default_convs = "10,50" if args.quick else ("500" if args.profile else "10,100,500")
    args.convs = [int(n) for n in (args.convs or default_convs).split(",")]
    args.rounds = args.rounds or (1 if args.quick else 4)
    if args.quick:
        args.tokens = min(args.tokens, 20)
    if args.profile:
        PROFILE_PATH.parent.mkdir(parents=True, exist_ok=True)
    common.check_wire_constants()
    machine = common.machine_info()
    print(common.machine_line(machine), flush=True)
    rows: list[dict[str, Any]] = []
    with Workspace.create() as ws:
        for transport in common.transports_of(args.transport):
            rows += asyncio.run(run_transport(ws, transport, args))
    add_ratios(rows)
    print()
    print(render(rows, machine))
    data = {
        "benchmark": NAME,
        "machine": machine,
        "args": {
            "before_src": args.before_src,
            "convs": args.convs,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "tokens": args.tokens,
            "rate": RATE,
            "gc_log": args.gc_log,
        },
        "results": rows,
    }
    name = f"{NAME}-profile" if args.profile else NAME
    print(f"\nwrote {common.write_results(name, data, args.out)}")
    if args.profile:
        from bench.fanout import print_profile

        print_profile(PROFILE_PATH)
        print(f"profile: {PROFILE_PATH}")


if __name__ == "__main__":
    main()
