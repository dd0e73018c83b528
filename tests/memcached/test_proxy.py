"""memo through twemproxy (nutcracker) in front of three real memcached processes."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cluster_fixtures import NutcrackerProcess
from memcached_fixtures import MemcachedProcess

import memo
from memo._memcached import MemcachedBackend

pytestmark = pytest.mark.memcached

Servers = Callable[..., list[MemcachedProcess]]


@pytest.fixture
def proxy(memcached_servers: Servers, nutcracker: Callable[..., NutcrackerProcess]) -> NutcrackerProcess:
    return nutcracker(memcached_servers(3))


@pytest.fixture
def cache(proxy: NutcrackerProcess) -> Iterator[memo.Cache]:
    cache = memo.Cache(proxy.url, prefix=f"p{uuid.uuid4().hex[:8]}:")
    yield cache
    cache.close()
    asyncio.run(cache.aclose())


def ask(address: tuple[str, int], command: bytes) -> bytes:
    """Send one raw command; return everything read until the peer stops or closes."""
    with socket.create_connection(address, timeout=1.0) as sock:
        sock.sendall(command)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                if chunk.endswith(b"\r\n"):
                    sock.settimeout(0.2)
        except TimeoutError:
            pass
        return b"".join(chunks)


def test_what_twemproxy_forwards(proxy: NutcrackerProcess) -> None:
    """The facts the degradations rest on: stats and meta commands get no answer."""
    address = (proxy.host, proxy.port)
    assert ask(address, b"set k 0 60 1\r\nv\r\n") == b"STORED\r\n"
    assert ask(address, b"gets k\r\n").startswith(b"VALUE k 0 1 ")
    assert ask(address, b"stats\r\n") == b""  # closed without a reply
    assert ask(address, b"mg k v\r\n") == b""


def test_the_keys_are_spread_over_the_pool(proxy: NutcrackerProcess, cache: memo.Cache) -> None:
    @cache.cached(ns="spread")
    def f(x: int) -> int:
        return x

    for i in range(60):
        assert f(i) == i
    counts = [int(b.backend_stats()["curr_items"]) for b in _raw_backends(proxy)]
    assert all(count > 0 for count in counts), counts


def _raw_backends(proxy: NutcrackerProcess) -> list[Any]:
    class Raw:
        def __init__(self, process: MemcachedProcess) -> None:
            self.process = process

        def backend_stats(self) -> dict[str, str]:
            reply = ask((self.process.host, self.process.port), b"stats\r\n").decode()
            return {
                line.split()[1]: line.split()[2] for line in reply.splitlines() if line.startswith("STAT ")
            }

    return [Raw(p) for p in proxy.backends]


def test_cached_sync_and_async(cache: memo.Cache) -> None:
    runs: list[int] = []

    @cache.cached(ns="users", ttl=60)
    def get_user(user_id: int) -> dict[str, Any]:
        runs.append(user_id)
        return {"id": user_id, "tags": ("a", "b")}

    @cache.cached(ns="users", ttl=60)
    async def aget_user(user_id: int) -> dict[str, Any]:
        runs.append(-user_id)
        return {"id": user_id}

    assert get_user(1) == get_user(1) == {"id": 1, "tags": ("a", "b")}
    assert asyncio.run(aget_user(2)) == {"id": 2}
    assert asyncio.run(aget_user(2)) == {"id": 2}
    assert runs == [1, -2]
    assert get_user.invalidate(1) is True
    assert get_user(1)["id"] == 1 and runs == [1, -2, 1]
    get_user.refresh(1)
    stats = cache.stats("users")
    assert stats["errors"] == 0 and stats["hits"] >= 2


def test_batches_and_generations(cache: memo.Cache) -> None:
    backend = cache.backend
    assert isinstance(backend, MemcachedBackend)
    keys = [f"{cache.prefix}b{i}" for i in range(50)]
    assert backend.set_many([(k, k.encode(), 60) for k in keys]) == []
    assert backend.get_many(keys) == {k: k.encode() for k in keys}
    assert asyncio.run(backend.aget_many(keys)) == {k: k.encode() for k in keys}
    backend.delete_many(keys[:25])
    assert set(backend.get_many(keys)) == set(keys[25:])

    runs: list[int] = []

    @cache.cached(ns="gen")
    def f(x: int) -> int:
        runs.append(x)
        return x

    f(1)
    f(1)
    cache.clear(ns="gen")
    f(1)
    assert runs == [1, 1]
    assert cache.stats("gen")["errors"] == 0


def test_control_records_treat_the_proxy_as_one_store(cache: memo.Cache) -> None:
    backend = cache.backend
    assert isinstance(backend, MemcachedBackend)
    key = f"{cache.prefix}gen"
    assert backend.set_all(key, b"g1", 60) == 1
    assert backend.get_all(key) == {backend.servers[0]: b"g1"}
    assert asyncio.run(backend.aset_all(key, b"g2", 60)) == 1
    assert asyncio.run(backend.aget_all(key)) == {backend.servers[0]: b"g2"}


def test_leases_through_the_proxy(cache: memo.Cache) -> None:
    backend = cache.backend
    key = f"{cache.prefix}lease"
    added, found = backend.lease(key, b"marker", 10)
    assert added and found is not None and found[0] == b"marker"
    again, now = backend.lease(key, b"other", 10)
    assert not again and now == found
    assert backend.cas(key, b"value", 60, found[1]) is True
    assert backend.cas(key, b"late", 60, found[1]) is False
    assert backend.touch(key, 60) is True
    assert backend.gets(key)[0] == b"value"  # type: ignore[index]
    assert asyncio.run(backend.alease(key, b"m", 10))[0] is False

    runs: list[int] = []

    @cache.cached(ns="leased")
    async def slow(x: int) -> int:
        runs.append(x)
        await asyncio.sleep(0.05)
        return x

    async def many() -> list[int]:
        return await asyncio.gather(*(slow(7) for _ in range(20)))

    assert asyncio.run(many()) == [7] * 20
    assert runs == [7]


def test_stats_are_not_sent_to_a_proxy(proxy: NutcrackerProcess, memcached_servers: Servers) -> None:
    declared = MemcachedBackend([proxy.address], proxy="twemproxy")
    assert declared.server_stats() == {proxy.address: {}}
    assert declared.get_many(["x"]) == {}  # the connection was not dropped
    # Undeclared, the proxy drops the connection: an empty entry, never an error.
    undeclared = MemcachedBackend([proxy.address])
    assert undeclared.server_stats() == {proxy.address: {}}
    assert undeclared.set("k", b"v", 60) and undeclared.get("k") == b"v"
    (plain,) = memcached_servers(1)
    direct = MemcachedBackend([plain.address])
    assert int(direct.server_stats()[plain.address]["pid"]) == plain.pid
    for backend in (declared, undeclared, direct):
        backend.close()
    with pytest.raises(memo.ConfigurationError):
        MemcachedBackend([proxy.address], proxy="mystery")


def test_langgraph_cache_through_the_proxy(cache: memo.Cache) -> None:
    pytest.importorskip("langgraph")
    from memo.langgraph import MemcachedCache

    lg = MemcachedCache(cache)
    ns = ("__pregel_ns_writes", "mod.node", "node")
    pairs = {(ns, f"{i:032x}"): ({"i": i}, 60) for i in range(20)}
    lg.set(pairs)
    got = lg.get(list(pairs))
    assert {k: v for k, v in got.items()} == {k: v[0] for k, v in pairs.items()}
    lg.clear([ns])
    assert lg.get(list(pairs)) == {}
