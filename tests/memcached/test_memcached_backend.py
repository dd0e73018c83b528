"""MemcachedBackend against real memcached processes (started by tests/support/memcached_fixtures.py)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import os
import random
import signal
import socket
import ssl
import threading
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pymemcache.client.base
import pytest
from memcached_fixtures import MemcachedProcess
from ports import refused_address
from protocol_fixtures import protocol  # noqa: F401 - the fixture, parametrised over both protocols
from pymemcache.client.base import Client as RawClient

from memo._backend import PartialFailure, backend_from_url
from memo._errors import BackendError, BackendTimeout, BackendUnavailable, ConfigurationError
from memo._memcached import MemcachedBackend
from memo._memcached._pools import Slots
from memo._memcached._protocol import Connection
from memo._memcached._wire import expiry
from memo._routing import Router

pytestmark = [pytest.mark.memcached, pytest.mark.usefixtures("protocol")]

Servers = Callable[..., list[MemcachedProcess]]


# -- helpers ---------------------------------------------------------------------


@pytest.fixture
def prefix() -> str:
    """Keys unique to one test, so tests can share the session server."""
    return f"t{uuid.uuid4().hex[:12]}:"


@contextlib.contextmanager
def raw(process: MemcachedProcess) -> Iterator[Any]:
    """A plain pymemcache client on one server, to see what it really holds."""
    client = RawClient((process.host, process.port), default_noreply=False, timeout=5)
    try:
        yield client
    finally:
        client.close()


def backend(servers: str | list[str], **options: Any) -> MemcachedBackend:
    if isinstance(servers, str):
        return backend_from_url(servers, options)  # type: ignore[return-value]
    return MemcachedBackend(servers, **options)


@contextlib.contextmanager
def sync_backend(servers: str | list[str], **options: Any) -> Iterator[MemcachedBackend]:
    b = backend(servers, **options)
    try:
        yield b
    finally:
        b.close()


@contextlib.asynccontextmanager
async def async_backend(servers: str | list[str], **options: Any) -> AsyncIterator[MemcachedBackend]:
    b = backend(servers, **options)
    try:
        yield b
    finally:
        await b.aclose()
        b.close()


def stat(process: MemcachedProcess, name: str) -> int:
    with raw(process) as client:
        return int(client.stats()[name.encode()])


# -- basic operations ------------------------------------------------------------


def test_sync_operations(memcached_url: str, prefix: str) -> None:
    with sync_backend(memcached_url) as b:
        k = prefix + "k"
        assert b.get(k) is None
        assert b.set(k, b"one", None) is True
        assert b.get(k) == b"one"
        assert b.add(k, b"two", None) is False
        assert b.get(k) == b"one"
        assert b.delete(k) is True
        assert b.delete(k) is False
        assert b.add(k, b"three", 60) is True
        assert b.get(k) == b"three"

        items = [(f"{prefix}m{i}", f"v{i}".encode(), 60 if i % 2 else None) for i in range(50)]
        assert b.set_many(items) == []
        keys = [key for key, _, _ in items]
        assert b.get_many([*keys, prefix + "absent"]) == {key: value for key, value, _ in items}
        assert b.get_many([]) == {}
        b.delete_many(keys[:25])
        assert sorted(b.get_many(keys)) == sorted(keys[25:])
        b.delete_many([])
        assert b.set_many([]) == []


async def test_async_operations(memcached_url: str, prefix: str) -> None:
    async with async_backend(memcached_url) as b:
        k = prefix + "k"
        assert await b.aget(k) is None
        assert await b.aset(k, b"one", None) is True
        assert await b.aget(k) == b"one"
        assert await b.aadd(k, b"two", None) is False
        assert await b.aget(k) == b"one"
        assert await b.adelete(k) is True
        assert await b.adelete(k) is False
        assert await b.aadd(k, b"three", 60) is True
        assert await b.aget(k) == b"three"

        items = [(f"{prefix}m{i}", f"v{i}".encode(), 60 if i % 2 else None) for i in range(50)]
        assert await b.aset_many(items) == []
        keys = [key for key, _, _ in items]
        assert await b.aget_many([*keys, prefix + "absent"]) == {key: value for key, value, _ in items}
        assert await b.aget_many([]) == {}
        await b.adelete_many(keys[:25])
        assert sorted(await b.aget_many(keys)) == sorted(keys[25:])
        await b.adelete_many([])
        assert await b.aset_many([]) == []


TRICKY_VALUES = [
    b"",
    b"\r\n",
    b"END\r\n",
    b"\r\nEND\r\n",
    b"VALUE other 0 1\r\nx\r\nEND\r\n",
    bytes(range(256)),
    b"\x00" * 1000,
    random.Random(7).randbytes(300_000),
    random.Random(8).randbytes(1024 * 1024 - 512),
]


async def test_each_flavour_reads_the_others_bytes(memcached_url: str, prefix: str) -> None:
    async with async_backend(memcached_url) as b:
        sync_keys = [f"{prefix}s{i}" for i in range(len(TRICKY_VALUES))]
        async_keys = [f"{prefix}a{i}" for i in range(len(TRICKY_VALUES))]
        for key, value in zip(sync_keys, TRICKY_VALUES, strict=True):
            assert b.set(key, value, None)
        for key, value in zip(async_keys, TRICKY_VALUES, strict=True):
            assert await b.aset(key, value, None)
        for s_key, a_key, value in zip(sync_keys, async_keys, TRICKY_VALUES, strict=True):
            assert await b.aget(s_key) == value
            assert b.get(a_key) == value
        expected = dict(zip(sync_keys + async_keys, TRICKY_VALUES * 2, strict=True))
        assert await b.aget_many(sync_keys + async_keys) == expected
        assert b.get_many(sync_keys + async_keys) == expected


async def test_values_written_with_any_flags_are_read(
    memcached_server: MemcachedProcess, prefix: str
) -> None:
    with raw(memcached_server) as client:
        client.set((prefix + "f").encode(), b"flagged", flags=7)
    async with async_backend(memcached_server.url) as b:
        assert b.get(prefix + "f") == b"flagged"
        assert await b.aget(prefix + "f") == b"flagged"
        assert await b.aget_many([prefix + "f"]) == {prefix + "f": b"flagged"}
        assert await b.aset(prefix + "g", b"mine", None)
    with raw(memcached_server) as client:
        assert client.gets((prefix + "g").encode())[0] == b"mine"
        flags_line = client.raw_command(b"get " + (prefix + "g").encode(), b"END\r\n")
        assert flags_line.startswith(b"VALUE " + (prefix + "g").encode() + b" 0 4\r\n")


async def test_large_multi_get(memcached_url: str, prefix: str) -> None:
    async with async_backend(memcached_url) as b:
        items = [(f"{prefix}{i:05d}", os.urandom(i % 97) * 13, None) for i in range(3000)]
        assert b.set_many(items) == []
        expected = {key: value for key, value, _ in items}
        assert await b.aget_many(list(expected)) == expected
        assert b.get_many(list(expected)) == expected


def test_invalid_keys_are_refused_before_the_network(memcached_url: str) -> None:
    with sync_backend(memcached_url) as b:
        for key in ["", "a b", "a\r\nflush_all", "tab\tkey", "é", "x" * 251, "del\x7f"]:
            with pytest.raises(ValueError):
                b.get(key)
            with pytest.raises(ValueError):
                b.set(key, b"v", None)


# -- routing -----------------------------------------------------------------------


async def test_sync_and_async_route_every_key_to_the_same_server(memcached_servers: Servers) -> None:
    procs = memcached_servers(3)
    by_port = {p.port: p for p in procs}
    async with async_backend([p.address for p in procs]) as b:
        router = Router(list(b.servers))
        sync_keys = [f"route:s:{i}" for i in range(2000)]
        async_keys = [f"route:a:{i}" for i in range(2000)]
        assert b.set_many([(k, k.encode(), None) for k in sync_keys]) == []
        assert await b.aset_many([(k, k.encode(), None) for k in async_keys[:1000]]) == []
        for k in async_keys[1000:]:
            assert await b.aset(k, k.encode(), None)

        holders: dict[str, list[int]] = collections.defaultdict(list)
        for port, proc in by_port.items():
            with raw(proc) as client:
                for chunk in range(0, 4000, 500):
                    batch = [k.encode() for k in (sync_keys + async_keys)[chunk : chunk + 500]]
                    for key in client.get_many(batch):
                        holders[key.decode()].append(port)
        assert len(holders) == 4000
        for key, ports in holders.items():
            assert len(ports) == 1, key
            assert f"127.0.0.1:{ports[0]}" == router.server_of(key) == b.server_for(key)
        # Every server got a fair share.
        counts = collections.Counter(ports[0] for ports in holders.values())
        assert min(counts.values()) > 4000 / 3 * 0.8

        # And each flavour finds the other's keys where it put them.
        assert await b.aget_many(sync_keys) == {k: k.encode() for k in sync_keys}
        assert b.get_many(async_keys) == {k: k.encode() for k in async_keys}


def test_removing_a_server_loses_only_its_share(memcached_servers: Servers) -> None:
    procs = memcached_servers(4)
    addresses = [p.address for p in procs]
    keys = [f"move:{i}" for i in range(2000)]
    with sync_backend(addresses) as four, sync_backend(addresses[:3]) as three:
        assert four.set_many([(k, b"v", None) for k in keys]) == []
        on_removed = {k for k in keys if four.server_for(k) == addresses[3]}
        assert 2000 / 4 * 0.75 < len(on_removed) < 2000 / 4 * 1.25
        found = three.get_many(keys)
        assert set(found) == set(keys) - on_removed


def test_batches_cost_one_round_trip_per_server(
    memcached_servers: Servers,
    monkeypatch: pytest.MonkeyPatch,
    protocol: str,  # noqa: F811 - the fixture
) -> None:
    procs = memcached_servers(3, verbose=True)
    keys = [f"rt:{i}" for i in range(300)]
    sends: collections.Counter[int] = collections.Counter()
    real_sendall = socket.socket.sendall

    def counting_sendall(sock: socket.socket, data: Any, *args: Any) -> None:
        if data != b"mn\r\n":  # the question a first connection asks (meta or classic?) is no batch
            sends[sock.getpeername()[1]] += 1
        real_sendall(sock, data, *args)

    with sync_backend([p.address for p in procs]) as b:
        involved = {int(b.server_for(k).rsplit(":", 1)[1]) for k in keys}
        assert len(involved) == 3
        monkeypatch.setattr(socket.socket, "sendall", counting_sendall)
        assert b.set_many([(k, b"x", 60) for k in keys]) == []
        assert sends == {port: 1 for port in involved}
        sends.clear()
        assert len(b.get_many(keys)) == 300
        assert sends == {port: 1 for port in involved}
        sends.clear()
        b.delete_many(keys[:100])
        assert sends == {port: 1 for port in involved}
        monkeypatch.undo()
    # The servers agree: one multi-key get each (classic on meta servers too), covering exactly
    # that server's keys.
    for proc in procs:
        gets = proc.commands("get")
        assert len(gets) == 1
        asked = set(gets[0].split()[1:])
        assert asked == {k for k in keys if b.server_for(k) == proc.address}


async def test_async_batches_cost_one_round_trip_per_server(
    memcached_servers: Servers,
    monkeypatch: pytest.MonkeyPatch,
    protocol: str,  # noqa: F811 - the fixture
) -> None:
    procs = memcached_servers(3, verbose=True)
    keys = [f"rt:{i}" for i in range(300)]
    requests: collections.Counter[str] = collections.Counter()
    real_request = Connection.request

    def counting_request(self: Connection, data: bytes, *args: Any, **kwargs: Any) -> Any:
        if data != b"mn\r\n":  # the question a first connection asks (meta or classic?) is no batch
            requests[self.server_id] += 1
        return real_request(self, data, *args, **kwargs)

    monkeypatch.setattr(Connection, "request", counting_request)
    async with async_backend([p.address for p in procs]) as b:
        every = {p.address: 1 for p in procs}
        assert await b.aset_many([(k, b"x", 60) for k in keys]) == []
        assert requests == every
        requests.clear()
        assert len(await b.aget_many(keys)) == 300
        assert requests == every
        requests.clear()
        await b.adelete_many(keys)
        assert requests == every
    for proc in procs:  # one multi-key get each, classic on meta servers too (after the `mn` probe)
        assert len(proc.commands("get")) == 1
        assert len(proc.commands("mn")) == (1 if protocol == "meta" else 0)


# -- cancellation and interruption -----------------------------------------------------


async def test_cancelled_async_calls_never_leak_replies(
    memcached_servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    (proc,) = memcached_servers(1)
    keys = [f"c:{i}" for i in range(400)]
    values = {k: f"value-of-{k}|".encode() * (1 + i % 9) for i, k in enumerate(keys)}
    discarded = 0
    real_discard = Slots.discard

    def counting_discard(self: Slots, conn: Connection) -> None:
        nonlocal discarded
        discarded += 1
        real_discard(self, conn)

    monkeypatch.setattr(Slots, "discard", counting_discard)
    # A small pool, so every connection serves many calls and a leaked reply would be read.
    # Every cancelled call discards its connection, so the storm connects hundreds of times: on a
    # machine loaded by the parallel suite one connect may take longer than the default 0.25 s.
    async with async_backend([proc.address], pool_size=4, timeout=5.0, connect_timeout=5.0) as b:
        assert await b.aset_many([(k, v, None) for k, v in values.items()]) == []
        rng = random.Random(2024)
        wrong: list[str] = []
        completed = 0

        async def get_one(key: str) -> None:
            nonlocal completed
            value = await b.aget(key)
            completed += 1
            if value != values[key]:
                wrong.append(key)

        async def get_some(batch: list[str]) -> None:
            nonlocal completed
            found = await b.aget_many(batch)
            completed += 1
            if found != {k: values[k] for k in batch}:
                wrong.append(",".join(batch))

        loop = asyncio.get_running_loop()
        outcomes: list[Any] = []
        await asyncio.gather(*(b.aget(k) for k in keys[:8]))  # fill the pool
        # Waves of a few calls each, cancelled after up to a few round trips, so
        # many cancellations land between a request and its reply. On a fast, idle machine
        # fewer land there per wave: the storm lasts until enough have (at least 300 waves).
        for wave in range(3000):
            if wave >= 300 and discarded > 50:
                break
            tasks = []
            for j in range(10):
                i = wave * 10 + j
                coro = get_some(rng.sample(keys, 5)) if i % 5 == 0 else get_one(rng.choice(keys))
                if i % 2 == 0:
                    tasks.append(asyncio.ensure_future(asyncio.wait_for(coro, rng.uniform(0, 0.002))))
                else:
                    task = asyncio.ensure_future(coro)
                    loop.call_later(rng.uniform(0, 0.002), task.cancel)
                    tasks.append(task)
            outcomes += await asyncio.gather(*tasks, return_exceptions=True)
        expected_errors = (asyncio.CancelledError, asyncio.TimeoutError)
        unexpected = [
            o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, expected_errors)
        ]
        assert unexpected == []
        assert wrong == []
        # The storm did hit the window between request and reply, many times.
        assert discarded > 50
        assert completed > 100

        for key in keys:
            assert await b.aget(key) == values[key]
        assert await asyncio.gather(*(b.aget(k) for k in keys)) == [values[k] for k in keys]
        assert await b.aget_many(keys) == values
        assert b.get_many(keys) == values


class Interrupted(BaseException):
    """Stands for KeyboardInterrupt or a timeout raised into the thread from outside."""


def test_interrupted_sync_call_does_not_poison_the_pool(
    memcached_server: MemcachedProcess, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    k1, k2 = (prefix + "1").encode(), (prefix + "2").encode()
    real_recv = pymemcache.client.base._recv
    armed = [True]

    def recv_interrupted_once(sock: socket.socket, size: int) -> bytes:
        # Raised after the request went out, before its reply is read.
        if armed[0]:
            armed[0] = False
            raise Interrupted
        data: bytes = real_recv(sock, size)
        return data

    # Control: a bare pymemcache client reads the stale reply on its next call.
    with raw(memcached_server) as client:
        client.set(k1, b"v1")
        client.set(k2, b"v2")
        monkeypatch.setattr(pymemcache.client.base, "_recv", recv_interrupted_once)
        with pytest.raises(Interrupted):
            client.get(k1)
        with pytest.raises(KeyError):  # it got k1's reply for k2
            client.get(k2)
        monkeypatch.undo()

    class InterruptedOnce:
        """The pooled client's socket, interrupted once after the request went out."""

        def __init__(self, sock: socket.socket) -> None:
            self.sock = sock

        def recv(self, size: int) -> bytes:
            armed[0] = False
            self.recv = self.sock.recv  # type: ignore[method-assign]
            raise Interrupted

        def __getattr__(self, name: str) -> Any:
            return getattr(self.sock, name)

    with sync_backend(memcached_server.url, pool_size=1) as b:
        assert b.get(k1.decode()) == b"v1"  # one pooled connection now
        armed[0] = True
        (client,) = b._topology.servers[0].free
        client.sock = InterruptedOnce(client.sock)
        with pytest.raises(Interrupted):
            b.get(k1.decode())
        assert not armed[0]
        for _ in range(3):
            assert b.get(k2.decode()) == b"v2"
            assert b.get(k1.decode()) == b"v1"
        assert b.server_states()[memcached_server.address].failures == 0


