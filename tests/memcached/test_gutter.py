"""The gutter pool: a down server's keys go to short-lived copies elsewhere, and come back.

Every test runs real memcached processes: a main pool, a gutter pool, and
SIGKILL for the server that fails.
"""

from __future__ import annotations

import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from memcached_fixtures import MemcachedProcess, _start_or_skip

import memo
from memo._backend import backend_from_url
from memo._memcached import GutterBackend, MemcachedBackend
from memo._memcached._gutter import GUTTER_UNIQUE
from memo.testing import BackendContract
from memo.testing import BackendOps as Ops

Servers = Callable[..., list[MemcachedProcess]]


@pytest.fixture(params=["sync", "async"])
def flavour(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _url(main: list[MemcachedProcess], gutter: list[MemcachedProcess], **query: Any) -> str:
    extra = "".join(f"&{k}={v}" for k, v in query.items())
    return (
        "memcached://"
        + ",".join(p.address for p in main)
        + "?gutter="
        + ",".join(p.address for p in gutter)
        + extra
    )


def _key_on(backend: MemcachedBackend, server: str) -> str:
    """A fresh key that routes to `server`."""
    while True:
        key = f"g:{uuid.uuid4().hex}"
        if backend.server_for(key) == server:
            return key


def _raw(process: MemcachedProcess, line: bytes) -> bytes:
    """One meta/classic request straight to a process; the reply's first line."""
    with socket.create_connection(("127.0.0.1", process.port), timeout=2) as sock:
        sock.sendall(line + b"\r\n")
        return sock.recv(4096).split(b"\r\n", 1)[0]


def _mark_down(ops: Ops, key: str) -> None:
    """Fail enough calls for the key's server to open its breaker (threshold 1 in these tests)."""
    with pytest.raises(memo.BackendUnavailable):
        MemcachedBackend.get(ops.backend, key)


@pytest.fixture(scope="module")
def healthy_pools() -> Iterator[list[MemcachedProcess]]:
    processes = [_start_or_skip(), _start_or_skip()]
    yield processes
    for process in processes:
        process.cleanup()


class TestHealthyGutterPoolKeepsTheContract(BackendContract):
    """With every server up, a gutter-configured backend is an ordinary backend."""

    @pytest.fixture
    def make_backend(self, memcached_server: MemcachedProcess, healthy_pools: list[MemcachedProcess]) -> Any:
        return backend_from_url(_url([memcached_server, healthy_pools[0]], healthy_pools[1:]), {})


def test_url_builds_a_gutter_backend_and_bad_options_are_configuration_errors() -> None:
    backend = backend_from_url("memcached://127.0.0.1:1,127.0.0.1:2?gutter=127.0.0.1:3,127.0.0.1:4", {})
    assert isinstance(backend, GutterBackend)
    assert backend.gutter_servers == ("127.0.0.1:3", "127.0.0.1:4")
    assert backend.gutter_ttl == 10.0
    assert backend_from_url("memcached://127.0.0.1:1?gutter=127.0.0.1:3&gutter_ttl=4", {}).gutter_ttl == 4.0
    assert (
        repr(backend)
        == "GutterBackend(['127.0.0.1:1', '127.0.0.1:2'], gutter=['127.0.0.1:3', '127.0.0.1:4'])"
    )
    with pytest.raises(memo.ConfigurationError, match="gutter_ttl needs gutter"):
        backend_from_url("memcached://127.0.0.1:1?gutter_ttl=4", {})
    with pytest.raises(memo.ConfigurationError, match="gutter_ttl must be"):
        backend_from_url("memcached://127.0.0.1:1?gutter=127.0.0.1:3&gutter_ttl=0.5", {})
    with pytest.raises(memo.ConfigurationError, match="must not be in the main pool"):
        backend_from_url("memcached://127.0.0.1:1,127.0.0.1:2?gutter=127.0.0.1:2", {})
    with pytest.raises(memo.ConfigurationError, match="must not be in the main pool"):
        GutterBackend("127.0.0.1:5", gutter=[("127.0.0.1", 5)])
    assert GutterBackend("127.0.0.1:5", gutter="127.0.0.1:6").servers == ("127.0.0.1:5",)
    with pytest.raises(memo.ConfigurationError, match="gutter needs at least one"):
        GutterBackend(["127.0.0.1:1"], gutter="")
    assert type(backend_from_url("memcached://127.0.0.1:1", {})) is MemcachedBackend


@pytest.mark.memcached
def test_down_servers_keys_go_to_the_gutter_with_a_short_ttl_and_come_back(
    memcached_servers: Servers, flavour: str
) -> None:
    main = memcached_servers(3)
    (gutter,) = memcached_servers(1)
    url = _url(main, [gutter], gutter_ttl=5, failure_threshold=1, retry_after=0.3)
    ops = Ops(backend_from_url(url, {}), flavour)
    try:
        backend = ops.backend
        victim = main[1]
        key, other = _key_on(backend, victim.address), _key_on(backend, main[0].address)
        assert ops.set(other, b"stays", 300)
        victim.kill()
        _mark_down(ops, key)
        assert ops.get(key) is None  # a gutter miss, not an error
        assert ops.set(key, b"v1", 300)
        assert ops.get(key) == b"v1"
        assert _raw(gutter, b"mg " + key.encode() + b" t v").startswith(b"VA 2 t5")  # ttl cut to 5
        assert _raw(gutter, b"mg " + other.encode() + b" v") == b"EN"  # up servers' keys stay home
        assert ops.get_many([key, other]) == {key: b"v1", other: b"stays"}
        assert ops.set_many([(key, b"v2", None), (other, b"two", 300)]) == []
        assert ops.get_many([key, other]) == {key: b"v2", other: b"two"}
        assert _raw(gutter, b"mg " + key.encode() + b" t v").startswith(b"VA 2 t5")  # never-expiring too
        # An invalidate while the server is down reaches the gutter's copy.
        assert ops.delete(key)
        assert ops.get(key) is None
        ops.set(key, b"v3", 60)
        ops.delete_many([key, other])
        assert ops.get_many([key, other]) == {}
        # The server comes back: once its breaker closes, its keys are read from it again.
        ops.set(key, b"gutter copy", 60)
        victim.start()
        time.sleep(0.35)  # retry_after: the next call probes the server and closes the breaker
        assert ops.get(key) is None
        assert ops.set(key, b"home", 60)
        assert _raw(victim, b"mg " + key.encode() + b" v") == b"VA 4"
        assert ops.get(key) == b"home"
    finally:
        ops.close()


@pytest.mark.memcached
def test_a_lease_is_never_redeemed_in_the_other_pool(memcached_servers: Servers, flavour: str) -> None:
    main = memcached_servers(2)
    (gutter,) = memcached_servers(1)
    ops = Ops(backend_from_url(_url(main, [gutter], failure_threshold=1, retry_after=0.3), {}), flavour)
    try:
        victim = main[0]
        key = _key_on(ops.backend, victim.address)
        # Taken at the key's server, which then dies: the store is refused, not sent to the gutter.
        added, (marker, unique) = ops.lease(key, b"marker-1", 10)
        assert added and marker == b"marker-1" and unique < GUTTER_UNIQUE
        victim.kill()
        _mark_down(ops, key)
        assert ops.cas(key, b"late", 60, unique) is False
        assert ops.get(key) is None
        # Taken in the gutter: works there, with leases' usual meaning ...
        added, (marker, unique) = ops.lease(key, b"marker-2", 10)
        assert added and unique >= GUTTER_UNIQUE
        added_again, (held, _) = ops.lease(key, b"marker-3", 10)
        assert not added_again and held == b"marker-2"
        assert ops.cas(key, b"filled", 60, unique) is True
        assert ops.get(key) == b"filled"
        assert ops.gets(key)[1] >= GUTTER_UNIQUE
        # ... and an invalidate during the fill voids the store.
        ops.delete(key)
        added, (_, unique) = ops.lease(key, b"marker-4", 10)
        ops.delete(key)
        assert ops.cas(key, b"stale", 60, unique) is False
        # Taken in the gutter, redeemed after the server came back: refused.
        added, (_, unique) = ops.lease(key, b"marker-5", 10)
        victim.start()
        time.sleep(0.35)
        assert ops.get(key) is None  # the probe succeeds: routed home again
        assert ops.cas(key, b"cross", 60, unique) is False
        assert ops.get(key) is None
    finally:
        ops.close()


@pytest.mark.memcached
@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_no_value_invalidated_before_a_failure_is_served(memcached_servers: Servers, use_async: bool) -> None:
    """Two outages of one server: the gutter's copy from the first is voided by an invalidate in between."""
    import asyncio

    main = memcached_servers(3)
    (gutter,) = memcached_servers(1)
    cache = memo.Cache(
        _url(main, [gutter], failure_threshold=1, retry_after=0.3), prefix=f"t{uuid.uuid4().hex[:6]}:"
    )
    source = {"n": 1}

    @cache.cached(ns="gut", ttl=300)
    def read(i: int) -> tuple[int, int]:
        return (i, source["n"])

    @cache.cached(ns="gut", ttl=300)
    async def aread(i: int) -> tuple[int, int]:
        return (i, source["n"])

    loop = asyncio.new_event_loop()

    def call(i: int) -> tuple[int, int]:
        return loop.run_until_complete(aread(i)) if use_async else read(i)

    def invalidate(i: int) -> None:
        loop.run_until_complete(aread.ainvalidate(i)) if use_async else read.invalidate(i)

    fn = aread if use_async else read
    victim = main[2]
    i = next(
        i
        for i in range(10_000)
        if cache.backend.server_for(_key_for(loop, fn, i, use_async)) == victim.address
    )
    try:
        assert call(i) == (i, 1)
        # First outage: the value is filled into the gutter.
        victim.kill()
        _fail_once(cache, _key_for(loop, fn, i, use_async))
        source["n"] = 2
        assert call(i) == (i, 2)
        assert call(i) == (i, 2)  # a gutter hit
        source["n"] = 3
        assert call(i) == (i, 2)  # still the gutter's copy, as expected of a cache
        victim.start()
        time.sleep(0.35)
        assert call(i) == (i, 3)  # back home (an empty restarted server)
        # Invalidated while everything is up ...
        source["n"] = 4
        invalidate(i)
        # ... then the server fails again within the gutter's TTL: its old copy must not come back.
        victim.kill()
        _fail_once(cache, _key_for(loop, fn, i, use_async))
        assert call(i) == (i, 4)
        # An invalidate while the server is down reaches the gutter's copy.
        source["n"] = 5
        invalidate(i)
        assert call(i) == (i, 5)
    finally:
        cache.close()
        loop.run_until_complete(cache.aclose())
        loop.close()


def _key_for(loop: Any, fn: Any, i: int, use_async: bool) -> str:
    return str(loop.run_until_complete(fn.akey_for(i)) if use_async else fn.key_for(i))


def _fail_once(cache: memo.Cache, key: str) -> None:
    with pytest.raises(memo.BackendUnavailable):
        MemcachedBackend.get(cache.backend, key)  # type: ignore[arg-type]


def _hit_rate_after_a_kill(main: list[MemcachedProcess], url: str) -> tuple[float, float]:
    """Four threads read 600 keys at random; one of 3 servers is SIGKILLed; hit rates before and after.

    "After" is measured from one second past the kill (the gutter warms) for two seconds.
    """
    cache = memo.Cache(url, prefix=f"t{uuid.uuid4().hex[:6]}:")
    computed = [0]

    @cache.cached(ns="load", ttl=300)
    def value(i: int) -> int:
        computed[0] += 1
        return i * 2

    for i in range(600):
        value(i)
    calls = [0]
    stop = threading.Event()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            i = rng.randrange(600)
            assert value(i) == i * 2
            calls[0] += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()

    def window(seconds: float) -> float:
        calls[0] = computed[0] = 0
        time.sleep(seconds)
        return 1 - computed[0] / max(calls[0], 1)

    try:
        before = window(1.0)
        main[1].kill()
        time.sleep(1.0)
        after = window(2.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
        cache.close()
    return before, after


@pytest.mark.memcached
def test_hit_rate_stays_above_80_percent_with_one_of_three_servers_killed(memcached_servers: Servers) -> None:
    main = memcached_servers(3)
    gutter = memcached_servers(2)
    before, after = _hit_rate_after_a_kill(main, _url(main, gutter))
    print(f"\ngutter: hit rate {before:.1%} before the kill, {after:.1%} after")
    assert before > 0.99
    assert after > 0.80
    # The same load without a gutter: the dead server's keys simply miss.
    main = memcached_servers(3)
    before, after = _hit_rate_after_a_kill(main, "memcached://" + ",".join(p.address for p in main))
    print(f"no gutter: hit rate {before:.1%} before the kill, {after:.1%} after")
    assert before > 0.99
    assert after < 0.80


@pytest.mark.memcached
def test_batches_of_leases_and_stores_route_each_key(memcached_servers: Servers, flavour: str) -> None:
    main = memcached_servers(2)
    (gutter,) = memcached_servers(1)
    ops = Ops(
        backend_from_url(_url(main, [gutter], failure_threshold=1, retry_after=30, connect_timeout=2), {}),
        flavour,
    )
    try:
        home, away = _key_on(ops.backend, main[0].address), _key_on(ops.backend, main[1].address)
        main[1].kill()
        _mark_down(ops, away)
        leased = ops.lease_many([(home, b"m-home", 10), (away, b"m-away", 10)])
        assert leased[home][0] and leased[home][1][1] < GUTTER_UNIQUE
        assert leased[away][0] and leased[away][1][1] >= GUTTER_UNIQUE
        assert _raw(gutter, b"mg " + away.encode() + b" v") == b"VA 6"  # the marker, in the gutter
        items = [(home, b"v-home", 60, leased[home][1][1]), (away, b"v-away", 60, leased[away][1][1])]
        assert ops.cas_many(items) == []
        assert ops.get_many([home, away]) == {home: b"v-home", away: b"v-away"}
        # A unique from the other pool is refused, key by key.
        swapped = [(home, b"x", 60, leased[away][1][1]), (away, b"y", 60, leased[home][1][1])]
        assert sorted(ops.cas_many(swapped)) == sorted([home, away])
    finally:
        ops.close()


@pytest.mark.memcached
def test_cached_many_over_a_gutter_pool(memcached_servers: Servers) -> None:
    main = memcached_servers(3)
    (gutter,) = memcached_servers(1)
    cache = memo.Cache(_url(main, [gutter], failure_threshold=1, retry_after=30), prefix="cm:")
    calls: list[list[int]] = []

    @cache.cached_many(ns="u", ttl=60, each="ids")
    def double(ids: list[int]) -> dict[int, int]:
        calls.append(sorted(ids))
        return {i: 2 * i for i in ids}

    try:
        ids = list(range(30))
        assert double(ids) == {i: 2 * i for i in ids}
        main[0].kill()
        on_dead = [
            i
            for i, key in zip(ids, double.key_for(ids=ids), strict=True)
            if cache.backend.server_for(key) == main[0].address
        ]
        assert on_dead
        _fail_once(cache, double.key_for(ids=on_dead[:1])[0])
        assert double(ids) == {i: 2 * i for i in ids}
        assert calls[-1] == on_dead  # only the dead server's items, then from the gutter
        assert double(ids) == {i: 2 * i for i in ids}
        assert len(calls) == 2
        assert double.invalidate(ids=on_dead[:1])
        assert double(ids) == {i: 2 * i for i in ids}
        assert calls[-1] == on_dead[:1]
    finally:
        cache.close()


@pytest.mark.memcached
def test_an_invalidate_failing_before_the_server_is_marked_down_still_voids_the_gutter_copy(
    memcached_servers: Servers, flavour: str
) -> None:
    main = memcached_servers(2)
    (gutter,) = memcached_servers(1)
    ops = Ops(backend_from_url(_url(main, [gutter], failure_threshold=2, retry_after=0.3), {}), flavour)
    try:
        victim = main[0]
        key = _key_on(ops.backend, victim.address)
        victim.kill()
        for _ in range(2):
            _mark_down(ops, key)
        assert ops.set(key, b"old", 60)  # a copy in the gutter, from this first outage
        victim.start()
        time.sleep(0.35)
        assert ops.get(key) is None  # the probe succeeds: routed home again
        victim.kill()
        with pytest.raises(memo.BackendUnavailable):
            ops.delete(key)  # the first failure of two: not marked down yet
        _mark_down(ops, key)  # the second: marked down, its keys read from the gutter
        assert ops.get(key) is None
    finally:
        ops.close()


_READER = """
import sys, memo
url, prefix, item, source = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
cache = memo.Cache(url, prefix=prefix)

@cache.cached(ns="x", ttl=300, ignore=("source",))
def read(i, source):
    return source

if source.startswith("find:"):  # the first item whose key routes to that server
    print(next(i for i in range(10_000) if cache.backend.server_for(read.key_for(i, "")) == source[5:]))
elif source == "invalidate":
    print(read.invalidate(item, source))
else:
    print(read(item, source))
cache.close()
"""


@pytest.mark.memcached
def test_an_invalidate_in_one_process_reaches_the_gutter_copy_another_process_filled(
    memcached_servers: Servers,
) -> None:
    import subprocess
    import sys

    main = memcached_servers(3)
    (gutter,) = memcached_servers(1)
    url = _url(main, [gutter], failure_threshold=1, retry_after=30)
    prefix = f"t{uuid.uuid4().hex[:6]}:"

    def in_another_process(item: int, source: str) -> str:
        args = [sys.executable, "-c", _READER, url, prefix, str(item), source]
        return subprocess.run(args, capture_output=True, text=True, timeout=30, check=True).stdout.strip()

    victim = main[1]
    item = int(in_another_process(0, f"find:{victim.address}"))
    victim.kill()
    assert in_another_process(item, "v1") == "v1"  # filled into the gutter by one process
    assert in_another_process(item, "v2") == "v1"  # and read from it by the next
    assert in_another_process(item, "invalidate") == "True"  # a third: reaches the gutter's copy
    assert in_another_process(item, "v3") == "v3"
