"""Every way a fill ends: the caller's result, the outcome counted, and no lease left behind.

One table drives the fill through each exit, sync and async, on memory:// and on a
real memcached. After each exit the key holds no lease marker of the fill, and the
next call on the key does not wait for one (it would wait `lease_wait`, 5 s here):
it runs on a fake clock, so any wait would show as time slept.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

import memo
from memo import _clock
from memo._codec import is_lease

LEASE_WAIT = 5.0
#: Larger than an item (1 MiB) even when compressed.
BIG = os.urandom(1_200_000).hex()


class Unencodable:
    """A result the codec cannot store (it is not a registered type)."""


@dataclasses.dataclass
class Exit:
    name: str
    compute: Callable[[Any, int], Any]  # (the decorated function, argument) -> result
    result: Any  # the caller's result, or the exception class it sees
    counted: dict[str, int]  # counters of cache_info() that the exit moves
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


def _raise(exc: BaseException) -> Any:
    raise exc


def _invalidate_meanwhile(fn: Any, x: int) -> int:
    fn.invalidate(x)
    return 7


def _clear_meanwhile(fn: Any, x: int) -> int:
    fn.clear()
    return 7


EXITS = [
    Exit("stored", lambda fn, x: 7, 7, {"sets": 1}),
    Exit("cache_if says no", lambda fn, x: 7, 7, {"sets": 0}, {"cache_if": lambda v: v != 7}),
    Exit(
        "cache_if raises",
        lambda fn, x: 7,
        ZeroDivisionError,
        {"sets": 0},
        {"cache_if": lambda v: v != 7 or 1 / 0},
    ),
    Exit("not encodable", lambda fn, x: Unencodable(), Unencodable, {"encode_errors": 1}),
    Exit("not encodable, strict", lambda fn, x: Unencodable(), memo.SerializationError, {}, {"strict": True}),
    Exit("function raises", lambda fn, x: _raise(ValueError("boom")), ValueError, {"sets": 0}),
    Exit("larger than an item", lambda fn, x: BIG, str, {"not_stored": 1}),
    Exit("invalidated meanwhile", _invalidate_meanwhile, 7, {"lease_lost": 1, "sets": 0}),
    Exit("cleared meanwhile", _clear_meanwhile, 7, {"lease_lost": 1, "sets": 0}),
]
SYNC_ONLY = [Exit("interrupted (Ctrl-C)", lambda fn, x: _raise(KeyboardInterrupt()), KeyboardInterrupt, {})]


def _no_marker(cache: memo.Cache, key: str) -> bool:
    raw = cache.backend.get(key)
    return raw is None or not is_lease(raw)


def _check_result(got: Any, exit: Exit) -> None:
    if isinstance(exit.result, type):
        assert isinstance(got, exit.result), (exit.name, got)
    else:
        assert got == exit.result, exit.name


@pytest.mark.parametrize("exit", EXITS + SYNC_ONLY, ids=lambda e: e.name)
def test_every_exit_gives_the_lease_back_sync(make_cache: Any, exit: Exit) -> None:
    cache = make_cache(lease_wait=LEASE_WAIT)
    behaviour: list[Callable[[Any, int], Any]] = [exit.compute]

    @cache.cached(ns="exits", ttl=60, ignore=("behaviour",), **exit.options)
    def f(x: int) -> Any:
        return behaviour[0](f, x)

    key = f.key_for(1)
    try:
        got: Any = f(1)
    except BaseException as exc:  # the table says which
        got = exc
    _check_result(got, exit)
    info = f.cache_info()
    for counter, n in exit.counted.items():
        assert info[counter] == n, (exit.name, counter, info)
    assert _no_marker(cache, key), f"{exit.name}: the fill left its lease marker"

    behaviour[0] = lambda fn, x: 8
    with _clock.use(_clock.FakeClock()) as clock:
        again = f(1)
    assert clock.slept == 0.0, f"{exit.name}: the next call waited {clock.slept}s for a lease"
    assert f.cache_info()["lease_waits"] == 0
    assert again == (7 if exit.name == "stored" else 8)


@pytest.mark.parametrize("exit", EXITS, ids=lambda e: e.name)
async def test_every_exit_gives_the_lease_back_async(make_cache: Any, exit: Exit) -> None:
    cache = make_cache(lease_wait=LEASE_WAIT)
    behaviour: list[Callable[[Any, int], Any]] = [exit.compute]

    @cache.cached(ns="exits", ttl=60, ignore=("behaviour",), **exit.options)
    async def f(x: int) -> Any:
        await asyncio.sleep(0)
        return behaviour[0](f, x)

    key = await f.akey_for(1)
    try:
        got: Any = await f(1)
    except Exception as exc:
        got = exc
    _check_result(got, exit)
    info = f.cache_info()
    for counter, n in exit.counted.items():
        assert info[counter] == n, (exit.name, counter, info)
    assert _no_marker(cache, key), f"{exit.name}: the fill left its lease marker"

    behaviour[0] = lambda fn, x: 8
    with _clock.use(_clock.FakeClock()) as clock:
        again = await f(1)
    assert clock.slept == 0.0
    assert again == (7 if exit.name == "stored" else 8)


async def test_cancelled_while_holding_the_lease(make_cache: Any) -> None:
    cache = make_cache(lease_wait=LEASE_WAIT)
    started = asyncio.Event()
    slow = [True]

    @cache.cached(ns="exits", ttl=60, ignore=("slow", "started"))
    async def f(x: int) -> int:
        if slow[0]:
            started.set()
            await asyncio.sleep(3600)
        return 8

    key = await f.akey_for(1)
    task = asyncio.ensure_future(f(1))
    await started.wait()
    assert not _no_marker(cache, key)  # the lease is held while it computes
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(50):  # the flight's own task finishes its clean-up
        if _no_marker(cache, key):
            break
        await asyncio.sleep(0.01)
    assert _no_marker(cache, key)
    slow[0] = False
    with _clock.use(_clock.FakeClock()) as clock:
        assert await f(1) == 8
    assert clock.slept == 0.0


@pytest.mark.memcached
async def test_cancelled_while_asking_for_the_lease(memcached_url: str) -> None:
    """The lease request reached the server, its reply had not come back: the marker is still removed.

    Classic leases (`lease`: add + gets); the meta protocol's leased read is
    tested in test_native_leases.py.
    """
    url = f"{memcached_url}?protocol=classic"
    cache = memo.Cache(url, prefix=f"x{uuid.uuid4().hex[:8]}:", lease_wait=LEASE_WAIT)
    backend: Any = cache.backend
    asked = asyncio.Event()
    real_alease = backend.alease

    async def slow_reply(*args: Any) -> Any:
        result = await real_alease(*args)  # the marker is on the server now
        asked.set()
        await asyncio.sleep(3600)  # ... and the reply is late
        return result

    backend.alease = slow_reply

    @cache.cached(ns="exits", ttl=60)
    async def f(x: int) -> int:
        return 8

    key = await f.akey_for(1)
    task = asyncio.ensure_future(f(1))
    await asked.wait()
    assert not _no_marker(cache, key)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(50):
        if _no_marker(cache, key):
            break
        await asyncio.sleep(0.01)
    assert _no_marker(cache, key)
    backend.alease = real_alease
    with _clock.use(_clock.FakeClock()) as clock:
        assert await f(1) == 8
    assert clock.slept == 0.0
    await cache.aclose()


_CLOSED_LOOP = """
import asyncio, sys, threading, memo
from memo._codec import is_lease
cache = memo.Cache(sys.argv[1], prefix=sys.argv[2], lease_wait=5)
started = threading.Event()

