"""Benchmark fixtures: memcached processes pinned beside the benchmark process, and shared values.

Pinning: loopback round trips are ~3x slower and much noisier when the client
and the server run on different CPUs, so when benchmarks are enabled and the
machine allows it, this process and every memcached it starts share CPU 0.
Whether that happened is recorded in the machine info of the results.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from memcached_fixtures import MemcachedProcess, _start_or_skip

import memo

PIN_CPU = 0
_state: dict[str, Any] = {"pinned": False, "reason": "benchmarks disabled (quick mode)"}


def _enabled(config: pytest.Config) -> bool:
    return not config.getoption("benchmark_disable", False) or config.getoption("benchmark_enable", False)


def pytest_configure(config: pytest.Config) -> None:
    if not _enabled(config):
        return
    if not hasattr(os, "sched_setaffinity") or shutil.which("taskset") is None:
        _state.update(pinned=False, reason="taskset or sched_setaffinity not available")
        return
    try:
        os.sched_setaffinity(0, {PIN_CPU})
    except OSError as exc:
        _state.update(pinned=False, reason=f"could not pin: {exc}")
        return
    _state.update(pinned=True, reason=f"benchmark process and memcached pinned to CPU {PIN_CPU}")


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    from importlib import metadata

    versions = {}
    for name in (
        "memo",
        "pymemcache",
        "aiomcache",
        "orjson",
        "wrapt",
        "dogpile.cache",
        "aiocache",
        "langgraph",
        "langgraph-checkpoint",
        "redis",
        "uvloop",
        "emcache",
    ):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    machine_info["memo"] = {"pinning": dict(_state), "versions": versions, "cpus": os.cpu_count()}
    memcached = shutil.which("memcached") or "/usr/bin/memcached"
    try:
        import subprocess

        out = subprocess.run([memcached, "-V"], capture_output=True, text=True, timeout=5).stdout.strip()
        machine_info["memo"]["memcached"] = out
    except OSError:
        machine_info["memo"]["memcached"] = "not found"


class PinnedMemcached(MemcachedProcess):
    """A memcached that runs on the benchmark's CPU when pinning is on."""

    def argv(self) -> list[str]:
        argv = [*super().argv(), "-t", "1"]
        return ["taskset", "-c", str(PIN_CPU), *argv] if _state["pinned"] else argv


def _start(n: int) -> list[MemcachedProcess]:
    started = []
    for _ in range(n):
        try:
            started.append(PinnedMemcached(memory_mb=64).start())
        except Exception:
            started.append(_start_or_skip(memory_mb=64))
    return started


@pytest.fixture(scope="session")
def servers() -> Iterator[Callable[[int], list[MemcachedProcess]]]:
    """`servers(n)`: n memcached processes, started once per session and shared."""
    pools: dict[int, list[MemcachedProcess]] = {}

    def get(n: int) -> list[MemcachedProcess]:
        if n not in pools:
            pools[n] = _start(n)
        return pools[n]

    yield get
    for pool in pools.values():
        for process in pool:
            process.cleanup()


@pytest.fixture(scope="session")
def server(servers: Callable[[int], list[MemcachedProcess]]) -> MemcachedProcess:
    return servers(1)[0]


@pytest.fixture
def memo_cache(server: MemcachedProcess) -> Iterator[memo.Cache]:
    """A memo Cache on the shared server, with a key prefix of its own."""
    cache = memo.Cache(server.url, prefix=f"b{uuid.uuid4().hex[:8]}:")
    yield cache
    cache.close()
    asyncio.run(cache.aclose())


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A private event loop for timing async code from a sync benchmark."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # dogpile.cache keeps one pymemcache client per thread and never closes them, so the
    # peers' sockets are collected (with a ResourceWarning) during later cases. memo's own
    # resource hygiene is checked by the test suite, where warnings are errors.
    bench_dir = Path(__file__).parent
    for item in items:
        if bench_dir in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.filterwarnings("ignore::ResourceWarning"))
            item.add_marker(pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"))
