"""Per-function controls: peek (`get`), prime (`set`), `clear()`, `cache_info()`, and `cache_if=`."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest

import memo


def test_get_peeks_without_computing(cache: memo.Cache) -> None:
    runs: list[int] = []

    @cache.cached(ns="c", ttl=60)
    def square(x: int) -> int:
        runs.append(x)
        return x * x

    assert square.get(3) is memo.MISS
    assert runs == []
    assert square(3) == 9
    assert square.get(3) == 9
    assert square.get(x=3) == 9  # bound like a call
    assert runs == [3]


def test_a_cached_none_is_not_a_miss(cache: memo.Cache) -> None:
    @cache.cached(ns="c", ttl=60)
    def nothing(x: int) -> None:
        return None

    nothing(1)
    assert nothing.get(1) is None
    assert nothing.get(2) is memo.MISS


async def test_async_peek_and_prime(cache: memo.Cache) -> None:
    runs: list[int] = []

    @cache.cached(ns="c", ttl=60)
    async def double(x: int) -> int:
        runs.append(x)
        return 2 * x

    assert await double.aget(4) is memo.MISS
    await double.aset(100, 4)
    assert await double(4) == 100
    assert await double.aget(4) == 100
    assert runs == []


def test_set_primes_the_entry(cache: memo.Cache) -> None:
    runs: list[int] = []

    @cache.cached(ns="c", ttl=60)
    def load(user_id: int) -> dict[str, Any]:
        runs.append(user_id)
        return {"id": user_id}

    load.set({"id": 7, "primed": True}, 7)
    assert load(7) == {"id": 7, "primed": True}
    assert runs == []


def test_set_wins_over_a_fill_that_started_before(cache: memo.Cache) -> None:
    entered, release = threading.Event(), threading.Event()

    @cache.cached(ns="c", ttl=60)
    def slow(x: int) -> str:
        if threading.current_thread().name == "filler":
            entered.set()
            assert release.wait(10)
        return "computed"

    t = threading.Thread(target=slow, args=(1,), name="filler")
    t.start()
    assert entered.wait(10)
    slow.set("primed", 1)
    release.set()
    t.join()
    assert slow.get(1) == "primed"


def test_clear_drops_one_function_and_leaves_its_namespace(cache: memo.Cache) -> None:
    runs: list[str] = []

    @cache.cached(ns="shared", ttl=60)
    def first(x: int) -> int:
        runs.append("first")
        return x

    @cache.cached(ns="shared", ttl=60)
    def second(x: int) -> int:
        runs.append("second")
        return x

    first(1), second(1)
    first.clear()
    first(1), second(1)
    assert runs == ["first", "second", "first"]
    cache.clear("shared")  # the namespace clear still reaches every function in it
    first(1), second(1)
    assert runs == ["first", "second", "first", "first", "second"]


async def test_aclear(cache: memo.Cache) -> None:
    runs: list[int] = []

    @cache.cached(ns="c", ttl=60)
    async def f(x: int) -> int:
        runs.append(x)
        return x

    await f(1)
    await f.aclear()
    await f(1)
    assert runs == [1, 1]


@pytest.mark.memcached
def test_clear_reaches_other_processes(memcached_url: str) -> None:
    """Two Caches on one server stand for two processes; the other sees it within ns_refresh."""
    prefix = f"fc{uuid.uuid4().hex[:8]}:"
    made = [memo.Cache(memcached_url, prefix=prefix, ns_refresh=0) for _ in range(2)]
    runs: list[int] = []
    fns: list[Callable[[int], int]] = []
    for cache in made:

        @cache.cached(ns="n", ttl=60)
        def f(x: int) -> int:
            runs.append(x)
            return x

        fns.append(f)
    try:
        fns[0](1)
        fns[1](1)
        assert runs == [1]
        fns[0].clear()  # type: ignore[attr-defined]
        fns[1](1)
        assert runs == [1, 1]
    finally:
        for cache in made:
            cache.close()


def test_cache_info_counts_this_function_and_the_namespace_sums_them(cache: memo.Cache) -> None:
    @cache.cached(ns="info", ttl=60)
    def a(x: int) -> int:
        return x

    @cache.cached(ns="info", ttl=60)
    def b(x: int) -> int:
        return x

    a(1), a(1), a(1), b(1)
    assert a.cache_info()["hits"] == 2 and a.cache_info()["misses"] == 1
    assert b.cache_info()["hits"] == 0 and b.cache_info()["misses"] == 1
    assert cache.stats("info")["hits"] == 2 and cache.stats("info")["misses"] == 2
    assert cache.stats()["total"]["misses"] >= 2


def test_cache_if_keeps_unwanted_results_out(cache: memo.Cache) -> None:
    runs: list[str] = []

    @cache.cached(ns="c", ttl=60, cache_if=lambda result: bool(result))
    def search(q: str) -> list[str]:
        runs.append(q)
        return [] if q == "none" else [q]

    assert search("none") == [] and search("none") == []
    assert search("x") == ["x"] and search("x") == ["x"]
    assert runs == ["none", "none", "x"]
    assert search.get("none") is memo.MISS


def test_cache_if_must_be_callable(memory_cache: memo.Cache) -> None:
    with pytest.raises(memo.ConfigurationError, match="cache_if"):

        @memory_cache.cached(ns="c", cache_if=True)  # type: ignore[arg-type]
        def f() -> int:
            return 1


def test_methods_get_their_controls_bound(cache: memo.Cache) -> None:
    class Repo:
        def __init__(self, name: str) -> None:
            self.name = name

        def __cache_key__(self) -> str:
            return self.name

        @cache.cached(ns="m", ttl=60)
        def load(self, x: int) -> str:
            return f"{self.name}{x}"

    r = Repo("a")
    assert r.load.get(1) is memo.MISS
    assert r.load(1) == "a1"
    assert r.load.get(1) == "a1"
    assert Repo("b").load.get(1) is memo.MISS
