"""benchmarks/targets.py and `scripts/dev bench --check`: a missed target fails the check."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest
import run
from targets import TARGETS, Results, Target, evaluate, failed, ratio, recorded, role_ratio, speedup

RESULTS_MD = Path(run.__file__).with_name("RESULTS.md")


def raw_case(
    group: str, library: str, median_us: float, role: str = "subject", **info: Any
) -> dict[str, Any]:
    """One benchmark as pytest-benchmark's JSON has it."""
    return {
        "name": f"test[{library}]",
        "fullname": f"benchmarks/test_x.py::test[{group}-{library}]",
        "group": group,
        "extra_info": {"role": role, "library": library, **info},
        "stats": {"median": median_us / 1e6, "min": median_us / 1e6, "rounds": 10},
    }


def results(*raws: dict[str, Any]) -> Results:
    return Results(run.Case(raw) for raw in raws)


def test_ratios_and_recorded_figures_read_the_named_cases() -> None:
    r = results(
        raw_case("hit-sync", "memo", 12.0),
        raw_case("hit-sync", "pymemcache + orjson", 10.0, role="baseline"),
        raw_case("stampede-threads", "memo", 5000.0, runs=1, callers=200),
    )
    assert ratio("hit-sync", "memo", "pymemcache + orjson")(r) == pytest.approx(1.2)
    assert speedup("hit-sync", "pymemcache + orjson", "memo")(r) == pytest.approx(1.2)
    assert role_ratio("hit-sync")(r) == pytest.approx(1.2)
    assert recorded("stampede-threads", "memo", "runs")(r) == 1.0
    assert ratio("hit-sync", "memo", "aiocache")(r) is None
    assert recorded("stampede-threads", "memo", "stale")(r) is None


def test_each_verdict() -> None:
    r = results(raw_case("g", "a", 3.0), raw_case("g", "b", 2.0))
    judged = evaluate(
        r,
        [
            Target("a ≤ 2× b", ratio("g", "a", "b"), 2.0),
            Target("a ≤ 1.25× b", ratio("g", "a", "b"), 1.25),
            Target("b ≥ 1.5× faster than a", speedup("g", "b", "a"), 1.5, at_least=True),
            Target("b ≥ 2× faster than a", speedup("g", "b", "a"), 2.0, at_least=True),
            Target("c ≤ 1× b", ratio("g", "c", "b"), 1.0),
            Target("a ≤ 1× b, later", ratio("g", "a", "b"), 1.0, pending="not built"),
        ],
    )
    assert [(v.status, v.measured) for v in judged] == [
        ("pass", "1.50×"),
        ("fail", "1.50×"),
        ("pass", "1.50×"),
        ("fail", "1.50×"),
        ("not measured", "–"),
        ("pending", "1.50×"),
    ]
    assert [v.target.name for v in failed(judged)] == ["a ≤ 1.25× b", "b ≥ 2× faster than a"]
    assert judged[2].target.wanted == "≥ 1.5×"


def _run_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, memo_us: float) -> tuple[int, str]:
    data = {
        "benchmarks": [
            raw_case("hit-sync", "memo", memo_us),
            raw_case("hit-sync", "pymemcache + orjson", 10.0, role="baseline"),
        ],
        "machine_info": {},
        "datetime": "now",
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    monkeypatch.setattr(run, "RESULTS", tmp_path / "RESULTS.md")
    monkeypatch.setattr(run, "CHART", tmp_path / "hits.png")
    monkeypatch.setattr(run, "PROFILE_NOTES", tmp_path / "absent.md")
    return run.main(["--report-only", str(path), "--check"]), (tmp_path / "RESULTS.md").read_text()


def test_check_exits_non_zero_when_a_measured_target_is_missed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    status, report = _run_check(tmp_path, monkeypatch, memo_us=13.0)
    out = capsys.readouterr()
    assert status == 1
    assert (
        "FAIL         sync hit ≤ 1.25× raw pymemcache `Client.get` + orjson: measured 1.30×, wanted ≤ 1.25×"
        in (out.out)
    )
    assert "1 target(s) missed" in out.err
    assert "| sync hit ≤ 1.25× raw pymemcache `Client.get` + orjson | 1.30× | ≤ 1.25× | fail |" in report


def test_check_passes_when_every_measured_target_is_met(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _ = _run_check(tmp_path, monkeypatch, memo_us=11.0)
    out = capsys.readouterr().out
    assert status == 0
    assert "PASS         sync hit ≤ 1.25× raw pymemcache `Client.get` + orjson: measured 1.10×" in out
    assert "NOT MEASURED routing ≤ 2 µs per key at 8 servers" in out
    assert "PENDING      memory:// hit ≤ 2× a dict lookup + orjson decode: measured –" in out


def test_without_check_a_miss_is_reported_but_does_not_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run, "RESULTS", tmp_path / "RESULTS.md")
    monkeypatch.setattr(run, "CHART", tmp_path / "hits.png")
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"benchmarks": [raw_case("hit-sync", "memo", 99.0)], "machine_info": {}}))
    assert run.main(["--report-only", str(path)]) == 0