def test_signal_during_sync_call_does_not_poison_the_pool(memcached_servers: Servers) -> None:
    (proc,) = memcached_servers(1)

    def on_signal(signum: int, frame: Any) -> None:
        raise Interrupted

    # SIGUSR1 from a timer thread, so pytest-timeout keeps SIGALRM to itself.
    main_thread = threading.get_ident()
    alarm = threading.Timer(0.1, signal.pthread_kill, (main_thread, signal.SIGUSR1))
    with sync_backend([proc.address], pool_size=1, timeout=3.0) as b:
        assert b.set("k1", b"v1", None) and b.set("k2", b"v2", None)
        previous = signal.signal(signal.SIGUSR1, on_signal)
        proc.pause()  # the request goes out; the reply waits until resume
        try:
            alarm.start()
            with pytest.raises(Interrupted):
                b.get("k1")
        finally:
            alarm.cancel()
            alarm.join()
            signal.signal(signal.SIGUSR1, previous)
            proc.resume()
        time.sleep(0.05)  # the server answers the abandoned request now
        assert b.get("k2") == b"v2"
        assert b.get("k1") == b"v1"


# -- failures: refused, hung, killed ---------------------------------------------------


async def test_refused_port_fails_fast() -> None:
    address = refused_address()  # nothing listens there
    async with async_backend([address], failure_threshold=100) as b:
        start = time.perf_counter()
        with pytest.raises(BackendUnavailable):
            b.get("k")
        with pytest.raises(BackendUnavailable):
            await b.aget("k")
        with pytest.raises(BackendUnavailable):
            b.set_many([("k", b"v", None)])
        with pytest.raises(BackendUnavailable):
            await b.aset("k", b"v", None)
        assert time.perf_counter() - start < 1.0


