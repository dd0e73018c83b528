"""Background work for stale-while-revalidate: at most one refresh per key at a time.

Sync callers hand refreshes to a small bounded thread pool (created on first
use, and again in a forked child, whose copy has no threads); async callers get
a task on their own event loop. Either way a caller that served a stale value
returns at once, and a key already being refreshed in this process is not
refreshed twice; across processes the refresh lease decides who recomputes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["Refresher"]

logger = logging.getLogger("memo")

#: Threads that run sync refreshes, for every Cache of the process.
MAX_WORKERS = 4


class _Pool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._pid = 0

    def submit(self, job: Callable[[], Any]) -> None:
        with self._lock:
            if self._executor is None or self._pid != os.getpid():
                self._executor = ThreadPoolExecutor(MAX_WORKERS, thread_name_prefix="memo-refresh")
                self._pid = os.getpid()
            executor = self._executor
        executor.submit(job)


_POOL = _Pool()


class Refresher:
    """Run refreshes in the background, one per key at a time in this process."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._running: set[Hashable] = set()
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    def _claim(self, key: Hashable) -> bool:
        with self._lock:
            if key in self._running:
                return False
            self._running.add(key)
            return True

    def _release(self, key: Hashable) -> None:
        with self._lock:
            self._running.discard(key)

    def submit(self, key: Hashable, job: Callable[[], Any]) -> bool:
        """Run `job` on the refresh pool unless `key` is being refreshed; True if started."""
        if not self._claim(key):
            return False

        def run() -> None:
            try:
                job()
            except Exception:
                logger.warning("memo: refreshing a stale entry of %s failed", self._name, exc_info=True)
            finally:
                self._release(key)

        try:
            _POOL.submit(run)
        except RuntimeError:  # interpreter shutting down: the stale value was served; skip
            self._release(key)
            return False
        return True

    def asubmit(self, key: Hashable, job: Callable[[], Awaitable[Any]]) -> bool:
        """Run `job` as a task of the running loop unless `key` is being refreshed."""
        if not self._claim(key):
            return False

        async def run() -> None:
            try:
                await job()
            except Exception:
                logger.warning("memo: refreshing a stale entry of %s failed", self._name, exc_info=True)
            finally:
                self._release(key)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)  # a task nobody references can be collected mid-flight
        task.add_done_callback(self._tasks.discard)
        return True
