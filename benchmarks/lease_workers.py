"""Worker processes for the cross-process lease benchmarks.

    python lease_workers.py stampede '<json>'   # one process of a stampede on one cold key
    python lease_workers.py race '<json>'       # one side of the invalidate-vs-fill race

Each prints one JSON line with what it saw. Run by benchmarks/test_lease_paths.py.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from pymemcache.client.base import Client

import memo
from memo._codec import is_lease

VALUE = {"id": 1, "name": "cold key"}


def _until(at: float) -> None:
    delay = at - time.time()
    if delay > 0:
        time.sleep(delay)


# -- stampede ---------------------------------------------------------------------------


def _memo_fns(config: dict[str, Any], runs: list[int]) -> tuple[Callable[..., Any], Any, Any]:
    cache = memo.Cache(
        config["url"], prefix=config["prefix"], leases=config["leases"], lease_wait=5.0, lease_ttl=10.0
    )
    sleep = config["sleep"]

    @cache.cached(ns="stampede", ttl=600)
    def compute(arg: int) -> dict[str, Any]:
        runs.append(arg)
        time.sleep(sleep)
        return VALUE

    @cache.cached(ns="stampede", ttl=600)
    async def acompute(arg: int) -> dict[str, Any]:
        runs.append(arg)
        await asyncio.sleep(sleep)
        return VALUE

    return compute, acompute, cache.aclose


def _dogpile_fn(config: dict[str, Any], runs: list[int]) -> Callable[..., Any]:
    from dogpile.cache import make_region
    from dogpile.cache.util import sha1_mangle_key

    region = make_region(key_mangler=sha1_mangle_key).configure(
        "dogpile.cache.pymemcache",
        expiration_time=600,
        arguments={"url": [config["address"]], "distributed_lock": True, "lock_timeout": 10},
    )
    sleep = config["sleep"]

    @region.cache_on_arguments(namespace=config["prefix"])
    def compute(arg: int) -> dict[str, Any]:
        runs.append(arg)
        time.sleep(sleep)
        return VALUE

    return compute


def _aiocache_fns(config: dict[str, Any], runs: list[int]) -> tuple[Any, Any]:
    from aiocache import Cache, cached
    from aiocache.serializers import JsonSerializer

    host, port = config["address"].split(":")
    decorator = cached(
        ttl=600,
        cache=Cache.MEMCACHED,
        endpoint=host,
        port=int(port),
        serializer=JsonSerializer(),
        namespace=config["prefix"],
    )
    sleep = config["sleep"]

    async def compute(arg: int) -> dict[str, Any]:
        runs.append(arg)
        await asyncio.sleep(sleep)
        return VALUE

    return decorator(compute), decorator.cache.close


def stampede(config: dict[str, Any]) -> dict[str, Any]:
    runs: list[int] = []
    latencies: list[float] = []
    results: list[Any] = []
    library, mode, callers = config["library"], config["mode"], config["callers"]
    if library == "memo":
        sync_fn, async_fn, aclose = _memo_fns(config, runs)
    elif library == "dogpile.cache":
        sync_fn, async_fn, aclose = _dogpile_fn(config, runs), None, None
    else:
        async_fn, aclose = _aiocache_fns(config, runs)
        sync_fn = None
    _until(config["start_at"])
    if mode == "threads":
        lock = threading.Lock()

        def one() -> None:
            t0 = time.perf_counter()
            value = sync_fn(1)
            with lock:
                latencies.append(time.perf_counter() - t0)
                results.append(value)

        threads = [threading.Thread(target=one) for _ in range(callers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:

        async def main() -> None:
            async def one() -> None:
                t0 = time.perf_counter()
                value = await async_fn(1)
                latencies.append(time.perf_counter() - t0)
                results.append(value)

            await asyncio.gather(*(one() for _ in range(callers)))
            if aclose is not None:
                await aclose()

        asyncio.run(main())
    return {"runs": len(runs), "latencies": latencies, "right": sum(r == VALUE for r in results)}


# -- the invalidate-vs-fill race ----------------------------------------------------------


def race(config: dict[str, Any]) -> dict[str, Any]:
    """Trial i starts at start_at + i*slot in both processes.

    The reader calls the cached `read(i)`, which reads the source (a plain
    memcached key) and takes a little while; the writer, at a random moment of
    the same slot, changes the source and invalidates `read(i)`. Afterwards the
    entry must never hold the value from before the write.
    """
    host, port = config["address"].split(":")
    source = Client((host, int(port)), no_delay=True)
    cache = memo.Cache(config["url"], prefix=config["prefix"], leases=config["leases"])
    tag = config["prefix"]

    # Reader and writer processes share the entries: their clients and configs differ.
    @cache.cached(ns="race", ttl=600, ignore=("source", "config"))
    def read(i: int) -> str:
        value = (source.get(f"{tag}src{i}") or b"none").decode()
        time.sleep(random.uniform(0, config["work"]))
        return value

    rng = random.Random(config["seed"])
    start, slot = config["start_at"], config["slot"]
    for i in range(config["trials"]):
        at = start + i * slot
        if config["role"] == "reader":
            _until(at)
            read(i)
        else:
            _until(at + rng.uniform(0, config["work"] * 1.5))
            source.set(f"{tag}src{i}", b"new", noreply=False)
            read.invalidate(i)
    stale = 0
    if config["role"] == "writer":
        time.sleep(config["work"] * 2 + 0.05)
        for i in range(config["trials"]):
            raw = cache.backend.get(read.key_for(i))
            if raw is not None and not is_lease(raw):
                stale += memo.Codec().decode(raw) != "new"
    cache.close()
    source.close()
    return {"stale": stale, "trials": config["trials"]}


if __name__ == "__main__":
    command, raw = sys.argv[1], json.loads(sys.argv[2])
    raw.setdefault("prefix", uuid.uuid4().hex[:10] + ":")
    print(json.dumps(stampede(raw) if command == "stampede" else race(raw)))
