"""First-token overhead: the engine's first token -> the client's first ``llm.delta``.

Each trial joins a conversation the way a browser does (new WebSocket, wait for ``ws.hello``),
then ``POST /chat/tiny`` (offline engine, full speed, 5 tokens) and waits for the first
``llm.delta``. Trials cycle over ``CONVERSATIONS`` conversations, each created by one of the
warm-up trials: a trial measures a run in an existing conversation (joined with a new
WebSocket), and hundreds of trials do not pile up hundreds of live conversations (each one
holds a Redis connection in ``XREAD`` with the Redis transport). Three figures per trial:

- ``token->client``: arrival of the first ``llm.delta`` minus the publish time of the engine's
  first token (the frame's seq, +-0.5 ms; see ``bench._wire``): what webchat adds after the
  engine produced the token (transport, coordinator, frame, pool, WebSocket send);
- ``post->token``: that publish time minus the moment the client sent the ``POST``
  (+-0.5 ms): request handling and run start-up before the engine's first token;
- ``post->client``: first ``llm.delta`` arrival minus the ``POST`` (exact, one clock): what
  a user waits for the first token with an engine that answers instantly.

Baseline: the bare Starlette app, where the ``POST`` makes the server send one pre-rendered
``llm.delta`` frame (stamped like webchat's) to the conversation's client. Trials alternate
between webchat and the baseline; ``--warmup`` trials of each are discarded.

    python -m bench.first_token [--transport memory|redis|both] [--trials 200] [--quick]
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench import _wire, common
from bench.common import ServerProcess, Workspace, percentile, ratio

NAME = "first_token"
CONVERSATIONS = 10


async def trial(server: ServerProcess, target: str, conv_id: str, http: Any) -> dict[str, float]:
    from websockets.asyncio.client import connect

    if target == "webchat":
        url = f"{server.ws_url}/ws?conv_id={conv_id}&profile=tiny"
    else:
        url = f"{server.ws_url}/ws?conv={conv_id}"
    async with connect(url, proxy=None, max_size=None, ping_interval=None) as ws:
        await asyncio.wait_for(ws.recv(), 30)  # ws.hello
        await asyncio.sleep(0.005)  # the join settles, as a browser's user takes a moment
        arrivals: list[tuple[int, str]] = []
        first_delta = asyncio.Event()
        finished = asyncio.Event()

        async def read() -> None:
            async for message in ws:
                arrivals.append((time.time_ns(), str(message)))
                kind = _wire.frame_type(str(message))
                if kind == "llm.delta":
                    first_delta.set()
                elif kind in ("run.finished", "run.failed", "run.cancelled"):
                    finished.set()

        reader = asyncio.create_task(read())
        try:
            for _ in range(100):  # a 409 means the previous run has not let go yet: retry
                t_post = time.time_ns()
                if target == "webchat":
                    response = await http.post(
                        f"{server.url}/chat/tiny",
                        json={"prompt": common.PROMPT, "conv_id": conv_id},
                    )
                else:
                    response = await http.post(f"{server.url}/first", params={"conv": conv_id})
                if response.status_code != 409:
                    break
                await asyncio.sleep(0.01)
            response.raise_for_status()
            try:
                async with asyncio.timeout(30):
                    await first_delta.wait()
                    if target == "webchat":  # let the run end before the next trial
                        await finished.wait()
            except TimeoutError:
                seen = [_wire.frame_type(m) for _, m in arrivals]
                raise RuntimeError(
                    f"{target} {conv_id}: no end of run within 30 s after POST "
                    f"{response.status_code} {response.text[:200]}; frames seen: {seen}"
                ) from None
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
    t_arrival, text = next(
        (t, m) for t, m in arrivals if t >= t_post and _wire.frame_type(m) == "llm.delta"
    )
    seq = _wire.frame_seq(text)
    assert seq is not None
    published = _wire.publish_ns(seq)
    return {
        "token_to_client_ms": (t_arrival - published) / 1e6,
        "post_to_token_ms": (published - t_post) / 1e6,
        "post_to_client_ms": (t_arrival - t_post) / 1e6,
    }


KEYS = ("token_to_client_ms", "post_to_token_ms", "post_to_client_ms")


async def run_transport(ws: Workspace, transport: str, args: Any) -> list[dict[str, Any]]:
    profiles = ws.profiles()
    samples: dict[str, list[dict[str, float]]] = {"webchat": [], "baseline": []}
    with (
        common.maybe_redis(ws, transport) as redis,
        common.webchat_server(
            ws, profiles, transport=transport, redis_url=redis.url if redis else None
        ) as webchat,
        common.baseline_server(ws) as baseline,
    ):
        frames = await common.capture_run(webchat, "tiny", "first-capture")
        await common.load_baseline(baseline, frames)
        tag = f"first-{transport}-{time.monotonic_ns()}"
        async with common.http_client() as http:
            for index in range(args.warmup + args.trials):
                for target, server in (("webchat", webchat), ("baseline", baseline)):
                    conv_id = f"{tag}-{index % CONVERSATIONS}"
                    result = await trial(server, target, conv_id, http)
                    if index >= args.warmup:
                        samples[target].append(result)
    rows = []
    for target, results in samples.items():
        row: dict[str, Any] = {"transport": transport, "target": target, "trials": len(results)}
        for key in KEYS:
            values = [r[key] for r in results]
            row[f"{key}_p50"] = percentile(values, 50)
            row[f"{key}_p99"] = percentile(values, 99)
        rows.append(row)
    base = rows[1]
    rows[0]["vs_baseline"] = {
        f"{key}_{q}": ratio(rows[0][f"{key}_{q}"], base[f"{key}_{q}"])
        for key in KEYS
        for q in ("p50", "p99")
    }
    return rows


def render(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    headers = [
        "transport", "server", "trials",
        "token->client p50", "p99", "x base p50",
        "post->token p50", "p99",
        "post->client p50", "p99", "x base p50", "x base p99",
    ]  # fmt: skip
    nan = float("nan")
    body = []
    for row in rows:
        vs = row.get("vs_baseline", {})
        body.append(
            [
                row["transport"],
                row["target"],
                row["trials"],
                row["token_to_client_ms_p50"],
                row["token_to_client_ms_p99"],
                vs.get("token_to_client_ms_p50", nan),
                row["post_to_token_ms_p50"],
                row["post_to_token_ms_p99"],
                row["post_to_client_ms_p50"],
                row["post_to_client_ms_p99"],
                vs.get("post_to_client_ms_p50", nan),
                vs.get("post_to_client_ms_p99", nan),
            ]
        )
    title = f"first-token overhead (ms)\n{common.machine_line(machine)}"
    return common.table(title, headers, body)


def main() -> None:
    parser = common.base_parser(__doc__ or NAME)
    parser.add_argument("--trials", type=int, default=None, help="measured trials (200)")
    parser.add_argument(
        "--warmup", type=int, default=CONVERSATIONS, help="discarded trials (>= 10)"
    )
    args = parser.parse_args()
    args.trials = args.trials or (20 if args.quick else 200)
    args.warmup = max(args.warmup, CONVERSATIONS)  # the first run of each conversation
    common.check_wire_constants()
    machine = common.machine_info()
    print(common.machine_line(machine), flush=True)
    rows: list[dict[str, Any]] = []
    with Workspace.create() as ws:
        for transport in common.transports_of(args.transport):
            rows += asyncio.run(run_transport(ws, transport, args))
    print()
    print(render(rows, machine))
    data = {
        "benchmark": NAME,
        "machine": machine,
        "args": {"trials": args.trials, "warmup": args.warmup},
        "results": rows,
    }
    print(f"\nwrote {common.write_results(NAME, data, args.out)}")


if __name__ == "__main__":
    main()
