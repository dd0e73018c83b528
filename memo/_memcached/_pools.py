"""The async side's pools: the connections of one server in one event loop, and of one loop.

Async connections belong to one event loop, so pools are kept per running loop
and opened lazily. When the loop shuts down through `asyncio.run` (or anything
else that calls `loop.shutdown_asyncgens()`), the loop's connections are closed
inside that loop, by a tiny async generator registered with it; a pool whose
loop was closed some other way is dropped the next time a new loop is seen.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import AsyncGenerator
from typing import Any

from .._errors import BackendTimeout, BackendUnavailable
from ._parking import Parking
from ._protocol import Connection

__all__ = ["LoopPools", "Slots", "current_loop", "expire_waiter", "wait_lost"]

_get_running_loop = asyncio.get_running_loop

# -- async: the connections of one server in one event loop ------------------------


class Slots:
    """At most `cap` connections to one server from one event loop; idle ones kept.

    Operations beyond `cap` wait, each at most the operation timeout, for a
    connection to be handed over (a `Connection`) or for a slot to open up
    (None: the waiter opens a connection itself).
    """

    __slots__ = ("batch", "cap", "closed", "flushing", "free", "gets_in_flight", "open", "waiters")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.free: list[Connection] = []
        self.open = 0
        self.waiters: collections.deque[asyncio.Future[Connection | None]] = collections.deque()
        # Coalesced gets (see `AsyncOps.aget`): the callers waiting for each key of
        # the next multi-key get, and how many gets are on the wire now.
        self.batch: dict[bytes, list[asyncio.Future[bytes | None]]] = {}
        self.gets_in_flight = 0
        self.flushing: set[asyncio.Task[None]] = set()
        # Set when the server left the cluster: connections coming back are closed.
        self.closed = False

    def take(self) -> Connection | None:
        """Return an idle, live connection, or None."""
        free = self.free
        while free:
            conn = free.pop()
            if not conn.broken:
                return conn
            self.open -= 1
        return None

    def release(self, conn: Connection) -> None:
        """Give a connection whose reply was read in full back to the pool."""
        if conn.broken or self.closed:
            self.discard(conn)
            return
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self.free.append(conn)

    def discard(self, conn: Connection) -> None:
        """Close a connection that may hold an unread reply, and free its slot."""
        conn.abort()
        self.open -= 1
        self.wake()

    def wake(self) -> None:
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def abort_all(self) -> list[Connection]:
        conns, self.free = self.free, []
        for conn in conns:
            conn.abort()
        self.open -= len(conns)
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_exception(BackendUnavailable("the memcached backend was closed"))
        self.waiters.clear()
        return conns


class LoopPools:
    """The async connections of one event loop: one `Slots` per server."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        cap: int,
        registry: dict[asyncio.AbstractEventLoop, LoopPools],
        registry_lock: threading.RLock,
        parking: Parking | None = None,
    ) -> None:
        self.loop = loop
        self.cap = cap
        # Where idle connections go when the loop ends; not when closed on purpose.
        self.parking = parking
        self.explicit = False
        # By server id, made on first use: a discovered cluster's servers come and go.
        self.slots: dict[str, Slots] = {}
        self._registry = registry
        self._registry_lock = registry_lock
        self._watch: AsyncGenerator[None, None] | None = None
        self._closed = False

    def slots_for(self, server_id: str) -> Slots:
        """Return the pool of one server in this loop, making it on first use."""
        slots = self.slots.get(server_id)
        if slots is None:
            slots = self.slots[server_id] = Slots(self.cap)
        return slots

    def forget(self, server_id: str) -> None:
        """Close the idle connections of a server that left the cluster (in this loop's thread)."""
        slots = self.slots.pop(server_id, None)
        if slots is not None:
            slots.closed = True
            slots.abort_all()

    def forget_elsewhere(self, server_id: str) -> None:
        """`forget`, from another thread: scheduled in the pool's own loop."""
        # RuntimeError: that loop is closed, and its connections went with it.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.forget, server_id)

    def start_watch(self) -> None:
        """Hook this loop's shutdown: `loop.shutdown_asyncgens()` closes the generator."""
        watch = watch_loop(self)
        # asend() registers the generator with the running loop's asyncgen
        # hooks; running it to its first yield never suspends.
        with contextlib.suppress(StopIteration):
            watch.asend(None).send(None)
        self._watch = watch

    def abort_all(self, park: bool = False) -> list[Connection]:
        """Close every idle connection (parking their sockets if `park`); those in use close when released."""
        self._closed = True
        with self._registry_lock:
            if self._registry.get(self.loop) is self:
                del self._registry[self.loop]
        conns: list[Connection] = []
        parking = self.parking if park else None
        for server_id, slots in list(self.slots.items()):
            if parking is not None:
                for conn in slots.free:
                    if not conn.broken:
                        parking.park(server_id, conn.transport)
            conns += slots.abort_all()
        return conns

    async def aclose(self) -> None:
        """Close from inside the pool's own loop, waiting for the sockets to close."""
        self.explicit = True
        watch, self._watch = self._watch, None
        if watch is not None:
            await watch.aclose()
        else:
            await wait_lost(self.abort_all())

    def close_elsewhere(self) -> None:
        """Close from outside the pool's loop (another thread, or after it stopped)."""
        self.explicit = True
        watch, self._watch = self._watch, None
        loop = self.loop
        if loop.is_closed():
            # Nothing can run in that loop any more; finish the generator here.
            # Its cleanup does not await outside its own loop, so one step ends it.
            if watch is not None:
                try:
                    watch.aclose().send(None)
                except StopIteration:
                    pass
                except RuntimeError:  # pragma: no cover - the generator is already running
                    pass
            else:
                self.abort_all()
            return
        try:
            if watch is not None:
                aclose = watch.aclose
                loop.call_soon_threadsafe(lambda: loop.create_task(aclose()))
            else:
                loop.call_soon_threadsafe(self.abort_all)
        except RuntimeError:  # the loop closed meanwhile
            self.abort_all()


async def watch_loop(pools: LoopPools) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        # The loop is ending (not an explicit close): park what can be reused.
        conns = pools.abort_all(park=not pools.explicit)
        if current_loop() is pools.loop:
            await wait_lost(conns)


def current_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return _get_running_loop()
    except RuntimeError:
        return None


async def wait_lost(conns: list[Connection]) -> None:
    """Wait (briefly) until aborted connections report their sockets closed."""
    pending = [conn.lost for conn in conns if not conn.lost.done()]
    if pending:
        await asyncio.wait(pending, timeout=1.0)


def expire_waiter(waiter: asyncio.Future[Any], server_id: str, timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(BackendTimeout(f"no free connection to memcached {server_id} within {timeout}s"))
