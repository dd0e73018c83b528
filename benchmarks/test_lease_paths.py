"""What leases cost and what they buy: miss + fill and hit with and without leases,
a stampede across processes, and the invalidate-vs-fill race across two processes.

The cross-process cases run worker processes (benchmarks/lease_workers.py). With
benchmarks disabled (the test suite's single untimed run) they run smaller, and
still assert what they measured: one computation with leases, no stale value.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from bench_helpers import SMALL, role
from memcached_fixtures import MemcachedProcess

import memo

WORKERS = str(Path(__file__).with_name("lease_workers.py"))


def _full(config: pytest.Config) -> bool:
    """Benchmarks enabled (a timed run), not the test suite's single untimed one."""
    return not config.getoption("benchmark_disable", False) or config.getoption("benchmark_enable", False)


def _run(command: str, configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    procs = [
        subprocess.Popen(
            [sys.executable, WORKERS, command, json.dumps(c)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for c in configs
    ]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr.decode()[-3000:]
        out.append(json.loads(stdout.decode().strip().splitlines()[-1]))
    return out


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


# -- miss + fill, and hits, with and without leases ---------------------------------------------


@pytest.mark.parametrize("leases", [True, False], ids=["leases", "no-leases"])
def test_miss_store_memo_leases(benchmark: Any, server: MemcachedProcess, leases: bool) -> None:
    role(benchmark, "subject", f"memo, leases {'on' if leases else 'off'}")
    benchmark.group = "miss-store"
    cache = memo.Cache(server.url, prefix=f"b{uuid.uuid4().hex[:8]}:", leases=leases)

    @cache.cached(ns="miss", ttl=60)
    def get_user(user_id: int) -> dict[str, Any]:
        return SMALL

    counter = itertools.count()
    assert benchmark(lambda: get_user(next(counter))) == SMALL
    stats = cache.stats("miss")
    assert stats["hits"] == 0 and stats["sets"] == stats["misses"]
    cache.close()


@pytest.mark.parametrize("ttl", [600, None], ids=["exact-ttl", "no-ttl"])
def test_hit_memo_expiry_check(benchmark: Any, server: MemcachedProcess, ttl: int | None) -> None:
    """The hit path reads the exact expiry from the header; without a ttl there is none to read."""
    role(benchmark, "subject", f"memo, {'ttl=600 (expiry checked)' if ttl else 'ttl=None'}")
    benchmark.group = "hit-expiry"
    cache = memo.Cache(server.url, prefix=f"b{uuid.uuid4().hex[:8]}:")

    @cache.cached(ns="bench", ttl=ttl)
    def get_user(user_id: int) -> dict[str, Any]:
        return SMALL

    get_user(42)
    assert benchmark(get_user, 42) == SMALL
    assert cache.stats("bench")["misses"] == 1
    cache.close()


# -- a stampede across processes -------------------------------------------------------------

STAMPEDE = [
    ("memo", "threads", True),
    ("memo", "threads", False),
    ("dogpile.cache", "threads", None),
    ("memo", "tasks", True),
    ("memo", "tasks", False),
    ("aiocache", "tasks", None),
]


@pytest.mark.parametrize(
    ("library", "mode", "leases"),
    STAMPEDE,
    ids=[
        f"{lib}-{mode}{'' if le is None else '-leases' if le else '-no-leases'}" for lib, mode, le in STAMPEDE
    ],
)
def test_stampede_across_processes(
    benchmark: Any,
    request: pytest.FixtureRequest,
    server: MemcachedProcess,
    library: str,
    mode: str,
    leases: Any,
) -> None:
    """8 processes x 25 callers on one cold key whose function takes 0.5 s (smaller untimed)."""
    processes, callers, sleep = (8, 25, 0.5) if _full(request.config) else (3, 5, 0.2)
    label = library if leases is None else f"{library}, leases {'on' if leases else 'off'}"
    role(benchmark, "subject", label)
    benchmark.group = f"stampede-processes-{mode}"
    config = {
        "url": server.url,
        "address": server.address,
        "prefix": f"sp{uuid.uuid4().hex[:8]}:",
        "library": library,
        "mode": mode,
        "leases": bool(leases),
        "callers": callers,
        "sleep": sleep,
        "start_at": time.time() + 2.0 + 0.15 * processes,
    }
    results: list[dict[str, Any]] = []
    benchmark.pedantic(lambda: results.extend(_run("stampede", [config] * processes)), rounds=1, iterations=1)
    runs = sum(r["runs"] for r in results)
    latencies = [x for r in results for x in r["latencies"]]
    benchmark.extra_info.update(
        runs=runs, callers=processes * callers, p99_ms=round(_p99(latencies) * 1000, 1)
    )
    assert sum(r["right"] for r in results) == processes * callers  # every caller got the value
    if library == "memo" and leases:
        assert runs == 1


# -- the invalidate-vs-fill race across two processes ------------------------------------------


@pytest.mark.parametrize("leases", [True, False], ids=["leases", "no-leases"])
def test_invalidate_fill_race(
    benchmark: Any, request: pytest.FixtureRequest, server: MemcachedProcess, leases: bool
) -> None:
    """Reader fills while writer changes the source and invalidates; count stale values left."""
    trials = 1000 if _full(request.config) else 200
    role(benchmark, "subject", f"memo, leases {'on' if leases else 'off'}")
    benchmark.group = "invalidate-fill-race"
    config = {
        "url": server.url,
        "address": server.address,
        "prefix": f"rc{uuid.uuid4().hex[:8]}:",
        "leases": leases,
        "trials": trials,
        "slot": 0.006,
        "work": 0.002,
        "seed": 7,
        "start_at": time.time() + 2.0,
    }
    results: list[dict[str, Any]] = []
    benchmark.pedantic(
        lambda: results.extend(_run("race", [{**config, "role": "reader"}, {**config, "role": "writer"}])),
        rounds=1,
        iterations=1,
    )
    stale = results[1]["stale"]
    benchmark.extra_info.update(stale=stale, trials=trials)
    assert len(results) == 2 and 0 <= stale <= trials  # both workers reported; without leases stale counts
    if leases:
        assert stale == 0


# -- the hit path beside the previous release (0.1.0: no leases, no exact expiry) -------------


@pytest.mark.parametrize("release", ["previous", "this"])
def test_hit_beside_previous_release(benchmark: Any, server: MemcachedProcess, release: str) -> None:
    """The same sync hit (ttl=600) through memo 0.1.0 and through this memo, in one run."""
    import previous_release

    module: Any = memo if release == "this" else previous_release.load()
    if module is None:
        pytest.skip("the previous release's commit is not in this clone")
    role(benchmark, "baseline" if release == "previous" else "subject", f"memo {module.__version__}")
    benchmark.group = "hit-vs-previous-release"
    cache = module.Cache(server.url, prefix=f"b{uuid.uuid4().hex[:8]}:")

    @cache.cached(ns="bench", ttl=600)
    def get_user(user_id: int) -> dict[str, Any]:
        return SMALL

    get_user(42)
    assert benchmark(get_user, 42) == SMALL
    assert cache.stats("bench")["misses"] == 1
    cache.close()
