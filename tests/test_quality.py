"""The linters are part of the suite, so CI fails on a type error or a lint finding."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_is_clean():
    # The interpreter running the tests, not whatever `ruff` is first on PATH (or none).
    version = run(sys.executable, "-m", "ruff", "--version")
    assert version.returncode == 0, "ruff is not installed (pip install -e '.[dev]')"
    lint = run(sys.executable, "-m", "ruff", "check", "src", "tests", "bench")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = run(sys.executable, "-m", "ruff", "format", "--check", "src", "tests", "bench")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy_is_clean():
    result = run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr
