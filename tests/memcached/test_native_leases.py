"""Leases the server grants in the read that missed (memcached's meta `mg <key> v c N<ttl>`).

On a meta server (and on memory://, which models it) the hit path's read takes
the lease when the key is missing (`Backend.get_or_lease` answers `Won`), and the
fill starts from it: every exit of that fill is tested here, on both, as
`test_fill_exits.py` tests the classic ones.
The commands on the wire, and a read cut off while its reply is on the way,
are in `test_proto_wire.py`.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from memcached_fixtures import MemcachedProcess

import memo
from memo import _clock
from memo._codec import NATIVE_LEASE, Won
from memo._memcached import MemcachedBackend
from memo._memcached._server import MAX_DROPPING
from memo.testing import record_events


@pytest.fixture(params=["memory", pytest.param("memcached", marks=pytest.mark.memcached)])
def backend_url(request: pytest.FixtureRequest) -> str:
    """The backends whose reads take the lease: memory:// and a meta server (not the classic
    commands, where conftest's `backend_url` also runs the engine's tests)."""
    if request.param == "memory":
        return "memory://"
    return str(request.getfixturevalue("memcached_url"))


def _cache(url: str, **options: Any) -> memo.Cache:
    return memo.Cache(url, prefix=f"n{uuid.uuid4().hex[:8]}:", **options)


def _held(cache: memo.Cache, key: str) -> bool:
    got = cache.backend.gets(key)
    return got is not None and got[0] == NATIVE_LEASE


@pytest.mark.memcached
def test_meta_servers_take_the_lease_in_the_read_and_classic_ones_do_not(memcached_url: str) -> None:
    meta, classic = _cache(memcached_url), _cache(f"{memcached_url}?protocol=classic")
    assert meta.leased_reads is True and classic.leased_reads is True  # both may; the server decides
    key = meta.prefix + "k"
    won = meta.backend.get_or_lease(key, 10)
    assert type(won) is Won and won == NATIVE_LEASE and won.unique == meta.backend.gets(key)[1]
    # Everyone else, on either protocol's reads, sees somebody's lease.
    assert meta.backend.get_or_lease(key, 10) == NATIVE_LEASE
    assert meta.backend.get(key) == NATIVE_LEASE
    key2 = classic.prefix + "k"
    assert classic.backend.get_or_lease(key2, 10) is None  # a classic read: a plain miss
    assert memo.Cache(memcached_url, leases=False).leased_reads is False
    meta.close()
    classic.close()


def test_a_miss_is_filled_from_the_lease_its_read_took(backend_url: str) -> None:
    cache = _cache(backend_url)
    reads: list[bytes | None] = []
    real = cache.backend.get_or_lease

    def spy(key: str, lease_ttl: float) -> bytes | None:
        reads.append(real(key, lease_ttl))
        return reads[-1]

    cache.backend.get_or_lease = spy  # type: ignore[method-assign]

    @cache.cached(ns="n", ttl=60)
    def f(x: int) -> dict[str, int]:
        return {"x": x}

    with record_events(cache) as events:
        assert f(1) == {"x": 1}
        assert f(1) == {"x": 1}
    assert events.kinds == ["miss", "lease_acquired", "set", "hit"]
    assert [type(raw) for raw in reads] == [Won, bytes]
    assert cache.backend.get(f.key_for(1)) == reads[1]
    cache.close()


def _leased_reads(cache: memo.Cache, flavour: str) -> list[bytes | None]:
    """What the Cache's leased reads (`get_or_lease`, or its async twin) answer, in order."""
    reads: list[bytes | None] = []
    if flavour == "sync":
        real = cache.backend.get_or_lease

        def spy(key: str, lease_ttl: float) -> bytes | None:
            reads.append(real(key, lease_ttl))
            return reads[-1]

        cache.backend.get_or_lease = spy  # type: ignore[method-assign]
    else:
        areal = cache.backend.aget_or_lease

        async def aspy(key: str, lease_ttl: float) -> bytes | None:
            reads.append(await areal(key, lease_ttl))
            return reads[-1]

        cache.backend.aget_or_lease = aspy  # type: ignore[method-assign]
    return reads


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_near_cache_miss_is_filled_from_the_lease_its_read_took(backend_url: str, flavour: str) -> None:
    """`local_ttl` keeps hits in the process; its reads of the server take the lease too."""
    cache = _cache(backend_url, local_ttl=30)
    reads = _leased_reads(cache, flavour)

    @cache.cached(ns="n", ttl=60)
    def f(x: int) -> dict[str, int]:
        return {"x": x}

    @cache.cached(ns="n", ttl=60)
    async def af(x: int) -> dict[str, int]:
        return {"x": x}

    async def thrice() -> list[dict[str, int]]:
        return [await af(1), await af(1), await af(1)]

    with record_events(cache) as events:
        got = [f(1), f(1), f(1)] if flavour == "sync" else asyncio.run(thrice())
    assert got == [{"x": 1}] * 3
    assert events.kinds == ["miss", "lease_acquired", "set", "hit", "hit"]
    # The miss's read took the lease; the next read found the value and kept it here.
    assert [type(raw) for raw in reads] == [Won, bytes]
    assert (f if flavour == "sync" else af).cache_info()["local_hits"] == 1
    cache.close()


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_get_or_set_miss_is_filled_from_the_lease_its_read_took(backend_url: str, flavour: str) -> None:
    cache = _cache(backend_url)
    reads = _leased_reads(cache, flavour)

    async def both() -> list[Any]:
        return [await cache.aget_or_set("k", lambda: {"x": 1}, ns="v") for _ in range(2)]

    with record_events(cache) as events:
        if flavour == "sync":
            got = [cache.get_or_set("k", lambda: {"x": 1}, ns="v") for _ in range(2)]
        else:
            got = asyncio.run(both())
    assert got == [{"x": 1}, {"x": 1}]
    assert events.kinds == ["miss", "lease_acquired", "set", "hit"]  # no add + gets for the lease
    assert [type(raw) for raw in reads] == [Won, bytes]
    cache.close()


def test_the_function_raising_gives_the_lease_back(backend_url: str) -> None:
    cache = _cache(backend_url, lease_wait=5.0)
    fail = [True]

    @cache.cached(ns="n", ttl=60)
    def f(x: int) -> int:
        if fail[0]:
            raise ValueError(x)
        return x + 1

    key = f.key_for(1)
    with pytest.raises(ValueError):
        f(1)
    assert cache.backend.gets(key) is None
    fail[0] = False
    with _clock.use(_clock.FakeClock()) as clock:
        assert f(1) == 2
    assert clock.slept == 0.0  # nobody's lease to wait for
    cache.close()


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_get_or_set_gives_back_the_lease_its_read_took_when_the_function_raises(
    backend_url: str, flavour: str
) -> None:
    cache = _cache(backend_url, lease_wait=5.0)

    def failing() -> int:
        raise ValueError("source down")

    async def afailing() -> int:
        raise ValueError("source down")

    with pytest.raises(ValueError):
        if flavour == "sync":
            cache.get_or_set("k", failing, ns="v")
        else:
            asyncio.run(cache.aget_or_set("k", afailing, ns="v"))
    with _clock.use(_clock.FakeClock()) as clock:
        assert cache.get_or_set("k", lambda: 7, ns="v") == 7
    assert clock.slept == 0.0  # no lease left behind to wait for
    cache.close()


def test_a_value_not_to_be_stored_gives_the_lease_back(backend_url: str) -> None:
    cache = _cache(backend_url)

    @cache.cached(ns="n", ttl=60, cache_if=lambda value: value > 10)
    def f(x: int) -> int:
        return x

    assert f(1) == 1
    assert cache.backend.gets(f.key_for(1)) is None
    cache.close()


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_an_invalidate_while_computing_wins_over_the_fill(backend_url: str, flavour: str) -> None:
    cache = _cache(backend_url)
    source = {"v": 1}

    def compute_then_invalidate(key: str) -> int:
        value = source["v"]
        assert _held(cache, key)
        if value == 1:
            source["v"] = 2
            cache.backend.delete(key)  # another process changed the source and invalidated
        return value

    if flavour == "sync":

        @cache.cached(ns="n", ttl=60)
        def f(x: int) -> int:
            return compute_then_invalidate(f.key_for(x))

        assert f(1) == 1  # this caller gets what it computed ...
        assert cache.backend.get(f.key_for(1)) is None  # ... but it is not stored
        assert f(1) == 2
    else:

        @cache.cached(ns="n", ttl=60)
        async def g(x: int) -> int:
            return compute_then_invalidate(await g.akey_for(x))

        async def run() -> None:
            assert await g(1) == 1
            assert cache.backend.get(await g.akey_for(1)) is None
            assert await g(1) == 2
            await cache.aclose()

        asyncio.run(run())
    assert cache.stats()["n"]["lease_lost"] == 1
    cache.close()


def _door(cache: memo.Cache, door: str, fn: Callable[[int], Any]) -> Callable[[int], Any]:
    """`fn` memoized by the decorator, or read through `cache.get_or_set` (sync or async alike)."""
    if door == "decorator":
        return cache.cached(ns="n", ttl=60)(fn)
    return lambda x: (cache.aget_or_set if asyncio.iscoroutinefunction(fn) else cache.get_or_set)(
        f"k{x}", lambda: fn(x), ns="n", ttl=60
    )


DOORS = pytest.mark.parametrize("door", ["decorator", "get_or_set"])


