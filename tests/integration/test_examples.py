"""Every example runs, on memory:// by default and on memcached through MEMO_URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.py"))


def run(example: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "MEMO_URL"} | env
    return subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, env=environ, timeout=120
    )


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_on_memory(example: Path) -> None:
    result = run(example)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "memory" in result.stdout.lower()


@pytest.mark.memcached
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_on_memcached(example: Path, memcached_url: str) -> None:
    result = run(example, MEMO_URL=memcached_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "memcached" in result.stdout.lower()
