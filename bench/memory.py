"""Memory: server RSS per idle conversation, and after they are evicted.

``--mode join`` (20,000 joins of unknown ids that never chat) shows that joins keep nothing:
a conversation that was only joined goes away with its last client, so RSS after the joins
and their eviction must stay within 10 % of the start (the ``evicted/before`` column).
``--mode run`` (10,000 conversations with a tiny run each) measures what an idle conversation
with history costs until the sweep evicts it.

webchat runs with a small ``--evict-after`` and a SQLite file (not ``:memory:``, so the
store's rows are not counted as conversation memory). After a warm-up, the bench reads the
server's RSS, creates ``--convs`` conversations (default: a WebSocket join, wait for
``ws.hello``, leave; ``--mode run``: join, run a 5-token answer, leave), reads RSS and
``webchat_conversations`` from ``/metrics``, then polls ``/metrics`` (bounded) until eviction
has emptied memory and reads RSS again.

Baseline: the same joins and leaves against the bare Starlette app, which keeps nothing per
connection after it closes: its RSS growth is what connection churn alone costs.

    python -m bench.memory [--convs N] [--mode join|run] [--evict-after 40] [--quick]
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench import _wire, common
from bench.common import MiB, ServerProcess, Workspace, ratio

NAME = "memory"


async def metric(http: Any, server: ServerProcess, name: str) -> float:
    response = await http.get(f"{server.url}/metrics")
    response.raise_for_status()
    for line in response.text.splitlines():
        if line.startswith(f"webchat_{name} "):
            return float(line.split()[1])
    raise RuntimeError(f"no webchat_{name} in /metrics")


async def churn(
    server: ServerProcess, *, target: str, prefix: str, count: int, mode: str, concurrency: int
) -> float:
    """Join (and with mode ``run``: run a tiny answer in) ``count`` conversations; seconds."""
    from websockets.asyncio.client import connect

    gate = asyncio.Semaphore(concurrency)
    started = time.perf_counter()

    async def one(index: int, http: Any) -> None:
        conv_id = f"{prefix}-{index}"
        if target == "webchat":
            url = f"{server.ws_url}/ws?conv_id={conv_id}&profile=tiny"
        else:
            url = f"{server.ws_url}/ws?conv={conv_id}"
        async with gate, connect(url, proxy=None, max_size=None, ping_interval=None) as ws:
            await asyncio.wait_for(ws.recv(), 30)  # ws.hello
            if mode == "run" and target == "webchat":
                await common.start_run(http, server, "tiny", conv_id)
                async with asyncio.timeout(30):
                    while _wire.frame_type(str(await ws.recv())) != "run.finished":
                        pass

    limits = common.httpx.Limits(max_connections=concurrency)
    async with common.http_client(limits=limits) as http:
        await asyncio.gather(*(one(i, http) for i in range(count)))
    return time.perf_counter() - started


async def settle(pid: int, seconds: float = 1.0) -> int:
    await asyncio.sleep(seconds)
    return common.rss_bytes(pid)


async def measure_webchat(ws: Workspace, args: Any) -> dict[str, Any]:
    profiles = ws.profiles()
    db = str(ws.path / "memory.sqlite3")
    with common.webchat_server(ws, profiles, db=db, evict_after=args.evict_after) as server:
        async with common.http_client() as http:
            await churn(
                server, target="webchat", prefix="warm", count=200, mode=args.mode, concurrency=50
            )
            rss_before = await settle(server.pid)
            convs_before = await metric(http, server, "conversations")
            seconds = await churn(
                server,
                target="webchat",
                prefix="idle",
                count=args.convs,
                mode=args.mode,
                concurrency=50,
            )
            rss_full = await settle(server.pid)
            convs_full = await metric(http, server, "conversations")
            peak = common.rss_bytes(server.pid)
            # Eviction: a sweep every max(1, evict_after / 4) s evicts what was idle long enough.
            deadline = time.monotonic() + args.evict_after * 2 + 60
            convs_left = convs_full
            while convs_left > 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                convs_left = await metric(http, server, "conversations")
            waited = args.evict_after * 2 + 60 - (deadline - time.monotonic())
            rss_evicted = await settle(server.pid, 2.0)
            # A second batch shows whether the freed memory is reused (no leak) or not.
            await churn(
                server,
                target="webchat",
                prefix="again",
                count=args.convs,
                mode=args.mode,
                concurrency=50,
            )
            rss_refilled = await settle(server.pid)
            convs_refilled = await metric(http, server, "conversations")
    created = convs_full - convs_before
    return {
        "target": "webchat",
        "mode": args.mode,
        "convs_requested": args.convs,
        "convs_in_memory": convs_full,
        "convs_created": created,
        "create_seconds": seconds,
        "rss_before_mib": rss_before / MiB,
        "rss_full_mib": rss_full / MiB,
        "rss_peak_mib": peak / MiB,
        "rss_evicted_mib": rss_evicted / MiB,
        "per_conv_kib": (rss_full - rss_before) / created / 1024 if created else float("nan"),
        "retained_after_eviction_mib": (rss_evicted - rss_before) / MiB,
        "evicted_over_before": rss_evicted / rss_before,
        "convs_after_eviction": convs_left,
        "rss_refilled_mib": rss_refilled / MiB,
        "convs_refilled": convs_refilled,
        "eviction_wait_seconds": waited,
        "evict_after": args.evict_after,
    }


class _NullConnection:
    async def send_text(self, data: str, /) -> None:
        return None

    async def close(self, code: int = 1000, reason: str = "", /) -> None:
        return None


async def measure_core(count: int) -> dict[str, Any]:
    """The same joins and leaves in this process, straight on the ChatService (no sockets):
    what the conversation core itself keeps, apart from the HTTP/WebSocket server's churn."""
    import gc
    import os

    from webchat.server import create_app
    from webchat.settings import ServerSettings

    app = create_app(ServerSettings(db=":memory:"))
    pid = os.getpid()
    readings = []
    async with app.router.lifespan_context(app):
        service = app.state.service
        for batch, size in enumerate((200, count, count)):
            for index in range(size):
                conv, client = await service.connect(
                    _NullConnection(), f"core-{batch}-{index}", "default", None
                )
                await service.disconnect(conv, client)
            gc.collect()
            readings.append(common.rss_bytes(pid))
        left = len(service.manager)
    return {
        "target": "core (in process)",
        "joins": count,
        "rss_before_mib": readings[0] / MiB,
        "rss_after_mib": readings[1] / MiB,
        "rss_second_batch_mib": readings[2] / MiB,
        "after_over_before": readings[1] / readings[0],
        "convs_left": left,
    }


async def measure_baseline(ws: Workspace, args: Any) -> dict[str, Any]:
    with common.baseline_server(ws) as server:
        await churn(
            server, target="baseline", prefix="warm", count=200, mode="join", concurrency=50
        )
        rss_before = await settle(server.pid)
        seconds = await churn(
            server, target="baseline", prefix="idle", count=args.convs, mode="join", concurrency=50
        )
        rss_after = await settle(server.pid)
    return {
        "target": "baseline",
        "mode": "join",
        "convs_requested": args.convs,
        "create_seconds": seconds,
        "rss_before_mib": rss_before / MiB,
        "rss_full_mib": rss_after / MiB,
        "per_conv_kib": (rss_after - rss_before) / args.convs / 1024,
    }


def render(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    web, base = rows
    headers = [
        "server", "joins", "in memory", "create s", "RSS before", "RSS full",
        "KiB/conv", "x base", "RSS evicted", "evicted/before", "left", "RSS 2nd batch",
    ]  # fmt: skip
    nan = float("nan")
    body = [
        [
            "webchat",
            web["convs_requested"],
            web["convs_in_memory"],
            web["create_seconds"],
            web["rss_before_mib"],
            web["rss_full_mib"],
            web["per_conv_kib"],
            ratio(web["per_conv_kib"], base["per_conv_kib"]),
            web["rss_evicted_mib"],
            web["evicted_over_before"],
            web["convs_after_eviction"],
            web["rss_refilled_mib"],
        ],
        [
            "baseline",
            base["convs_requested"],
            "-",
            base["create_seconds"],
            base["rss_before_mib"],
            base["rss_full_mib"],
            base["per_conv_kib"],
            nan,
            nan,
            nan,
            "-",
            nan,
        ],
    ]
    title = (
        f"memory: idle conversations (mode {web['mode']}; RSS in MiB)\n"
        f"{common.machine_line(machine)}"
    )
    return common.table(title, headers, body)


def main() -> None:
    parser = common.base_parser(__doc__ or NAME, transports=False)
    parser.add_argument("--convs", type=int, default=None, help="conversations (10000)")
    parser.add_argument("--mode", choices=("join", "run"), default="join")
    parser.add_argument(
        "--evict-after",
        type=float,
        default=None,
        help="server --evict-after (40 s; 80 s with --mode run)",
    )
    args = parser.parse_args()
    args.convs = args.convs or (1000 if args.quick else 20_000 if args.mode == "join" else 10_000)
    # Creating them all must take less than --evict-after (runs take ~3x longer than joins).
    args.evict_after = args.evict_after or (
        4.0 if args.quick else 40.0 if args.mode == "join" else 80.0
    )
    common.check_wire_constants()
    machine = common.machine_info()
    print(common.machine_line(machine), flush=True)
    with Workspace.create() as ws:
        webchat = asyncio.run(measure_webchat(ws, args))
        print(
            f"  webchat: {webchat['convs_in_memory']:.0f} conversations, "
            f"{webchat['per_conv_kib']:.1f} KiB each",
            flush=True,
        )
        baseline = asyncio.run(measure_baseline(ws, args))
    rows = [webchat, baseline]
    print()
    print(render(rows, machine))
    core = None
    if args.mode == "join":
        core = asyncio.run(measure_core(args.convs))
        print(
            f"core in process, {core['joins']} joins + leaves: RSS {core['rss_before_mib']:.1f}"
            f" -> {core['rss_after_mib']:.1f} MiB ({core['after_over_before']:.2f}x), second"
            f" batch {core['rss_second_batch_mib']:.1f} MiB, {core['convs_left']} left in memory"
        )
    if args.mode == "run" and webchat["convs_in_memory"] < webchat["convs_requested"]:
        print(
            "warning: some conversations were evicted before RSS was read; "
            "raise --evict-after so creating them all takes less than that"
        )
    data = {
        "benchmark": NAME,
        "machine": machine,
        "args": {"convs": args.convs, "mode": args.mode, "evict_after": args.evict_after},
        "results": rows + ([core] if core else []),
    }
    print(f"\nwrote {common.write_results(NAME, data, args.out)}")


if __name__ == "__main__":
    main()