def test_hung_server_times_out_then_breaker_opens(memcached_servers: Servers) -> None:
    (proc,) = memcached_servers(1)
    with sync_backend([proc.address], timeout=0.1, failure_threshold=3, retry_after=0.5) as b:
        assert b.set("k", b"v", None)
        proc.pause()
        try:
            slow = []
            for _ in range(3):
                start = time.perf_counter()
                with pytest.raises(BackendTimeout):
                    b.get("k")
                slow.append(time.perf_counter() - start)
            assert min(slow) >= 0.09
            state = b.server_states()[proc.address]
            assert state.state == "open" and state.failures == 3 and 0 < state.retry_in <= 0.5
            fast = []
            for _ in range(20):
                start = time.perf_counter()
                with pytest.raises(BackendUnavailable, match="circuit breaker open"):
                    b.get("k")
                fast.append(time.perf_counter() - start)
            assert max(fast) < 0.05
            assert max(fast) < min(slow) / 10
        finally:
            proc.resume()
        time.sleep(0.55)
        assert b.server_states()[proc.address].state == "half-open"
        assert b.get("k") == b"v"  # the probe succeeds and closes the breaker
        assert b.server_states()[proc.address] == ("closed", 0, 0.0)


async def test_hung_server_async_and_the_breaker_is_shared(memcached_servers: Servers) -> None:
    (proc,) = memcached_servers(1)
    # Three concurrent gets make two requests (the first goes out at once, the
    # other two share the next): two timeouts open the breaker.
    async with async_backend([proc.address], timeout=0.1, failure_threshold=2, retry_after=0.5) as b:
        assert await b.aset("k", b"v", None)
        proc.pause()
        try:
            start = time.perf_counter()
            outcomes = await asyncio.gather(*(b.aget("k") for _ in range(3)), return_exceptions=True)
            took = time.perf_counter() - start
            assert [type(o) for o in outcomes] == [BackendTimeout] * 3, outcomes
            assert 0.09 <= took < 0.5  # concurrently, each bounded by the timeout
            assert b.server_states()[proc.address].state == "open"
            start = time.perf_counter()
            for _ in range(20):
                with pytest.raises(BackendUnavailable):
                    await b.aget("k")
                with pytest.raises(BackendUnavailable):
                    b.get("k")  # the sync side sees the same breaker
            assert time.perf_counter() - start < 0.05
        finally:
            proc.resume()
        await asyncio.sleep(0.55)
        assert await b.aget("k") == b"v"
        assert b.server_states()[proc.address].state == "closed"