@DOORS
def test_a_granted_lease_is_given_back_when_another_thread_leads_the_key(backend_url: str, door: str) -> None:
    """Thread A's read took the lease; thread B, which read A's placeholder, already leads the
    key's fill in this process (and waits for A's lease). A gives its lease back before it
    follows, so B takes the lease at once instead of waiting out `lease_wait`."""
    a_read, b_leads = threading.Event(), threading.Event()

    def on_event(event: Any) -> None:
        if event.kind == "lease_wait":
            b_leads.set()  # B found A's placeholder and waits for it, as leader of the flight

    cache = _cache(backend_url, lease_wait=30.0, lease_ttl=60.0, on_event=on_event)
    real = cache.backend.get_or_lease
    calls: list[str] = []

    def read(key: str, lease_ttl: float) -> bytes | None:
        got = real(key, lease_ttl)
        if threading.current_thread().name == "A":
            a_read.set()
            assert b_leads.wait(10)  # A reaches the single flight only once B leads it
        return got

    cache.backend.get_or_lease = read  # type: ignore[method-assign]

    def compute(x: int) -> str:
        calls.append(threading.current_thread().name)
        return "v"

    f = _door(cache, door, compute)
    results: dict[str, str] = {}

    def run(name: str) -> None:
        results[name] = f(1)

    a = threading.Thread(target=run, args=("A",), name="A")
    a.start()
    assert a_read.wait(10)
    b = threading.Thread(target=run, args=("B",), name="B")
    b.start()
    a.join(20)
    b.join(20)
    assert results == {"A": "v", "B": "v"}
    assert calls == ["B"]  # one computation, by the thread that led
    stats = cache.stats()["n"]
    assert stats["lease_waits"] == 1 and stats["sets"] == 1
    cache.close()


@DOORS
async def test_a_granted_lease_is_given_back_when_another_task_leads_the_key(
    backend_url: str, door: str
) -> None:
    """The async twin: task A's read took the lease; task B, which read A's placeholder, leads
    the key's fill and waits for that lease; A gives it back before it joins B's fill."""
    a_read, b_leads = asyncio.Event(), asyncio.Event()

    def on_event(event: Any) -> None:
        if event.kind == "lease_wait":
            b_leads.set()

    cache = _cache(backend_url, lease_wait=30.0, lease_ttl=60.0, on_event=on_event)
    real = cache.backend.aget_or_lease

    async def read(key: str, lease_ttl: float) -> bytes | None:
        got = await real(key, lease_ttl)
        task = asyncio.current_task()
        if task is not None and task.get_name() == "A":
            a_read.set()
            await asyncio.wait_for(b_leads.wait(), 10)  # A reaches the flight once B leads it
        return got

    cache.backend.aget_or_lease = read  # type: ignore[method-assign]
    calls: list[str] = []

    async def compute(x: int) -> str:
        task = asyncio.current_task()
        calls.append(task.get_name() if task is not None else "?")
        return "v"

    f = _door(cache, door, compute)
    a = asyncio.create_task(f(1), name="A")
    await asyncio.wait_for(a_read.wait(), 10)
    b = asyncio.create_task(f(1), name="B")
    assert await asyncio.wait_for(asyncio.gather(a, b), 20) == ["v", "v"]
    assert len(calls) == 1  # one computation, by B's fill (a task of B's flight)
    stats = cache.stats()["n"]
    assert stats["lease_waits"] == 1 and stats["sets"] == 1
    await cache.aclose()
    cache.close()


async def test_async_tasks_compute_once_across_a_granted_lease(backend_url: str) -> None:
    cache = _cache(backend_url)
    calls: list[int] = []

    @cache.cached(ns="n", ttl=60)
    async def f(x: int) -> int:
        calls.append(x)
        await asyncio.sleep(0.05)
        return x * 3

    assert await asyncio.gather(*[f(2) for _ in range(8)]) == [6] * 8
    assert calls == [2]
    assert cache.backend.get(await f.akey_for(2)) is not None
    await cache.aclose()
    cache.close()


@pytest.mark.memcached
def test_a_hung_server_gets_at_most_two_clean_ups_at_once(
    memcached_servers: Callable[..., list[MemcachedProcess]],
) -> None:
    """Every leased read of a hung server fails; each would clean up after itself and wait out
    a timeout too. At most `MAX_DROPPING` clean-ups run at once; the rest of the placeholders,
    if any, expire with their lease_ttl."""
    (server,) = memcached_servers(1)
    backend = MemcachedBackend([f"{server.host}:{server.port}"], timeout=0.3, failure_threshold=100)
    assert backend.get("warm") is None  # connected, and known to speak meta
    server.pause()
    try:
        for i in range(10):
            with pytest.raises(memo.BackendError):
                backend.get_or_lease(f"k{i}", 10)
        running = [t for t in threading.enumerate() if t.name == "memo-drop-lease"]
        assert 1 <= len(running) <= MAX_DROPPING
    finally:
        server.resume()
    deadline = time.monotonic() + 10
    while backend._servers[0].dropping and time.monotonic() < deadline:
        time.sleep(0.02)
    assert backend._servers[0].dropping == 0
    backend.close()
