"""`null://`: a store of size zero, through the backend and through the Cache."""

from __future__ import annotations

import memo
from memo._null import NullBackend


def test_every_sync_operation_answers_as_an_empty_store() -> None:
    b = NullBackend()
    assert repr(b) == "NullBackend()"
    assert b.set("k", b"v", 60) is False and b.get("k") is None  # nothing is stored
    assert b.set_many([("k", b"v", 60)]) == ["k"] and b.get_many(["k"]) == {}  # none stored
    assert b.add("k", b"v", None) is True and b.gets("k") is None
    assert b.cas("k", b"v", 60, 1) is False
    assert b.touch("k", 60) is False
    assert b.delete("k") is False and b.delete_many(["k"]) is None
    assert b.lease("k", b"marker", 5) == (True, (b"marker", 1))
    assert b.set_all("g", b"1", None) == 1 and b.get_all("g") == {}
    assert b.close() is None


async def test_every_async_operation_answers_as_an_empty_store() -> None:
    b = NullBackend()
    assert await b.aset("k", b"v", 60) is False and await b.aget("k") is None
    assert await b.aset_many([("k", b"v", 60)]) == ["k"] and await b.aget_many(["k"]) == {}
    assert await b.aadd("k", b"v", None) is True and await b.agets("k") is None
    assert await b.acas("k", b"v", 60, 1) is False
    assert await b.atouch("k", 60) is False
    assert await b.adelete("k") is False and await b.adelete_many(["k"]) is None
    assert await b.alease("k", b"marker", 5) == (True, (b"marker", 1))
    assert await b.aset_all("g", b"1", None) == 1 and await b.aget_all("g") == {}
    assert await b.aclose() is None


async def test_a_null_cache_runs_every_call_and_serves_nothing() -> None:
    cache = memo.Cache("null://")
    assert isinstance(cache.backend, NullBackend)
    runs: list[int] = []

    @cache.cached(ns="n")
    def f(x: int) -> int:
        runs.append(x)
        return x * 2

    @cache.cached(ns="n")
    async def af(x: int) -> int:
        runs.append(-x)
        return x * 3

    assert [f(1), f(1), await af(1), await af(1)] == [2, 2, 3, 3]
    assert runs == [1, 1, -1, -1]
    cache.set_many({"a": 1, "b": 2})
    assert cache.get_many(["a", "b"]) == {}
    await cache.aset_many({"a": 1})
    assert await cache.aget_many(["a"]) == {}
    assert await cache.aget("a") is None
    await cache.adelete("a")
    cache.close()
