"""Cache hits on one local memcached: the floor, the raw clients, memo and its peers."""

from __future__ import annotations

import asyncio
import socket
import uuid
from typing import Any

import orjson
import pytest
from bench_helpers import SMALL, bench_async, role
from memcached_fixtures import MemcachedProcess

import memo

# -- sync --------------------------------------------------------------------------


def test_hit_sync_floor_raw_socket(benchmark: Any, server: MemcachedProcess) -> None:
    """The physical floor: one `get` written and read on a bare socket."""
    role(benchmark, "floor", "raw socket")
    benchmark.group = "hit-sync"
    payload = orjson.dumps(SMALL)
    with socket.create_connection((server.host, server.port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"set floor 0 0 %d\r\n%s\r\n" % (len(payload), payload))
        assert sock.recv(100) == b"STORED\r\n"

        def get() -> bytes:
            sock.sendall(b"get floor\r\n")
            buf = sock.recv(65536)
            while not buf.endswith(b"END\r\n"):
                buf += sock.recv(65536)
            return buf

        assert payload in benchmark(get)


def test_hit_sync_baseline_pymemcache(benchmark: Any, server: MemcachedProcess) -> None:
    """The baseline: pymemcache's `Client.get` and an orjson decode."""
    from pymemcache.client.base import Client

    role(benchmark, "baseline", "pymemcache + orjson")
    benchmark.group = "hit-sync"
    client = Client((server.host, server.port), no_delay=True)
    client.set("baseline", orjson.dumps(SMALL))
    assert benchmark(lambda: orjson.loads(client.get("baseline"))) == SMALL
    client.close()


def test_hit_sync_pooled_pymemcache(benchmark: Any, server: MemcachedProcess) -> None:
    """pymemcache's thread-safe `PooledClient`, which memo's own free-list replaces."""
    from pymemcache.client.base import PooledClient

    role(benchmark, "subject", "pymemcache PooledClient + orjson")
    benchmark.group = "hit-sync"
    client = PooledClient((server.host, server.port), no_delay=True, max_pool_size=16)
    client.set("pooled", orjson.dumps(SMALL))
    assert benchmark(lambda: orjson.loads(client.get("pooled"))) == SMALL
    client.close()


def test_hit_sync_memo(benchmark: Any, memo_cache: memo.Cache) -> None:
    role(benchmark, "subject", "memo")
    benchmark.group = "hit-sync"

    @memo_cache.cached(ns="bench", ttl=600)
    def get_user(user_id: int) -> dict[str, Any]:
        return SMALL

    get_user(42)
    assert benchmark(get_user, 42) == SMALL
    assert memo_cache.stats("bench")["hits"] >= 1


@pytest.mark.parametrize("protocol", ["classic", "meta"])
def test_hit_sync_protocol(benchmark: Any, server: MemcachedProcess, protocol: str) -> None:
    """memo's sync hit per protocol: `get k` or `mg k v`."""
    role(benchmark, "subject", f"memo, {protocol}")
    benchmark.group = "hit-sync-protocol"
    cache = memo.Cache(server.url, protocol=protocol, prefix=f"h{uuid.uuid4().hex[:8]}:")

    @cache.cached(ns="bench", ttl=600)
    def get_user(user_id: int) -> dict[str, Any]:
        return SMALL

    get_user(42)
    assert benchmark(get_user, 42) == SMALL
    cache.close()


@pytest.mark.parametrize("protocol", ["classic", "meta"])
def test_hit_async_protocol(
    benchmark: Any, server: MemcachedProcess, loop: asyncio.AbstractEventLoop, protocol: str
) -> None:
    """memo's async hit per protocol."""
    role(benchmark, "subject", f"memo, {protocol}")
    benchmark.group = "hit-async-protocol"
    cache = memo.Cache(server.url, protocol=protocol, prefix=f"h{uuid.uuid4().hex[:8]}:")

    @cache.cached(ns="bench", ttl=600)
    async def get_user(user_id: int) -> dict[str, Any]:
        return SMALL

    assert loop.run_until_complete(get_user(42)) == SMALL
    assert bench_async(benchmark, loop, lambda: get_user(42)) == SMALL
    loop.run_until_complete(cache.aclose())
    cache.close()


def test_hit_sync_dogpile(benchmark: Any, server: MemcachedProcess) -> None:
    """dogpile.cache with its pymemcache backend; its default keys have spaces, so sha1 them."""
    from dogpile.cache import make_region
    from dogpile.cache.util import sha1_mangle_key

    role(benchmark, "subject", "dogpile.cache")
    benchmark.group = "hit-sync"
    region = make_region(key_mangler=sha1_mangle_key).configure(
        "dogpile.cache.pymemcache", expiration_time=600, arguments={"url": [server.address]}
    )

    @region.cache_on_arguments(namespace=uuid.uuid4().hex)
    def get_user(user_id: int) -> dict[str, Any]:
        return SMALL

    get_user(42)
    assert benchmark(get_user, 42) == SMALL


# -- async -------------------------------------------------------------------------


def test_hit_async_baseline_aiomcache(
    benchmark: Any, server: MemcachedProcess, loop: asyncio.AbstractEventLoop
) -> None:
    """The baseline: aiomcache's `get` and an orjson decode."""
    import aiomcache

    role(benchmark, "baseline", "aiomcache + orjson")
    benchmark.group = "hit-async"
    client = aiomcache.Client(server.host, server.port)
    loop.run_until_complete(client.set(b"abaseline", orjson.dumps(SMALL)))

    async def get() -> Any:
        return orjson.loads(await client.get(b"abaseline"))

    assert bench_async(benchmark, loop, get) == SMALL
    loop.run_until_complete(client.close())


def test_hit_async_memo(benchmark: Any, memo_cache: memo.Cache, loop: asyncio.AbstractEventLoop) -> None:
    role(benchmark, "subject", "memo")
    benchmark.group = "hit-async"

    @memo_cache.cached(ns="bench", ttl=600)
    async def get_user(user_id: int) -> dict[str, Any]:
        return SMALL

    loop.run_until_complete(get_user(42))
    assert bench_async(benchmark, loop, lambda: get_user(42)) == SMALL
    loop.run_until_complete(memo_cache.aclose())


def test_hit_async_aiocache(
    benchmark: Any, server: MemcachedProcess, loop: asyncio.AbstractEventLoop
) -> None:
    """aiocache's `@cached` on its memcached backend (aiomcache) with its JSON serializer."""
    from aiocache import Cache, cached
    from aiocache.serializers import JsonSerializer

    role(benchmark, "subject", "aiocache")
    benchmark.group = "hit-async"
    decorator = cached(
        ttl=600,
        cache=Cache.MEMCACHED,
        endpoint=server.host,
        port=server.port,
        serializer=JsonSerializer(),
        namespace=uuid.uuid4().hex,
    )

    @decorator
    async def get_user(user_id: int) -> dict[str, Any]:
        return SMALL

    loop.run_until_complete(get_user(42))
    assert bench_async(benchmark, loop, lambda: get_user(42)) == SMALL
    loop.run_until_complete(decorator.cache.close())


# -- several servers: what routing adds to a hit -----------------------------------


@pytest.mark.parametrize("n", [1, 4, 8])
def test_hit_sync_servers(benchmark: Any, servers: Any, n: int) -> None:
    role(benchmark, "subject" if n > 1 else "baseline", f"memo, {n} server{'s' * (n > 1)}")
    benchmark.group = "hit-servers"
    cache = memo.Cache(
        "memcached://" + ",".join(p.address for p in servers(n)), prefix=f"b{uuid.uuid4().hex[:8]}:"
    )

    @cache.cached(ns="bench")
    def get_user(user_id: int) -> dict[str, Any]:
        return SMALL

    get_user(42)
    assert benchmark(get_user, 42) == SMALL
    cache.close()


@pytest.mark.parametrize("n", [1, 8, 64, 256])
def test_routing_per_key(benchmark: Any, n: int) -> None:
    """Routing alone: which of n servers holds a key (no I/O)."""
    from memo._routing import Router

    role(benchmark, "subject", f"memo router, {n} server{'s' * (n > 1)}")
    benchmark.group = "routing"
    router = Router([f"10.0.0.{i}:11211" for i in range(n)])
    keys = [f"memo:users:get_user:abcd1234.efgh5678:{uuid.uuid4().hex}" for _ in range(100)]
    expected = [router.index_of(k) for k in keys]

    def route_all() -> list[int]:
        index_of = router.index_of
        return [index_of(k) for k in keys]

    benchmark.extra_info["ops_per_round"] = len(keys)
    assert benchmark(route_all) == expected


# -- the embedded backend: what memo's engine costs without a network ----------------


def test_hit_memory_baseline_dict(benchmark: Any) -> None:
    """The baseline: a dict lookup and an orjson decode of the same value."""
    role(benchmark, "baseline", "dict + orjson")
    benchmark.group = "hit-memory"
    store = {"memo:users:get_user:gen:digest": orjson.dumps(SMALL)}
    assert benchmark(lambda: orjson.loads(store["memo:users:get_user:gen:digest"])) == SMALL


def test_hit_memory_memo(benchmark: Any) -> None:
    role(benchmark, "subject", "memo on memory://")
    benchmark.group = "hit-memory"
    cache = memo.Cache("memory://")

    @cache.cached(ns="users")
    def get_user(user_id: int) -> dict[str, Any]:
        return SMALL

    get_user(42)
    assert benchmark(get_user, 42) == SMALL


# -- a hung server (SIGSTOP): what each call costs before and after the breaker opens ----

HUNG_TIMEOUT = 0.05


@pytest.mark.parametrize("breaker", ["closed", "open"])
def test_hung_server(benchmark: Any, memcached_servers: Any, breaker: str) -> None:
    """Fail-open latency: the function's result comes back either way; only the wait differs."""
    (process,) = memcached_servers(1)
    role(benchmark, "baseline" if breaker == "closed" else "subject", f"memo, breaker {breaker}")
    benchmark.group = "hung-server"
    benchmark.extra_info["timeout_s"] = HUNG_TIMEOUT
    threshold = 3 if breaker == "open" else 10**9
    cache = memo.Cache(
        process.url,
        timeout=HUNG_TIMEOUT,
        connect_timeout=HUNG_TIMEOUT,
        failure_threshold=threshold,
        retry_after=3600,
        prefix=f"b{uuid.uuid4().hex[:8]}:",
    )

    @cache.cached(ns="hung")
    def get_user(user_id: int) -> dict[str, Any]:
        return SMALL

    get_user(1)  # connected, generation known
    process.pause()
    try:
        for _ in range(threshold if breaker == "open" else 0):
            assert get_user(1) == SMALL  # these calls wait out the timeout and open the breaker
        rounds = 5 if breaker == "closed" else 2000
        assert benchmark.pedantic(get_user, args=(1,), rounds=rounds, iterations=1) == SMALL
        assert cache.stats("hung")["errors"] >= 1
    finally:
        process.resume()
        cache.close()
