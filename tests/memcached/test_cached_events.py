"""`@cached` reports what it did to the Cache's `on_event` hook."""

from __future__ import annotations

import ast
import time
from pathlib import Path

from ports import refused_url

import memo
from memo._codec import lease_marker
from memo.testing import record_events


def test_miss_fill_and_hit(cache: memo.Cache) -> None:
    @cache.cached(ns="ev", ttl=60)
    def f(x: int) -> int:
        return x

    with record_events(cache) as events:
        f(1)
        f(1)
    assert events.kinds == ["miss", "lease_acquired", "set", "hit"]
    hit = events[-1]
    assert hit.ns == "ev" and hit.function is not None and hit.function.endswith(".f")
    assert hit.source == "cached" and hit.duration is not None and hit.duration >= 0
    stored = events[2]
    assert stored.kind == "set" and stored.duration is not None and 0 <= stored.duration < 1


def test_refresh_and_prime_sets_are_timed(cache: memo.Cache) -> None:
    @cache.cached(ns="ev", ttl=60)
    def f(x: int) -> int:
        return x

    with record_events(cache) as events:
        f.refresh(1)
        f.set(5, 2)
    sets = [event for event in events if event.kind == "set"]
    assert len(sets) == 2 and all(e.duration is not None and 0 <= e.duration < 1 for e in sets)


async def test_async_hits_are_timed(cache: memo.Cache) -> None:
    @cache.cached(ns="ev", ttl=60)
    async def f(x: int) -> int:
        return x

    with record_events(cache) as events:
        await f(1)
        await f(1)
    assert events.kinds == ["miss", "lease_acquired", "set", "hit"]
    assert events[-1].duration is not None


def test_stale_forbidden_and_lease_wait(cache: memo.Cache) -> None:
    @cache.cached(ns="ev", ttl=0.2, stale_ttl=30, cache_if=lambda r: r != "skip")
    def f(x: str) -> str:
        return x

    with record_events(cache) as events:
        f("skip")
        f("a")
        time.sleep(0.25)
        f("a")
    assert "forbidden" in events.kinds and "stale" in events.kinds

    @cache.cached(ns="ev2", ttl=60, lease_wait=0.05)
    def g(x: str) -> str:
        return x

    with record_events(cache) as events:
        cache.backend.set(g.key_for("b"), lease_marker("someone-else"), 30)  # another's lease...
        g("b")  # ... is waited for, then the value is computed without storing
    assert [e.kind for e in events if e.ns == "ev2"] == ["miss", "lease_wait"]


def test_errors_are_reported_and_the_function_still_runs() -> None:
    cache = memo.Cache(refused_url(), timeout=0.05, connect_timeout=0.05)

    @cache.cached(ns="ev")
    def f(x: int) -> int:
        return x

    with record_events(cache) as events:
        assert f(3) == 3
    assert "error" in events.kinds
    assert all(e.error is not None for e in events if e.kind == "error")
    cache.close()


def test_undecodable_bytes_are_reported(cache: memo.Cache) -> None:
    @cache.cached(ns="ev", ttl=60)
    def f(x: int) -> int:
        return x

    cache.backend.set(f.key_for(1), b"m\x02\x01[1", None)
    with record_events(cache) as events:
        assert f(1) == 1
    assert "decode_error" in events.kinds


def test_the_langgraph_cache_reports_its_batches(cache: memo.Cache) -> None:
    from memo.langgraph import MemcachedCache

    graph_cache: MemcachedCache[dict[str, int]] = MemcachedCache(cache)
    keys = [(("node",), f"{i:032x}") for i in range(3)]
    with record_events(cache) as events:
        graph_cache.set({keys[0]: ({"v": 0}, None), keys[1]: ({"v": 1}, None)})
        assert graph_cache.get(keys) == {keys[0]: {"v": 0}, keys[1]: {"v": 1}}
    assert sorted(e.kind for e in events) == ["hit", "hit", "miss", "set", "set"]
    assert {e.source for e in events} == {"langgraph"}


def test_every_kind_and_source_memo_emits_is_declared() -> None:
    """The literal kinds and sources of `emit(...)` calls in memo's source, and the kinds
    fills and sessions report, are in `memo._events.KINDS` / `SOURCES` (what `memo.Event`
    documents)."""
    from memo._events import KINDS, SOURCES
    from memo._fill import Outcome
    from memo._memo import _COUNTERS
    from memo.sessions._cache import _EVENT_KINDS

    kinds, sources = set(), set()
    for path in Path(memo.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "emit"
            ):
                if node.args and isinstance(node.args[0], ast.Constant):
                    kinds.add(node.args[0].value)
                if len(node.args) == 6 and isinstance(node.args[5], ast.Constant):
                    sources.add(node.args[5].value)
    assert {"stale_on_error", "error", "decode_error", "hit", "miss"} <= kinds
    assert sources == set(SOURCES)
    reported = {o.value for o in (Outcome.ACQUIRED, *_COUNTERS)} | set(_EVENT_KINDS.values())
    assert kinds | reported <= set(KINDS)
