"""Edge defects of the memcached backend, each reproduced with real processes."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from memcached_fixtures import MemcachedProcess

import memo
from memo._memcached import MemcachedBackend, _resolve

pytestmark = pytest.mark.memcached

Servers = Callable[..., list[MemcachedProcess]]


def stalled_resolver(monkeypatch: pytest.MonkeyPatch, delay: float) -> list[str]:
    """Make every lookup of "localhost" take `delay` seconds (a resolver that stalls)."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def slow(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "localhost":
            asked.append(host)
            time.sleep(delay)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    return asked


def test_a_stalled_resolver_costs_a_sync_call_at_most_connect_timeout(
    memcached_servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    (process,) = memcached_servers(1)
    asked = stalled_resolver(monkeypatch, 1.0)
    backend = MemcachedBackend([f"localhost:{process.port}"], connect_timeout=0.2, timeout=0.2)
    start = time.monotonic()
    with pytest.raises(memo.BackendTimeout):
        backend.get("k")
    assert time.monotonic() - start < 0.5  # without the bound: the resolver's 1 s
    assert asked == ["localhost"]
    # The lookup carried on; once it lands, calls use its answer without asking again.
    time.sleep(1.0)
    assert backend.set("k", b"v", 60) is True
    assert backend.get("k") == b"v"
    assert asked == ["localhost"]
    backend.close()


async def test_a_stalled_resolver_is_bounded_async_too(
    memcached_servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    (process,) = memcached_servers(1)
    stalled_resolver(monkeypatch, 1.0)
    backend = MemcachedBackend([f"localhost:{process.port}"], connect_timeout=0.2, timeout=0.2)
    start = time.monotonic()
    with pytest.raises(memo.BackendTimeout):
        await backend.aget("k")
    assert time.monotonic() - start < 0.5
    await backend.aclose()
    await asyncio.sleep(1.0)  # let the executor's lookup finish before the loop closes


def test_concurrent_lookups_share_one_resolver_call(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = stalled_resolver(monkeypatch, 0.3)
    resolver = _resolve.BoundedResolver()
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(resolver.getaddrinfo(2.0, "localhost", 11211)))
        for _ in range(5)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 5 and asked == ["localhost"]


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_set_many_with_one_refused_value_stores_the_others(memcached_servers: Servers, flavour: str) -> None:
    """A server with `-I 64k` refuses one value: only that key is not stored, whatever the TTLs."""
    (process,) = memcached_servers(1, max_item_size=64 * 1024)
    backend = MemcachedBackend([process.address])  # its limit is 1 MiB: the big value is sent
    big = b"x" * (100 * 1024)
    items: list[tuple[str, bytes, float | None]] = [
        ("a", b"1", 30),
        ("big", big, 30),
        ("c", b"3", 60),  # another TTL: another pipeline before the fix
        ("d", b"4", None),
    ]
    if flavour == "sync":
        not_stored = backend.set_many(items)
        got = backend.get_many(["a", "big", "c", "d"])
    else:

        async def run() -> tuple[list[str], dict[str, bytes]]:
            refused = await backend.aset_many(items)
            found = await backend.aget_many(["a", "big", "c", "d"])
            await backend.aclose()
            return refused, found

        not_stored, got = asyncio.run(run())
    assert not_stored == ["big"]
    assert got == {"a": b"1", "c": b"3", "d": b"4"}
    assert backend.server_states()[process.address].failures == 0
    assert backend.get("a") == b"1"  # the connection stayed in step
    backend.close()


def total_connections(process: MemcachedProcess) -> int:
    """memcached's count of connections accepted so far (this one included)."""
    with socket.create_connection((process.host, process.port)) as sock:
        sock.sendall(b"stats\r\n")
        reply = b""
        while not reply.endswith(b"END\r\n"):
            reply += sock.recv(65536)
    for line in reply.decode().splitlines():
        if line.startswith("STAT total_connections "):
            return int(line.split()[2])
    raise AssertionError("no total_connections")


def test_asyncio_run_after_asyncio_run_reuses_connections(memcached_servers: Servers) -> None:
    """Idle connections are parked when a loop ends and adopted by the next loop."""
    (process,) = memcached_servers(1)
    backend = MemcachedBackend([process.address])
    assert backend.set_many([(f"k{i}", b"v%d" % i, 60) for i in range(4)]) == []

    async def request() -> list[bytes | None]:
        return await asyncio.gather(*(backend.aget(f"k{i}") for i in range(4)))

    before = total_connections(process)
    for _ in range(10):
        assert asyncio.run(request()) == [b"v0", b"v1", b"v2", b"v3"]
    # Four concurrent gets make two requests: two connections, opened by the first
    # run and reused by the nine after it (40 without parking and coalescing).
    opened = total_connections(process) - before - 1
    assert 1 <= opened <= 2, opened
    assert len(backend._parking) == opened
    asyncio.run(backend.aclose())  # an explicit close closes parked sockets too
    assert len(backend._parking) == 0
    backend.close()


def test_a_parked_connection_the_server_closed_is_not_used(memcached_servers: Servers) -> None:
    (process,) = memcached_servers(1)
    backend = MemcachedBackend([process.address])

    async def roundtrip(value: bytes) -> bytes | None:
        assert await backend.aset("k", value, 60)
        return await backend.aget("k")

    assert asyncio.run(roundtrip(b"one")) == b"one"
    assert len(backend._parking) == 1
    process.restart()  # the parked connection is now closed at the server's end
    time.sleep(0.05)
    assert asyncio.run(roundtrip(b"two")) == b"two"
    assert backend.server_states()[process.address].failures == 0
    backend.close()
    assert len(backend._parking) == 0


def _recording_requests(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The requests async connections send, in order (the connections stay real)."""
    from memo._memcached._protocol import Connection

    sent: list[bytes] = []
    real_request = Connection.request

    def recording(self: Connection, data: bytes, *args: Any, **kwargs: Any) -> Any:
        sent.append(data)
        return real_request(self, data, *args, **kwargs)

    monkeypatch.setattr(Connection, "request", recording)
    return sent


# -- coalesced async gets ---------------------------------------------------------------------


async def test_concurrent_gets_share_requests_and_a_lone_get_goes_out_at_once(
    memcached_servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    (process,) = memcached_servers(1)
    backend = MemcachedBackend([process.address])
    assert backend.set_many([(f"k{i}", f"v{i}".encode(), 60) for i in range(50)]) == []
    sent = _recording_requests(monkeypatch)
    assert await backend.aget("k1") == b"v1"
    # alone: sent as it is, no waiting for company (`mn` asks, on the first connection, for meta)
    assert [data for data in sent if data != b"mn\r\n"] in ([b"get k1\r\n"], [b"mg k1 v\r\n"])
    sent.clear()
    keys = [f"k{i % 60}" for i in range(120)]  # repeats, and ten keys that do not exist
    values = await asyncio.gather(*(backend.aget(k) for k in keys))
    assert values == [f"v{i % 60}".encode() if i % 60 < 50 else None for i in range(120)]
    assert len(sent) <= 3, sent  # the first at once, the rest in one or two multi-key gets
    await backend.aclose()
    backend.close()


async def test_a_cancelled_coalesced_get_leaves_the_others_alone(memcached_servers: Servers) -> None:
    (process,) = memcached_servers(1)
    backend = MemcachedBackend([process.address])
    assert backend.set("same", b"value", 60)
    first = asyncio.ensure_future(backend.aget("same"))  # on the wire
    await asyncio.sleep(0)
    waiting = [asyncio.ensure_future(backend.aget("same")) for _ in range(5)]  # coalesced
    await asyncio.sleep(0)
    waiting[0].cancel()
    results = await asyncio.gather(first, *waiting, return_exceptions=True)
    assert isinstance(results[1], asyncio.CancelledError)
    assert results[0] == b"value" and results[2:] == [b"value"] * 4
    assert await backend.aget("same") == b"value"
    await backend.aclose()
    backend.close()


async def test_concurrent_small_batches_share_requests_and_each_gets_its_own_keys(
    memcached_servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`aget_many` of a few keys goes out as `aget` does: at once as one multi-key get when
    alone, joined to the coalesced get while one is on the wire."""
    (process,) = memcached_servers(1)
    backend = MemcachedBackend([process.address])
    assert backend.set_many([(f"k{i}", f"v{i}".encode(), 60) for i in range(40)]) == []
    sent = _recording_requests(monkeypatch)
    assert await backend.aget_many(["k1", "gone", "k2"]) == {"k1": b"v1", "k2": b"v2"}
    assert [data for data in sent if data != b"mn\r\n"] == [b"get k1 gone k2\r\n"]  # one request, at once
    sent.clear()
    pairs = [[f"k{i}", f"k{i + 20}", f"none{i}"] for i in range(20)]
    results = await asyncio.gather(*(backend.aget_many(keys) for keys in pairs))
    assert results == [{f"k{i}": f"v{i}".encode(), f"k{i + 20}": f"v{i + 20}".encode()} for i in range(20)]
    assert len(sent) <= 3, sent  # the first at once, the rest in one or two multi-key gets
    many = [f"k{i}" for i in range(10)]  # more than a few keys: the batch path, unchanged
    assert await backend.aget_many(many) == {k: f"v{k[1:]}".encode() for k in many}
    await backend.aclose()
    backend.close()


async def test_a_cancelled_small_batch_leaves_the_others_alone(memcached_servers: Servers) -> None:
    (process,) = memcached_servers(1)
    backend = MemcachedBackend([process.address])
    assert backend.set_many([("a", b"1", 60), ("b", b"2", 60)]) == []
    first = asyncio.ensure_future(backend.aget("a"))  # on the wire
    await asyncio.sleep(0)
    waiting = [asyncio.ensure_future(backend.aget_many(["a", "b"])) for _ in range(4)]  # coalesced
    await asyncio.sleep(0)
    waiting[0].cancel()
    results = await asyncio.gather(first, *waiting, return_exceptions=True)
    assert isinstance(results[1], asyncio.CancelledError)
    assert results[0] == b"1" and results[2:] == [{"a": b"1", "b": b"2"}] * 3
    assert await backend.aget_many(["a", "b"]) == {"a": b"1", "b": b"2"}
    await backend.aclose()
    backend.close()


async def test_a_small_batch_joined_to_a_failing_get_raises_its_error(memcached_servers: Servers) -> None:
    (process,) = memcached_servers(1)
    backend = MemcachedBackend([process.address], timeout=0.2)
    assert backend.set_many([("a", b"1", 60), ("b", b"2", 60)]) == []
    assert await backend.aget("a") == b"1"  # connected: what follows waits only for replies
    process.pause()
    try:
        first = asyncio.ensure_future(backend.aget("a"))  # on the wire, never answered
        await asyncio.sleep(0)
        joined = asyncio.ensure_future(backend.aget_many(["a", "b"]))
        results = await asyncio.gather(first, joined, return_exceptions=True)
    finally:
        process.resume()
    assert [type(r) for r in results] == [memo.BackendTimeout, memo.BackendTimeout]
    assert await backend.aget_many(["a", "b"]) == {"a": b"1", "b": b"2"}
    await backend.aclose()
    backend.close()


def test_under_uvloop(memcached_servers: Servers) -> None:
    uvloop = pytest.importorskip("uvloop")
    (process,) = memcached_servers(1)
    cache = memo.Cache(process.url, prefix="uv:")

    @cache.cached(ns="uv")
    async def f(x: int) -> int:
        return x * 2

    async def run() -> list[int]:
        results = await asyncio.gather(*(f(i % 7) for i in range(50)))
        await cache.aclose()
        return results

    loop = uvloop.new_event_loop()
    try:
        assert loop.run_until_complete(run()) == [(i % 7) * 2 for i in range(50)]
        assert loop.run_until_complete(run()) == [(i % 7) * 2 for i in range(50)]
    finally:
        loop.close()
    stats = cache.stats("uv")
    assert stats["errors"] == 0 and stats["hits"] >= 50
