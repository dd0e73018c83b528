"""Single-flight: concurrent misses on one key inside a process compute once.

The thread flavour lets the first caller (the leader) compute while the others
wait on an event. The asyncio flavour runs the computation in its own task and
lets every caller await it through `asyncio.shield`, so cancelling one waiter
never cancels the others or the computation; the computation is cancelled only
when the last waiter has gone, and it leaves the table at that moment, so a
caller arriving afterwards starts afresh instead of joining (and receiving the
cancellation of) work nobody waits for any more.

Rules that keep a flight from hanging:

- Re-entry computes. A computation that calls its own function with arguments
  mapping to the same key (through `key=` or `ignore=`) would wait for itself.
  The keys a computation leads are recorded in a context variable (threads:
  per thread; asyncio: the leader task and the tasks it starts), and a call for
  a key the caller itself leads computes instead of waiting.
- A forked child starts with empty tables (`os.register_at_fork`): a key the
  parent was computing at fork time has no leader in the child.

Followers must not share the leader's object: `copy_for_follower` gives each its
own copy (decoded from the stored bytes, else `copy.deepcopy`), or says that the
follower must compute for itself.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Hashable
from functools import partial
from typing import Any, Generic, TypeVar

from ._sentinels import MISS

__all__ = ["AsyncFlight", "Flight", "copy_for_follower"]

T = TypeVar("T")

#: The (flight, key) pairs the current thread or task chain is computing as leader, outermost
#: first: a tuple, as short as the nesting of computations (one item, or none, as a rule).
_leading: contextvars.ContextVar[tuple[tuple[int, Hashable], ...]] = contextvars.ContextVar(
    "memo_leading", default=()
)


class _Call(Generic[T]):
    """One computation in flight: `done` is held until it ends.

    A held lock rather than an `Event`: a lock is one allocation and one acquire
    (an `Event` builds a `Condition` and notifies through it, about 2 µs per miss),
    and nobody waits in the usual case. Followers wait by taking the lock and
    handing it on; any thread may release it.
    """

    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Lock()
        self.done.acquire()
        self.result: T | None = None
        self.error: BaseException | None = None

    def wait(self) -> None:
        """Block until the computation has ended."""
        with self.done:
            pass


class Flight(Generic[T]):
    """Run one computation per key at a time across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[Hashable, _Call[T]] = {}
        _FLIGHTS.add(self)

    def _forget(self) -> None:
        # In a forked child: the parent's leaders do not exist here.
        self._lock = threading.Lock()
        self._calls = {}

    def run(
        self,
        key: Hashable,
        compute: Callable[[], T],
        alone: Callable[[], T] | None = None,
        on_follow: Callable[[], object] | None = None,
    ) -> tuple[T, bool]:
        """Return `(result, led)`: `led` is True for the caller that ran `compute`.

        `alone` is what a re-entrant call runs instead of `compute` (default: `compute`):
        the outer computation holds whatever `compute` would wait for. `on_follow` runs
        once before a caller starts waiting for another's computation, or runs `alone`
        (to give back what it took for a computation of its own, which the leader may be
        waiting for).
        """
        mine = (id(self), key)
        leading = _leading.get()
        if mine in leading:  # re-entry: waiting would be waiting for ourselves
            if on_follow is not None:
                on_follow()  # what this call took for a computation of its own is not needed
            return (alone or compute)(), True
        while True:
            with self._lock:
                call = self._calls.get(key)
                leader = call is None
                if call is None:
                    call = self._calls[key] = _Call()
            if leader:
                break
            if on_follow is not None:
                on_follow()
                on_follow = None
            call.wait()
            if call.error is None:
                return call.result, False  # type: ignore[return-value]
            if isinstance(call.error, Exception):
                raise call.error
            # The leader was interrupted (KeyboardInterrupt, SystemExit in its thread):
            # that is not this caller's to re-raise; lead a computation of its own.
        calls = self._calls
        token = _leading.set((*leading, mine))
        try:
            call.result = compute()
            return call.result, True
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            try:
                _leading.reset(token)
                # Without the lock: only its leader takes a call out, and nobody replaces it.
                if calls.get(key) is call:
                    del calls[key]
            finally:
                call.done.release()  # even if interrupted here: followers must never hang


class _Shared:
    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.waiters = 0


class AsyncFlight(Generic[T]):
    """Run one computation per key at a time across the tasks of an event loop."""

    def __init__(self) -> None:
        self._calls: dict[tuple[int, Hashable], _Shared] = {}
        _FLIGHTS.add(self)

    def _forget(self) -> None:
        self._calls = {}

    async def run(
        self,
        key: Hashable,
        compute: Callable[[], Awaitable[T]],
        alone: Callable[[], Awaitable[T]] | None = None,
        on_follow: Callable[[], Awaitable[object]] | None = None,
    ) -> tuple[T, bool]:
        """Return `(result, led)`; `led` is True for the caller whose task started `compute`.

        `alone` is what a re-entrant call awaits instead of `compute` (default: `compute`);
        `on_follow` is awaited before a caller joins another's computation (see `Flight.run`).
        """
        mine = (id(self), key)
        leading = _leading.get()
        if mine in leading:  # re-entry from the computation (or a task it started)
            if on_follow is not None:
                await on_follow()
            return await (alone or compute)(), True
        loop = asyncio.get_running_loop()
        slot = (id(loop), key)
        entry = self._calls.get(slot)
        leader = entry is None or entry.task.done()
        if not leader and on_follow is not None:
            await on_follow()
            entry = self._calls.get(slot)  # the computation may have ended meanwhile
            leader = entry is None or entry.task.done()
        if leader:
            # The task runs in a copy of this context that also says it leads `key`.
            context = contextvars.copy_context()
            context.run(_leading.set, (*leading, mine))
            task: asyncio.Task[T] = context.run(loop.create_task, _as_coroutine(compute))
            entry = self._calls[slot] = _Shared(task)
            task.add_done_callback(partial(self._finished, slot, entry))
        assert entry is not None
        entry.waiters += 1
        try:
            return await asyncio.shield(entry.task), leader
        finally:
            entry.waiters -= 1
            if entry.waiters == 0 and not entry.task.done():
                # Nobody is waiting any more: stop the work nobody will use, and
                # take it out of the table now, so that no new caller joins it.
                if self._calls.get(slot) is entry:
                    del self._calls[slot]
                entry.task.cancel()

    def _finished(self, slot: tuple[int, Hashable], entry: _Shared, task: asyncio.Task[T]) -> None:
        if self._calls.get(slot) is entry:
            del self._calls[slot]
        if not task.cancelled():
            task.exception()  # retrieved: the waiters re-raise it; silence "never retrieved"


async def _as_coroutine(compute: Callable[[], Awaitable[T]]) -> T:
    return await compute()


def copy_for_follower(value: Any, data: bytes | None, decode: Callable[[bytes], Any]) -> Any:
    """Return a follower's own copy of the leader's result, or `MISS`: then it must compute itself.

    The copy is decoded from the bytes the leader stored when there are any
    (`decode` returns `MISS` for bytes it cannot read); otherwise it is a
    `copy.deepcopy` of the leader's object (results that could not be encoded).
    """
    if data is not None:
        decoded = decode(data)
        if decoded is not MISS:
            return decoded
    try:
        return copy.deepcopy(value)
    except Exception:
        return MISS


_FLIGHTS: weakref.WeakSet[Flight[Any] | AsyncFlight[Any]] = weakref.WeakSet()


def _forget_all() -> None:
    for flight in list(_FLIGHTS):
        flight._forget()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_forget_all)
