"""Generations: a clear is never undone (memo/_generations.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from memcached_fixtures import MemcachedProcess

import memo
from memo._generations import TOKEN_LENGTH, new_token, parse_token


class Counter:
    def __init__(self) -> None:
        self.calls: list[Any] = []

    def __call__(self, *args: Any) -> int:
        self.calls.append(args)
        return len(self.calls)


def memoized(cache: memo.Cache, seen: Counter, ns: str = "n") -> Any:
    @cache.cached(ns=ns)
    def f(x: int) -> int:
        return seen(x)

    return f


def cache_on(servers: list[MemcachedProcess], **options: Any) -> memo.Cache:
    url = "memcached://" + ",".join(s.address for s in servers)
    options.setdefault("timeout", 0.1)
    options.setdefault("connect_timeout", 0.1)
    return memo.Cache(url, **options)


def holds(server: MemcachedProcess, key: str) -> bool:
    with memo.Cache(server.url) as probe:
        return probe.backend.get(key) is not None


class PausedRead:
    """Wraps a backend: the first generation read returns what it read only when released."""

    READS = ("get_all_many", "get_many")  # the generation read, today and before

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self.armed = False
        self.paused = threading.Event()
        self.release = threading.Event()
        self.apaused = asyncio.Event()
        self.arelease = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._backend, name)
        if name in self.READS:

            def read(*args: Any) -> Any:
                result = method(*args)
                if self.armed:
                    self.armed = False
                    self.paused.set()
                    assert self.release.wait(5)
                return result

            return read
        if name in tuple("a" + n for n in self.READS):

            async def aread(*args: Any) -> Any:
                result = await method(*args)
                if self.armed:
                    self.armed = False
                    self.apaused.set()
                    await self.arelease.wait()
                return result

            return aread
        return method


class TestClearWinsOverReads:
    def test_a_read_that_started_before_clear_never_installs_its_token(self, make_cache: Any) -> None:
        cache: memo.Cache = make_cache(ns_refresh=60)
        seen = Counter()
        f = memoized(cache, seen)
        assert f(1) == f(1) == 1
        paused = PausedRead(cache.backend)
        cache.backend = paused  # type: ignore[assignment]
        cache._generations.clear()  # the generation is stale: the next call reads it
        paused.armed = True
        reader = threading.Thread(target=cache.generation, args=("n",))
        reader.start()
        assert paused.paused.wait(5)  # the reader holds the old token
        cache.clear(ns="n")
        paused.release.set()
        reader.join(5)
        assert f(1) == 2  # the clear stands: the old token was not installed
        assert f(1) == 2

    async def test_async_read_that_started_before_aclear(self, make_cache: Any) -> None:
        cache: memo.Cache = make_cache(ns_refresh=60)
        seen = Counter()

        @cache.cached(ns="n")
        async def f(x: int) -> int:
            return seen(x)

        assert await f(1) == await f(1) == 1
        paused = PausedRead(cache.backend)
        cache.backend = paused  # type: ignore[assignment]
        cache._generations.clear()
        paused.armed = True
        reader = asyncio.create_task(cache.ageneration("n"))
        await asyncio.wait_for(paused.apaused.wait(), 5)
        await cache.aclear(ns="n")
        paused.arelease.set()
        await reader
        assert await f(1) == 2
        assert await f(1) == 2

    def test_a_clear_from_a_clock_behind_still_moves_forward(self, monkeypatch: pytest.MonkeyPatch) -> None:
        ahead = new_token()
        monkeypatch.setattr(time, "time_ns", lambda: 1_000_000_000)  # 1970
        behind = new_token(after=ahead)
        assert behind > ahead and parse_token(behind.encode()) == behind
        assert len(behind) == TOKEN_LENGTH and parse_token(b"x" * TOKEN_LENGTH) is None


@pytest.mark.memcached
class TestTokensOnEveryServer:
    def test_a_server_that_missed_a_clear_cannot_bring_the_old_token_back(
        self, memcached_servers: Callable[..., list[MemcachedProcess]]
    ) -> None:
        servers = memcached_servers(3)
        seen = Counter()
        first = cache_on(servers)
        assert memoized(first, seen)(1) == 1
        away = next(s for s in servers if holds(s, first._ns_key("n")))
        without = cache_on([s for s in servers if s is not away])
        without.clear(ns="n")  # the server holding the old token is not in this list
        back = cache_on(servers)  # a process that knows all three again
        assert memoized(back, seen)(1) == 2
        tokens = back.backend.get_all(back._ns_key("n"))
        assert len(tokens) == 3 and len(set(tokens.values())) == 1  # the server that was away is repaired
        for cache in (first, without, back):
            cache.close()

    def test_processes_with_different_server_lists_agree_about_clears(
        self, memcached_servers: Callable[..., list[MemcachedProcess]]
    ) -> None:
        s1, s2, s3 = memcached_servers(3)
        left = cache_on([s1, s2], ns_refresh=0)
        right = cache_on([s2, s3], ns_refresh=0)
        names = [f"ns{i}" for i in range(20)]
        seen = {ns: Counter() for ns in names}
        here = {ns: memoized(left, seen[ns], ns) for ns in names}
        for ns in names:
            assert here[ns](1) == here[ns](1) == 1
            right.clear(ns=ns)
        # Routed by key, some of these tokens would live on s1 for one list and s3 for the other.
        assert [here[ns](1) for ns in names] == [2] * len(names)
        left.close()
        right.close()

    def test_a_restarted_server_gets_the_token_back(
        self, memcached_servers: Callable[..., list[MemcachedProcess]]
    ) -> None:
        servers = memcached_servers(2)
        cache = cache_on(servers, ns_refresh=0)
        cache.clear(ns="n")
        token = cache.backend.get_all(cache._ns_key("n"))
        servers[0].restart()
        cache.generation("n")  # may find the pooled connection to the restarted server dead
        cache.generation("n")
        assert cache.backend.get_all(cache._ns_key("n")) == token
        cache.close()


def test_memory_tokens_are_not_evicted_by_the_lru() -> None:
    cache = memo.Cache("memory://?max_entries=4", ns_refresh=0)
    seen = Counter()
    f = memoized(cache, seen)
    f(1)
    key = f.key_for(1)
    for i in range(20):  # fill the LRU many times over
        cache.backend.set(f"junk{i}", b"x", None)
    assert f.key_for(1) == key  # the namespace was not flushed


@pytest.mark.memcached
class TestOneDeadServer:
    @pytest.mark.parametrize("how", ["refused", "stopped"])
    def test_a_process_started_during_the_outage_still_caches(
        self, memcached_servers: Callable[..., list[MemcachedProcess]], how: str
    ) -> None:
        servers = memcached_servers(3)
        before = cache_on(servers)
        before.generation("n")
        # The server that holds the root token (the one every key's generation needs).
        dead = next(s for s in servers if holds(s, f"{before.prefix}~gen"))
        before.close()
        if how == "refused":
            dead.kill()
        else:
            dead.pause()
        try:
            cache = cache_on(servers)  # started during the outage
            seen = Counter()
            f = memoized(cache, seen)
            for x in range(30):
                f(x)
            for x in range(30):
                f(x)
            # About two thirds of the keys live on healthy servers: those are hits.
            assert cache.stats("n")["hits"] >= 10, cache.stats("n")
            cache.close()
        finally:
            if how == "stopped":
                dead.resume()
