"""Run the whole benchmark suite once and write benchmarks/RESULTS.md and benchmarks/hits.png.

    scripts/dev bench            # or: tox -e bench, or: python benchmarks/run.py

Extra arguments go to pytest (e.g. `-k hit`). `--report-only FILE.json` rebuilds the
report from an earlier run's JSON without running anything.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
JSON = HERE / "results.json"
RESULTS = HERE / "RESULTS.md"
CHART = HERE / "hits.png"
PROFILE_NOTES = HERE / "langgraph_profile.md"
COMMAND = "scripts/dev bench"


RUNS = 3


def run_suite(extra: list[str], json_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(HERE),
        "-q",
        "-p",
        "no:randomly",
        "--benchmark-enable",
        "--benchmark-only",
        f"--benchmark-json={json_path}",
        "--benchmark-min-rounds=20",
        "--benchmark-max-time=1.0",
        "--benchmark-columns=median,iqr,rounds",
        "--benchmark-sort=name",
        *extra,
    ]
    subprocess.run(cmd, check=True, cwd=HERE.parent)


class Case:
    def __init__(self, raw: dict[str, Any]) -> None:
        info = raw.get("extra_info", {})
        self.name: str = raw["name"]
        self.group: str = raw.get("group") or "other"
        self.role: str = info.get("role", "subject")
        self.library: str = info.get("library", self.name)
        self.ops: int = int(info.get("ops_per_round", 1))
        self.runs: int | None = info.get("runs")
        self.callers: int | None = info.get("callers")
        self.throughput: bool = bool(info.get("throughput"))
        self.p99_ms: float | None = info.get("p99_ms")
        self.stale: int | None = info.get("stale")
        self.trials: int | None = info.get("trials")
        self.median_us: float = raw["stats"]["median"] * 1e6 / self.ops
        self.min_us: float = raw["stats"]["min"] * 1e6 / self.ops
        self.rounds: int = raw["stats"]["rounds"]
        self.info: dict[str, Any] = info


def merge(paths: list[Path], into: Path) -> None:
    """Keep, for every case, the run with the lowest median.

    A shared VM has slow spells lasting seconds; cases timed in different spells
    are not comparable. The best of several whole-suite runs is each case's
    figure when the machine was quiet, as timeit reports the best of its repeats.
    """
    runs = [json.loads(p.read_text()) for p in paths]
    best: dict[str, dict[str, Any]] = {}
    for run in runs:
        for raw in run["benchmarks"]:
            kept = best.get(raw["fullname"])
            if kept is None or raw["stats"]["median"] < kept["stats"]["median"]:
                best[raw["fullname"]] = raw
    merged = dict(runs[0])
    merged["benchmarks"] = list(best.values())
    merged["runs"] = len(runs)
    into.write_text(json.dumps(merged, indent=1))


def load(path: Path) -> tuple[dict[str, list[Case]], dict[str, Any]]:
    data = json.loads(path.read_text())
    groups: dict[str, list[Case]] = defaultdict(list)
    for raw in data["benchmarks"]:
        case = Case(raw)
        groups[case.group].append(case)
    return groups, data


def find(groups: dict[str, list[Case]], group: str, library: str) -> Case | None:
    return next((c for c in groups.get(group, []) if c.library == library), None)


def baseline(cases: list[Case]) -> Case | None:
    return next((c for c in cases if c.role == "baseline"), None)


def ratio(a: Case | None, b: Case | None) -> float | None:
    return a.median_us / b.median_us if a and b and b.median_us else None


def fmt(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "–"
    return f"{x:.{digits}f}" if x >= 0.1 else f"{x:.2g}"


def targets(groups: dict[str, list[Case]]) -> list[tuple[str, str, bool | None]]:
    out: list[tuple[str, str, bool | None]] = []

    def target(
        name: str, value: float | None, limit: float, unit: str = "×", higher_is_better: bool = False
    ) -> None:
        if value is None:
            out.append((name, "not measured", None))
            return
        ok = value >= limit if higher_is_better else value <= limit
        out.append((name, f"{value:.2f}{unit}", ok))

    sync_memo, async_memo = find(groups, "hit-sync", "memo"), find(groups, "hit-async", "memo")
    target(
        "sync hit ≤ 1.25× raw pymemcache `Client.get` + orjson",
        ratio(sync_memo, find(groups, "hit-sync", "pymemcache + orjson")),
        1.25,
    )
    target(
        "async hit ≤ 1.25× raw aiomcache `get` + orjson",
        ratio(async_memo, find(groups, "hit-async", "aiomcache + orjson")),
        1.25,
    )
    target(
        "memo ≥ 3× faster than dogpile.cache on hits",
        ratio(find(groups, "hit-sync", "dogpile.cache"), sync_memo),
        3.0,
        higher_is_better=True,
    )
    target(
        "memo ≥ 3× faster than aiocache on hits",
        ratio(find(groups, "hit-async", "aiocache"), async_memo),
        3.0,
        higher_is_better=True,
    )
    target(
        "64-task async throughput ≥ 2× an aiomcache pool",
        ratio(
            find(groups, "throughput-async-64", "aiomcache + orjson"),
            find(groups, "throughput-async-64", "memo"),
        ),
        2.0,
        higher_is_better=True,
    )
    target(
        "sync throughput, 8 threads, ≥ 1.2× pymemcache PooledClient",
        ratio(
            find(groups, "throughput-sync-8-threads", "pymemcache PooledClient + orjson"),
            find(groups, "throughput-sync-8-threads", "memo"),
        ),
        1.2,
        higher_is_better=True,
    )
    eight = find(groups, "routing", "memo router, 8 servers")
    sixty_four = find(groups, "routing", "memo router, 64 servers")
    target("routing ≤ 2 µs per key at 8 servers", eight.median_us if eight else None, 2.0, unit=" µs")
    target(
        "routing ≤ 2 µs per key at 64 servers", sixty_four.median_us if sixty_four else None, 2.0, unit=" µs"
    )
    target("routing at 64 servers ≤ 2× its cost at 8", ratio(sixty_four, eight), 2.0)
    for group, flavour, raw_get in (
        ("langgraph-batch-100", "sync", "pymemcache get_many"),
        ("langgraph-batch-100-async", "async", "aiomcache multi_get"),
    ):
        memo_batch = find(groups, group, "memo MemcachedCache")
        target(
            f"100-key batch through MemcachedCache ({flavour}) ≤ 1.5× a raw {raw_get} of its keys",
            ratio(memo_batch, find(groups, group, raw_get)),
            1.5,
        )
        target(
            f"100-key batch through MemcachedCache ({flavour}) ≤ 0.8× LangGraph's RedisCache",
            ratio(memo_batch, find(groups, group, "LangGraph RedisCache")),
            0.8,
        )
    memo_session = find(groups, "session-read-hit", "memo SessionCache.get")
    target(
        "session read on a hit faster than Django's cached_db",
        ratio(find(groups, "session-read-hit", "Django cached_db (PyMemcacheCache)"), memo_session),
        1.0,
        higher_is_better=True,
    )
    hung = find(groups, "session-read-hung", "memo SessionCache.get, memcached SIGSTOPped")
    target(
        "session read p99 with memcached SIGSTOPped ≤ 200 ms",
        hung.info.get("p99_ms") if hung else None,
        200,
        " ms",
    )
    zipf = find(groups, "session-hit-rate", "memo SessionCache, Zipf load")
    rate = zipf.info.get("hit_rate") if zipf else None
    target(
        "hit rate of active sessions, Zipf load ≥ 90%", None if rate is None else rate * 100, 90, " %", True
    )
    for group in ("stampede-threads", "stampede-tasks"):
        case = find(groups, group, "memo")
        runs = case.runs if case else None
        out.append(
            (
                f"stampede ({group.split('-')[1]}): one run per cold key",
                "not measured" if runs is None else f"{runs} run(s) for {case.callers} callers",  # type: ignore[union-attr]
                None if runs is None else runs == 1,
            )
        )
    for mode in ("threads", "tasks"):
        case = find(groups, f"stampede-processes-{mode}", "memo, leases on")
        out.append(
            (
                f"stampede across 8 processes ({mode}), leases: one run per cold key",
                "not measured" if case is None else f"{case.runs} run(s) for {case.callers} callers",
                None if case is None else case.runs == 1,
            )
        )
    race = find(groups, "invalidate-fill-race", "memo, leases on")
    out.append(
        (
            "invalidate-vs-fill race across two processes, leases: no stale value stored",
            "not measured" if race is None else f"{race.stale} stale in {race.trials} trials",
            None if race is None else race.stale == 0,
        )
    )
    target(
        "miss + fill with leases ≤ 1.3× without",
        ratio(find(groups, "miss-store", "memo, leases on"), find(groups, "miss-store", "memo, leases off")),
        1.3,
    )
    target(
        "cached_many, 100 ids with 10 missing, leases ≤ 1.5× raw get_many of 100 + set_many of 10",
        ratio(
            find(groups, "batch-100-10-missing", "memo cached_many, leases on"),
            find(groups, "batch-100-10-missing", "pymemcache get_many 100 + set_many 10"),
        ),
        1.5,
    )
    releases = groups.get("hit-vs-previous-release", [])
    before = next((c for c in releases if c.role == "baseline"), None)
    target(
        f"sync hit (exact ttl, leases) ≤ 1.03× {before.library if before else 'the previous release'}'s",
        ratio(next((c for c in releases if c.role == "subject"), None), before),
        1.03,
    )
    return out


def chart(groups: dict[str, list[Case]]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, group, title in ((axes[0], "hit-sync", "Sync hit"), (axes[1], "hit-async", "Async hit")):
        cases = sorted(groups.get(group, []), key=lambda c: c.median_us)
        colors = [
            "#2b8a3e" if c.library == "memo" else "#868e96" if c.role in ("baseline", "floor") else "#c92a2a"
            for c in cases
        ]
        ax.barh([c.library for c in cases], [c.median_us for c in cases], color=colors)
        for i, c in enumerate(cases):
            ax.text(c.median_us, i, f" {c.median_us:.1f}", va="center", fontsize=9)
        ax.set_title(f"{title}: median µs per call, lower is better", fontsize=10)
        ax.set_xlabel("µs")
        ax.margins(x=0.18)
    fig.suptitle("One local memcached on this machine; best median of the suite runs", fontsize=9)
    fig.tight_layout()
    fig.savefig(CHART, dpi=110)
    return True


def report(groups: dict[str, list[Case]], data: dict[str, Any]) -> str:
    machine = data.get("machine_info", {})
    extra = machine.get("memo", {})
    floor = find(groups, "hit-sync", "raw socket")
    cpu = machine.get("cpu", {}).get("brand_raw", "unknown CPU")
    lines = [
        "# memo benchmarks",
        "",
        f"Reproduce with `{COMMAND}` (runs `benchmarks/run.py`: pytest-benchmark over `benchmarks/`,",
        "then this report and `hits.png`). Every case runs against memcached processes the suite",
        f"starts on loopback. The whole suite ran {data.get('runs', 1)} times; each case shows its run",
        "with the lowest median (this VM has slow spells of several seconds that would otherwise",
        "decide which case looks faster). Times are per operation; async cases time 200 sequential",
        "awaits per round and divide. Ratios: to the group's baseline, and to the physical floor",
        "(a bare-socket `get`). Targets are judged on medians.",
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for name, measured, ok in targets(groups):
        lines.append(f"| {name} | {measured} | {'met' if ok else 'not met' if ok is False else '–'} |")
    lines += ["", "## All cases", ""]
    for group in sorted(groups):
        cases = sorted(groups[group], key=lambda c: c.median_us)
        base = baseline(cases)
        lines += [f"### {group}", ""]
        if any(c.stale is not None for c in cases):
            lines += ["| library | stale values left | trials |", "|---|---|---|"]
            for c in cases:
                lines.append(f"| {c.library} | {c.stale} | {c.trials} |")
        elif any(c.runs is not None for c in cases):
            lines += [
                "| library | function runs | callers | caller p99 (ms) | wall time (ms) |",
                "|---|---|---|---|---|",
            ]
            for c in cases:
                p99 = "–" if c.p99_ms is None else f"{c.p99_ms:.1f}"
                lines.append(f"| {c.library} | {c.runs} | {c.callers} | {p99} | {c.median_us / 1000:.1f} |")
        elif any(c.throughput for c in cases):
            lines += ["| library | ops/s | µs per op | × baseline |", "|---|---|---|---|"]
            for c in cases:
                lines.append(
                    f"| {c.library} | {1e6 / c.median_us:,.0f} | {c.median_us:.2f} | {fmt(ratio(c, base))} |"
                )
        else:
            lines += [
                "| library | median µs | min µs | × baseline | × floor | rounds |",
                "|---|---|---|---|---|---|",
            ]
            use_floor = group.startswith(("hit", "miss", "invalidate", "langgraph"))
            for c in cases:
                label = f"{c.library} (baseline)" if c is base else c.library
                to_floor = fmt(ratio(c, floor)) if use_floor else "–"
                times = f"{c.median_us:.2f} | {c.min_us:.2f}"
                lines.append(f"| {label} | {times} | {fmt(ratio(c, base))} | {to_floor} | {c.rounds} |")
        lines.append("")
    pinning = extra.get("pinning", {})
    lines += [
        "## Machine",
        "",
        f"- {platform.system()} {machine.get('release', '')}, {cpu}, {extra.get('cpus', '?')} CPUs; "
        f"Python {machine.get('python_version', platform.python_version())}",
        f"- pinning: {'yes' if pinning.get('pinned') else 'no'} ({pinning.get('reason', 'unknown')})",
        f"- memcached: {extra.get('memcached', '?')}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in extra.get("versions", {}).items()),
        f"- run at {data.get('datetime', '?')}",
        "",
        "![hit latency per library](hits.png)",
        "",
    ]
    if PROFILE_NOTES.exists():  # how a LangGraph batch spends its time, written from a profile
        lines += [PROFILE_NOTES.read_text().strip(), ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--report-only"]:
        path = Path(argv[1]) if len(argv) > 1 else JSON
    else:
        paths = [HERE / f"results-{i}.json" for i in range(1, RUNS + 1)]
        for path in paths:
            run_suite(argv, path)
        merge(paths, JSON)
        for path in paths:
            path.unlink()
        path = JSON
    groups, data = load(path)
    RESULTS.write_text(report(groups, data))
    made_chart = chart(groups)
    print(f"wrote {RESULTS}" + (f" and {CHART}" if made_chart else " (no matplotlib: no chart)"))
    print(
        "\n".join(
            f"  {'met    ' if ok else 'NOT MET' if ok is False else '-      '} {name}: {measured}"
            for name, measured, ok in targets(groups)
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
