"""Leases: an invalidate always wins over a fill, one computation per key across
processes, stale-while-revalidate and exact TTLs, on memcached and memory://."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import memo
from memo._codec import is_lease

WORKER = str(Path(__file__).resolve().parents[1] / "support" / "lease_worker.py")


def _worker_env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}


def run_workers(configs: list[dict[str, Any]], timeout: float = 60) -> list[dict[str, Any]]:
    procs = [
        subprocess.Popen(
            [sys.executable, WORKER, json.dumps(c)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_worker_env(),
        )
        for c in configs
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err.decode()[-2000:]
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    return results


class Gate:
    """Lets a test run code in the middle of a cached function's computation."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def pass_through(self) -> None:
        self.entered.set()
        assert self.release.wait(10)


# -- an invalidate always wins over a fill -----------------------------------------


def test_invalidate_during_a_fill_voids_its_store(
    make_cache: Callable[..., memo.Cache], backend_url: str
) -> None:
    """On memcached two Caches stand for two processes; memory:// lives in one Cache."""
    filler = make_cache()
    writer = make_cache() if backend_url.startswith("memcached") else filler
    source = {"x": "old"}
    gate = Gate()

    def read(cache: memo.Cache) -> Callable[[str], str]:
        @cache.cached(ns="data", ttl=60)
        def read_source(k: str) -> str:
            value = source[k]
            if threading.current_thread().name == "filler":
                gate.pass_through()
            return value

        return read_source

    fill, other = read(filler), read(writer)
    result: list[str] = []
    t = threading.Thread(target=lambda: result.append(fill("x")), name="filler")
    t.start()
    assert gate.entered.wait(10)
    source["x"] = "new"  # the source of truth changes...
    other.invalidate("x")  # ...and the writer invalidates, while the filler still computes
    gate.release.set()
    t.join()
    assert result == ["old"]  # the caller still gets what it computed
    assert filler.stats("data")["lease_lost"] == 1
    assert filler.stats("data")["sets"] == 0
    assert other("x") == "new"  # the old value was never stored
    assert fill("x") == "new"


async def test_async_invalidate_during_a_fill_voids_its_store(make_cache: Callable[..., memo.Cache]) -> None:
    cache = make_cache()
    source = {"x": "old"}
    entered, release = asyncio.Event(), asyncio.Event()

    @cache.cached(ns="data", ttl=60)
    async def read_source(k: str) -> str:
        value = source[k]
        entered.set()
        await release.wait()
        return value

    filling = asyncio.ensure_future(read_source("x"))
    await entered.wait()
    source["x"] = "new"
    await read_source.ainvalidate("x")
    # A caller after the invalidate must not join the computation that started before it.
    entered.clear()
    later = asyncio.ensure_future(read_source("x"))
    await entered.wait()
    release.set()
    assert await filling == "old"
    assert await later == "new"
    assert await read_source("x") == "new"
    assert cache.stats("data")["lease_lost"] == 1


def test_refresh_during_a_fill_wins(make_cache: Callable[..., memo.Cache]) -> None:
    cache = make_cache()
    source = {"x": "old"}
    gate = Gate()

    @cache.cached(ns="data", ttl=60)
    def read_source(k: str) -> str:
        value = source[k]
        if threading.current_thread().name == "filler":
            gate.pass_through()
        return value

    t = threading.Thread(target=read_source, args=("x",), name="filler")
    t.start()
    assert gate.entered.wait(10)
    source["x"] = "new"
    assert read_source.refresh("x") == "new"
    gate.release.set()
    t.join()
    assert read_source("x") == "new"
    assert cache.stats("data")["lease_lost"] == 1


def test_clear_during_a_fill_voids_its_store(make_cache: Callable[..., memo.Cache]) -> None:
    cache = make_cache()
    source = {"x": "old"}
    gate = Gate()

    @cache.cached(ns="data", ttl=60)
    def read_source(k: str) -> str:
        value = source[k]
        if threading.current_thread().name == "filler":
            gate.pass_through()
        return value

    t = threading.Thread(target=read_source, args=("x",), name="filler")
    t.start()
    assert gate.entered.wait(10)
    source["x"] = "new"
    cache.clear("data")
    gate.release.set()
    t.join()
    assert read_source("x") == "new"
    assert cache.stats("data")["lease_lost"] == 1