@cache.cached(ns="exits", ttl=60)
async def f(x: int) -> int:
    started.set()
    await asyncio.sleep(3600)
    return 8

key = f.key_for(1)
loop = asyncio.new_event_loop()
task = loop.create_task(f(1))
loop.run_until_complete(asyncio.sleep(0.2))
held = is_lease(cache.backend.get(key) or b"")
loop.close()  # no cancellation: the tasks are dropped; exiting closes their coroutines
print(started.is_set(), held, key, flush=True)
"""


@pytest.mark.memcached
def test_closed_without_cancelling_gives_the_lease_back(memcached_url: str) -> None:
    """GeneratorExit: the process ends with its event loop closed under a computing fill."""
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", _CLOSED_LOOP, memcached_url, f"x{uuid.uuid4().hex[:8]}:"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    started, held, key = out.stdout.split()
    assert (started, held) == ("True", "True"), out.stderr
    with memo.Cache(memcached_url) as cache:
        assert _no_marker(cache, key), out.stderr


@pytest.mark.memcached
def test_a_store_the_server_refuses_releases_the_lease(memcached_servers: Any) -> None:
    (server,) = memcached_servers(1, max_item_size=64 * 1024)
    cache = memo.Cache(server.url, lease_wait=LEASE_WAIT)
    big = os.urandom(100_000).hex()  # within memo's 1 MiB limit, above this server's -I 64k compressed

    @cache.cached(ns="exits", ttl=60, ignore=("big",))
    def f(x: int) -> str:
        return big

    key = f.key_for(1)
    assert f(1) == big
    info = f.cache_info()
    assert (info["not_stored"], info["lease_lost"], info["sets"]) == (1, 0, 0)
    assert _no_marker(cache, key)
    with _clock.use(_clock.FakeClock()) as clock:
        assert f(1) == big
    assert clock.slept == 0.0
    cache.close()


def test_double_decoration_is_refused(memory_cache: memo.Cache) -> None:
    @memory_cache.cached(ns="a", ttl=5)
    def f(x: int) -> int:
        return x

    with pytest.raises(memo.ConfigurationError, match="memoized already"):
        memory_cache.cached(ns="b", ttl=5)(f)
    with pytest.raises(memo.ConfigurationError, match="memoized already"):
        memory_cache.cached(ns="a", ttl=5)(f)


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"ttl": 1e17}, "ttl"),
        ({"ttl": 5, "stale_ttl": "x"}, "stale_ttl"),
        ({"ttl": 5, "strict": "yes"}, "strict"),
    ],
)
def test_bad_decorator_options_are_refused_when_decorating(
    memory_cache: memo.Cache, options: dict[str, Any], name: str
) -> None:
    with pytest.raises(memo.ConfigurationError, match=name):
        memory_cache.cached(ns="a", **options)(lambda x: x)


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"compress_threshold": "16384"}, "compress_threshold"),
        ({"leases": "no"}, "leases"),
        ({"ttl": 1e17}, "ttl"),
    ],
)
def test_bad_cache_options_are_refused_at_construction(options: dict[str, Any], name: str) -> None:
    with pytest.raises(memo.ConfigurationError, match=name):
        memo.Cache("memory://", **options)


# -- followers never copy a lost fill ------------------------------------------------

_INVALIDATOR = """
import sys, memo
cache = memo.Cache(sys.argv[1])
for line in sys.stdin:
    key, truth_key, truth = line.split()
    cache.backend.set(truth_key, truth.encode(), 60)
    cache.backend.delete(key)   # what invalidate() sends
    print("done", flush=True)
