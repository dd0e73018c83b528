"""The `MemcachedCache` surface LangGraph users planned from, against real memcached.

The design note for a LangGraph `MemcachedCache` (written after `ValkeyCache`)
has `MemcachedCache(client, *, serde=None, prefix="lgc:", ttl=None)` taking a
pymemcache `PooledClient` or `HashClient`, `from_server`/`from_servers` usable
as context managers, a default TTL for policies without one, and a short key
prefix. Each of the note's examples is reconstructed below and run against the
suite's memcached, with a real graph compiled with the cache.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.types import CachePolicy
from pymemcache.client.base import Client, PooledClient
from pymemcache.client.hash import HashClient
from pymemcache.client.retrying import RetryingClient

import memo
from memo.langgraph import MemcachedCache

pytestmark = pytest.mark.memcached
Servers = Callable[..., list[Any]]


class Numbers(TypedDict):
    x: int


def build(calls: Counter[str], *, ttl: int | None = None) -> StateGraph[Any, Any, Any, Any]:
    def double(state: Numbers) -> dict[str, Any]:
        calls["double"] += 1
        return {"x": state["x"] * 2}

    builder = StateGraph(Numbers)
    builder.add_node("double", double, cache_policy=CachePolicy(ttl=ttl))
    builder.add_edge(START, "double")
    builder.add_edge("double", END)
    return builder


def cached_flags(updates: list[dict[str, Any]]) -> list[bool]:
    return [chunk.get("__metadata__", {}).get("cached", False) for chunk in updates]


def runs_cached(cache: MemcachedCache[Any], x: int) -> bool:
    """Run a fresh graph twice; return whether the second run was served from `cache`."""
    calls: Counter[str] = Counter()
    graph = build(calls).compile(cache=cache)
    assert graph.invoke({"x": x}) == {"x": 2 * x}
    second = list(graph.stream({"x": x}, stream_mode="updates"))
    assert second[0]["double"] == {"x": 2 * x}
    return cached_flags(second) == [True] and calls["double"] == 1


def unique_prefix() -> str:
    return f"p{uuid.uuid4().hex[:8]}:"


# -- the note's examples ----------------------------------------------------------------------


def test_note_pooled_client(memcached_server: Any) -> None:
    """`MemcachedCache(PooledClient("host:port", max_pool_size=4, ...), prefix=..., ttl=...)`."""
    client = PooledClient(memcached_server.address, max_pool_size=4, connect_timeout=1, timeout=2)
    cache = MemcachedCache(client, prefix=unique_prefix(), ttl=3600)
    options = cache.cache.backend._options()  # type: ignore[attr-defined]
    assert cache.cache.backend.servers == (memcached_server.address,)  # type: ignore[attr-defined]
    assert (options["pool_size"], options["connect_timeout"], options["timeout"]) == (4, 1.0, 2.0)
    assert options["tls_context"] is None
    assert cache.ttl == 3600
    assert runs_cached(cache, 3)
    cache.close()
    assert client.get("anything") is None  # the client was not closed or changed: it still works
    client.close()


def test_note_hash_client(memcached_servers: Servers) -> None:
    """HashClient([(host, port), ...], use_pooling=True, max_pool_size=8) spreads over the same servers."""
    one, two = memcached_servers(2)
    client = HashClient(
        [(one.host, one.port), (two.host, two.port)], use_pooling=True, max_pool_size=8, timeout=0.5
    )
    cache = MemcachedCache(client)
    backend = cache.cache.backend
    assert set(backend.servers) == {one.address, two.address}  # type: ignore[attr-defined]
    assert backend._options()["pool_size"] == 8 and backend._options()["timeout"] == 0.5  # type: ignore[attr-defined]
    assert cache.cache.prefix == "lgc:"  # the note's default prefix
    for x in range(8):  # enough inputs to land entries on both servers
        assert runs_cached(cache, x)
    cache.close()


def test_note_from_server_as_context_manager(memcached_server: Any) -> None:
    calls: Counter[str] = Counter()
    with MemcachedCache.from_server(
        memcached_server.address,
        prefix=unique_prefix(),
        ttl_seconds=600,
        pool_size=4,
        connect_timeout=1,
        timeout=1,
    ) as cache:
        options = cache.cache.backend._options()  # type: ignore[attr-defined]
        assert (options["pool_size"], options["connect_timeout"], options["timeout"]) == (4, 1.0, 1.0)
        assert cache.ttl == 600
        graph = build(calls).compile(cache=cache)
        assert graph.invoke({"x": 5}) == graph.invoke({"x": 5}) == {"x": 10}
        assert calls["double"] == 1
    # Leaving the block released the connections of the Cache it built.
    assert all(not server.free for server in cache.cache.backend._servers)  # type: ignore[attr-defined]


async def test_note_from_server_as_async_context_manager(memcached_server: Any) -> None:
    calls: Counter[str] = Counter()
    async with MemcachedCache.from_server(
        memcached_server.address, prefix=unique_prefix(), ttl_seconds=60
    ) as cache:
        graph = build(calls).compile(cache=cache)
        assert await graph.ainvoke({"x": 4}) == {"x": 8}
        updates = [chunk async for chunk in graph.astream({"x": 4}, stream_mode="updates")]
        assert cached_flags(updates) == [True] and calls["double"] == 1


def test_note_from_server_as_a_plain_constructor(memcached_server: Any) -> None:
    cache = MemcachedCache.from_server((memcached_server.host, memcached_server.port), prefix=unique_prefix())
    assert runs_cached(cache, 6)
    cache.close()
    asyncio.run(cache.aclose())


def test_note_from_servers(memcached_servers: Servers) -> None:
    one, two = memcached_servers(2)
    with MemcachedCache.from_servers(
        [one.address, (two.host, two.port)], prefix=unique_prefix(), ttl_seconds=300, timeout=0.5
    ) as cache:
        assert set(cache.cache.backend.servers) == {one.address, two.address}  # type: ignore[attr-defined]
        assert cache.ttl == 300
        assert all(runs_cached(cache, x) for x in range(6))
    with pytest.raises(memo.ConfigurationError, match="at least one server"):
        MemcachedCache.from_servers([])


def test_from_url_keeps_working(memcached_url: str) -> None:
    with MemcachedCache.from_url(memcached_url, prefix=unique_prefix(), ttl=30, timeout=0.5) as cache:
        assert cache.ttl == 30 and runs_cached(cache, 7)


# -- what is adopted from a pymemcache client, and what is not ----------------------------------


def test_plain_client_without_timeouts_gets_memos_bounded_ones(memcached_server: Any) -> None:
    client = Client(memcached_server.address)  # pymemcache: timeout=None waits forever
    cache = MemcachedCache(client, prefix=unique_prefix())
    options = cache.cache.backend._options()  # type: ignore[attr-defined]
    assert (options["timeout"], options["connect_timeout"], options["pool_size"]) == (0.25, 0.25, 16)
    assert runs_cached(cache, 1)
    cache.close()


def test_retrying_client_is_unwrapped(memcached_server: Any) -> None:
    client = RetryingClient(PooledClient(memcached_server.address, timeout=0.75), attempts=3)
    cache = MemcachedCache(client, prefix=unique_prefix())
    assert cache.cache.backend._options()["timeout"] == 0.75  # type: ignore[attr-defined]
    assert runs_cached(cache, 2)
    cache.close()


def test_serializer_and_key_prefix_of_the_client_are_not_used(memcached_server: Any) -> None:
    def refuse(*args: Any) -> Any:
        raise AssertionError("the client's serializer must not be called")

    client = PooledClient(
        memcached_server.address, serializer=refuse, deserializer=refuse, key_prefix=b"client-prefix:"
    )
    prefix = unique_prefix()
    cache = MemcachedCache(client, prefix=prefix)
    assert runs_cached(cache, 9)
    key = cache.key_for(("ns",), "0" * 32)
    assert key.startswith(f"{prefix}langgraph:ns:") and "client-prefix" not in key
    cache.close()


def test_tls_context_is_adopted(memcached_servers: Servers, memcached_tls_files: tuple[str, str]) -> None:
    cert, key = memcached_tls_files
    (proc,) = memcached_servers(1, tls=(cert, key))
    context = ssl.create_default_context(cafile=cert)
    client = PooledClient(proc.address, tls_context=context, timeout=1)
    cache = MemcachedCache(client, prefix=unique_prefix())
    assert cache.cache.url.startswith("memcached+tls://")
    assert cache.cache.backend._options()["tls_context"] is context  # type: ignore[attr-defined]
    assert runs_cached(cache, 3)
    assert cache.cache.stats("langgraph")["errors"] == 0
    cache.close()
    with MemcachedCache.from_server(proc.address, prefix=unique_prefix(), tls_context=context) as built:
        assert built.cache.url.startswith("memcached+tls://")
        assert runs_cached(built, 5) and built.cache.stats("langgraph")["errors"] == 0


def test_what_cannot_be_adopted_is_refused(memcached_server: Any) -> None:
    with pytest.raises(memo.ConfigurationError, match="Unix socket"):
        MemcachedCache(Client("/tmp/memcached.sock"))
    with pytest.raises(memo.ConfigurationError, match="pymemcache Client"):
        MemcachedCache("memcached://127.0.0.1:11211")
    with pytest.raises(memo.ConfigurationError, match="ttl"):
        MemcachedCache(Client(memcached_server.address), ttl=0)
    with pytest.raises(memo.ConfigurationError, match="prefix"):
        MemcachedCache(Client(memcached_server.address), prefix="has space")


def test_prefix_with_a_memo_cache_is_refused_not_ignored(memcached_url: str) -> None:
    cache = memo.Cache(memcached_url, prefix="app:")
    with pytest.raises(memo.ConfigurationError, match=r"memo\.Cache\(url, prefix=\.\.\.\)"):
        MemcachedCache(cache, prefix="other:")
    assert MemcachedCache(cache, prefix="app:").cache is cache  # the same prefix says nothing new
    lg = MemcachedCache(cache)
    lg.close()  # a Cache passed in belongs to its creator: still open
    assert runs_cached(lg, 4)
    cache.close()


def test_prefixes_keep_applications_apart(memcached_server: Any) -> None:
    one = MemcachedCache.from_server(memcached_server.address, prefix=unique_prefix())
    two = MemcachedCache.from_server(memcached_server.address, prefix=unique_prefix())
    calls: Counter[str] = Counter()
    build(calls).compile(cache=one).invoke({"x": 1})
    build(calls).compile(cache=two).invoke({"x": 1})
    assert calls["double"] == 2
    one.clear()  # clears only the first application's entries
    assert cached_flags(list(build(calls).compile(cache=two).stream({"x": 1}, stream_mode="updates"))) == [
        True
    ]
    one.close()
    two.close()


# -- the default ttl ---------------------------------------------------------------------------


def test_default_ttl_applies_only_where_the_policy_gives_none(memcached_server: Any) -> None:
    prefix = unique_prefix()
    with MemcachedCache.from_server(memcached_server.address, prefix=prefix, ttl_seconds=1) as cache:
        defaulted: Counter[str] = Counter()
        own: Counter[str] = Counter()
        by_default = build(defaulted).compile(cache=cache)  # CachePolicy(ttl=None)
        by_policy = build(own, ttl=120).compile(cache=cache)
        by_policy.invoke({"x": 10})  # another input: its own entry
        by_default.invoke({"x": 11})
        assert defaulted["double"] + own["double"] == 2
        by_default.invoke({"x": 11})
        assert defaulted["double"] + own["double"] == 2  # both cached now
        time.sleep(2.1)  # memcached counts expiry in whole seconds
        by_default.invoke({"x": 11})
        by_policy.invoke({"x": 10})
        assert defaulted["double"] + own["double"] == 3  # only the defaulted entry expired
    with MemcachedCache.from_server(memcached_server.address, prefix=prefix) as forever:
        assert forever.ttl is None


# -- the ValkeyCache pattern: from_conn_string, from_pool, client, prefix, flags ------------------


def test_from_conn_string_as_valkey_users_write_it(memcached_server: Any) -> None:
    """`with ValkeyCache.from_conn_string(url, ttl_seconds=..., pool_size=...) as cache:`, ported."""
    with MemcachedCache.from_conn_string(
        memcached_server.url, ttl_seconds=3600.0, pool_size=10, pool_timeout=30.0, prefix=unique_prefix()
    ) as cache:
        assert isinstance(cache.client, memo.Cache) and cache.client is cache.cache
        assert cache.cache.backend._options()["pool_size"] == 10  # type: ignore[attr-defined]
        assert cache.ttl == 3600.0
        assert runs_cached(cache, 11)
    assert all(not server.free for server in cache.cache.backend._servers)  # type: ignore[attr-defined]


async def test_from_conn_string_without_a_scheme_and_async(memcached_server: Any) -> None:
    async with MemcachedCache.from_conn_string(memcached_server.address) as cache:
        assert cache.prefix == "lgc:" and cache.cache.backend.servers == (memcached_server.address,)  # type: ignore[attr-defined]
        key = ((f"n{uuid.uuid4().hex}",), "0" * 32)
        await cache.aset({key: ("v", None)})
        assert await cache.aget([key]) == {key: "v"}
    with pytest.raises(memo.ConfigurationError, match="conn_string"):
        MemcachedCache.from_conn_string("")


def test_from_pool_adopts_a_pymemcache_client(memcached_server: Any) -> None:
    client = PooledClient(memcached_server.address, max_pool_size=5, timeout=1)
    with MemcachedCache.from_pool(client, ttl_seconds=60, prefix=unique_prefix()) as cache:
        assert cache.client is client  # the adopted client, kept for reference
        assert cache.cache.backend._options()["pool_size"] == 5  # type: ignore[attr-defined]
        assert cache.ttl == 60 and runs_cached(cache, 12)
    assert client.get("anything") is None  # neither used nor closed
    client.close()
    with pytest.raises(memo.ConfigurationError, match="None"):
        MemcachedCache.from_pool(None)
    with pytest.raises(memo.ConfigurationError, match="pymemcache"):
        MemcachedCache.from_pool(object())


def test_from_pool_with_ssl_speaks_tls(memcached_server: Any) -> None:
    client = PooledClient(memcached_server.address)
    cache = MemcachedCache.from_pool(client, ssl=True)
    assert cache.cache.url.startswith("memcached+tls://") and cache.client is client
    cache.close()
    with memo.Cache("memory://") as shared, pytest.raises(memo.ConfigurationError, match="ssl"):
        MemcachedCache.from_pool(shared, ssl=True)


def test_client_and_prefix_attributes(memcached_url: str) -> None:
    with memo.Cache(memcached_url) as shared:
        passed = MemcachedCache(shared)
        assert passed.client is shared and passed.cache is shared
        assert passed.prefix == "memo:"  # a Cache passed in keeps its own prefix: its entries stay readable
        with pytest.raises(AttributeError):
            passed.prefix = "other:"  # type: ignore[misc]
    with MemcachedCache.from_url(memcached_url) as built:
        assert built.prefix == "lgc:" and built.client is built.cache


def test_hash_long_keys_is_accepted_and_changes_nothing(memcached_url: str) -> None:
    prefix = unique_prefix()
    key = (("graph", "n" * 300), "k" * 1000)  # far beyond memcached's 250 bytes either way
    with (
        MemcachedCache.from_url(memcached_url, prefix=prefix, hash_long_keys=True) as hashed,
        MemcachedCache.from_url(memcached_url, prefix=prefix, hash_long_keys=False) as unhashed,
    ):
        hashed.set({key: ("v", None)})
        assert unhashed.get([key]) == {key: "v"}  # one key either way
        assert hashed.key_for(*key) == unhashed.key_for(*key) and len(hashed.key_for(*key)) <= 250
        assert hashed.hash_long_keys is True and unhashed.hash_long_keys is False
    with memo.Cache(memcached_url, prefix=unique_prefix()) as shared:
        assert MemcachedCache(shared, hash_long_keys=True).get([key]) == {}
        with pytest.raises(memo.ConfigurationError, match="hash_long_keys"):
            MemcachedCache(shared, hash_long_keys="yes")  # type: ignore[arg-type]


def test_memcached_available_follows_the_servers(memcached_servers: Servers) -> None:
    (server,) = memcached_servers(1)
    with MemcachedCache.from_conn_string(server.url, timeout=0.2, connect_timeout=0.2) as cache:
        assert cache.memcached_available is True
        server.kill()
        for _ in range(3):  # the breaker opens after three failures
            assert cache.get([(("n",), "0" * 32)]) == {}
        assert cache.memcached_available is False
    assert MemcachedCache(memo.Cache("null://")).memcached_available is False
