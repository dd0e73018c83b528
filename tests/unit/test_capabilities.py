"""A backend implementing only the core (get, set, delete and their batches) works, without leases."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

import pytest

import memo
from memo._backend import SetItem


class CoreOnly(memo.Backend):
    """The documented minimal contract, nothing else: no add, gets, cas or touch."""

    max_value_size = 1024 * 1024

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.calls: list[str] = []

    def get(self, key: str) -> bytes | None:
        self.calls.append("get")
        return self.data.get(key)

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        return {k: self.data[k] for k in keys if k in self.data}

    def set(self, key: str, value: bytes, ttl: float | None) -> bool:
        self.calls.append("set")
        self.data[key] = value
        return True

    def set_many(self, items: Iterable[SetItem]) -> list[str]:
        for key, value, ttl in items:
            self.set(key, value, ttl)
        return []

    def delete(self, key: str) -> bool:
        self.calls.append("delete")
        return self.data.pop(key, None) is not None

    def delete_many(self, keys: Sequence[str]) -> None:
        for key in keys:
            self.delete(key)

    def close(self) -> None:
        pass

    async def aget(self, key: str) -> bytes | None:
        return self.get(key)

    async def aget_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        return self.get_many(keys)

    async def aset(self, key: str, value: bytes, ttl: float | None) -> bool:
        return self.set(key, value, ttl)

    async def aset_many(self, items: Iterable[SetItem]) -> list[str]:
        return self.set_many(items)

    async def adelete(self, key: str) -> bool:
        return self.delete(key)

    async def adelete_many(self, keys: Sequence[str]) -> None:
        self.delete_many(keys)

    async def aclose(self) -> None:
        pass


def test_a_core_only_backend_can_be_built_and_memoizes() -> None:
    backend = CoreOnly()
    cache = memo.Cache(backend=backend)
    assert cache.leases is False  # not declared: plain fills
    runs: list[int] = []

    @cache.cached(ns="core", ttl=60, ignore=("runs",))
    def square(x: int) -> int:
        runs.append(x)
        return x * x

    assert square(3) == square(3) == 9
    assert runs == [3]
    assert square.invalidate(3) is True
    assert square(3) == 9 and runs == [3, 3]
    assert square.refresh(3) == 9 and runs == [3, 3, 3]
    assert cache.get_or_set("k", lambda: [1, 2]) == [1, 2]
    assert cache.get("k") == [1, 2]
    assert set(backend.calls) <= {"get", "set", "delete"}


async def test_a_core_only_backend_serves_async_and_stale_entries() -> None:
    cache = memo.Cache(backend=CoreOnly())
    runs: list[int] = []

    @cache.cached(ns="core", ttl=0.05, stale_ttl=60, ignore=("runs",))
    async def double(x: int) -> int:
        runs.append(x)
        return 2 * x

    assert await double(2) == 4
    await asyncio.sleep(0.06)
    assert await double(2) == 4  # stale, served at once; refreshed in the background without a lease
    for _ in range(100):
        if len(runs) == 2:
            break
        await asyncio.sleep(0.01)
    assert runs == [2, 2]


def test_an_undeclared_capability_says_so() -> None:
    with pytest.raises(NotImplementedError, match="does not declare"):
        CoreOnly().gets("k")


def test_the_in_process_backends_declare_what_they_implement() -> None:
    assert memo.Cache("memory://").backend.capabilities == frozenset(memo.Capability)
    assert memo.Cache("null://").backend.capabilities == {memo.Capability.LEASES, memo.Capability.TOUCH}


def test_a_leased_read_is_used_only_where_it_is_declared_and_implemented() -> None:
    """A backend written before leased reads existed may declare `frozenset(Capability)`."""

    class EveryCapability(CoreOnly):
        capabilities = frozenset(memo.Capability)

    class Leasing(EveryCapability):
        def get_or_lease(self, key: str, lease_ttl: float) -> bytes | None:
            return self.get(key)

    assert memo.Cache(backend=EveryCapability()).leased_reads is False
    assert memo.Cache(backend=Leasing()).leased_reads is True
    assert memo.Cache(backend=Leasing(), leases=False).leased_reads is False
    assert memo.Cache("memcached://127.0.0.1:1").leased_reads is True
    assert memo.Cache("memory://").leased_reads is True
    assert memo.Cache("null://").leased_reads is False