@pytest.mark.memcached
def test_invalidate_wins_across_processes(memcached_url: str, tmp_path: Path) -> None:
    """Process A fills slowly from the old source; B invalidates meanwhile: A's value is never stored."""
    prefix = f"lw{uuid.uuid4().hex[:8]}:"
    ns = "race"
    config = {
        "url": memcached_url,
        "prefix": prefix,
        "ns": ns,
        "mode": "threads",
        "callers": 1,
        "arg": "k",
        "sleep": 0,
        "value": "old",
        "gate": str(tmp_path / "gate"),
    }
    (key,) = (r["key"] for r in run_workers([{**config, "mode": "key"}]))
    proc = subprocess.Popen(
        [sys.executable, WORKER, json.dumps(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_worker_env(),
    )
    reader = memo.Cache(memcached_url)
    backend = reader.backend
    try:
        deadline = time.monotonic() + 10
        while backend.get(key) is None:  # until the filling process holds the lease
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert is_lease(backend.get(key) or b"")
        # Another process changes the source and invalidates while the fill computes.
        (done,) = run_workers([{**config, "mode": "invalidate"}])
        assert done == {"invalidated": True}
        (tmp_path / "gate").touch()  # now the fill may finish
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err.decode()
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["values"] == ["old:k"]
    assert result["stats"]["total"]["lease_lost"] == 1
    assert backend.get(key) is None  # the old value was never stored
    reader.close()
    (fresh,) = run_workers([{**config, "value": "new"}])
    assert fresh["values"] == ["new:k"] and fresh["runs"] == 1


# -- one computation per key across processes ------------------------------------------


@pytest.mark.memcached
@pytest.mark.parametrize("mode", ["threads", "tasks"])
def test_one_computation_per_key_across_processes(memcached_url: str, mode: str) -> None:
    prefix = f"st{uuid.uuid4().hex[:8]}:"
    start_at = time.time() + 1.5
    config = {
        "url": memcached_url,
        "prefix": prefix,
        "ns": "stampede",
        "mode": mode,
        "callers": 10,
        "arg": "cold",
        "sleep": 0.5,
        "start_at": start_at,
    }
    results = run_workers([config] * 4)
    assert sum(r["runs"] for r in results) == 1
    assert all(v == "v1:cold" for r in results for v in r["values"])
    assert sum(len(r["values"]) for r in results) == 40


@pytest.mark.memcached
def test_without_leases_every_process_computes(memcached_url: str) -> None:
    """The baseline the lease removes: single-flight alone stops a stampede per process only."""
    prefix = f"nl{uuid.uuid4().hex[:8]}:"
    config = {
        "url": memcached_url,
        "prefix": prefix,
        "ns": "stampede",
        "mode": "threads",
        "callers": 5,
        "arg": "cold",
        "sleep": 0.5,
        "start_at": time.time() + 1.5,
        "leases": False,
    }
    results = run_workers([config] * 3)
    assert sum(r["runs"] for r in results) == 3


@pytest.mark.memcached
def test_a_killed_lease_holder_delays_others_by_at_most_lease_ttl(memcached_url: str) -> None:
    prefix = f"kl{uuid.uuid4().hex[:8]}:"
    config = {
        "url": memcached_url,
        "prefix": prefix,
        "ns": "kill",
        "mode": "hold",
        "arg": "k",
        "lease_ttl": 4,
    }
    holder = subprocess.Popen(
        [sys.executable, WORKER, json.dumps(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_worker_env(),
    )
    try:
        assert holder.stdout is not None
        assert json.loads(holder.stdout.readline()) == {"holding": True}
        held_at = time.monotonic()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.communicate()
    after = {**config, "mode": "threads", "callers": 1, "sleep": 0, "lease_wait": 0.3}
    (waited,) = run_workers([after])
    # It waited lease_wait for the dead holder, then computed, leaving that lease alone.
    assert waited["values"] == ["v1:k"] and waited["runs"] == 1
    assert 0.25 <= waited["latencies"][0] < 2.0
    assert waited["stats"]["total"]["lease_waits"] == 1
    assert waited["stats"]["total"]["sets"] == 0
    time.sleep(max(0.0, held_at + 4.1 - time.monotonic()))  # the marker expires with its lease_ttl
    (filled,) = run_workers([after])
    assert filled["runs"] == 1 and filled["stats"]["total"]["sets"] == 1
    assert filled["latencies"][0] < 0.25
    (hit,) = run_workers([after])
    assert hit["runs"] == 0 and hit["values"] == ["v1:k"]


@pytest.mark.memcached
def test_followers_in_one_process_share_one_wait(memcached_servers: Any) -> None:
    (server,) = memcached_servers(1, verbose=True)
    # Classic, so that each poll is one `get` line in the server's log.
    cache = memo.Cache(server.url, lease_wait=0.5, protocol="classic")
    holder = memo.Cache(server.url)

    @cache.cached(ns="w", ttl=60)
    def compute(arg: str) -> str:
        return arg

    key = compute.key_for("k")
    # Another process holds the lease (its marker is there) and never finishes.
    holder.backend.lease(key, memo._codec.lease_marker("other"), 30)
    before = len(server.commands("get"))
    threads = [threading.Thread(target=compute, args=("k",)) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    polls = len(server.commands("get")) - before
    cache.close()
    holder.close()
    # One poller with a growing pause over 0.5 s, plus each thread's own first read.
    assert polls <= 30 + 25


async def test_cancelled_waiters_leave_the_others_their_value(make_cache: Callable[..., memo.Cache]) -> None:
    cache = make_cache()
    release = asyncio.Event()
    runs = []

    @cache.cached(ns="c", ttl=60)
    async def slow(arg: str) -> str:
        runs.append(arg)
        await release.wait()
        return arg * 2

    tasks = [asyncio.ensure_future(slow("a")) for _ in range(10)]
    flight = slow._self_memo.flight  # type: ignore[attr-defined]
    for _ in range(500):  # every caller has joined the one computation (not a fixed sleep)
        if sum(entry.waiters for entry in flight._calls.values()) == 10:
            break
        await asyncio.sleep(0.01)
    for t in tasks[:5]:
        t.cancel()
    await asyncio.sleep(0.01)
    release.set()
    done = await asyncio.gather(*tasks[5:])
    assert done == ["aa"] * 5
    assert runs == ["a"]
    assert await slow("a") == "aa"


# -- failures never turn into a caller's error or a long wait ------------------------------


@pytest.mark.memcached
def test_server_stopped_mid_lease_fails_open(memcached_servers: Any) -> None:
    (server,) = memcached_servers(1)
    cache = memo.Cache(server.url, timeout=0.1, connect_timeout=0.1, lease_wait=0.2)
    gate = Gate()

    @cache.cached(ns="s", ttl=60)
    def compute(arg: str) -> str:
        gate.pass_through()
        return arg

    result: list[str] = []
    t = threading.Thread(target=lambda: result.append(compute("k")))
    t.start()
    assert gate.entered.wait(10)
    server.pause()
    try:
        gate.release.set()
        t.join(5)
        assert result == ["k"]
        gate.entered.clear()
        t0 = time.monotonic()
        assert compute("j") == "j"  # the server hangs: bounded by the timeouts, not lease_wait
        assert time.monotonic() - t0 < 1.0
        assert cache.stats("s")["errors"] >= 1
    finally:
        server.resume()
        cache.close()


def test_a_function_that_raises_releases_its_lease(make_cache: Callable[..., memo.Cache]) -> None:
    cache = make_cache(lease_wait=5)
    calls = []

    @cache.cached(ns="r", ttl=60)
    def flaky(arg: str) -> str:
        calls.append(arg)
        if len(calls) == 1:
            raise ValueError("first call fails")
        return arg

    with pytest.raises(ValueError):
        flaky("k")
    t0 = time.monotonic()
    assert flaky("k") == "k"
    assert time.monotonic() - t0 < 1  # nobody waited for a lease whose holder gave up


# -- stale-while-revalidate ----------------------------------------------------------------


def test_stale_entries_are_served_at_once_and_refreshed_once(
    elapse: Callable[[float], None], make_cache: Callable[..., memo.Cache]
) -> None:
    cache = make_cache()
    version = {"n": 1}
    runs = []
    recomputing = threading.Event()
    released = threading.Event()

    @cache.cached(ns="swr", ttl=0.3, stale_ttl=30)
    def compute(arg: str) -> str:
        runs.append(version["n"])
        if version["n"] == 2:
            recomputing.set()
            assert released.wait(10)  # the recomputation lasts until the stale reads are done
        return f"{arg}{version['n']}"

    assert compute("k") == "k1"
    elapse(0.35)
    version["n"] = 2
    t0 = time.monotonic()
    stale = [compute("k") for _ in range(20)]
    assert time.monotonic() - t0 < 0.75  # nobody waited for the recomputation
    assert stale == ["k1"] * 20
    assert cache.stats("swr")["stale"] == 20
    assert recomputing.wait(10)  # it runs in the background meanwhile
    released.set()
    deadline = time.monotonic() + 10
    while compute("k") != "k2":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert runs == [1, 2]  # one background recomputation


async def test_async_stale_entries_refresh_in_a_task(
    elapse: Callable[[float], None], make_cache: Callable[..., memo.Cache]
) -> None:
    cache = make_cache()
    version = {"n": 1}

    @cache.cached(ns="swr", ttl=0.2, stale_ttl=30)
    async def compute(arg: str) -> str:
        await asyncio.sleep(0.05)
        return f"{arg}{version['n']}"

    assert await compute("k") == "k1"
    elapse(0.25)
    version["n"] = 2
    assert await compute("k") == "k1"
    deadline = time.monotonic() + 5
    while await compute("k") != "k2":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert cache.stats("swr")["stale"] >= 1


def test_beyond_stale_ttl_is_a_miss(
    elapse: Callable[[float], None], make_cache: Callable[..., memo.Cache]
) -> None:
    cache = make_cache()
    runs = []

    @cache.cached(ns="swr", ttl=0.1, stale_ttl=0.1)
    def compute(arg: str) -> str:
        runs.append(arg)
        return arg

    compute("k")
    elapse(0.25)
    compute("k")
    assert runs == ["k", "k"]
    assert cache.stats("swr")["stale"] == 0


@pytest.mark.memcached
def test_exactly_one_process_revalidates(memcached_url: str) -> None:
    prefix = f"sw{uuid.uuid4().hex[:8]}:"
    caches = [memo.Cache(memcached_url, prefix=prefix) for _ in range(3)]
    runs = []
    fns = []
    for cache in caches:

        @cache.cached(ns="swr", ttl=0.3, stale_ttl=30)
        def compute(arg: str) -> str:
            runs.append(arg)
            time.sleep(0.3)
            return arg

        fns.append(compute)
    fns[0]("k")
    time.sleep(0.4)
    for fn in fns:  # three "processes" see it stale at once
        assert fn("k") == "k"
    time.sleep(0.8)
    for cache in caches:
        cache.close()
    assert len(runs) == 2


def test_stale_ttl_needs_a_ttl(memory_cache: memo.Cache) -> None:
    with pytest.raises(memo.ConfigurationError, match="stale_ttl"):

        @memory_cache.cached(ns="x", ttl=None, stale_ttl=5)
        def f() -> int:
            return 1


# -- exact TTLs ----------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_ttl_holds_to_the_millisecond(
    elapse: Callable[[float], None], make_cache: Callable[..., memo.Cache], flavour: str
) -> None:
    """memcached alone would keep ttl=0.6 anywhere up to a second; the header makes it exact."""
    cache = make_cache()
    runs = []

    @cache.cached(ns="ttl", ttl=0.6)
    def compute(arg: str) -> str:
        runs.append(time.monotonic())
        return arg

    @cache.cached(ns="ttl", ttl=0.6)
    async def acompute(arg: str) -> str:
        runs.append(time.monotonic())
        return arg

    def call() -> str:
        return compute("k") if flavour == "sync" else asyncio.run(acompute("k"))

    call()
    elapse(0.2)
    call()
    assert len(runs) == 1  # still fresh at 0.2 s
    elapse(0.5)
    call()
    assert len(runs) == 2  # expired at 0.7 s, whatever memcached's clock says (it keeps it 1.6 s)
