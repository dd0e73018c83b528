"""The protocols on the wire: negotiation per server, and the commands each operation sends.

A small recording relay sits between memo and a real memcached and keeps every
byte memo sent, so each test can show exactly which commands an operation
costs under each protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cluster_fixtures import NutcrackerProcess
from memcached_fixtures import MemcachedProcess

import memo
from memo import ConfigurationError
from memo._backend import backend_from_url
from memo._codec import NATIVE_LEASE
from memo._errors import BackendProtocolError
from memo._memcached import MemcachedBackend

pytestmark = pytest.mark.memcached

Servers = Callable[..., list[MemcachedProcess]]


class Relay:
    """Forward TCP connections to `target`, recording what clients send; or answer with `reply`."""

    def __init__(self, target: tuple[str, int] | None = None, reply: bytes | None = None) -> None:
        self.target = target
        self.target_address = f"{target[0]}:{target[1]}" if target else ""
        self.reply = reply
        self.sent: list[bytes] = []  # one entry per chunk received from a client
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        #: While set, replies are held back (requests still reach the server).
        self.holding = threading.Event()
        self._sockets: list[socket.socket] = []
        self._spawn(self._accept)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        self._listener.settimeout(0.05)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                continue
            self.connections += 1
            self._sockets.append(client)
            if self.target is None:
                self._spawn(self._answer, client)
            else:
                upstream = socket.create_connection(self.target)
                self._sockets.append(upstream)
                self._spawn(self._pump, client, upstream, True)
                self._spawn(self._pump, upstream, client, False)

    def _answer(self, client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                self._record(data)
                if self.reply is not None:
                    client.sendall(self.reply)

    def _pump(self, source: socket.socket, sink: socket.socket, record: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if record:
                    self._record(data)
                while not record and self.holding.is_set() and not self._stop.is_set():
                    self._stop.wait(0.005)
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _record(self, data: bytes) -> None:
        with self._lock:
            self.sent.append(data)

    def take(self) -> list[bytes]:
        """The request lines sent since the last call (data blocks included as lines)."""
        with self._lock:
            data, self.sent = b"".join(self.sent), []
        return data.split(b"\r\n")[:-1]

    def close(self) -> None:
        self._stop.set()
        self._threads[0].join()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads[1:]:
            thread.join(timeout=2)
        self._listener.close()


@pytest.fixture
def relay(memcached_servers: Servers) -> Iterator[Relay]:
    (process,) = memcached_servers(1)
    made = Relay((process.host, process.port))
    yield made
    made.close()


def _backend(address: str, protocol: str) -> MemcachedBackend:
    return MemcachedBackend([address], protocol=protocol, timeout=2.0)


def _leases_of(backend: MemcachedBackend) -> dict[str, tuple[bool, bytes]]:
    """`lease_many` of a free key and of one whose lease another caller holds: (added, what is there)."""
    leased = backend.lease_many([("p", b"L", 5), ("n", b"L", 5)])
    return {key: (added, found[0]) for key, (added, found) in leased.items() if found is not None}


_ADDS = [b"add p 0 5 1", b"L", b"add n 0 5 1", b"L"]

WIRE: dict[str, list[tuple[Callable[[MemcachedBackend], Any], Any, list[bytes]]]] = {
    "classic": [
        (lambda b: b.set("k", b"v1", 60), True, [b"set k 0 60 2", b"v1"]),
        (lambda b: b.get("k"), b"v1", [b"get k"]),
        (lambda b: b.add("k", b"v2", None), False, [b"add k 0 0 2", b"v2"]),
        (lambda b: b.get_many(["k", "x"]), {"k": b"v1"}, [b"get k x"]),
        (
            lambda b: b.set_many([("a", b"1", None), ("b", b"2", 5)]),
            [],
            [b"set a 0 0 1", b"1", b"set b 0 5 1", b"2"],
        ),
        (lambda b: b.gets("k")[0], b"v1", [b"gets k"]),
        (lambda b: b.touch("k", 30), True, [b"touch k 30"]),
        (lambda b: b.lease("m", b"L", 5)[0], True, [b"add m 0 5 1", b"L", b"gets m"]),
        (lambda b: b.cas("m", b"V", 60, b.gets("m")[1]), True, [b"gets m", b"cas m 0 60 1 *", b"V"]),
        (lambda b: b.delete("k"), True, [b"delete k"]),
        (lambda b: b.delete_many(["a", "b"]), None, [b"delete a", b"delete b"]),
        (lambda b: b.append_all("g", b"t", None), 1, [b"add g 0 0 1", b"t", b"append g 0 0 1", b"t"]),
        # Leases of several keys in one round trip: the server's placeholder, added by hand.
        (
            lambda b: b.get_or_lease_many(["m", "n"], 5),
            {"m": b"V", "n": NATIVE_LEASE},
            [b"add m 0 5 *", NATIVE_LEASE, b"add n 0 5 *", NATIVE_LEASE, b"gets m n"],
        ),
        (_leases_of, {"p": (True, b"L"), "n": (False, NATIVE_LEASE)}, [*_ADDS, b"gets p n"]),
    ],
    "meta": [
        (lambda b: b.set("k", b"v1", 60), True, [b"ms k 2 F0 T60", b"v1"]),
        (lambda b: b.get("k"), b"v1", [b"mg k v"]),
        (lambda b: b.add("k", b"v2", None), False, [b"ms k 2 F0 ME", b"v2"]),
        # Batches stay classic on meta servers: cheaper to read (see _ops.get_many).
        (lambda b: b.get_many(["k", "x"]), {"k": b"v1"}, [b"get k x"]),
        (
            lambda b: b.set_many([("a", b"1", None), ("b", b"2", 5)]),
            [],
            [b"ms a 1 F0", b"1", b"ms b 1 F0 T5", b"2"],
        ),
        (lambda b: b.gets("k")[0], b"v1", [b"mg k v c"]),
        (lambda b: b.touch("k", 30), True, [b"mg k T30"]),
        (lambda b: b.lease("m", b"L", 5)[0], True, [b"ms m 1 F0 T5 ME", b"L", b"mg m v c"]),
        (lambda b: b.cas("m", b"V", 60, b.gets("m")[1]), True, [b"mg m v c", b"ms m 1 F0 T60 C*", b"V"]),
        (lambda b: b.delete("k"), True, [b"md k"]),
        (lambda b: b.delete_many(["a", "b"]), None, [b"md a", b"md b"]),
        (lambda b: b.append_all("g", b"t", None), 1, [b"ms g 1 F0 ME", b"t", b"ms g 1 MA", b"t"]),
        # Leases of several keys in the read: `N` creates the placeholder of each miss.
        (
            lambda b: b.get_or_lease_many(["m", "n"], 5),
            {"m": b"V", "n": NATIVE_LEASE},
            [b"mg m v c N5", b"mg n v c N5"],
        ),
        # Markers added, then read with the meta command, which shows the placeholder's `Z`.
        (
            _leases_of,
            {"p": (True, b"L"), "n": (False, NATIVE_LEASE)},
            [b"ms p 1 F0 T5 ME", b"L", b"ms n 1 F0 T5 ME", b"L", b"mg p v c", b"mg n v c"],
        ),
    ],
}


def _matches(lines: list[bytes], expected: list[bytes]) -> bool:
    """Lines equal, where an expected line ending in `*` matches any line with that prefix."""
    return len(lines) == len(expected) and all(
        line.startswith(want[:-1]) if want.endswith(b"*") else line == want
        for line, want in zip(lines, expected, strict=True)
    )


@pytest.mark.parametrize("protocol", ["classic", "meta"])
def test_the_commands_of_each_operation(relay: Relay, protocol: str) -> None:
    backend = _backend(relay.address, protocol)
    try:
        assert backend.get("warm") is None
        first = relay.take()
        # meta asks first, on the first connection; classic never asks.
        assert first == ([b"mn", b"mg warm v"] if protocol == "meta" else [b"get warm"])
        for operation, result, expected in WIRE[protocol]:
            assert operation(backend) == result
            lines = relay.take()
            assert _matches(lines, expected), (lines, expected)
    finally:
        backend.close()


@pytest.mark.parametrize("protocol", ["classic", "meta"])
async def test_the_async_commands_are_the_same(relay: Relay, protocol: str) -> None:
    backend = _backend(relay.address, protocol)
    try:
        assert await backend.aset("k", b"v1", 60)
        assert relay.take()[-2:] == WIRE[protocol][0][2]
        assert await backend.aget("k") == b"v1"
        assert relay.take() == WIRE[protocol][1][2]
        assert await backend.aget_many(["k", "x"]) == {"k": b"v1"}
        assert relay.take() == WIRE[protocol][3][2]
        assert (await backend.alease("m", b"L", 5))[0] is True
        assert relay.take() == WIRE[protocol][7][2]
        assert await backend.adelete("k") is True
        assert relay.take() == WIRE[protocol][9][2]
        assert await backend.aget_or_lease_many(["m", "n"], 5) == {"m": b"L", "n": NATIVE_LEASE}
        assert _matches(relay.take(), WIRE[protocol][12][2])
    finally:
        await backend.aclose()
        backend.close()


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_auto_picks_meta_where_the_server_answers_mn(relay: Relay, flavour: str) -> None:
    backend = _backend(relay.address, "auto")
    try:
        if flavour == "sync":
            assert backend.set("k", b"v", None)
            assert backend.get("k") == b"v"
        else:

            async def run() -> None:
                assert await backend.aset("k", b"v", None)
                assert await backend.aget("k") == b"v"
                await backend.aclose()

            asyncio.run(run())
        assert relay.take() == [b"mn", b"ms k 1 F0", b"v", b"mg k v"]
        assert relay.connections == 1
        assert backend._servers[0].meta is True
    finally:
        backend.close()


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_auto_falls_back_to_classic_on_a_fresh_connection_when_mn_is_an_error(flavour: str) -> None:
    # memcached before 1.6 answers an unknown command with ERROR (this one answers everything so).
    old = Relay(reply=b"ERROR\r\n")
    backend = MemcachedBackend([old.address], protocol="auto", timeout=1.0)
    try:
        if flavour == "sync":
            with pytest.raises(BackendProtocolError, match="ERROR"):
                backend.delete("k")
        else:

            async def run() -> None:
                with pytest.raises(BackendProtocolError, match="ERROR"):
                    await backend.adelete("k")
                await backend.aclose()

            asyncio.run(run())
    finally:
        backend.close()
        old.close()
    assert old.take() == [b"mn", b"delete k"]
    assert old.connections == 2  # the probe's connection was dropped; classic went on a fresh one
    assert backend._servers[0].meta is False


def test_auto_through_twemproxy_is_classic(
    memcached_servers: Servers, nutcracker: Callable[..., NutcrackerProcess]
) -> None:
    proxy = nutcracker(memcached_servers(2))
    # No proxy= option: memo finds out by asking. twemproxy drops the connection on `mn`.
    backend = MemcachedBackend([f"{proxy.host}:{proxy.port}"], protocol="auto")
    try:
        assert backend.set("k", b"v", None)
        assert backend.get("k") == b"v"
        assert backend.get_many(["k", "nope"]) == {"k": b"v"}
        assert backend._servers[0].meta is False

        async def run() -> None:
            assert await backend.aget("k") == b"v"
            assert await backend.alease("lease", b"m", 5) == (True, (b"m", (await backend.agets("lease"))[1]))
            await backend.aclose()

        asyncio.run(run())
    finally:
        backend.close()


def test_forcing_meta_where_the_server_cannot_is_a_clear_error_at_first_use(
    memcached_servers: Servers, nutcracker: Callable[..., NutcrackerProcess]
) -> None:
    proxy = nutcracker(memcached_servers(1))
    backend = MemcachedBackend([f"{proxy.host}:{proxy.port}"], protocol="meta")  # nothing asked yet
    try:
        with pytest.raises(ConfigurationError, match="does not speak the meta protocol"):
            backend.get("k")

        async def run() -> None:
            with pytest.raises(ConfigurationError, match="does not speak the meta protocol"):
                await backend.aget("k")
            await backend.aclose()

        asyncio.run(run())
    finally:
        backend.close()


def test_the_protocol_option_in_urls_and_arguments() -> None:
    for value in ("auto", "meta", "classic"):
        backend = backend_from_url(f"memcached://127.0.0.1:1?protocol={value}", {})
        assert isinstance(backend, MemcachedBackend) and backend._options()["protocol"] == value
        backend.close()
    assert backend_from_url("memcached://127.0.0.1:1", {})._options()["protocol"] == "auto"  # type: ignore[attr-defined]
    # Behind a proxy: classic, without asking.
    proxied = MemcachedBackend(["127.0.0.1:1"], proxy="twemproxy")
    assert proxied._options()["protocol"] == "classic" and proxied._servers[0].meta is False
    for bad in ("memcached://h?protocol=binary", "memcached://h?protocol=META"):
        with pytest.raises(ConfigurationError, match="protocol must be one of auto, meta, classic"):
            backend_from_url(bad, {})
    with pytest.raises(ConfigurationError, match="protocol=meta with proxy=twemproxy"):
        MemcachedBackend(["h"], protocol="meta", proxy="twemproxy")


def _decorated(address: str, protocol: str, **options: Any) -> tuple[memo.Cache, Any]:
    cache = memo.Cache(f"memcached://{address}?protocol={protocol}", prefix="w:", **options)

    def f(x: int) -> dict[str, int]:
        return {"x": x}

    async def af(x: int) -> dict[str, int]:
        return {"x": x}

    return cache, (cache.cached(ns="n", ttl=60)(f), cache.cached(ns="a", ttl=60)(af))


#: A miss, its fill and a hit of a decorated function, as commands (the generation's read aside).
FILL_AND_HIT = {
    # The read takes the lease when it misses; the value replaces the placeholder: 2 round trips.
    "meta": [b"mg w:*", b"ms w:*", b"*", b"mg w:*"],
    # get; add + gets (one round trip); cas: 3 round trips.
    "classic": [b"get w:*", b"add w:*", b"*", b"gets w:*", b"cas w:*", b"*", b"get w:*"],
}


@pytest.mark.parametrize("protocol", ["classic", "meta"])
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_decorated_miss_fill_and_hit_on_the_wire(relay: Relay, protocol: str, flavour: str) -> None:
    cache, (f, af) = _decorated(relay.address, protocol)
    try:
        if flavour == "sync":
            f.key_for(1)  # reads the namespace's generation
            relay.take()
            assert f(1) == {"x": 1}
            assert f(1) == {"x": 1}
        else:

            async def run() -> None:
                await af.akey_for(1)
                relay.take()
                assert await af(1) == {"x": 1}
                assert await af(1) == {"x": 1}
                await cache.aclose()

            asyncio.run(run())
        lines = relay.take()
        assert _matches(lines, FILL_AND_HIT[protocol]), lines
        if protocol == "meta":
            assert lines[0].endswith(b" v c N10") and lines[-1].endswith(b" v c N10")
            assert b" F0 T61 C" in lines[1]  # stored against the placeholder's cas
    finally:
        cache.close()


async def test_a_leased_read_cancelled_on_the_wire_leaves_no_lease_behind(relay: Relay) -> None:
    """The server granted the lease in a reply nobody will read: the placeholder is deleted."""
    cache, (_, af) = _decorated(relay.address, "meta", lease_wait=5.0)
    direct = MemcachedBackend([relay.target_address], protocol="meta")
    try:
        key = await af.akey_for(1)
        relay.holding.set()
        task = asyncio.ensure_future(af(1))
        for _ in range(200):
            got = direct.gets(key)
            if got is not None:
                break
            await asyncio.sleep(0.005)
        assert got is not None and got[0] == NATIVE_LEASE  # the lease is on the server
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        relay.holding.clear()
        for _ in range(200):
            if direct.gets(key) is None:
                break
            await asyncio.sleep(0.01)
        assert direct.gets(key) is None
        assert await af(1) == {"x": 1}  # at once: nobody's lease to wait for
        assert cache.stats()["a"]["lease_waits"] == 0
    finally:
        relay.holding.clear()
        await cache.aclose()
        cache.close()
        direct.close()


def test_a_leased_read_that_times_out_leaves_no_lease_behind(relay: Relay) -> None:
    cache = memo.Cache(f"memcached://{relay.address}?protocol=meta&timeout=0.3", prefix="w:", lease_wait=5.0)
    direct = MemcachedBackend([relay.target_address], protocol="meta")
    calls: list[int] = []

    @cache.cached(ns="t", ttl=60)
    def f(x: int) -> int:
        calls.append(x)
        return x * 2

    try:
        key = f.key_for(1)
        relay.holding.set()
        assert f(1) == 2  # fails open: computed, not stored
        relay.holding.clear()
        for _ in range(200):
            if direct.gets(key) is None:
                break
            time.sleep(0.01)
        assert direct.gets(key) is None
        assert f(1) == 2 and calls == [1, 1]
        assert direct.get(key) is not None and cache.stats()["t"]["lease_waits"] == 0
    finally:
        relay.holding.clear()
        cache.close()
        direct.close()


#: A `cached_many` call for two items, one cached and one missing, as commands (the generation's
#: read aside): one multi-key get, the missing item's lease, its value stored against it.
BATCH_FILL = {
    # The lease in a read of its own: `N` creates the missing key's placeholder.
    "meta": [b"get w:*", b"mg w:*", b"cas w:*", b"*"],
    # The server's placeholder added by hand, and read back with its cas.
    "classic": [b"get w:*", b"add w:*", NATIVE_LEASE, b"gets w:*", b"cas w:*", b"*"],
}


@pytest.mark.parametrize("protocol", ["classic", "meta"])
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_batch_with_a_missing_item_on_the_wire(relay: Relay, protocol: str, flavour: str) -> None:
    cache = memo.Cache(f"memcached://{relay.address}?protocol={protocol}", prefix="w:")

    @cache.cached_many(ns="b", ttl=60, each="ids")
    def f(ids: list[int]) -> dict[int, int]:
        return {i: i * 2 for i in ids}

    @cache.cached_many(ns="b", ttl=60, each="ids")
    async def af(ids: list[int]) -> dict[int, int]:
        return {i: i * 2 for i in ids}

    try:
        if flavour == "sync":
            assert f([1]) == {1: 2}
            relay.take()
            assert f([1, 2]) == {1: 2, 2: 4}
        else:

            async def run() -> None:
                assert await af([1]) == {1: 2}
                relay.take()
                assert await af([1, 2]) == {1: 2, 2: 4}
                await cache.aclose()

            asyncio.run(run())
        lines = relay.take()
        assert _matches(lines, BATCH_FILL[protocol]), lines
        if protocol == "meta":
            assert lines[1].endswith(b" v c N10")
        assert (f if flavour == "sync" else af).cache_info()["sets"] == 2
    finally:
        cache.close()


def _holding_leased_reads(cache: memo.Cache, relay: Relay) -> None:
    """Hold back the replies from the batch's leased read on (its multi-get before it is answered)."""
    real = cache.backend.get_or_lease_many
    areal = cache.backend.aget_or_lease_many

    def hold(keys: list[str], lease_ttl: float) -> dict[str, bytes | None]:
        relay.holding.set()
        return real(keys, lease_ttl)

    async def ahold(keys: list[str], lease_ttl: float) -> dict[str, bytes | None]:
        relay.holding.set()
        return await areal(keys, lease_ttl)

    cache.backend.get_or_lease_many = hold  # type: ignore[method-assign]
    cache.backend.aget_or_lease_many = ahold  # type: ignore[method-assign]


