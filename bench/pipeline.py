"""The whole per-token path in one process: engine -> sink -> transport -> frames -> pool.

No sockets and no clients in other processes, so a change to the per-token path shows in
its own figure instead of drowning in the noise of an end-to-end run on two shared cores.
A real ``ChatService`` (SQLite store, in-memory transport, the offline engine at full speed)
streams one answer to N connections whose send completes at once; the figures are the
process CPU time per token and the bytes each connection received per token.

    python -m bench.pipeline [--quick] [--tokens 2000] [--clients 1,100]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common

NAME = "pipeline"

PROFILES = """\
profiles:
  - slug: fast
    display_name: pipeline benchmark
    step_settings: {{api_type: offline, tokens_per_second: 0, answer_tokens: {tokens}}}
"""


class _Counting:
    """A connection whose send completes at once, counting frames and bytes."""

    __slots__ = ("bytes", "frames")

    def __init__(self) -> None:
        self.frames = 0
        self.bytes = 0

    async def send_text(self, data: str, /) -> None:
        self.frames += 1
        self.bytes += len(data.encode())

    async def close(self, code: int = 1000, reason: str = "", /) -> None:
        pass


async def _one_round(directory: Path, tokens: int, clients: int, run: int) -> dict[str, float]:
    from webchat.chat.scheduler import RunRequest
    from webchat.server.app import create_app
    from webchat.settings import ServerSettings

    profiles = directory / f"profiles-{tokens}.yaml"
    profiles.write_text(PROFILES.format(tokens=tokens))
    db = directory / f"p-{run}.sqlite3"
    app = create_app(ServerSettings(db=str(db), profiles=profiles))
    async with app.router.lifespan_context(app):
        service = app.state.service
        conv_id = f"pipeline-{run}"
        conns = [_Counting() for _ in range(clients)]
        conversation = None
        for conn in conns:
            conversation, _ = await service.connect(conn, conv_id, "fast", 0)
        assert conversation is not None
        cpu, wall = time.process_time(), time.perf_counter()
        accepted = await service.submit("fast", RunRequest(prompt="go", conv_id=conv_id))
        await conversation.wait_for_end_frame(accepted.inference_id, timeout=120)
        await conversation.pool.drain(30)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        per_client = conns[0].bytes
    stored = db.stat().st_size
    return {
        "cpu_us_per_token": cpu / tokens * 1e6,
        "wall_us_per_token": wall / tokens * 1e6,
        "bytes_per_token": per_client / tokens,
        "frames_per_token": conns[0].frames / tokens,
        "db_bytes": stored,
    }


def measure(tokens: int, clients: int, rounds: int) -> dict[str, float]:
    import uvloop

    results: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as directory:
        for run in range(rounds + 1):
            result = uvloop.run(_one_round(Path(directory), tokens, clients, run))
            if run:  # the first round warms imports and caches
                results.append(result)
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def main() -> None:
    parser = common.base_parser(__doc__ or NAME, transports=False)
    parser.add_argument("--tokens", default="500,2000", help="answer lengths, comma-separated")
    parser.add_argument("--clients", default="1,100", help="connections, comma-separated")
    args = parser.parse_args()
    rounds = 1 if args.quick else 5
    rows: list[dict[str, Any]] = []
    for tokens in (int(t) for t in args.tokens.split(",")):
        for clients in (int(c) for c in args.clients.split(",")):
            figures = measure(tokens, clients, rounds)
            rows.append({"tokens": tokens, "clients": clients, **figures})
            print(
                f"tokens={tokens:5d} clients={clients:4d}  "
                f"cpu {figures['cpu_us_per_token']:8.1f} us/token  "
                f"wall {figures['wall_us_per_token']:8.1f} us/token  "
                f"{figures['bytes_per_token']:8.1f} B/token/client  "
                f"{figures['frames_per_token']:.2f} frames/token  "
                f"db {figures['db_bytes'] / 1024:8.1f} KiB",
                flush=True,
            )
    common.write_results(NAME, {"rows": rows, "machine": common.machine_info()})


if __name__ == "__main__":
    main()
