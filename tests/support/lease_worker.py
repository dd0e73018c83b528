"""A worker process for the cross-process lease tests and benchmarks.

    python lease_worker.py '<json config>'

Config: url, prefix, ns, mode ("threads" or "tasks"), callers, arg, sleep
(seconds the function takes), gate (a path: the sync function returns only once
it exists), leases (bool), lease_wait, lease_ttl,
start_at (Unix time at which every caller starts, so processes collide), and
for mode "hold": take the lease and compute forever (killed by the test);
mode "key": print the key of the call; mode "invalidate": invalidate it.

Prints one JSON line: {"runs": how often the function ran here,
"latencies": [seconds per caller], "values": [results]}.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from typing import Any

import memo


def main(config: dict[str, Any]) -> None:
    cache = memo.Cache(
        config["url"],
        prefix=config["prefix"],
        leases=config.get("leases", True),
        lease_wait=config.get("lease_wait", 5.0),
        lease_ttl=config.get("lease_ttl", 10.0),
        timeout=config.get("timeout", 0.25),
    )
    runs: list[int] = []
    sleep = float(config.get("sleep", 0.5))
    mode = config["mode"]
    value_of = config.get("value", "v1")
    gate = config.get("gate")

    # The workers stand for one function over a changing source: what they capture
    # (a run counter, the mode, the source's value) is left out of the function's identity.
    if mode == "tasks":

        @cache.cached(ns=config["ns"], ttl=60, ignore=("runs", "sleep", "value_of"))
        async def acompute(arg: str) -> str:
            runs.append(1)
            await asyncio.sleep(sleep)
            return f"{value_of}:{arg}"

    @cache.cached(ns=config["ns"], ttl=60, ignore=("runs", "mode", "sleep", "value_of"))
    def compute(arg: str) -> str:
        runs.append(1)
        if mode == "hold":
            print(json.dumps({"holding": True}), flush=True)
            time.sleep(3600)
        time.sleep(sleep)
        if gate:  # hold the computation until the test opens the gate (creates the file)
            deadline = time.monotonic() + 30
            while not os.path.exists(gate) and time.monotonic() < deadline:
                time.sleep(0.01)
        return f"{value_of}:{arg}"

    if mode == "key":
        print(json.dumps({"key": compute.key_for(config["arg"])}))
        return
    if mode == "invalidate":
        print(json.dumps({"invalidated": compute.invalidate(config["arg"])}))
        return
    start_at = float(config.get("start_at", 0))
    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    latencies: list[float] = []
    values: list[str] = []
    lock = threading.Lock()

    def one() -> None:
        t0 = time.perf_counter()
        value = compute(config["arg"])
        with lock:
            latencies.append(time.perf_counter() - t0)
            values.append(value)

    if mode in ("threads", "hold"):
        threads = [threading.Thread(target=one) for _ in range(int(config.get("callers", 1)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:

        async def run_tasks() -> None:
            async def task() -> None:
                t0 = time.perf_counter()
                value = await acompute(config["arg"])
                latencies.append(time.perf_counter() - t0)
                values.append(value)

            await asyncio.gather(*(task() for _ in range(int(config.get("callers", 1)))))
            await cache.aclose()

        asyncio.run(run_tasks())
    print(json.dumps({"runs": len(runs), "latencies": latencies, "values": values, "stats": cache.stats()}))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
