"""Load: sync throughput from 8 threads, async throughput and hits under uvloop, emcache as a reference."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from bench_helpers import SMALL, bench_async, role
from memcached_fixtures import MemcachedProcess

import memo

THREADS, PER_THREAD = 8, 200
TASKS, PER_TASK = 64, 25


# -- sync: 8 threads ---------------------------------------------------------------------------


def _threads(benchmark: Any, get: Callable[[], Any]) -> None:
    """Each round: 8 threads, each doing PER_THREAD gets; every value is checked."""

    def round_() -> int:
        done: list[int] = []
        failures: list[BaseException] = []

        def worker() -> None:
            try:
                for _ in range(PER_THREAD):
                    if get() != SMALL:
                        raise AssertionError("wrong value")
                done.append(PER_THREAD)
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failures:
            raise failures[0]
        return sum(done)

    benchmark.extra_info["ops_per_round"] = THREADS * PER_THREAD
    benchmark.extra_info["throughput"] = True
    assert benchmark(round_) == THREADS * PER_THREAD


def test_threads_pooled_pymemcache(benchmark: Any, server: MemcachedProcess) -> None:
    from pymemcache.client.base import PooledClient

    role(benchmark, "baseline", "pymemcache PooledClient + orjson")
    benchmark.group = "throughput-sync-8-threads"
    client = PooledClient((server.host, server.port), no_delay=True, max_pool_size=THREADS)
    client.set("tpooled", orjson.dumps(SMALL))
    _threads(benchmark, lambda: orjson.loads(client.get("tpooled")))
    client.close()


def test_threads_memo(benchmark: Any, memo_cache: memo.Cache) -> None:
    role(benchmark, "subject", "memo")
    benchmark.group = "throughput-sync-8-threads"

    @memo_cache.cached(ns="threads", ttl=600)
    def get_user(user_id: int) -> dict[str, Any]:
        return SMALL

    get_user(1)
    _threads(benchmark, lambda: get_user(1))
    assert memo_cache.stats("threads")["errors"] == 0


# -- async under uvloop, and emcache -------------------------------------------------------------


@pytest.fixture
def uvloop_loop() -> Iterator[asyncio.AbstractEventLoop]:
    uvloop = pytest.importorskip("uvloop")
    loop = uvloop.new_event_loop()
    yield loop
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


def test_hit_uvloop_aiomcache(
    benchmark: Any, server: MemcachedProcess, uvloop_loop: asyncio.AbstractEventLoop
) -> None:
    import aiomcache

    role(benchmark, "baseline", "aiomcache + orjson, uvloop")
    benchmark.group = "hit-async-uvloop"
    client = aiomcache.Client(server.host, server.port)
    uvloop_loop.run_until_complete(client.set(b"uvbase", orjson.dumps(SMALL)))

    async def get() -> Any:
        return orjson.loads(await client.get(b"uvbase"))

    assert bench_async(benchmark, uvloop_loop, get) == SMALL
    uvloop_loop.run_until_complete(client.close())


def test_hit_uvloop_memo(
    benchmark: Any, memo_cache: memo.Cache, uvloop_loop: asyncio.AbstractEventLoop
) -> None:
    role(benchmark, "subject", "memo, uvloop")
    benchmark.group = "hit-async-uvloop"

    @memo_cache.cached(ns="uv", ttl=600)
    async def get_user(user_id: int) -> dict[str, Any]:
        return SMALL

    uvloop_loop.run_until_complete(get_user(42))
    assert bench_async(benchmark, uvloop_loop, lambda: get_user(42)) == SMALL
    uvloop_loop.run_until_complete(memo_cache.aclose())


def test_hit_async_emcache(benchmark: Any, server: MemcachedProcess, loop: asyncio.AbstractEventLoop) -> None:
    """emcache (a Cython client), as a reference point beside aiomcache."""
    emcache = pytest.importorskip("emcache")
    role(benchmark, "subject", "emcache + orjson")
    benchmark.group = "hit-async"
    client = loop.run_until_complete(
        emcache.create_client([emcache.MemcachedHostAddress(server.host, server.port)])
    )
    loop.run_until_complete(client.set(b"emc", orjson.dumps(SMALL)))

    async def get() -> Any:
        item = await client.get(b"emc")
        return orjson.loads(item.value)

    assert bench_async(benchmark, loop, get) == SMALL
    loop.run_until_complete(client.close())


@pytest.fixture(params=["asyncio", "uvloop"])
def any_loop(request: pytest.FixtureRequest) -> Iterator[asyncio.AbstractEventLoop]:
    """The standard event loop, and uvloop (which users can opt into)."""
    if request.param == "uvloop":
        loop = pytest.importorskip("uvloop").new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    yield loop
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


def _throughput(benchmark: Any, loop: asyncio.AbstractEventLoop, get: Any) -> None:
    """Each round: 64 tasks, each awaiting 25 gets; every value is checked."""

    async def run() -> int:
        async def worker() -> int:
            for _ in range(PER_TASK):
                assert await get() == SMALL
            return PER_TASK

        return sum(await asyncio.gather(*(worker() for _ in range(TASKS))))

    benchmark.extra_info["ops_per_round"] = TASKS * PER_TASK
    benchmark.extra_info["throughput"] = True
    benchmark.group = "throughput-async-64" + (
        "" if type(loop).__module__.startswith("asyncio") else "-uvloop"
    )
    assert benchmark(lambda: loop.run_until_complete(run())) == TASKS * PER_TASK


def test_throughput_aiomcache(
    benchmark: Any, server: MemcachedProcess, any_loop: asyncio.AbstractEventLoop
) -> None:
    import aiomcache

    role(benchmark, "baseline", "aiomcache + orjson")
    client = aiomcache.Client(server.host, server.port, pool_size=TASKS)
    any_loop.run_until_complete(client.set(b"tput", orjson.dumps(SMALL)))

    async def get() -> Any:
        return orjson.loads(await client.get(b"tput"))

    _throughput(benchmark, any_loop, get)
    any_loop.run_until_complete(client.close())


def test_throughput_memo(
    benchmark: Any, server: MemcachedProcess, any_loop: asyncio.AbstractEventLoop
) -> None:
    role(benchmark, "subject", "memo")
    cache = memo.Cache(server.url, prefix=f"b{uuid.uuid4().hex[:8]}:", pool_size=TASKS)

    @cache.cached(ns="tput")
    async def get_user(user_id: int) -> dict[str, Any]:
        return SMALL

    any_loop.run_until_complete(get_user(1))
    _throughput(benchmark, any_loop, lambda: get_user(1))
    assert cache.stats("tput")["errors"] == 0
    any_loop.run_until_complete(cache.aclose())


def test_throughput_emcache(
    benchmark: Any, server: MemcachedProcess, loop: asyncio.AbstractEventLoop
) -> None:
    """emcache (a Cython client), as a reference point."""
    emcache = pytest.importorskip("emcache")
    role(benchmark, "subject", "emcache + orjson")
    address = emcache.MemcachedHostAddress(server.host, server.port)
    client = loop.run_until_complete(emcache.create_client([address], max_connections=TASKS))
    loop.run_until_complete(client.set(b"emtput", orjson.dumps(SMALL)))

    async def get() -> Any:
        item = await client.get(b"emtput")
        return orjson.loads(item.value)

    _throughput(benchmark, loop, get)
    loop.run_until_complete(client.close())
