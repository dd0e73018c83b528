"""Generations: a clear is never undone (memo/_generations.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from memcached_fixtures import MemcachedProcess

import memo
from memo._generations import TOKEN_LENGTH, new_token, parse_record


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
        cache.known_generations.clear()  # the generation is stale: the next call reads it
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
        cache.known_generations.clear()
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
        assert behind > ahead and parse_record(behind.encode()) == behind
        assert len(behind) == TOKEN_LENGTH and parse_record(b"x" * TOKEN_LENGTH) is None
        assert parse_record((behind + ahead).encode()) == behind  # a record's token: its newest


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
        records = back.backend.get_all(back._ns_key("n"))
        newest = {parse_record(raw) for raw in records.values()}
        assert len(records) == 3 and len(newest) == 1  # the server that was away is repaired
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
        (token,) = {parse_record(raw) for raw in cache.backend.get_all(cache._ns_key("n")).values()}
        servers[0].restart()
        cache.generation("n")  # may find the pooled connection to the restarted server dead
        cache.generation("n")
        records = cache.backend.get_all(cache._ns_key("n"))
        assert [parse_record(raw) for raw in records.values()] == [token, token]
        cache.close()


class PausedWrite:
    """Wraps a backend: the write of one control record blocks until released (then lands)."""

    def __init__(self, backend: Any, key: str) -> None:
        self._backend = backend
        self.key = key
        self.paused = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._backend, name)
        if name not in ("set_all", "append_all"):
            return method

        def write(key: str, *args: Any) -> Any:
            if key == self.key and not self.paused.is_set():
                self.paused.set()
                assert self.release.wait(5)
            return method(key, *args)

        return write


@pytest.mark.memcached
def test_a_repair_with_the_token_it_read_before_a_clear_cannot_undo_it(
    memcached_servers: Callable[..., list[MemcachedProcess]],
) -> None:
    s1, s2 = memcached_servers(2)
    seen = Counter()
    first = cache_on([s1, s2])
    assert memoized(first, seen)(1) == 1
    s2.restart()  # s2 lost the tokens: the next reader repairs it with the one s1 holds
    repairer = cache_on([s1, s2])
    paused = PausedWrite(repairer.backend, repairer._ns_key("n"))
    repairer.backend = paused  # type: ignore[assignment]
    reader = threading.Thread(target=repairer.generation, args=("n",))
    reader.start()
    assert paused.paused.wait(5)  # it read the old token and is about to write it back
    clearer = cache_on([s1, s2])
    clearer.clear(ns="n")
    paused.release.set()  # the repair lands after the clear
    reader.join(5)
    later = cache_on([s1, s2])  # a process that starts now
    assert memoized(later, seen)(1) == 2
    for cache in (first, repairer, clearer, later):
        cache.close()


def test_records_stay_small_and_every_clear_counts() -> None:
    cache = memo.Cache("memory://", ns_refresh=0)
    seen = Counter()
    f = memoized(cache, seen)
    for i in range(1, 21):
        assert f(1) == i
        cache.clear(ns="n")
    record = cache.backend.get_all(cache._ns_key("n"))["memory"]
    assert record is not None and len(record) <= 8 * TOKEN_LENGTH


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


def test_a_forked_child_reads_generations_even_if_a_lock_was_held_at_fork() -> None:
    cache = memo.Cache("memory://", ns_refresh=0)
    cache.generation("n")
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with cache._gens._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(5)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() with threads running
            pid = os.fork()
        if pid == 0:
            os._exit(0 if cache.generation("n") else 1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                assert os.waitstatus_to_exitcode(status) == 0
                break
            time.sleep(0.02)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung on a lock held by a thread of the parent")
    finally:
        release.set()
        holder.join()


async def test_tasks_reading_a_cold_namespace_at_once_share_one_read(backend_url: str) -> None:
    """A cold start of many tasks is one read of the namespace's generation, not one per task."""
    cache = memo.Cache(backend_url, prefix=f"g{uuid.uuid4().hex[:8]}:")
    backend: Any = cache.backend
    real = backend.aget_all_many
    reads: list[object] = []

    async def counted(keys: Any) -> Any:
        reads.append(keys)
        await asyncio.sleep(0.01)  # the read is on the wire while the other tasks arrive
        return await real(keys)

    backend.aget_all_many = counted
    gens = await asyncio.gather(*(cache.ageneration("cold") for _ in range(50)))
    assert len(reads) == 1
    assert len(set(gens)) == 1 and gens[0] is not None
    await cache.aclose()
