"""Everything around the hit: misses, invalidation, keys, the codec, concurrency, stampedes."""

from __future__ import annotations

import asyncio
import itertools
import pickle
import threading
import time
import uuid
from typing import Any

import orjson
import pytest
from bench_helpers import LARGE, SMALL, role
from memcached_fixtures import MemcachedProcess

import memo

# -- miss + store, invalidate ------------------------------------------------------------


def test_miss_store_raw(benchmark: Any, server: MemcachedProcess) -> None:
    """The baseline of a miss: a `get` that finds nothing, then a `set`."""
    from pymemcache.client.base import Client

    role(benchmark, "baseline", "pymemcache get + set")
    benchmark.group = "miss-store"
    client = Client((server.host, server.port), no_delay=True)
    counter = itertools.count()

    def miss() -> Any:
        key = f"rawmiss{next(counter)}"
        if client.get(key) is None:
            client.set(key, orjson.dumps(SMALL), expire=60, noreply=False)
        return SMALL

    assert benchmark(miss) == SMALL
    client.close()


def test_miss_store_memo(benchmark: Any, memo_cache: memo.Cache) -> None:
    role(benchmark, "subject", "memo")
    benchmark.group = "miss-store"

    @memo_cache.cached(ns="miss", ttl=60)
    def get_user(user_id: int) -> dict[str, Any]:
        return SMALL

    counter = itertools.count()
    assert benchmark(lambda: get_user(next(counter))) == SMALL
    stats = memo_cache.stats("miss")
    assert stats["hits"] == 0 and stats["sets"] == stats["misses"]


@pytest.mark.parametrize("protocol", ["classic", "meta"])
def test_miss_fill_protocol(benchmark: Any, server: MemcachedProcess, protocol: str) -> None:
    """A miss filled under a lease, per protocol; the round trips of one miss + fill are recorded."""
    role(benchmark, "subject", f"memo, {protocol}")
    benchmark.group = "miss-fill-protocol"
    cache = memo.Cache(server.url, protocol=protocol, prefix=f"b{uuid.uuid4().hex[:8]}:")

    @cache.cached(ns="miss", ttl=60)
    def get_user(user_id: int) -> dict[str, Any]:
        return SMALL

    counter = itertools.count()
    get_user(next(counter))  # the connection is open and the protocol known
    benchmark.extra_info["round_trips"] = _round_trips(lambda: get_user(next(counter)))
    assert benchmark(lambda: get_user(next(counter))) == SMALL
    assert cache.stats("miss")["sets"] == cache.stats("miss")["misses"]
    cache.close()


def _round_trips(call: Any) -> int:
    """How many requests memo's sync connections send during `call()` (each is one round trip)."""
    from memo._memcached._sync import SyncConnection

    sent = 0
    real_run, real_get = SyncConnection.run, SyncConnection.get

    def run(self: SyncConnection, *args: Any) -> Any:
        nonlocal sent
        sent += 1
        return real_run(self, *args)

    def get(self: SyncConnection, *args: Any) -> Any:
        nonlocal sent
        sent += 1
        return real_get(self, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SyncConnection, "run", run)
        patch.setattr(SyncConnection, "get", get)
        call()
    return sent


def test_invalidate_raw(benchmark: Any, server: MemcachedProcess) -> None:
    from pymemcache.client.base import Client

    role(benchmark, "baseline", "pymemcache delete")
    benchmark.group = "invalidate"
    client = Client((server.host, server.port), no_delay=True)
    assert benchmark(lambda: client.delete("rawkey", noreply=False)) is False  # nothing stored under it
    client.close()


def test_invalidate_memo(benchmark: Any, memo_cache: memo.Cache) -> None:
    role(benchmark, "subject", "memo")
    benchmark.group = "invalidate"

    @memo_cache.cached(ns="inv")
    def get_user(user_id: int) -> dict[str, Any]:
        return SMALL

    get_user(1)
    assert get_user.invalidate(1) is True
    assert benchmark(get_user.invalidate, 1) is False  # the entry is gone: each timed call deletes nothing
    assert get_user.get(1) is memo.MISS


# -- key derivation alone ----------------------------------------------------------------


def test_key_memo(benchmark: Any) -> None:
    role(benchmark, "subject", "memo")
    benchmark.group = "key"
    cache = memo.Cache("memory://")

    @cache.cached(ns="users")
    def get_user(user_id: int, *, full: bool = False) -> None: ...

    key = benchmark(get_user.key_for, 42, full=True)
    assert key.startswith("memo:users:test_key_memo.get_user:") and len(key) < 250
    assert key == get_user.key_for(42, full=True) != get_user.key_for(42, full=False)


def test_key_dogpile(benchmark: Any) -> None:
    from dogpile.cache.util import function_key_generator, sha1_mangle_key

    role(benchmark, "baseline", "dogpile.cache + sha1")
    benchmark.group = "key"

    def get_user(user_id: int, *, full: bool = False) -> None: ...

    generate = function_key_generator("users", get_user)
    assert len(benchmark(lambda: sha1_mangle_key(generate(42).encode()))) == 40


def test_key_aiocache(benchmark: Any) -> None:
    from aiocache import cached

    role(benchmark, "subject", "aiocache")
    benchmark.group = "key"

    async def get_user(user_id: int, *, full: bool = False) -> None: ...

    decorator = cached()
    assert benchmark(decorator.get_cache_key, get_user, (42,), {"full": True})


