"""A superstep's read: 100 keys in one batch, through memo.langgraph and LangGraph's own caches."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from bench_helpers import SMALL, role
from memcached_fixtures import MemcachedProcess

import memo

N = 100
NAMESPACE = ("__pregel_ns_writes", "app.nodes.summarize", "summarize")


def _pairs() -> dict[Any, Any]:
    return {(NAMESPACE, uuid.uuid4().hex): (dict(SMALL, n=i), 600) for i in range(N)}


def _check(found: dict[Any, Any], keys: list[Any]) -> None:
    assert len(found) == N and all(key in found for key in keys)


def test_batch_raw_get_many(benchmark: Any, server: MemcachedProcess) -> None:
    """The baseline: pymemcache's `get_many` of 100 keys (one `get k1 ... k100`)."""
    import orjson
    from pymemcache.client.base import Client

    role(benchmark, "baseline", "pymemcache get_many")
    benchmark.group = "langgraph-batch-100"
    client = Client((server.host, server.port), no_delay=True)
    keys = [f"raw:{uuid.uuid4().hex}" for _ in range(N)]
    client.set_many({k: orjson.dumps(SMALL) for k in keys}, noreply=False)
    assert len(benchmark(client.get_many, keys)) == N
    client.close()


def test_batch_memo_memcached_cache(benchmark: Any, server: MemcachedProcess) -> None:
    from memo.langgraph import MemcachedCache

    role(benchmark, "subject", "memo MemcachedCache")
    benchmark.group = "langgraph-batch-100"
    cache = memo.Cache(server.url, prefix=f"b{uuid.uuid4().hex[:8]}:")
    lg = MemcachedCache(cache)
    pairs = _pairs()
    lg.set(pairs)
    keys = list(pairs)
    _check(benchmark(lg.get, keys), keys)
    cache.close()
    asyncio.run(cache.aclose())


def test_batch_langgraph_in_memory(benchmark: Any) -> None:
    from langgraph.cache.memory import InMemoryCache

    role(benchmark, "subject", "LangGraph InMemoryCache")
    benchmark.group = "langgraph-batch-100"
    lg = InMemoryCache()
    pairs = _pairs()
    lg.set(pairs)
    keys = list(pairs)
    _check(benchmark(lg.get, keys), keys)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # LangGraph's RedisCache calls the deprecated setex
def test_batch_langgraph_redis(benchmark: Any) -> None:
    import redis
    from langgraph.cache.redis import RedisCache

    client = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=0.5)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        pytest.skip(f"no Redis on 127.0.0.1:6379 ({exc}): LangGraph's RedisCache not measured")
    role(benchmark, "subject", "LangGraph RedisCache")
    benchmark.group = "langgraph-batch-100"
    lg = RedisCache(client, prefix=f"bench:{uuid.uuid4().hex[:8]}:")
    pairs = _pairs()
    lg.set(pairs)
    keys = list(pairs)
    _check(benchmark(lg.get, keys), keys)
    lg.clear()
    client.close()