"""


def _call_into(results: dict[str, str], name: str, fn: Any, arg: int) -> None:
    results[name] = fn(arg)


@pytest.mark.memcached
def test_followers_never_receive_a_fill_invalidated_by_another_process(memcached_url: str) -> None:
    """100 trials: thread A leads a fill, thread B follows it, another process changes the
    source and invalidates while A computes. B must get the new truth, never A's old value."""
    prefix = f"fo{uuid.uuid4().hex[:8]}:"
    cache = memo.Cache(memcached_url, prefix=prefix, lease_wait=LEASE_WAIT)
    truth_key = prefix + "truth"
    computing = threading.Event()
    go_on = threading.Event()

    @cache.cached(ns="followers", ttl=60, ignore=("cache", "computing", "go_on", "truth_key"))
    def read(x: int) -> str:
        seen = (cache.backend.get(truth_key) or b"").decode()
        if not computing.is_set():  # the leader of the trial: hold until the invalidate came
            computing.set()
            go_on.wait(10)
        return seen

    other = subprocess.Popen(
        [sys.executable, "-c", _INVALIDATOR, memcached_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert other.stdin is not None and other.stdout is not None
    stale = followed = 0
    try:
        for trial in range(100):
            cache.backend.set(truth_key, f"old{trial}".encode(), 60)
            computing.clear()
            go_on.clear()
            results: dict[str, str] = {}
            a = threading.Thread(target=_call_into, args=(results, "a", read, trial))
            a.start()
            assert computing.wait(10)
            b = threading.Thread(target=_call_into, args=(results, "b", read, trial))
            b.start()
            time.sleep(0.02)  # B reaches the flight and waits on A
            followed += (
                read._self_memo.flight._calls.get((read.key_for(trial), read._self_memo._epoch)) is not None
            )
            other.stdin.write(f"{read.key_for(trial)} {truth_key} new{trial}\n")
            other.stdin.flush()
            assert other.stdout.readline().strip() == "done"
            go_on.set()
            a.join(10)
            b.join(10)
            assert results["a"] == f"old{trial}"  # the leader's call began before the change
            stale += results["b"] != f"new{trial}"
    finally:
        other.stdin.close()
        other.wait(10)
        other.stdout.close()
        cache.close()
    assert followed == 100
    assert stale == 0


# -- background refreshes ------------------------------------------------------------

_SLOW_REFRESH = """
import asyncio, sys, time, memo
from memo._memo import _refresh_key
cache = memo.Cache(sys.argv[1], prefix=sys.argv[2])
mode = sys.argv[3]
calls = []

@cache.cached(ns="swr", ttl=0.2, stale_ttl=60)
def slow(x: int) -> int:
    calls.append(x)
    if len(calls) > 1:
        time.sleep(30)  # the refresh: far slower than the process wants to live
    return x

@cache.cached(ns="aswr", ttl=0.2, stale_ttl=60)
async def aslow(x: int) -> int:
    calls.append(x)
    if len(calls) > 1:
        await asyncio.sleep(30)
    return x

async def amain() -> None:
    await aslow(1)
    await asyncio.sleep(1.3)
    assert await aslow(1) == 1  # stale: served at once, refreshed in the background
    await asyncio.sleep(0.2)   # the refresh task is computing when the loop ends

if mode == "sync":
    slow(1)
    time.sleep(1.3)
    assert slow(1) == 1
    time.sleep(0.2)
    key = slow.key_for(1)
else:
    asyncio.run(amain())
    key = aslow.key_for(1)
print(_refresh_key(cache, key), len(calls), flush=True)
"""


@pytest.mark.memcached
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_refresh_cut_off_by_exit_gives_its_lease_back(memcached_url: str, mode: str) -> None:
    """A slow stale-while-revalidate refresh neither holds up the exit nor keeps its refresh lease."""
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", _SLOW_REFRESH, memcached_url, f"r{uuid.uuid4().hex[:8]}:", mode],
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - started
    rkey, calls = out.stdout.split()
    assert calls == "2", out.stderr  # the refresh was running
    assert took < 15, f"the process took {took:.1f}s to exit"  # the refresh sleeps 30 s
    with memo.Cache(memcached_url) as cache:
        assert cache.backend.get(rkey) is None, "the refresh lease outlived the process"


def test_a_failing_refresh_backs_off(memory_cache: memo.Cache, caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []
    fail = [False]

    @memory_cache.cached(ns="swr", ttl=0.05, stale_ttl=60, lease_ttl=30, ignore=("runs", "fail"))
    def f(x: int) -> int:
        runs.append(x)
        if fail[0]:
            raise RuntimeError("source down")
        return x

    assert f(1) == 1
    time.sleep(0.06)
    fail[0] = True
    for _ in range(20):
        assert f(1) == 1  # stale, served at once
        time.sleep(0.005)
    assert runs == [1, 1]  # one refresh attempt, then none before lease_ttl
    failures = [r for r in caplog.records if "refreshing a stale entry" in r.getMessage()]
    assert len(failures) == 1
