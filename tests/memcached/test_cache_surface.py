"""Cache.touch, connect/disconnect, cache_lifespan, and what a disabled cache answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from memcached_fixtures import MemcachedProcess

import memo
from memo._codec import lease_marker
from memo._null import NullBackend
from memo._touch import restamp

Servers = Callable[..., list[MemcachedProcess]]


@pytest.fixture
def url(backend_url: str) -> str:
    """memory:// and memcached (conftest's `backend_url`, which `elapse` follows)."""
    return backend_url


def _cache(url: str, **options: object) -> memo.Cache:
    return memo.Cache(url, prefix=f"t{time.time_ns()}:", **options)  # type: ignore[arg-type]


# -- touch ---------------------------------------------------------------------------------------------


def test_touch_extends_a_live_value(elapse: Callable[[float], None], url: str) -> None:
    cache = _cache(url)
    assert cache.set("k", {"a": 1}, ttl=1) is True
    assert cache.touch("k", 30) is True
    elapse(1.3)  # past the first lifetime (exact, in the header; +1 s on memcached's clock)
    assert cache.get("k") == {"a": 1}
    assert cache.touch("k", None) is True  # no expiry from now on
    assert cache.get("k") == {"a": 1}
    cache.close()


def test_touch_leaves_absent_and_expired_values_alone(elapse: Callable[[float], None], url: str) -> None:
    cache = _cache(url)
    assert cache.touch("absent", 30) is False
    assert cache.set("short", 1, ttl=0.2) is True
    elapse(0.3)  # expired by its header, perhaps still held by the server
    assert cache.touch("short", 30) is False
    assert cache.get("short", "gone") == "gone"  # a touch never brings an expired value back
    cache.close()


def test_touch_never_extends_a_lease_marker_or_a_cleared_namespace(url: str) -> None:
    cache = _cache(url)
    gen = cache.generation("default")
    assert gen is not None
    key = cache._values.key("default", gen, "k")
    assert cache.backend.set(key, lease_marker("someone"), 5) is True
    assert cache.touch("k", 30) is False
    cache.backend.delete(key)
    assert cache.set("k", 1) is True
    cache.clear()
    assert cache.touch("k", 30) is False  # the old generation's entry is not the current value
    cache.close()


async def test_atouch(url: str) -> None:
    cache = _cache(url)
    assert await cache.aset("k", "v", ttl=1) is True
    assert await cache.atouch("k", 30) is True
    await asyncio.sleep(1.3)
    assert await cache.aget("k") == "v"
    assert await cache.atouch("absent", 30) is False
    await cache.aclose()


def test_restamp_keeps_the_body_and_flags() -> None:
    codec = memo.Codec()
    now = time.time()
    for value in ("text", {"a": [1, 2]}, "x" * 50_000):
        raw = codec.encode(value, int((now + 5) * 1000))
        longer = restamp(raw, 60, now)
        assert longer is not None and codec.decode(longer) == value
        assert int.from_bytes(longer[3:11], "big") == int((now + 60) * 1000)
        forever = restamp(raw, None, now)
        assert forever is not None and codec.decode(forever) == value and len(forever) == len(raw) - 8
        again = restamp(forever, 10, now)
        assert again is not None and codec.decode(again) == value
        assert int.from_bytes(again[3:11], "big") == int((now + 10) * 1000)
    assert restamp(codec.encode(1, int((now - 1) * 1000)), 60, now) is None  # expired
    assert restamp(b"not a memo value", 60, now) is None
    assert restamp(lease_marker("t"), 60, now) is None


@pytest.mark.memcached
def test_touch_fails_open_when_memcached_is_down(memcached_servers: Servers) -> None:
    (server,) = memcached_servers(1)
    cache = _cache(server.url, timeout=0.05, connect_timeout=0.05)
    assert cache.set("k", 1) is True
    server.kill()
    assert cache.touch("k", 30) is False
    assert cache.stats()["total"]["errors"] == 1
    cache.close()


# -- connect, disconnect -----------------------------------------------------------------------------------


@pytest.mark.memcached
async def test_connect_and_disconnect(memcached_servers: Servers) -> None:
    up, down = memcached_servers(2)
    cache = _cache(up.url)
    assert cache.connect() is True
    assert await cache.aconnect() is True
    assert cache.backend._apools  # type: ignore[attr-defined]
    await cache.adisconnect()
    assert not cache.backend._apools  # type: ignore[attr-defined]
    cache.disconnect()
    assert cache.set("k", 1) is True  # the next call opens a new connection
    cache.disconnect()
    down.kill()
    both = _cache(f"memcached://{up.address},{down.address}", timeout=0.05, connect_timeout=0.05)
    assert both.connect() is False and await both.aconnect() is False  # never raises
    await both.adisconnect()


def test_connect_a_disabled_or_memory_cache() -> None:
    assert memo.Cache("null://").connect() is True
    assert memo.Cache("memory://").connect() is True


async def test_cache_lifespan_is_lifespan() -> None:
    assert memo.cache_lifespan is memo.lifespan
    cache = memo.Cache("memory://")
    async with memo.cache_lifespan(cache):
        assert cache.set("k", 1) is True


# -- a disabled cache ------------------------------------------------------------------------------------


async def test_a_disabled_cache_stores_nothing_and_says_so() -> None:
    cache = memo.Cache("null://")
    assert cache.set("k", 1) is False
    assert await cache.aset("k", 1) is False
    assert cache.set_many({"a": 1, "b": 2}) == 0
    assert await cache.aset_many({"a": 1}) == 0
    assert cache.get("k", "absent") == "absent"
    assert cache.touch("k", 5) is False


async def test_health_of_a_disabled_cache_is_disabled_however_it_was_built() -> None:
    for cache in (memo.Cache("null://"), memo.Cache("NULL://"), memo.Cache(backend=NullBackend())):
        assert cache.health() == {"status": "disabled", "servers": {}, "latency_ms": 0.0}
        assert (await cache.ahealth())["status"] == "disabled"
        assert not cache.is_available
