import json
import subprocess
import sys

from webchat.events import parse_event


def test_demo_prints_a_tool_calling_run_as_json_lines():
    out = subprocess.run(
        [sys.executable, "-m", "webchat.demo", "calc: 6*7"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    events = [parse_event(line) for line in out.splitlines()]
    types = [e.type for e in events]
    assert types[0] == "start"
    assert types.index("tool-call") < types.index("tool-call-execute")
    assert types.index("tool-call-execute") < types.index("tool-call-execution-result")
    assert types[-1] == "final"
    assert "42" in json.loads(out.splitlines()[-1])["text"]