def _gone(direct: MemcachedBackend, keys: list[str]) -> bool:
    for _ in range(300):
        if all(direct.gets(key) is None for key in keys):
            return True
        time.sleep(0.01)
    return False


def test_a_batch_whose_leased_read_times_out_leaves_no_lease_behind(relay: Relay) -> None:
    cache = memo.Cache(f"memcached://{relay.address}?protocol=meta&timeout=0.3", prefix="w:", lease_wait=5.0)
    direct = MemcachedBackend([relay.target_address], protocol="meta")
    calls: list[list[int]] = []

    @cache.cached_many(ns="t", ttl=60, each="ids")
    def f(ids: list[int]) -> dict[int, int]:
        calls.append(list(ids))
        return {i: i * 2 for i in ids}

    try:
        keys = f.key_for(ids=[1, 2])
        _holding_leased_reads(cache, relay)
        assert f([1, 2]) == {1: 2, 2: 4}  # fails open: computed, not stored
        relay.holding.clear()
        assert _gone(direct, keys)  # the leases the server granted in the lost reply are deleted
        del cache.backend.get_or_lease_many
        assert f([1, 2]) == {1: 2, 2: 4}
        assert calls == [[1, 2], [1, 2]] and all(direct.get(key) is not None for key in keys)
        assert f.cache_info()["lease_waits"] == 0
    finally:
        relay.holding.clear()
        cache.close()
        direct.close()