def reported_cases() -> set[tuple[str, str]]:
    """(group, library) of every case in the committed RESULTS.md."""
    found = set()
    group = None
    for line in RESULTS_MD.read_text().splitlines():
        if line.startswith("### "):
            group = line[4:].strip()
        elif group and line.startswith("| ") and not line.startswith(("| library", "|---")):
            library = re.sub(r" \(baseline\)$", "", line.split("|")[1].strip())
            found.add((group, library))
    return found


def test_every_counting_target_reads_cases_the_benchmarks_have() -> None:
    """A misspelt group or library would leave a target forever "not measured"."""
    known = reported_cases()
    groups = {group for group, _ in known}
    assert len(known) > 50
    missing = [
        (target.name, case)
        for target in TARGETS
        if not target.pending
        for case in target.figure.cases
        if (case[1] and case not in known) or case[0] not in groups
    ]
    assert missing == []


def test_names_are_unique_and_pending_says_why() -> None:
    names = [t.name for t in TARGETS]
    assert len(names) == len(set(names))
    assert all(t.pending == "" or len(t.pending) > 10 for t in TARGETS)
    assert sum(1 for t in TARGETS if not t.pending) >= 20


# -- every benchmark checks what it measured ---------------------------------------------------

BENCHMARKS = Path(run.__file__).parent
#: Helpers that assert on the result they are handed.
ASSERTING_HELPERS = {"_check"}


TIMED = ("benchmark", "benchmark.pedantic", "bench_async")


def _is_timed_call(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and ast.unparse(node.func) in TIMED


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _checked_where_called(call: ast.Call, parents: dict[ast.AST, ast.AST]) -> tuple[bool, set[str]]:
    """Whether the call sits in an assert (or an asserting helper), and the names it is assigned to."""
    node: ast.AST = call
    targets: set[str] = set()
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.Assert):
            return True, targets
        if isinstance(node, ast.Call) and ast.unparse(node.func) in ASSERTING_HELPERS:
            return True, targets
        if isinstance(node, ast.Assign):
            targets |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return False, targets


def unchecked_benchmarks(source: str) -> list[str]:
    """Timed calls whose result (or the state they fill) no later `assert` looks at."""
    tree = ast.parse(source)
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    found = []
    for function in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
        asserts = [n for n in ast.walk(function) if isinstance(n, ast.Assert)]
        for call in (n for n in ast.walk(function) if _is_timed_call(n)):
            checked, names = _checked_where_called(call, parents)
            names |= {name for arg in call.args for name in _names(arg)} - {"benchmark", "loop"}
            # What is computed from the result later counts as the result (hit_rate = f(stats)).
            for assign in (n for n in ast.walk(function) if isinstance(n, ast.Assign)):
                if assign.lineno > call.lineno and _names(assign.value) & names:
                    names |= {t.id for t in assign.targets if isinstance(t, ast.Name)}
            later = {name for a in asserts if a.lineno > call.lineno for name in _names(a)}
            if not checked and not (names & later):
                found.append(f"{function.name}:{call.lineno}")
    return found


def test_the_checker_tells_a_checked_benchmark_from_an_unchecked_one() -> None:
    source = (
        "def test_a(benchmark):\n    assert benchmark(f) == 1\n"
        "def test_b(benchmark):\n    x = benchmark(f)\n    assert x == 1\n"
        "def test_c(benchmark):\n    benchmark(f)\n"
        "def test_d(benchmark):\n    _check(benchmark(f), 1)\n"
        "def test_e(benchmark):\n    out = []\n    benchmark.pedantic(lambda: out.append(1))\n"
        "    assert out\n"
        "def test_f(benchmark, loop):\n    bench_async(benchmark, loop, g)\n    assert loop\n"
        "def test_g(benchmark):\n    stats = benchmark(f)\n    rate = stats[0] / 2\n    assert rate > 1\n"
    )
    assert unchecked_benchmarks(source) == ["test_c:7", "test_f:15"]


@pytest.mark.parametrize("module", sorted(BENCHMARKS.glob("test_*.py")), ids=lambda p: p.name)
def test_every_benchmark_asserts_what_it_returned(module: Path) -> None:
    """The suite runs each benchmark once untimed; a timed call nobody checks could time a failure."""
    assert unchecked_benchmarks(module.read_text()) == []
