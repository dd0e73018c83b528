"""Cache.from_env, the null:// pass-through cache, is_available/health, and memo.lifespan."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from memcached_fixtures import MemcachedProcess

import memo
from memo._null import NullBackend
from memo._settings import settings_from_env

# -- from_env ------------------------------------------------------------------------------------


TEAM = {
    "MEMCACHED_ENABLED": "true",
    "MEMCACHED_HOSTS": "127.0.0.1:11211, 127.0.0.1:11212",
    "MEMCACHED_TTL": "600",
    "MEMCACHED_FALLBACK": "true",
    "MEMCACHED_POOL_SIZE": "4",
    "MEMCACHED_TIMEOUT": "50ms",
}


def test_memcached_names_of_this_team() -> None:
    url, options, used = settings_from_env(TEAM, "MEMCACHED_")
    assert url == "memcached://127.0.0.1:11211,127.0.0.1:11212"
    assert options == {
        "ttl": 600,
        "on_error": "ignore",
        "pool_size": 4,
        "connect_timeout": 0.05,  # TIMEOUT is the connect timeout; replies keep the short default
    }
    assert sorted(used) == sorted(TEAM)
    cache = memo.Cache.from_env("MEMCACHED_", environ=TEAM)
    assert cache.backend.servers == ("127.0.0.1:11211", "127.0.0.1:11212")  # type: ignore[attr-defined]
    assert cache.ttl == 600 and cache.on_error == "ignore"


def test_memo_names_and_overrides() -> None:
    env = {
        "MEMO_URL": "memcached://127.0.0.1:11299",
        "MEMO_TTL": "none",
        "MEMO_FALLBACK": "false",
        "MEMO_TIMEOUT": "1s",
        "MEMO_OPERATION_TIMEOUT": "0.1",
        "MEMO_KEY_PREFIX": "app:",
    }
    cache = memo.Cache.from_env(environ=env)
    assert cache.ttl is None and cache.on_error == "raise" and cache.prefix == "app:"
    options = settings_from_env(env)[1]
    assert options["timeout"] == 0.1 and options["connect_timeout"] == 1
    overridden = memo.Cache.from_env(environ=env, ttl=5, key_prefix="other:", url="memory://")
    assert (overridden.ttl, overridden.prefix, overridden.url) == (5, "other:", "memory://")
    assert overridden.on_error == "raise"  # the rest still from the environment


async def test_lifespan_without_caches_closes_the_default_cache() -> None:
    closed = []
    cache = memo.configure("memory://")
    cache.aclose = lambda: closed.append(1) or _done()  # type: ignore[method-assign]
    try:
        async with memo.lifespan():
            pass
    finally:
        memo.configure("memory://")
    assert closed == [1]


async def _done() -> None:
    return None


def test_nothing_set_means_disabled_and_disabled_means_null() -> None:
    assert memo.Cache.from_env(environ={}).url == "null://"
    off = memo.Cache.from_env(
        "MEMCACHED_", environ={"MEMCACHED_ENABLED": "0", "MEMCACHED_HOSTS": "h:1", "MEMCACHED_POOL_SIZE": "2"}
    )
    assert isinstance(off.backend, NullBackend) and not off.is_available


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MEMCACHED_ENABLED", "maybe"),
        ("MEMCACHED_TTL", "0"),
        ("MEMCACHED_TTL", "-5"),
        ("MEMCACHED_TTL", "soon"),
        ("MEMCACHED_FALLBACK", "sometimes"),
        ("MEMCACHED_POOL_SIZE", "0"),
        ("MEMCACHED_POOL_SIZE", "four"),
        ("MEMCACHED_TIMEOUT", "nan"),
        ("MEMCACHED_TIMEOUT", "-1ms"),
        ("MEMCACHED_HOSTS", "a:1,,b:2"),
        ("MEMCACHED_HOSTS", "a:99999"),
        ("MEMCACHED_HOSTS", "memcached://a:1"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    env = {"MEMCACHED_HOSTS": "127.0.0.1:11211", name: value}
    with pytest.raises(memo.ConfigurationError, match=name):
        memo.Cache.from_env("MEMCACHED_", environ=env)


def test_url_and_hosts_together_are_refused() -> None:
    with pytest.raises(memo.ConfigurationError, match="MEMO_URL or MEMO_HOSTS"):
        memo.Cache.from_env(environ={"MEMO_URL": "memory://", "MEMO_HOSTS": "a:1"})


def test_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMCACHED_HOSTS", "127.0.0.1:11211")
    assert memo.Cache.from_env("MEMCACHED_").url == "memcached://127.0.0.1:11211"


# -- a disabled cache: the same code paths, no server calls ------------------------------------------


def test_a_disabled_cache_runs_the_function_every_time() -> None:
    cache = memo.Cache("null://")
    calls = []

    @cache.cached(ns="n")
    def f(x: int) -> int:
        calls.append(x)
        return x * 2

    start = time.perf_counter()
    assert [f(1), f(1), f(2)] == [2, 2, 4]
    assert time.perf_counter() - start < 0.5  # no waiting for leases nobody can hold
    assert calls == [1, 1, 2]
    cache.clear()  # accepted: nothing to clear
    assert cache.health()["status"] == "disabled"


async def test_a_disabled_cache_async() -> None:
    cache = memo.Cache("null://")

    @cache.cached(ns="n")
    async def f(x: int) -> int:
        return x + 1

    start = time.perf_counter()
    assert await f(1) == await f(1) == 2
    assert time.perf_counter() - start < 0.5
    assert cache.stats("n")["hits"] == 0
    assert (await cache.ahealth())["status"] == "disabled"


# -- availability and health ----------------------------------------------------------------------------


@pytest.mark.memcached
async def test_health_reports_each_server(memcached_servers: Callable[..., list[MemcachedProcess]]) -> None:
    up, down = memcached_servers(2)
    cache = memo.Cache(f"memcached://{up.address},{down.address}", timeout=0.05, connect_timeout=0.05)
    assert cache.health()["status"] == "ok" and cache.is_available
    down.kill()
    health = await cache.ahealth()
    assert health["status"] == "degraded"
    assert health["servers"] == {up.address: "up", down.address: "down"}
    up.pause()
    try:
        assert cache.health()["status"] == "down"
        for _ in range(3):
            cache.health()  # failures open both breakers
        assert not cache.is_available
    finally:
        up.resume()
    cache.close()
    await cache.aclose()


def test_memory_is_always_available() -> None:
    cache = memo.Cache("memory://")
    assert cache.is_available and cache.health()["status"] == "ok"


# -- lifespan ---------------------------------------------------------------------------------------------


class CountingCache(memo.Cache):
    closed = 0

    async def aclose(self) -> None:
        type(self).closed += 1
        await super().aclose()


@pytest.mark.memcached
async def test_lifespan_starts_with_memcached_down_and_closes_every_pool(
    memcached_servers: Callable[..., list[MemcachedProcess]], caplog: pytest.LogCaptureFixture
) -> None:
    from fastapi import FastAPI

    server = memcached_servers(1)[0]
    server.kill()
    cache = CountingCache(server.url, timeout=0.05, connect_timeout=0.05)
    app = FastAPI(lifespan=memo.lifespan(cache))
    with caplog.at_level(logging.WARNING, "memo"):
        async with app.router.lifespan_context(app):
            pass
    assert "down at startup" in caplog.text
    assert CountingCache.closed == 1


@pytest.mark.memcached
async def test_lifespan_nests_in_the_apps_own(memcached_url: str) -> None:
    from fastapi import FastAPI
    from httpx import ASGITransport, AsyncClient

    cache = memo.Cache(memcached_url, prefix="nest:")
    events: list[str] = []

    @cache.cached(ns="n")
    async def answer() -> int:
        return 42

    @asynccontextmanager
    async def app_lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append("app up")
        async with memo.lifespan(cache):
            yield
        events.append("app down")

    app = FastAPI(lifespan=app_lifespan)

    @app.get("/")
    async def root() -> dict[str, Any]:
        return {"answer": await answer()}

    async with app.router.lifespan_context(app):
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as client:
            assert (await client.get("/")).json() == {"answer": 42}
        pools = dict(cache.backend._apools)  # type: ignore[attr-defined]
        assert pools  # the request opened an async pool
    assert events == ["app up", "app down"]
    assert not cache.backend._apools  # type: ignore[attr-defined]
