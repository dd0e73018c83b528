"""Clusters: auto-discovered ElastiCache-style node lists, with real memcached nodes behind them."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from cluster_fixtures import ConfigEndpoint
from memcached_fixtures import MemcachedProcess
from ports import refused_url
from protocol_fixtures import protocol  # noqa: F401 - the fixture, parametrised over both protocols

import memo
from memo._memcached import MemcachedBackend

pytestmark = [pytest.mark.memcached, pytest.mark.usefixtures("protocol")]

Servers = Callable[..., list[MemcachedProcess]]
Endpoints = Callable[..., ConfigEndpoint]


def ids(processes: list[MemcachedProcess]) -> set[str]:
    return {f"localhost:{p.port}" for p in processes}


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


@pytest.mark.parametrize("legacy", [False, True], ids=["config-get-cluster", "legacy-get"])
async def test_routes_to_the_listed_nodes(
    memcached_servers: Servers, config_endpoint: Endpoints, legacy: bool
) -> None:
    processes = memcached_servers(3)
    endpoint = config_endpoint(processes, legacy=legacy)
    cache = memo.Cache(endpoint.url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    backend = cache.backend
    assert isinstance(backend, MemcachedBackend)
    assert set(backend.servers) == ids(processes)
    keys = [f"k{i}" for i in range(60)]
    backend.set_many([(k, k.encode(), 60) for k in keys])
    assert await backend.aget_many(keys) == {k: k.encode() for k in keys}
    # Every node holds some keys: the list is routed over, not just its first entry.
    used = {backend.server_for(k) for k in keys}
    assert used == ids(processes)
    stats = backend.discovery_stats()
    assert stats is not None and stats["version"] == 1 and stats["failures"] == 0
    cache.close()
    await cache.aclose()


def test_tls_discovery_url_and_options() -> None:
    with pytest.raises(memo.ConfigurationError):
        memo.Cache("memcached+discovery://a:1,b:2")
    with pytest.raises(memo.ConfigurationError):
        memo.Cache("memcached://a:1?discovery_interval=5")
    with pytest.raises(memo.ConfigurationError):
        memo.Cache("memcached+discovery://127.0.0.1:1?discovery_interval=0")


async def test_nodes_added_and_removed_under_load(
    memcached_servers: Servers, config_endpoint: Endpoints
) -> None:
    """Threads and tasks call through two node changes: every result is right, nobody sees an error."""
    processes = memcached_servers(4)
    endpoint = config_endpoint(processes[:3])
    cache = memo.Cache(endpoint.url, prefix=f"t{uuid.uuid4().hex[:8]}:", discovery_interval=0.05)
    calls = {"n": 0}

    @cache.cached(ns="load", ttl=60)
    def double(x: int) -> int:
        calls["n"] += 1
        return 2 * x

    @cache.cached(ns="load", ttl=60)
    async def triple(x: int) -> int:
        return 3 * x

    stop = threading.Event()
    failures: list[BaseException] = []

    def thread_caller() -> None:
        i = 0
        try:
            while not stop.is_set():
                i = (i + 7) % 300
                assert double(i) == 2 * i
        except BaseException as exc:  # collected, then re-raised below
            failures.append(exc)

    async def task_caller(seed: int) -> None:
        i = seed
        while not stop.is_set():
            i = (i + 11) % 300
            assert await triple(i) == 3 * i
            await asyncio.sleep(0)

    threads = [threading.Thread(target=thread_caller) for _ in range(3)]
    for t in threads:
        t.start()
    tasks = [asyncio.create_task(task_caller(s)) for s in range(8)]
    backend = cache.backend
    assert isinstance(backend, MemcachedBackend)
    try:
        await asyncio.sleep(0.3)
        endpoint.set_nodes(processes)  # a node joins
        await asyncio.to_thread(wait_for, lambda: set(backend.servers) == ids(processes))
        await asyncio.sleep(0.3)
        endpoint.set_nodes(processes[1:])  # a node leaves; it keeps running, as during an AWS replacement
        await asyncio.to_thread(wait_for, lambda: set(backend.servers) == ids(processes[1:]))
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
        await asyncio.gather(*tasks)
    assert not failures, failures
    stats = cache.stats("load")
    assert stats["errors"] == 0 and stats["hits"] > 0
    discovery = backend.discovery_stats()
    assert discovery is not None and discovery["changes"] == 3 and discovery["version"] == 3
    cache.close()
    await cache.aclose()


def test_a_removed_node_stops_being_used(memcached_servers: Servers, config_endpoint: Endpoints) -> None:
    processes = memcached_servers(3)
    endpoint = config_endpoint(processes)
    backend = MemcachedBackend(discovery=("127.0.0.1", endpoint.port), discovery_interval=0.05)
    keys = [f"key{i}" for i in range(200)]
    on_removed = {k for k in keys if backend.server_for(k) == f"localhost:{processes[0].port}"}
    assert on_removed
    endpoint.set_nodes(processes[1:])
    wait_for(lambda: set(backend.servers) == ids(processes[1:]))
    processes[0].kill()
    # Only the removed node's keys moved (≈1/3), and nothing goes to it any more.
    assert backend.set_many([(k, b"v", 60) for k in keys]) == []
    assert backend.get_many(keys) == dict.fromkeys(keys, b"v")
    backend.close()


def test_endpoint_down_or_malformed_keeps_the_last_list(
    memcached_servers: Servers, config_endpoint: Endpoints, caplog: pytest.LogCaptureFixture
) -> None:
    processes = memcached_servers(2)
    endpoint = config_endpoint(processes)
    backend = MemcachedBackend(discovery=("127.0.0.1", endpoint.port), discovery_interval=0.05)
    assert set(backend.servers) == ids(processes)
    with caplog.at_level(logging.WARNING, logger="memo"):
        endpoint.answer_garbage(b"3\nnode-without-a-port\n")
        wait_for(lambda: (backend.discovery_stats() or {})["failures"] >= 2)
        assert set(backend.servers) == ids(processes)
        assert backend.set("k", b"v", 60) and backend.get("k") == b"v"
        endpoint.stop()
        before = (backend.discovery_stats() or {})["failures"]
        wait_for(lambda: (backend.discovery_stats() or {})["failures"] >= before + 2)
    stats: dict[str, Any] = backend.discovery_stats() or {}
    assert "cannot ask" in stats["last_error"] and set(stats["nodes"]) == ids(processes)
    assert set(backend.servers) == ids(processes)
    assert backend.get("k") == b"v"
    # Rate-limited: one line for all those failures.
    assert len([r for r in caplog.records if "auto-discovery" in r.getMessage()]) == 1
    backend.close()


async def test_no_list_yet_fails_open(memcached_servers: Servers) -> None:

    cache = memo.Cache(refused_url("memcached+discovery"), connect_timeout=0.1, timeout=0.1)

    @cache.cached(ns="cold")
    async def f(x: int) -> int:
        return x + 1

    assert await f(1) == 2  # computed; the backend error is counted, not raised
    assert cache.stats("cold")["errors"] == 2  # both round trips of the call
    with pytest.raises(memo.BackendUnavailable, match="no node list"):
        await cache.backend.aget("k")
    cache.close()
    await cache.aclose()
