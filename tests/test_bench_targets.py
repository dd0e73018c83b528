"""benchmarks/targets.py and `scripts/dev bench --check`: a missed target fails the check."""

from __future__ import annotations

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
    assert "PENDING      near-cache hit ≥ 20× faster than a memcached hit: measured –" in out


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
