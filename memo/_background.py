"""Background work for stale-while-revalidate: at most one refresh per key at a time.

Sync callers hand refreshes to a few daemon threads (started on first use, and
again in a forked child, whose copy has none); async callers get a task on their
own event loop. Either way a caller that served a stale value returns at once,
and a key already being refreshed in this process is not refreshed twice; across
processes the refresh lease decides who recomputes.

Every way a refresh can end gives its refresh lease back: the steps release it
when they return, raise or are cancelled (the async driver finishes the clean-up
when the event loop ends). The threads are daemons, so a slow refresh never holds
up the interpreter's exit; at exit, the refresh leases of sync refreshes still
running are given back (`abandon`), so other processes need not wait them out.

A refresh that fails is not tried again for that key before `retry_after`
seconds, and is logged once per key per interval: a function that keeps failing
serves its stale value without being re-run on every read.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import queue
import threading
import weakref
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from . import _clock

__all__ = ["Refresher"]

logger = logging.getLogger("memo")

#: Threads that run sync refreshes, for every Cache of the process.
MAX_WORKERS = 4


class _Pool:
    """A bounded set of daemon threads fed by one queue (a pool that is never joined at exit)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Callable[[], Any]] = queue.SimpleQueue()
        self._threads = 0
        self._idle = 0
        self._pid = os.getpid()

    def submit(self, job: Callable[[], Any]) -> None:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's threads are not here
                self._jobs, self._threads, self._idle, self._pid = queue.SimpleQueue(), 0, 0, os.getpid()
            self._jobs.put(job)
            if self._idle == 0 and self._threads < MAX_WORKERS:
                self._threads += 1
                threading.Thread(
                    target=self._work, args=(self._jobs,), name="memo-refresh", daemon=True
                ).start()

    def _work(self, jobs: queue.SimpleQueue[Callable[[], Any]]) -> None:
        while True:
            with self._lock:
                self._idle += 1
            job = jobs.get()
            with self._lock:
                self._idle -= 1
            job()


_POOL = _Pool()


class Refresher:
    """Run refreshes in the background, one per key at a time in this process."""

    def __init__(self, name: str, retry_after: float = 10.0) -> None:
        self._name = name
        #: Seconds a key whose refresh failed waits before the next attempt.
        self.retry_after = retry_after
        self._running: set[Hashable] = set()
        self._failed: dict[Hashable, float] = {}  # key -> monotonic time of its next attempt
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._abandon: dict[Hashable, Callable[[], Any]] = {}
        _REFRESHERS.add(self)

    def _claim(self, key: Hashable) -> bool:
        with self._lock:
            if key in self._running:
                return False
            retry = self._failed.get(key)
            if retry is not None:
                if _clock.monotonic() < retry:
                    return False  # failed lately: serve the stale value, do not re-run yet
                del self._failed[key]
            self._running.add(key)
            return True

    def _done(self, key: Hashable, error: BaseException | None) -> None:
        with self._lock:
            self._running.discard(key)
            self._abandon.pop(key, None)
            if error is None:
                return
            if len(self._failed) > 10_000:  # keys made up per call: keep memory bounded
                self._failed.clear()
            self._failed[key] = _clock.monotonic() + self.retry_after
        logger.warning(
            "memo: refreshing a stale entry of %s failed; the stale value is served, next attempt in %gs",
            self._name,
            self.retry_after,
            exc_info=error,
        )

    def submit(self, key: Hashable, job: Callable[[], Any], abandon: Callable[[], Any] | None = None) -> bool:
        """Run `job` on the refresh threads unless `key` is being refreshed or backing off; True if started.

        `abandon()` gives the job's refresh lease back if the process exits while it runs.
        """
        if not self._claim(key):
            return False
        if abandon is not None:
            self._abandon[key] = abandon

        def run() -> None:
            error: BaseException | None = None
            try:
                job()
            except Exception as exc:
                error = exc
            finally:
                self._done(key, error)

        _POOL.submit(run)
        return True

    def asubmit(self, key: Hashable, job: Callable[[], Awaitable[Any]]) -> bool:
        """Run `job` as a task of the running loop unless `key` is being refreshed or backing off."""
        if not self._claim(key):
            return False

        async def run() -> None:
            error: BaseException | None = None
            try:
                await job()
            except Exception as exc:
                error = exc
            finally:
                self._done(key, error)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)  # a task nobody references can be collected mid-flight
        task.add_done_callback(self._tasks.discard)
        return True

    def abandon_all(self) -> None:
        """Give back the refresh leases of the sync refreshes still running (at exit)."""
        with self._lock:
            releases = list(self._abandon.values())
            self._abandon.clear()
        for release in releases:
            with contextlib.suppress(Exception):
                release()


_REFRESHERS: weakref.WeakSet[Refresher] = weakref.WeakSet()


@atexit.register
def _abandon_running() -> None:
    for refresher in list(_REFRESHERS):
        refresher.abandon_all()
