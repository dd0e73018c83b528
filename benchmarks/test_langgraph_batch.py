"""A superstep's read: 100 keys in one batch, through memo.langgraph and LangGraph's own caches.

Groups:
    langgraph-batch-100 / langgraph-batch-100-async: one `get`/`aget` of 100
        LangGraph keys, each a typical node result stored with LangGraph's
        default serializer. The baseline is a raw multi-get of the very memcached
        keys `MemcachedCache` reads (pymemcache `get_many` sync, aiomcache
        `multi_get` async): the same bytes off the same server, not decoded.
    langgraph-batch-100-profile: where `MemcachedCache.get`'s time goes, each
        step timed alone on the same 100 keys: the keys (namespace prefixes and
        memcached keys), the backend's multi-get, and the envelope and serde decode.

Every case checks that it returned the right 100 values. LangGraph's RedisCache
talks to the Redis at 127.0.0.1:6379, which this suite does not start or pin
to a CPU (memcached runs pinned beside the benchmark process): read its ratio
with that in mind.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from bench_helpers import SMALL, bench_async, role
from memcached_fixtures import MemcachedProcess

import memo

N = 100
NAMESPACE = ("__pregel_ns_writes", "app.nodes.summarize", "summarize")
SYNC, ASYNC, PROFILE = "langgraph-batch-100", "langgraph-batch-100-async", "langgraph-batch-100-profile"
#: Async cases time this many sequential batches per round.
ASYNC_OPS = 20


def _pairs() -> dict[Any, Any]:
    return {(NAMESPACE, uuid.uuid4().hex): (dict(SMALL, n=i), 600) for i in range(N)}


def _check(found: dict[Any, Any], pairs: dict[Any, Any]) -> None:
    assert len(found) == N
    assert all(found[key] == value for key, (value, _) in pairs.items())


class Stored:
    """100 entries written through a `MemcachedCache`, and the memcached keys they live under."""

    def __init__(self, server: MemcachedProcess) -> None:
        from memo.langgraph import MemcachedCache

        self.cache = memo.Cache(server.url, prefix=f"b{uuid.uuid4().hex[:8]}:")
        self.lg: Any = MemcachedCache(self.cache)
        self.pairs = _pairs()
        self.lg.set(self.pairs)
        self.keys = list(self.pairs)
        spaces = self.lg._spaces_of(self.keys)
        self.storage = self.lg._storage(self.keys, spaces, *self.lg._generations(spaces))
        self.memcached_keys = list(self.storage.values())
        assert len(self.memcached_keys) == N
        self.raw = {key: self.lg.cache.backend.get(key) for key in self.memcached_keys}
        assert all(raw is not None for raw in self.raw.values())


@pytest.fixture
def stored(server: MemcachedProcess) -> Iterator[Stored]:
    made = Stored(server)
    yield made
    made.cache.close()
    asyncio.run(made.cache.aclose())


def _redis_cache() -> Any:
    import redis
    from langgraph.cache.redis import RedisCache

    client = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=0.5)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no Redis on 127.0.0.1:6379 ({exc}): LangGraph's RedisCache not measured")
    return RedisCache(client, prefix=f"bench:{uuid.uuid4().hex[:8]}:")


# -- sync ----------------------------------------------------------------------------------


def test_batch_raw_get_many(benchmark: Any, stored: Stored) -> None:
    """The baseline: pymemcache's `get_many` of the same 100 memcached keys (one `get k1 ... k100`)."""
    from pymemcache.client.base import Client

    role(benchmark, "baseline", "pymemcache get_many")
    benchmark.group = SYNC
    host, port = stored.cache.backend.servers[0].split(":")  # type: ignore[attr-defined]
    client = Client((host, int(port)), no_delay=True)
    found = benchmark(client.get_many, stored.memcached_keys)
    assert found == stored.raw
    client.close()


def test_batch_memo_memcached_cache(benchmark: Any, stored: Stored) -> None:
    role(benchmark, "subject", "memo MemcachedCache")
    benchmark.group = SYNC
    _check(benchmark(stored.lg.get, stored.keys), stored.pairs)


def test_batch_langgraph_in_memory(benchmark: Any) -> None:
    from langgraph.cache.memory import InMemoryCache

    role(benchmark, "subject", "LangGraph InMemoryCache")
    benchmark.group = SYNC
    lg = InMemoryCache()
    pairs = _pairs()
    lg.set(pairs)
    _check(benchmark(lg.get, list(pairs)), pairs)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # LangGraph's RedisCache calls the deprecated setex
