"""No function in memo/ above cyclomatic complexity 15 or longer than 60 lines, except those listed.

Complexity is ruff's (C901, McCabe) so the figure is the one a developer sees with
`ruff check --select C901`; length is the span from the `def` line to the function's
last line (docstring and comments included, decorators not), read with ast.

Today's offenders are listed with today's figures. The lists may only shrink: a listed
function may not grow past its figure, and one that now fits (or is gone) must leave
the list. A function marked "hit path" is on the path a cache hit takes; flattening it
into helpers costs a call per hit, so split it only with the hit benchmarks
(benchmarks/test_hits.py) showing no loss.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "memo"
MAX_COMPLEXITY = 15
MAX_LINES = 60

#: "module:qualname" -> ruff's complexity today. Shrink only.
TOO_COMPLEX: dict[str, int] = {
    "memo._memo:Memo.acall": 16,  # hit path (async @cached call)
}

#: "module:qualname" -> lines today. Shrink only.
TOO_LONG: dict[str, int] = {}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def functions(path: Path, root: Path = ROOT) -> dict[int, tuple[str, int]]:
    """`def` line -> (module:qualname, length in lines) of every function in a file."""
    found: dict[int, tuple[str, int]] = {}
    module = module_name(path, root)

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert child.end_lineno is not None
                found[child.lineno] = (f"{module}:{prefix}{child.name}", child.end_lineno - child.lineno + 1)
                walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.")

    walk(ast.parse(path.read_text(), str(path)), "")
    return found


def lengths() -> dict[str, int]:
    return {name: n for path in sorted(PACKAGE.rglob("*.py")) for name, n in functions(path).values()}


def complexities() -> dict[str, int]:
    """Functions above MAX_COMPLEXITY, by ruff's C901."""
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (the dev dependency group has it)")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            str(PACKAGE),
            "--select",
            "C901",
            "--config",
            f"lint.mccabe.max-complexity = {MAX_COMPLEXITY}",
            "--output-format",
            "json",
            "--exit-zero",
            "--no-cache",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    found = {}
    for finding in json.loads(result.stdout):
        path = Path(finding["filename"])
        name, _ = functions(path)[finding["location"]["row"]]
        found[name] = int(finding["message"].rsplit("(", 1)[1].split(" ")[0])
    return found


def test_the_length_reader_counts_def_to_last_line(tmp_path: Path) -> None:
    package = tmp_path / "memo"
    package.mkdir()
    source = package / "sample.py"
    source.write_text(
        "@decorator\ndef f():\n    x = 1\n\n    return x\n\nclass C:\n    async def g(self):\n        pass\n"
    )
    assert functions(source, tmp_path) == {2: ("memo.sample:f", 4), 8: ("memo.sample:C.g", 2)}


def test_no_new_function_above_complexity_15() -> None:
    found = complexities()
    over = {name: c for name, c in found.items() if c > TOO_COMPLEX.get(name, MAX_COMPLEXITY)}
    assert over == {}, f"split these functions (complexity > {MAX_COMPLEXITY}, or above their listed figure)"


def test_no_new_function_longer_than_60_lines() -> None:
    over = {name: n for name, n in lengths().items() if n > TOO_LONG.get(name, MAX_LINES)}
    assert over == {}, f"split these functions (> {MAX_LINES} lines, or above their listed figure)"


def test_the_complexity_list_only_shrinks() -> None:
    found = complexities()
    fixed = sorted(name for name in TOO_COMPLEX if found.get(name, 0) <= MAX_COMPLEXITY)
    assert fixed == [], "these now fit (or are gone): remove them from TOO_COMPLEX"


def test_the_length_list_only_shrinks() -> None:
    found = lengths()
    fixed = sorted(name for name in TOO_LONG if found.get(name, 0) <= MAX_LINES)
    assert fixed == [], "these now fit (or are gone): remove them from TOO_LONG"
