"""Many tenants in one long-lived process: per-namespace and per-function state stays bounded."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import pytest

import memo
from memo import _generations


def test_clear_touches_only_its_own_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = memo.Cache("memory://", max_entries=20_000)

    @cache.cached(ns="tenant-0")
    def report(x: int) -> int:
        return x

    for i in range(5000):
        cache.set("k", i, ns=f"tenant-{i}")
    assert report(1) == 1
    looked_at: list[str] = []
    record_keys = _generations.Generations.record_keys

    def counting(self: Any, name: str) -> list[str]:
        looked_at.append(name)
        return record_keys(self, name)

    monkeypatch.setattr(_generations.Generations, "record_keys", counting)
    before = dict(cache.known_generations)
    cache.clear("tenant-0")
    # The namespace and its one function's scope: not the 4,999 other tenants.
    scope = f"tenant-0{_generations.SCOPE}{report._self_memo.keys.function_id}"
    assert sorted(set(looked_at)) == ["tenant-0", scope]
    assert len(looked_at) == 3  # the record to write, then the two generations made of it
    changed = {name for name, entry in cache.known_generations.items() if before[name][0] != entry[0]}
    assert changed == {"tenant-0", scope}
    assert cache.get("k", ns="tenant-0") is None
    assert cache.get("k", ns="tenant-4999") == 4999
    assert report.get(1) is memo.MISS
    looked_at.clear()
    report.clear()  # one function's scope: only itself
    assert set(looked_at) == {scope}


# -- memory://: generation records outside the LRU, a byte bound -------------------------


def test_generation_records_take_no_slot_from_values() -> None:
    cache = memo.Cache("memory://?max_entries=100")
    for i in range(60):
        cache.set("k", i, ns=f"n{i}")
    assert [cache.get("k", ns=f"n{i}") for i in range(60)] == list(range(60))
    backend: Any = cache.backend
    assert len(backend) == 60
    assert backend.evictions == 0


def test_decorated_functions_in_many_namespaces_keep_every_value() -> None:
    cache = memo.Cache("memory://", max_entries=100)
    calls: list[int] = []
    functions = []
    for i in range(60):

        @cache.cached(ns=f"tenant-{i}")
        def load(x: int, i: int = i) -> int:
            calls.append(i)
            return i

        functions.append(load)
    for fn in functions:
        fn(1)
    for fn in functions:
        fn(1)
    assert calls == list(range(60))  # the second round: 60 hits


def test_generation_records_are_bounded_on_their_own() -> None:
    cache = memo.Cache("memory://", max_records=10)
    for i in range(30):
        cache.set("k", i, ns=f"n{i}")
    backend: Any = cache.backend
    assert len(backend._pinned) == 10
    # The process still knows every namespace's generation: each value is still found.
    assert [cache.get("k", ns=f"n{i}") for i in range(30)] == list(range(30))
    # A record evicted from the store comes back from what this process knows.
    cache2 = memo.Cache(backend=backend, ns_refresh=0)
    assert cache2.get("k", ns="n29") == 29


def test_max_bytes_bounds_the_store_and_counts_evictions() -> None:
    backend: Any = memo.Cache("memory://?max_bytes=10000").backend
    assert backend.max_bytes == 10_000
    for i in range(100):
        assert backend.set(f"key{i:03d}", b"x" * 994, None)  # 6 + 994 = 1,000 bytes each
    assert backend.nbytes == 10_000
    assert len(backend) == 10
    assert backend.evictions == 90
    assert backend.get("key089") is None
    assert backend.get("key090") == b"x" * 994
    assert not backend.set("big", b"x" * 10_000, None)  # larger than the whole store: refused
    assert backend.evictions == 90
    backend.delete("key099")
    assert backend.nbytes == 9000
    backend.set("key098", b"y", None)  # replacing counts the new size only
    assert backend.nbytes == 8000 + 7


def test_max_bytes_has_a_default_and_is_checked() -> None:
    assert memo.Cache("memory://").backend.max_bytes == 64 * 1024 * 1024  # type: ignore[attr-defined]
    for bad in ("0", "-1", "lots"):
        with pytest.raises(memo.ConfigurationError, match="max_bytes"):
            memo.Cache(f"memory://?max_bytes={bad}")


# -- per-function state goes with the function ---------------------------------------------


class Client:
    """A bound method decorated per instance, as the decorator docs show."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.fetch = CACHE.cached(ns="clients")(self._fetch)

    def _fetch(self, x: int) -> int:
        return x * self.n

    def __cache_key__(self) -> int:
        return self.n


CACHE = memo.Cache("memory://")


def _churn(count: int) -> None:
    for i in range(count):
        client = Client(i % 3)
        client.fetch(1)
        client.fetch(1)
        del client


def test_functions_decorated_per_instance_leave_nothing_behind() -> None:
    _churn(100)
    gc.collect()
    tracemalloc.start()
    try:
        # Tables (sets, dicts) grow to the most instances alive between two garbage
        # collections and keep that size: churn once to reach it, then measure the slope.
        _churn(2000)
        gc.collect()
        CACHE.stats()  # folds the counters of collected functions
        start = tracemalloc.get_traced_memory()[0]
        _churn(4000)
        gc.collect()
        CACHE.stats()
        grown = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert grown < 4000 * 8, f"{grown / 4000:.1f} bytes kept per instance"  # it was ~120 before
    assert CACHE._functions.get("clients", {}) == {}
    # The counts of collected functions stay in their namespace's figures.
    assert CACHE.stats("clients")["hits"] == 2 * 6100 - 3
    assert CACHE.stats("clients")["misses"] == 3


def test_a_live_function_keeps_its_own_counters() -> None:
    cache = memo.Cache("memory://")
    client = Client(7)
    client.fetch = cache.cached(ns="live")(client._fetch)
    client.fetch(2)
    client.fetch(2)
    assert client.fetch.cache_info()["hits"] == 1
    assert cache.stats("live")["hits"] == 1
    assert len(cache._functions["live"]) == 1
    del client
    gc.collect()
    assert cache.stats("live")["hits"] == 1
    assert cache.stats()["total"]["hits"] == 1
    assert "live" not in cache._functions