async def test_a_batch_cancelled_during_its_leased_read_leaves_no_lease_behind(relay: Relay) -> None:
    cache = memo.Cache(f"memcached://{relay.address}?protocol=meta", prefix="w:", lease_wait=5.0)
    direct = MemcachedBackend([relay.target_address], protocol="meta")

    @cache.cached_many(ns="c", ttl=60, each="ids")
    async def af(ids: list[int]) -> dict[int, int]:
        return {i: i * 2 for i in ids}

    try:
        keys = await af.akey_for(ids=[1, 2])
        _holding_leased_reads(cache, relay)
        task = asyncio.ensure_future(af([1, 2]))
        for _ in range(200):
            if all(direct.gets(key) is not None for key in keys):
                break
            await asyncio.sleep(0.005)
        assert all(direct.gets(key)[0] == NATIVE_LEASE for key in keys)  # type: ignore[index]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        relay.holding.clear()
        assert await asyncio.to_thread(_gone, direct, keys)
        del cache.backend.aget_or_lease_many
        assert await af([1, 2]) == {1: 2, 2: 4}  # at once: nobody's lease to wait for
        assert af.cache_info()["lease_waits"] == 0 and af.cache_info()["sets"] == 2
    finally:
        relay.holding.clear()
        await cache.aclose()
        cache.close()
        direct.close()