def test_killed_server_recovers_by_itself_after_restart(memcached_servers: Servers) -> None:
    (proc,) = memcached_servers(1)
    with sync_backend([proc.address], failure_threshold=2, retry_after=0.3) as b:
        assert b.set("k", b"v", None) and b.get("k") == b"v"
        proc.kill()
        for _ in range(2):
            with pytest.raises(BackendUnavailable):
                b.get("k")
        assert b.server_states()[proc.address].state == "open"
        time.sleep(0.35)
        with pytest.raises(BackendUnavailable):
            b.get("k")  # the probe: still down, so the breaker opens again
        assert b.server_states()[proc.address].state == "open"
        proc.start()
        with pytest.raises(BackendUnavailable, match="circuit breaker open"):
            b.get("k")  # up again, but the breaker waits out its cooldown
        time.sleep(0.35)
        assert b.get("k") is None  # a fresh memcached; the probe went through
        assert b.server_states()[proc.address].state == "closed"
        assert b.set("k", b"v2", None) and b.get("k") == b"v2"


async def test_killed_server_recovers_async(memcached_servers: Servers) -> None:
    (proc,) = memcached_servers(1)
    async with async_backend([proc.address], failure_threshold=2, retry_after=0.3) as b:
        assert await b.aset("k", b"v", None)
        proc.kill()
        for _ in range(2):
            with pytest.raises(BackendUnavailable):
                await b.aget("k")
        assert b.server_states()[proc.address].state == "open"
        proc.start()
        await asyncio.sleep(0.35)
        assert await b.aget("k") is None
        assert await b.aset("k", b"v2", None) and await b.aget("k") == b"v2"
        assert b.server_states()[proc.address].state == "closed"