# -- the codec alone -------------------------------------------------------------------------


def _jsonplus() -> Any:
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    return JsonPlusSerializer()


CODECS = {
    "memo": (lambda: memo.Codec(), lambda c, v: c.encode(v), lambda c, d: c.decode(d)),
    "orjson": (lambda: None, lambda c, v: orjson.dumps(v), lambda c, d: orjson.loads(d)),
    "pickle": (lambda: None, lambda c, v: pickle.dumps(v, 5), lambda c, d: pickle.loads(d)),
    "langgraph JsonPlus": (_jsonplus, lambda c, v: c.dumps_typed(v), lambda c, d: c.loads_typed(d)),
}


@pytest.mark.parametrize("size", ["small", "10KB"])
@pytest.mark.parametrize("library", list(CODECS))
@pytest.mark.parametrize("direction", ["encode", "decode"])
def test_codec(benchmark: Any, library: str, size: str, direction: str) -> None:
    make, encode, decode = CODECS[library]
    role(benchmark, "baseline" if library == "orjson" else "subject", library)
    benchmark.group = f"codec-{direction}-{size}"
    codec = make()
    value = SMALL if size == "small" else LARGE
    data = encode(codec, value)
    if direction == "encode":
        assert decode(codec, benchmark(encode, codec, value)) == value
    else:
        assert benchmark(decode, codec, data) == value


# -- stampede: 200 callers on one cold key ----------------------------------------------------------

CALLERS = 200


def _stampede_threads(fn: Any) -> int:
    barrier = threading.Barrier(CALLERS)
    results: list[Any] = []

    def caller() -> None:
        barrier.wait()
        results.append(fn(1))

    threads = [threading.Thread(target=caller) for _ in range(CALLERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == CALLERS and all(r == SMALL for r in results)
    return len(results)


def _record_runs(benchmark: Any, runs: list[int]) -> None:
    benchmark.extra_info["runs"] = len(runs)
    benchmark.extra_info["callers"] = CALLERS


def _slow_source(runs: list[int]) -> Any:
    def compute(user_id: int) -> dict[str, Any]:
        runs.append(user_id)
        time.sleep(0.05)
        return SMALL

    return compute


def test_stampede_threads_memo(benchmark: Any, memo_cache: memo.Cache) -> None:
    role(benchmark, "subject", "memo")
    benchmark.group = "stampede-threads"
    runs: list[int] = []
    fn = memo_cache.cached(ns="stampede")(_slow_source(runs))
    assert benchmark.pedantic(_stampede_threads, args=(fn,), rounds=1, iterations=1) == CALLERS
    _record_runs(benchmark, runs)
    assert len(runs) == 1


def test_stampede_threads_dogpile(benchmark: Any, server: MemcachedProcess) -> None:
    from dogpile.cache import make_region
    from dogpile.cache.util import sha1_mangle_key

    role(benchmark, "subject", "dogpile.cache")
    benchmark.group = "stampede-threads"
    region = make_region(key_mangler=sha1_mangle_key).configure(
        "dogpile.cache.pymemcache", expiration_time=600, arguments={"url": [server.address]}
    )
    runs: list[int] = []
    fn = region.cache_on_arguments(namespace=uuid.uuid4().hex)(_slow_source(runs))
    assert benchmark.pedantic(_stampede_threads, args=(fn,), rounds=1, iterations=1) == CALLERS
    _record_runs(benchmark, runs)
    assert len(runs) >= 1


def _slow_async_source(runs: list[int]) -> Any:
    async def compute(user_id: int) -> dict[str, Any]:
        runs.append(user_id)
        await asyncio.sleep(0.05)
        return SMALL

    return compute


def _stampede_tasks(loop: asyncio.AbstractEventLoop, fn: Any) -> int:
    async def run() -> list[Any]:
        return await asyncio.gather(*(fn(1) for _ in range(CALLERS)))

    results = loop.run_until_complete(run())
    assert all(r == SMALL for r in results)
    return len(results)


def test_stampede_tasks_memo(benchmark: Any, memo_cache: memo.Cache, loop: asyncio.AbstractEventLoop) -> None:
    role(benchmark, "subject", "memo")
    benchmark.group = "stampede-tasks"
    runs: list[int] = []
    fn = memo_cache.cached(ns="astampede")(_slow_async_source(runs))
    assert benchmark.pedantic(_stampede_tasks, args=(loop, fn), rounds=1, iterations=1) == CALLERS
    loop.run_until_complete(memo_cache.aclose())
    _record_runs(benchmark, runs)
    assert len(runs) == 1


def test_stampede_tasks_aiocache(
    benchmark: Any, server: MemcachedProcess, loop: asyncio.AbstractEventLoop
) -> None:
    from aiocache import Cache, cached
    from aiocache.serializers import JsonSerializer

    role(benchmark, "subject", "aiocache")
    benchmark.group = "stampede-tasks"
    runs: list[int] = []
    decorator = cached(
        ttl=600,
        cache=Cache.MEMCACHED,
        endpoint=server.host,
        port=server.port,
        serializer=JsonSerializer(),
        namespace=uuid.uuid4().hex,
    )
    fn = decorator(_slow_async_source(runs))
    assert benchmark.pedantic(_stampede_tasks, args=(loop, fn), rounds=1, iterations=1) == CALLERS
    loop.run_until_complete(decorator.cache.close())
    _record_runs(benchmark, runs)
    assert len(runs) >= 1
