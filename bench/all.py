"""Every benchmark, one after the other, each in its own process with its default arguments.

    python -m bench.all [--quick] [--before-src <checkout>/src]

Runs fan-out and many-conversations with both transports (memory, then Redis), memory,
first-token with both transports, the in-process micro-benchmarks, wire and stored bytes
with history hydration (``bench.wire``) and the in-process per-token path
(``bench.pipeline``); each writes its JSON
into ``bench/results/`` and prints its table. ``--before-src`` is passed to the benchmarks
that can measure another checkout side by side (fan-out, many conversations).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from bench.common import ROOT

COMMANDS: list[tuple[str, list[str], bool]] = [
    # (module, arguments, takes --before-src)
    ("bench.fanout", ["--transport", "both"], True),
    ("bench.conversations", ["--transport", "both", "--convs", "10,100,500,1000"], True),
    ("bench.memory", [], False),
    ("bench.first_token", ["--transport", "both"], False),
    ("bench.micro", [], False),
    ("bench.wire", [], False),
    ("bench.pipeline", [], False),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short smoke runs")
    parser.add_argument("--before-src", default=None, help="another checkout's src directory")
    args = parser.parse_args()
    failed = []
    for module, extra, before in COMMANDS:
        command = [sys.executable, "-m", module, *extra]
        if args.quick:
            command.append("--quick")
        if before and args.before_src:
            command += ["--before-src", args.before_src]
        print(f"\n$ {' '.join(command[1:])}", flush=True)
        started = time.monotonic()
        result = subprocess.run(command, cwd=ROOT, check=False)
        print(f"({module}: {time.monotonic() - started:.0f} s)", flush=True)
        if result.returncode != 0:
            failed.append(module)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