def test_partial_failure_sync(memcached_servers: Servers) -> None:
    procs = memcached_servers(2)
    keys = [f"p:{i}" for i in range(200)]
    with sync_backend([p.address for p in procs], failure_threshold=100) as b:
        assert b.set_many([(k, k.encode(), None) for k in keys]) == []
        live = {k for k in keys if b.server_for(k) == procs[0].address}
        procs[1].kill()
        with pytest.raises(PartialFailure) as caught:
            b.get_many(keys)
        assert caught.value.result == {k: k.encode() for k in live}
        assert len(caught.value.errors) == 1 and isinstance(caught.value.errors[0], BackendUnavailable)
        with pytest.raises(PartialFailure) as caught:
            b.set_many([(k, b"new", None) for k in keys])
        assert sorted(caught.value.result) == sorted(set(keys) - live)
        assert b.get_many(sorted(live)) == {k: b"new" for k in live}
        with pytest.raises(PartialFailure) as caught:
            b.delete_many(keys)
        assert sorted(caught.value.result) == sorted(set(keys) - live)
        procs[0].kill()
        with pytest.raises(BackendUnavailable) as whole:
            b.get_many(keys)
        assert not isinstance(whole.value, PartialFailure)


async def test_partial_failure_async_runs_servers_concurrently(memcached_servers: Servers) -> None:
    procs = memcached_servers(3)
    keys = [f"p:{i}" for i in range(300)]
    async with async_backend([p.address for p in procs], timeout=0.2, failure_threshold=100) as b:
        assert await b.aset_many([(k, k.encode(), None) for k in keys]) == []
        live = {k for k in keys if b.server_for(k) == procs[0].address}
        procs[1].pause()
        procs[2].pause()
        try:
            start = time.perf_counter()
            with pytest.raises(PartialFailure) as caught:
                await b.aget_many(keys)
            took = time.perf_counter() - start
            assert caught.value.result == {k: k.encode() for k in live}
            assert [type(e) for e in caught.value.errors] == [BackendTimeout, BackendTimeout]
            assert took < 0.35  # two hung servers cost one timeout, not two
            with pytest.raises(PartialFailure) as caught:
                await b.aset_many([(k, b"new", None) for k in keys])
            assert sorted(caught.value.result) == sorted(set(keys) - live)
            with pytest.raises(PartialFailure):
                await b.adelete_many(keys)
        finally:
            procs[1].resume()
            procs[2].resume()