def test_batch_langgraph_redis(benchmark: Any) -> None:
    lg = _redis_cache()
    role(benchmark, "subject", "LangGraph RedisCache")
    benchmark.group = SYNC
    pairs = _pairs()
    lg.set(pairs)
    _check(benchmark(lg.get, list(pairs)), pairs)
    lg.clear()
    lg.redis.close()


# -- async ---------------------------------------------------------------------------------


def test_batch_async_raw_multi_get(benchmark: Any, stored: Stored, loop: asyncio.AbstractEventLoop) -> None:
    """The async baseline: aiomcache's `multi_get` of the same 100 memcached keys."""
    import aiomcache

    role(benchmark, "baseline", "aiomcache multi_get")
    benchmark.group = ASYNC
    host, port = stored.cache.backend.servers[0].split(":")  # type: ignore[attr-defined]
    client = aiomcache.Client(host, int(port))
    keys = [key.encode() for key in stored.memcached_keys]
    found = bench_async(benchmark, loop, lambda: client.multi_get(*keys), ops=ASYNC_OPS)
    assert list(found) == [stored.raw[key] for key in stored.memcached_keys]
    loop.run_until_complete(client.close())


def test_batch_async_memo_memcached_cache(
    benchmark: Any, stored: Stored, loop: asyncio.AbstractEventLoop
) -> None:
    role(benchmark, "subject", "memo MemcachedCache")
    benchmark.group = ASYNC
    _check(bench_async(benchmark, loop, lambda: stored.lg.aget(stored.keys), ops=ASYNC_OPS), stored.pairs)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_batch_async_langgraph_redis(benchmark: Any, loop: asyncio.AbstractEventLoop) -> None:
    """LangGraph's RedisCache.aget (it calls its sync `get`: the Redis client it is given is sync)."""
    lg = _redis_cache()
    role(benchmark, "subject", "LangGraph RedisCache")
    benchmark.group = ASYNC
    pairs = _pairs()
    lg.set(pairs)
    keys = list(pairs)
    _check(bench_async(benchmark, loop, lambda: lg.aget(keys), ops=ASYNC_OPS), pairs)
    lg.clear()
    lg.redis.close()


# -- where MemcachedCache.get's time goes --------------------------------------------------


def test_profile_whole_get(benchmark: Any, stored: Stored) -> None:
    role(benchmark, "baseline", "whole MemcachedCache.get")
    benchmark.group = PROFILE
    _check(benchmark(stored.lg.get, stored.keys), stored.pairs)


def test_profile_keys(benchmark: Any, stored: Stored) -> None:
    """Namespaces, generations (cached for ns_refresh) and the 100 memcached keys."""
    role(benchmark, "subject", "1. keys: namespaces, generations, memcached keys")
    benchmark.group = PROFILE
    lg = stored.lg

    def keys() -> dict[Any, str]:
        spaces = lg._spaces_of(stored.keys)
        return lg._storage(stored.keys, spaces, *lg._generations(spaces))  # type: ignore[no-any-return]

    assert benchmark(keys) == stored.storage


def test_profile_backend_get_many(benchmark: Any, stored: Stored) -> None:
    role(benchmark, "subject", "2. backend multi-get (memo, one round trip)")
    benchmark.group = PROFILE
    assert benchmark(stored.cache.get_many_bytes, stored.memcached_keys, "langgraph") == stored.raw


def test_profile_decode(benchmark: Any, stored: Stored) -> None:
    """Envelopes opened and the bodies decoded by LangGraph's default serializer."""
    role(benchmark, "subject", "3. decode: envelope + LangGraph serde")
    benchmark.group = PROFILE
    _check(benchmark(stored.lg._entries.collect, N, stored.storage, stored.raw), stored.pairs)


def test_profile_serde_alone(benchmark: Any, stored: Stored) -> None:
    """The serializer's share of step 3: `loads_typed` of the 100 bodies, nothing else."""
    role(benchmark, "subject", "3a. of which LangGraph serde loads_typed")
    benchmark.group = PROFILE
    serde = stored.lg.serde
    typed = [serde.dumps_typed(value) for value, _ in stored.pairs.values()]
    found = benchmark(lambda: [serde.loads_typed(item) for item in typed])
    assert found == [value for value, _ in stored.pairs.values()]
