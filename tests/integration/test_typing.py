"""mypy --strict and pyright see decorated functions' parameters, return types and attributes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parents[1]


def run_mypy(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            # no cache written: runs side by side (pytest -n) must not share one
            f"--cache-dir={os.devnull}",
            "--python-version",
            "3.10",
            *map(str, paths),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def run_pyright(*paths: Path) -> subprocess.CompletedProcess[str]:
    pyright = shutil.which("pyright", path=str(Path(sys.executable).parent))
    if pyright is None:
        pytest.fail("pyright is not installed (it is in the dev dependency group)")
    return subprocess.run(
        [pyright, "--pythonpath", sys.executable, *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def test_decorated_functions_keep_their_signatures() -> None:
    result = run_mypy(HERE / "typing_check.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_pyright_agrees() -> None:
    result = run_pyright(HERE / "typing_check.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 errors" in result.stdout


def test_the_typing_check_is_not_vacuous(tmp_path: Path) -> None:
    wrong = (
        (HERE / "typing_check.py")
        .read_text()
        .replace("assert_type(get_user(1), dict[str, int])", "assert_type(get_user(1), int)")
        .replace("assert_type(await aget_user(1), list[str])", "assert_type(await aget_user(1), str)")
    )
    path = tmp_path / "wrong.py"
    path.write_text(wrong)
    result = run_mypy(path)
    assert result.returncode == 1
    assert result.stdout.count("[assert-type]") == 2, result.stdout
    result = run_pyright(path)
    assert result.returncode == 1
    assert result.stdout.count("reportAssertTypeFailure") == 2, result.stdout