# -- values and ttls --------------------------------------------------------------------


async def test_oversize_values_are_never_sent(memcached_server: MemcachedProcess, prefix: str) -> None:
    async with async_backend(memcached_server.url, max_value_size=1000) as b:
        big, fits = b"x" * 1001, b"y" * 1000
        assert b.set(prefix + "big", big, None) is False
        assert b.add(prefix + "big", big, None) is False
        assert await b.aset(prefix + "big", big, None) is False
        assert await b.aadd(prefix + "big", big, None) is False
        items = [(prefix + "a", fits, None), (prefix + "big", big, None), (prefix + "b", fits, None)]
        assert b.set_many(items) == [prefix + "big"]
        assert await b.aset_many(items) == [prefix + "big"]
        assert b.get_many([prefix + "a", prefix + "b", prefix + "big"]) == {
            prefix + "a": fits,
            prefix + "b": fits,
        }
    with raw(memcached_server) as client:
        assert client.get((prefix + "big").encode()) is None


async def test_default_limit_matches_a_default_memcached(
    memcached_server: MemcachedProcess, prefix: str
) -> None:
    async with async_backend(memcached_server.url) as b:
        key = prefix + "k" * (250 - len(prefix) - 1)  # the longest key
        largest = os.urandom(b.max_value_size)
        assert b.set(key, largest, None) is True
        assert await b.aget(key) == largest
        assert await b.aset(key, largest + b"!", None) is False


async def test_values_the_server_refuses_are_reported_not_stored(memcached_servers: Servers) -> None:
    (proc,) = memcached_servers(1, max_item_size=64 * 1024)
    async with async_backend([proc.address]) as b:
        big = b"z" * 100_000  # under our limit, over the server's -I
        assert b.set("big", big, None) is False
        assert await b.aset("big", big, None) is False
        assert "big" in b.set_many([("a", b"1", None), ("big", big, None)])
        assert await b.aset_many([("a", b"1", None), ("big", big, None), ("b", b"2", None)]) == ["big"]
        # The connection stays usable and in step.
        assert await b.aget_many(["a", "b", "big"]) == {"a": b"1", "b": b"2"}
        assert b.get("b") == b"2"
        assert b.server_states()[proc.address].failures == 0


def test_ttl_conversion() -> None:
    assert expiry(None) == 0
    assert expiry(0.2) == 1
    assert expiry(1) == 1
    assert expiry(1.5) == 2
    assert expiry(2_592_000) == 2_592_000
    assert expiry(2_591_999.5) == 2_592_000
    assert expiry(59.000001) == 60
    assert expiry(0) == expiry(-5) == expiry(-0.5) == 1  # already due: the shortest memcached keeps
    now = time.time()
    assert abs(expiry(2_592_001) - (now + 2_592_001)) <= 2
    assert abs(expiry(40 * 86400.5) - (now + 40 * 86400.5)) <= 2
    assert expiry(100 * 365 * 86400) == 0  # past 2038: never expires rather than garbage
    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(ValueError):
            expiry(bad)


