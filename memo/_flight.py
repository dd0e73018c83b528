"""Single-flight: concurrent misses on one key inside a process compute once.

The thread flavour lets the first caller (the leader) compute while the others
wait on an event. The asyncio flavour runs the computation in its own task and
lets every caller await it through `asyncio.shield`, so cancelling one waiter
never cancels the others or the computation; the computation is cancelled only
when the last waiter has gone.

Both hand followers the leader's outcome; the engine gives each
follower its own decoded copy of the stored bytes, so no two callers share one
mutable result object (the leader keeps the object its function returned).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Hashable
from functools import partial
from typing import Any, Generic, TypeVar

__all__ = ["AsyncFlight", "Flight"]

T = TypeVar("T")


class _Call(Generic[T]):
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None


class Flight(Generic[T]):
    """Run one computation per key at a time across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[Hashable, _Call[T]] = {}

    def run(self, key: Hashable, compute: Callable[[], T]) -> tuple[T, bool]:
        """Return `(result, led)`: `led` is True for the caller that ran `compute`."""
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if call is None:
                call = self._calls[key] = _Call()
        if not leader:
            call.done.wait()
            if call.error is not None:
                raise call.error
            return call.result, False  # type: ignore[return-value]
        try:
            call.result = compute()
            return call.result, True
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            with self._lock:
                del self._calls[key]
            call.done.set()


class AsyncFlight(Generic[T]):
    """Run one computation per key at a time across the tasks of an event loop."""

    def __init__(self) -> None:
        self._calls: dict[tuple[int, Hashable], list[Any]] = {}

    async def run(self, key: Hashable, compute: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Return `(result, led)`; `led` is True for the caller whose task started `compute`."""
        loop = asyncio.get_running_loop()
        slot = (id(loop), key)
        entry = self._calls.get(slot)
        leader = entry is None or entry[0].done()
        if leader:
            task: asyncio.Task[T] = loop.create_task(_as_coroutine(compute))
            entry = self._calls[slot] = [task, 0]
            task.add_done_callback(partial(self._finished, slot, entry))
        assert entry is not None
        entry[1] += 1
        try:
            return await asyncio.shield(entry[0]), leader
        finally:
            entry[1] -= 1
            if entry[1] == 0 and not entry[0].done():
                # Nobody is waiting any more: stop the work nobody will use.
                entry[0].cancel()

    def _finished(self, slot: tuple[int, Hashable], entry: list[Any], task: asyncio.Task[T]) -> None:
        if self._calls.get(slot) is entry:
            del self._calls[slot]
        if not task.cancelled():
            task.exception()  # retrieved: the waiters re-raise it; silence "never retrieved"


async def _as_coroutine(compute: Callable[[], Awaitable[T]]) -> T:
    return await compute()
