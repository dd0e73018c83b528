"""The figures memo's benchmarks must meet, in one place.

Every target is judged on figures measured in the same run (ratios of medians between
cases timed side by side, or a count a case recorded), never on absolute times from
another machine. `scripts/dev bench --check` (benchmarks/run.py) prints each target as
measured / wanted / pass, fail, pending or not measured, and exits non-zero when a
target measured in that run fails.

A target marked `pending` measures something not built yet (or a figure set for work
still to come): it is shown, with its figure when the run has one, and never fails the
check. When the work lands, delete its `pending=` and the target starts to count.

Cases are named by their pytest-benchmark group and the `library` label each benchmark
gives itself (`bench_helpers.role`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["TARGETS", "Case", "Results", "Target", "Verdict", "evaluate", "failed"]


class Case(Protocol):
    """What a target reads of a benchmark case (benchmarks/run.py's Case)."""

    group: str
    library: str
    role: str
    median_us: float
    info: Mapping[str, Any]


class Results:
    """The cases of one run, by group."""

    def __init__(self, cases: Iterable[Case]) -> None:
        self.groups: dict[str, list[Case]] = {}
        for case in cases:
            self.groups.setdefault(case.group, []).append(case)

    def find(self, group: str, library: str) -> Case | None:
        return next((c for c in self.groups.get(group, []) if c.library == library), None)

    def by_role(self, group: str, role: str) -> Case | None:
        return next((c for c in self.groups.get(group, []) if c.role == role), None)


@dataclass(frozen=True)
class Figure:
    """How a target gets its figure from a run (None when the run did not measure it),
    and the cases (group, library) it reads; a group's cases by role are listed as (group, "")."""

    cases: tuple[tuple[str, str], ...]
    compute: Callable[[Results], float | None]

    def __call__(self, results: Results) -> float | None:
        return self.compute(results)


def _over(a: Case | None, b: Case | None) -> float | None:
    return a.median_us / b.median_us if a and b and b.median_us else None


def ratio(group: str, subject: str, reference: str, reference_group: str | None = None) -> Figure:
    """subject's median / reference's median (lower is better: "≤ N× the reference")."""
    other = reference_group or group
    return Figure(
        ((group, subject), (other, reference)),
        lambda r: _over(r.find(group, subject), r.find(other, reference)),
    )


def speedup(group: str, subject: str, slower: str) -> Figure:
    """slower's median / subject's median ("subject ≥ N× faster than slower")."""
    return ratio(group, slower, subject)


def median_us(group: str, subject: str) -> Figure:
    def compute(results: Results) -> float | None:
        case = results.find(group, subject)
        return case.median_us if case else None

    return Figure(((group, subject),), compute)


def recorded(group: str, subject: str, key: str, scale: float = 1.0) -> Figure:
    """A figure the case recorded in its extra_info (a count, a rate, a p99)."""

    def compute(results: Results) -> float | None:
        case = results.find(group, subject)
        value = case.info.get(key) if case else None
        return None if value is None else float(value) * scale

    return Figure(((group, subject),), compute)


def role_ratio(group: str) -> Figure:
    """The group's subject / its baseline (whatever their labels are, e.g. release numbers)."""
    return Figure(((group, ""),), lambda r: _over(r.by_role(group, "subject"), r.by_role(group, "baseline")))


@dataclass(frozen=True)
class Target:
    name: str
    figure: Figure
    limit: float
    at_least: bool = False  # the figure must be ≥ limit (else ≤ limit)
    unit: str = "×"
    pending: str = ""  # why this target does not count yet; empty when it does

    @property
    def wanted(self) -> str:
        return f"{'≥' if self.at_least else '≤'} {self.limit:g}{self.unit}"

    def met(self, value: float) -> bool:
        return value >= self.limit if self.at_least else value <= self.limit


@dataclass(frozen=True)
class Verdict:
    target: Target
    value: float | None
    status: str  # "pass", "fail", "pending", "not measured"

    @property
    def measured(self) -> str:
        return "–" if self.value is None else f"{self.value:.2f}{self.target.unit}"


def evaluate(results: Results, targets: Iterable[Target] | None = None) -> list[Verdict]:
    verdicts = []
    for target in TARGETS if targets is None else targets:
        value = target.figure(results)
        if target.pending:
            status = "pending"
        elif value is None:
            status = "not measured"
        else:
            status = "pass" if target.met(value) else "fail"
        verdicts.append(Verdict(target, value, status))
    return verdicts


def failed(verdicts: Iterable[Verdict]) -> list[Verdict]:
    return [v for v in verdicts if v.status == "fail"]


_CODEC = "set for a faster codec (today's figure is shown)"
#: Requests per second is a figure with requests in flight: memo's middleware on one event loop
#: (as uvicorn serves it), Django's on 16 threads (as gunicorn's gthread worker does), Django's
#: threads keeping their memcached connections, its best case (benchmarks/test_sessions.py).
_MEMO_16 = "memo SessionMiddleware, 16 tasks on one event loop"
_DJANGO_16 = "Django SessionMiddleware (cached_db), 16 threads"

TARGETS: list[Target] = [
    # -- hits beside the raw clients and the peers --------------------------------------------
    Target(
        "sync hit ≤ 1.25× raw pymemcache `Client.get` + orjson",
        ratio("hit-sync", "memo", "pymemcache + orjson"),
        1.25,
    ),
    Target(
        "async hit ≤ 1.25× raw aiomcache `get` + orjson",
        ratio("hit-async", "memo", "aiomcache + orjson"),
        1.25,
    ),
    Target(
        "memo ≥ 3× faster than dogpile.cache on hits", speedup("hit-sync", "memo", "dogpile.cache"), 3.0, True
    ),
    Target(
        "memo ≥ 3× faster than aiocache on hits (async)",
        speedup("hit-async", "memo", "aiocache"),
        3.0,
        True,
    ),
    Target(
        "64-task async throughput ≥ 2× an aiomcache pool",
        speedup("throughput-async-64", "memo", "aiomcache + orjson"),
        2.0,
        True,
    ),
    Target(
        "sync throughput, 8 threads, ≥ 1.2× pymemcache PooledClient",
        speedup("throughput-sync-8-threads", "memo", "pymemcache PooledClient + orjson"),
        1.2,
        True,
    ),
    Target(
        "sync hit (exact ttl, leases) ≤ 1.03× the previous release's",
        role_ratio("hit-vs-previous-release"),
        1.03,
    ),
    # -- routing --------------------------------------------------------------------------------
    Target(
        "routing ≤ 2 µs per key at 8 servers", median_us("routing", "memo router, 8 servers"), 2.0, unit=" µs"
    ),
    Target(
        "routing ≤ 2 µs per key at 64 servers",
        median_us("routing", "memo router, 64 servers"),
        2.0,
        unit=" µs",
    ),
    Target(
        "routing at 64 servers ≤ 2× its cost at 8",
        ratio("routing", "memo router, 64 servers", "memo router, 8 servers"),
        2.0,
    ),
    # -- LangGraph batches ------------------------------------------------------------------
    Target(
        "100-key batch through MemcachedCache (sync) ≤ 1.5× a raw pymemcache get_many of its keys",
        ratio("langgraph-batch-100", "memo MemcachedCache", "pymemcache get_many"),
        1.5,
    ),
    Target(
        "100-key batch through MemcachedCache (sync) ≤ 0.8× LangGraph's RedisCache",
        ratio("langgraph-batch-100", "memo MemcachedCache", "LangGraph RedisCache"),
        0.8,
    ),
    Target(
        "100-key batch through MemcachedCache (async) ≤ 1.5× a raw aiomcache multi_get of its keys",
        ratio("langgraph-batch-100-async", "memo MemcachedCache", "aiomcache multi_get"),
        1.5,
    ),
    Target(
        "100-key batch through MemcachedCache (async) ≤ 0.8× LangGraph's RedisCache",
        ratio("langgraph-batch-100-async", "memo MemcachedCache", "LangGraph RedisCache"),
        0.8,
    ),
    # -- leases -----------------------------------------------------------------------------
    Target(
        "miss + fill with leases ≤ 1.3× without",
        ratio("miss-store", "memo, leases on", "memo, leases off"),
        1.3,
    ),
    Target(
        "stampede (threads): one run per cold key",
        recorded("stampede-threads", "memo", "runs"),
        1,
        unit=" run(s)",
    ),
    Target(
        "stampede (tasks): one run per cold key",
        recorded("stampede-tasks", "memo", "runs"),
        1,
        unit=" run(s)",
    ),
    Target(
        "stampede across 8 processes (threads), leases: one run per cold key",
        recorded("stampede-processes-threads", "memo, leases on", "runs"),
        1,
        unit=" run(s)",
    ),
    Target(
        "stampede across 8 processes (tasks), leases: one run per cold key",
        recorded("stampede-processes-tasks", "memo, leases on", "runs"),
        1,
        unit=" run(s)",
    ),
    Target(
        "invalidate-vs-fill race across two processes, leases: no stale value stored",
        recorded("invalidate-fill-race", "memo, leases on", "stale"),
        0,
        unit=" stale",
    ),
    # -- sessions ---------------------------------------------------------------------------
    Target(
        "session read on a hit faster than Django's cached_db",
        speedup("session-read-hit", "memo SessionCache.get", "Django cached_db (PyMemcacheCache)"),
        1.0,
        True,
    ),
    Target(
        "session read p99 with memcached SIGSTOPped ≤ 200 ms",
        recorded("session-read-hung", "memo SessionCache.get, memcached SIGSTOPped", "p99_ms"),
        200,
        unit=" ms",
    ),
    Target(
        "hit rate of active sessions, Zipf load ≥ 95 %",
        recorded("session-hit-rate", "memo SessionCache, Zipf load", "hit_rate", scale=100),
        95,
        True,
        unit=" %",
    ),
    # Django as it serves requests: its WSGI handler sends request_finished after each, and
    # close_caches then closes PyMemcacheCache's connection (only PyLibMCCache keeps its own).
    Target(
        "session read through the middleware, hit, 16 requests at once: ≥ 3× the requests/s of "
        "Django's cached_db (16 threads, as its request cycle runs)",
        speedup("session-read-hit-concurrent", _MEMO_16, _DJANGO_16 + ", request_finished after each"),
        3.0,
        True,
    ),
    # Django's best case, which its request cycle does not give it: each thread keeps its connection.
    Target(
        "session read through the middleware, hit, 16 requests at once: ≥ 2× the requests/s of "
        "Django's cached_db with its memcached connections kept (16 threads)",
        speedup("session-read-hit-concurrent", _MEMO_16, _DJANGO_16),
        2.0,
        True,
    ),
    Target(
        "session read through the middleware, hit, one request at a time: no slower than Django's cached_db",
        speedup(
            "session-read-hit", "memo SessionMiddleware (ASGI, hit)", "Django SessionMiddleware (cached_db)"
        ),
        1.0,
        True,
    ),
    Target(
        "session hit through the middleware: p99 < 2 ms",
        recorded("session-hit-p99", "memo SessionMiddleware hit, p99", "p99_ms"),
        2.0,
        unit=" ms",
    ),
    # -- the meta protocol and the near-cache -----------------------------------------------
    Target(
        "miss + fill on a meta server ≤ 1.3× pymemcache get + set",
        ratio("miss-fill-protocol", "memo, meta", "pymemcache get + set", reference_group="miss-store"),
        1.3,
    ),
    Target(
        "round trips per miss + fill on a meta server: 2",
        recorded("miss-fill-protocol", "memo, meta", "round_trips"),
        2,
        unit="",
    ),
    Target(
        "sync hit on a meta server ≤ 1.15× the bare-socket floor",
        ratio("hit-sync-protocol", "memo, meta", "raw socket", reference_group="hit-sync"),
        1.15,
    ),
    Target(
        "near-cache hit ≥ 20× faster than a memcached hit",
        speedup("hit-near", "memo, local_ttl", "memo"),
        20,
        True,
    ),
    Target(
        "near-cache hit ≤ 1.5× a memory:// hit",
        ratio("hit-near", "memo, local_ttl", "memo on memory://", reference_group="hit-memory"),
        1.5,
    ),
    Target(
        "memory:// hit ≤ 2× a dict lookup + orjson decode",
        ratio("hit-memory", "memo on memory://", "dict + orjson"),
        2.0,
        pending="set for a faster memory:// path; today's figure is shown",
    ),
    Target(
        "encode (10 KB) ≤ 1.5× orjson.dumps",
        ratio("codec-encode-10KB", "memo", "orjson"),
        1.5,
        pending=_CODEC,
    ),
    Target(
        "encode (small) ≤ 1.5× orjson.dumps",
        ratio("codec-encode-small", "memo", "orjson"),
        1.5,
        pending=_CODEC,
    ),
    Target(
        "decode (10 KB) ≤ 1.2× orjson.loads",
        ratio("codec-decode-10KB", "memo", "orjson"),
        1.2,
        pending=_CODEC,
    ),
    Target(
        "decode (small) ≤ 1.2× orjson.loads",
        ratio("codec-decode-small", "memo", "orjson"),
        1.2,
        pending=_CODEC,
    ),
    # -- many tenants -------------------------------------------------------------------------
    Target(
        "clear(ns) with 8,000 namespaces ≤ 2× its cost with 10",
        ratio("clear-many-namespaces", "memo clear(ns), 8,000 namespaces", "memo clear(ns), 10 namespaces"),
        2.0,
    ),
    # -- tags and batch memoization ---------------------------------------------------------
    Target(
        "hit with one tag ≤ 1.3× a hit without tags",
        ratio("hit-tags", "memo, 1 tag", "memo, no tags"),
        1.3,
    ),
    Target(
        "cached_many, 100 ids with 10 missing ≤ 1.5× a raw get_many of 100 + set_many of 10",
        ratio("batch-100-10-missing", "memo cached_many, leases on", "pymemcache get_many 100 + set_many 10"),
        1.5,
    ),
]