async def test_ttls_on_the_server(memcached_url: str, prefix: str) -> None:
    async with async_backend(memcached_url) as b:
        forty_days = 40 * 86400.0
        assert b.set(prefix + "long-s", b"1", forty_days)
        assert await b.aset(prefix + "long-a", b"1", forty_days)
        assert b.set_many([(prefix + "long-sm", b"1", forty_days)]) == []
        assert await b.aadd(prefix + "long-aa", b"1", forty_days)
        assert b.set(prefix + "short-s", b"1", 1)
        assert await b.aset(prefix + "short-a", b"1", 0.3)
        assert await b.aset_many([(prefix + "short-am", b"1", 1)]) == []
        everything = [
            prefix + n for n in ("long-s", "long-a", "long-sm", "long-aa", "short-s", "short-a", "short-am")
        ]
        assert len(await b.aget_many(everything)) == 7
        await asyncio.sleep(2.2)  # memcached's clock ticks once a second
        assert sorted(await b.aget_many(everything)) == sorted(everything[:4])


# -- pools, loops, threads, processes ----------------------------------------------------


async def test_async_connections_are_bounded_by_pool_size(
    memcached_servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    (proc,) = memcached_servers(1)
    live: set[int] = set()
    most = [0]
    real_made, real_lost, real_abort = (
        Connection.connection_made,
        Connection.connection_lost,
        Connection.abort,
    )

    def recording_made(self: Connection, transport: asyncio.BaseTransport) -> None:
        live.add(id(self))
        most[0] = max(most[0], len(live))
        real_made(self, transport)

    # A discarded connection counts as gone when it is aborted: its connection_lost
    # callback may only run after a replacement has been opened.
    def recording_abort(self: Connection) -> None:
        live.discard(id(self))
        real_abort(self)

    def recording_lost(self: Connection, exc: Exception | None) -> None:
        live.discard(id(self))
        real_lost(self, exc)

    monkeypatch.setattr(Connection, "connection_made", recording_made)
    monkeypatch.setattr(Connection, "connection_lost", recording_lost)
    monkeypatch.setattr(Connection, "abort", recording_abort)
    async with async_backend([proc.address], pool_size=3) as b:
        keys = [f"b:{i}" for i in range(50)]
        assert await b.aset_many([(k, k.encode(), None) for k in keys]) == []
        results = await asyncio.gather(*(b.aget(keys[i % 50]) for i in range(1000)))
        assert results == [keys[i % 50].encode() for i in range(1000)]
        # Never more than pool_size open at once (a connection may be replaced, never added).
        assert 1 <= most[0] <= 3
        # The server saw no more than that at any time either.
        assert stat(proc, "curr_connections") <= 3 + 2  # + this stats connection and the listener


def test_threads_share_the_sync_pool(memcached_url: str, prefix: str) -> None:
    with sync_backend(memcached_url, pool_size=2) as b:
        keys = [f"{prefix}{i}" for i in range(200)]
        assert b.set_many([(k, k.encode(), None) for k in keys]) == []
        wrong: list[str] = []

        def work(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(300):
                key = rng.choice(keys)
                if b.get(key) != key.encode():
                    wrong.append(key)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert wrong == []
        assert len(b._topology.servers[0].free) <= 2  # idle connections beyond pool_size were closed


def test_each_event_loop_gets_its_own_pool_and_it_closes_with_the_loop(
    memcached_url: str, prefix: str
) -> None:
    b = backend(memcached_url)

    async def use(i: int) -> bytes | None:
        assert await b.aset(f"{prefix}{i}", b"v%d" % i, None)
        return await b.aget(f"{prefix}{i}")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(3):
            assert asyncio.run(use(i)) == b"v%d" % i
            # asyncio.run shut the loop down, and its connections with it.
            assert b._apools == {}
        # A loop in another thread works the same way.
        result: list[bytes | None] = []
        thread = threading.Thread(target=lambda: result.append(asyncio.run(use(9))))
        thread.start()
        thread.join()
        assert result == [b"v9"]
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    b.close()


async def test_aclose_closes_and_the_backend_reopens(memcached_servers: Servers) -> None:
    (proc,) = memcached_servers(1)
    b = backend([proc.address])
    assert await b.aset("k", b"v", None)
    assert await b.aget("k") == b"v"
    await b.aclose()
    assert b._apools == {}
    assert await b.aget("k") == b"v"  # opens a new pool on demand
    await b.aclose()
    b.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_does_not_share_connections(memcached_url: str, prefix: str) -> None:
    with sync_backend(memcached_url) as b:
        k1, k2 = prefix + "1", prefix + "2"
        assert b.set(k1, b"one", None) and b.set(k2, b"two", None)
        assert b.get(k1) == b"one"  # a pooled connection exists now
        read_end, write_end = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, 3.12+
            pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            try:
                ok = all(b.get(k2) == b"two" and b.get(k1) == b"one" for _ in range(300))
                os.write(write_end, b"1" if ok else b"0")
            finally:
                os._exit(0)
        os.close(write_end)
        try:
            for _ in range(300):
                assert b.get(k1) == b"one" and b.get(k2) == b"two"
            assert os.read(read_end, 1) == b"1"
        finally:
            os.close(read_end)
            os.waitpid(pid, 0)


# -- TLS ---------------------------------------------------------------------------------


async def test_tls_round_trip(memcached_servers: Servers, memcached_tls_files: tuple[str, str]) -> None:
    cert, key = memcached_tls_files
    (proc,) = memcached_servers(1, tls=(cert, key))
    context = ssl.create_default_context(cafile=cert)
    assert proc.url.startswith("memcached+tls://")
    async with async_backend(proc.url, tls_context=context) as b:
        assert b.set("sync", b"over tls", None)
        assert await b.aget("sync") == b"over tls"
        assert await b.aset("async", b"\r\nEND\r\n" * 1000, None)
        assert b.get("async") == b"\r\nEND\r\n" * 1000
        assert await b.aget_many(["sync", "async"]) == b.get_many(["sync", "async"])
    # It really is TLS: a plain client gets nowhere ...
    async with async_backend([proc.address], timeout=0.3, connect_timeout=0.3) as plain:
        with pytest.raises(BackendError):
            plain.get("sync")
        with pytest.raises(BackendError):
            await plain.aget("sync")
    # ... and the default context does not trust a self-signed certificate.
    async with async_backend(proc.url) as untrusting:
        with pytest.raises(BackendUnavailable):
            untrusting.get("sync")
        with pytest.raises(BackendUnavailable):
            await untrusting.aget("sync")


# -- configuration -------------------------------------------------------------------------


def test_urls_and_options() -> None:
    b = backend("memcached://h1,h2:11212,[::1]:11213/?timeout=0.5&pool_size=3&failure_threshold=7")
    assert b.servers == ("h1:11211", "h2:11212", "[::1]:11213")
    options = b._options()
    assert options["timeout"] == 0.5 and options["pool_size"] == 3 and options["failure_threshold"] == 7
    assert options["connect_timeout"] == 0.25 and options["retry_after"] == 2.0
    assert options["tls_context"] is None
    assert b.server_states() == {s: ("closed", 0, 0.0) for s in b.servers}
    tls = backend("memcached+tls://cache.example:11211")
    assert isinstance(tls._options()["tls_context"], ssl.SSLContext)

    for bad in [
        "memcached://",
        "memcached://h:abc",
        "memcached://h:70000",
        "memcached://user:secret@h",
        "memcached://h/path",
        "memcached://h?nope=1",
        "memcached://h,h",
        "memcached://h?timeout=0",
        "memcached://h?pool_size=0",
        "memcached://::1:11211",
    ]:
        with pytest.raises(ConfigurationError):
            backend(bad)
    with pytest.raises(ConfigurationError):
        backend("memcached://h", tls_context=ssl.create_default_context())
    with pytest.raises(ConfigurationError):
        backend("memcached+tls://h", tls_context="not a context")


def test_protocol_garbage_is_an_unavailable_server() -> None:
    """A server that answers with another key's value is out of step; nothing else escapes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                with contextlib.suppress(OSError):
                    while conn.recv(4096):
                        conn.sendall(b"VALUE other 0 1\r\nx\r\nEND\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        address = f"127.0.0.1:{listener.getsockname()[1]}"

        async def both() -> None:
            # protocol=meta would refuse the server at once: it does not answer `mn` with `MN`.
            async with async_backend([address], failure_threshold=100, protocol="auto") as b:
                with pytest.raises(BackendUnavailable):
                    b.get("mine")
                with pytest.raises(BackendUnavailable):
                    await b.aget("mine")
                with pytest.raises(BackendUnavailable):
                    await b.aset("mine", b"v", None)

        asyncio.run(both())
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_idle_connections_close_when_the_backend_goes_without_close(memcached_url: str) -> None:
    """A background refresh that outlives its Cache's close() reopens a connection: it is
    closed when the backend is collected, not left to the garbage collector's warning."""
    import gc

    backend = MemcachedBackend([memcached_url.removeprefix("memcached://")])
    assert backend.get("never-set") is None
    (idle,) = backend._servers[0].free
    sock = idle.sock
    del backend, idle
    gc.collect()
    assert sock.fileno() == -1
