"""The near-cache (`local_ttl`): hits served from this process, within a stated bound."""

from __future__ import annotations

import subprocess
import sys
import uuid
from typing import Any

import pytest

import memo
from memo import _clock


def _counting(cache: memo.Cache) -> list[str]:
    """Count the backend reads a Cache makes (the backend itself stays real)."""
    reads: list[str] = []
    backend: Any = cache.backend
    real_get, real_aget = backend.get, backend.aget

    def get(key: str) -> bytes | None:
        reads.append(key)
        return real_get(key)

    async def aget(key: str) -> bytes | None:
        reads.append(key)
        return await real_aget(key)

    backend.get, backend.aget = get, aget
    if hasattr(backend, "get_or_lease"):  # the read that takes a miss's lease along (LEASED_READS)
        real_lease, real_alease = backend.get_or_lease, backend.aget_or_lease

        def get_or_lease(key: str, ttl: float) -> bytes | None:
            reads.append(key)
            return real_lease(key, ttl)

        async def aget_or_lease(key: str, ttl: float) -> bytes | None:
            reads.append(key)
            return await real_alease(key, ttl)

        backend.get_or_lease, backend.aget_or_lease = get_or_lease, aget_or_lease
    return reads


def test_hits_are_served_from_the_process_for_local_ttl(make_cache: Any) -> None:
    cache = make_cache()
    reads = _counting(cache)
    runs: list[int] = []

    @cache.cached(ns="near", ttl=60, local_ttl=5, ignore=("runs",))
    def rows(x: int) -> list[int]:
        runs.append(x)
        return [x, x + 1]

    with _clock.use(_clock.FakeClock()) as clock:
        assert rows(1) == [1, 2]  # miss: computed and stored
        assert rows(1) == [1, 2]  # hit from the backend: kept here
        before = len(reads)
        for _ in range(10):
            got = rows(1)
            assert got == [1, 2]
            got.append(99)  # decoded afresh each time: no caller sees another's change
        assert len(reads) == before  # not one read of the backend
        assert rows.cache_info()["local_hits"] == 10
        clock.advance(5.01)
        assert rows(1) == [1, 2]
        assert len(reads) == before + 1  # past local_ttl: read again
    assert runs == [1]


def test_an_invalidate_in_this_process_is_seen_by_the_next_call(make_cache: Any) -> None:
    first = make_cache()
    # Another Cache on the same servers, in this process (memory://: the same store).
    second = (
        make_cache() if first.url != "memory://" else memo.Cache(backend=first.backend, prefix=first.prefix)
    )
    runs: list[int] = []

    def decorate(cache: memo.Cache) -> Any:
        @cache.cached(ns="near", ttl=60, local_ttl=60, ignore=("runs",))
        def version(x: int) -> int:
            runs.append(x)
            return len(runs)

        return version

    here, there = decorate(first), decorate(second)
    assert here(1) == 1 and here(1) == 1
    there.invalidate(1)
    assert here(1) == 2
    here.refresh(1)
    assert here(1) == 3 and here(1) == 3
    here.set(42, 1)
    assert here(1) == 42


def test_the_copy_never_outlives_the_entry(make_cache: Any) -> None:
    cache = make_cache()

    @cache.cached(ns="near", ttl=1, local_ttl=60)
    def now(x: int) -> int:
        return x

    with _clock.use(_clock.FakeClock()) as clock:
        now(1)
        now(1)
        clock.advance(1.01)  # the entry's exact ttl has passed; local_ttl has not
        assert now(1) == 1
    assert now.cache_info()["local_hits"] == 0


def test_bounded_by_local_max_entries(memory_cache: memo.Cache) -> None:
    cache = memo.Cache("memory://", local_ttl=60, local_max_entries=10)

    @cache.cached(ns="near", ttl=60)
    def f(x: int) -> int:
        return x

    for x in range(30):
        f(x)
        f(x)  # the backend hit that is kept
    info = f.cache_info()
    assert info["local_evictions"] == 20
    f(29)
    assert f.cache_info()["local_hits"] == 1


def test_off_by_default(cache: memo.Cache) -> None:
    @cache.cached(ns="near", ttl=60)
    def f(x: int) -> int:
        return x

    f(1), f(1), f(1)
    assert f.cache_info()["local_hits"] == 0


async def test_async(make_cache: Any) -> None:
    cache = make_cache(local_ttl=5)
    reads = _counting(cache)

    @cache.cached(ns="near", ttl=60)
    async def f(x: int) -> int:
        return x * 3

    assert await f(2) == 6
    assert await f(2) == 6
    before = len(reads)
    assert await f(2) == 6
    assert len(reads) == before and f.cache_info()["local_hits"] == 1
    await f.ainvalidate(2)
    assert await f(2) == 6
    assert len(reads) > before


_OTHER = """
import sys, memo
memo.Cache(sys.argv[1]).backend.delete(sys.argv[2])   # what invalidate() sends
"""


@pytest.mark.memcached
def test_another_process_within_local_ttl(memcached_url: str) -> None:
    """Another process's invalidate reaches this one within local_ttl, never later."""
    cache = memo.Cache(memcached_url, prefix=f"n{uuid.uuid4().hex[:8]}:", local_ttl=0.5)
    runs: list[int] = []

    @cache.cached(ns="near", ttl=60, ignore=("runs",))
    def version(x: int) -> int:
        runs.append(x)
        return len(runs)

    with _clock.use(_clock.FakeClock()) as clock:
        assert version(1) == 1 and version(1) == 1
        subprocess.run(
            [sys.executable, "-c", _OTHER, memcached_url, version.key_for(1)], check=True, timeout=60
        )
        assert version(1) == 1  # the bound: this process may serve its copy for local_ttl
        clock.advance(0.5)
        assert version(1) == 2  # and not a moment longer
    cache.close()


def test_bad_options_are_refused() -> None:
    with pytest.raises(memo.ConfigurationError, match="local_ttl"):
        memo.Cache("memory://", local_ttl=-1)
    with pytest.raises(memo.ConfigurationError, match="local_max_entries"):
        memo.Cache("memory://", local_max_entries="many")
    with pytest.raises(memo.ConfigurationError, match="local_ttl"):
        memo.Cache("memory://").cached(ns="x", ttl=5, local_ttl="1s")(lambda x: x)


def test_each_in_process_store_has_its_own_near_cache() -> None:
    """Two memory:// Caches are two stores: a copy from one is never served by the other."""
    first, second = memo.Cache("memory://", local_ttl=60), memo.Cache("memory://", local_ttl=60)
    answers = {id(first): 1, id(second): 2}

    def decorate(cache: memo.Cache) -> Any:
        @cache.cached(ns="near", ttl=60, ignore=("answers",))
        def which() -> int:
            return answers[id(cache)]

        return which

    one, two = decorate(first), decorate(second)
    assert one() == one() == 1
    assert two() == two() == 2
