"""Leases on classic memcached commands: an invalidate always wins over a fill.

The look-aside race ("Scaling Memcache at Facebook", NSDI 2013): process A
misses and starts computing from the source of truth; B changes the source and
invalidates the key; A's store lands afterwards and the old value is served for
the whole TTL. A lease closes it. Before computing, A stores a *lease marker*
under the key itself (`add`: only if the key is absent) and reads back its cas
unique in the same round trip (`gets`, pipelined). A stores its result with
`cas` against that unique, so the store succeeds only if nothing touched the key
meanwhile: an invalidate (`delete`), a refresh or a write-through (`set` of a
new marker) each change or remove it and void the lease. The caller still gets
its computed value; the refused store is counted as `lease_lost`.

The marker also tells other processes that someone is computing the value:
instead of computing too, they poll the key (`wait`) until the value replaces
the marker or `lease_wait` runs out. A marker expires after `lease_ttl`, so a
holder that died delays the others by at most that long.

Only `add`, `gets`, `cas`, `get`, `set` and `delete` are used: they work on every
memcached, through twemproxy and mcrouter, and on ElastiCache, where the meta
protocol's native leases are not available everywhere.

Every path here is a sans-I/O step generator (see `memo._drive`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Callable
from typing import Any

from . import _clock
from ._codec import NATIVE_LEASE, Won, is_lease, lease_marker
from ._drive import Steps, Verb

__all__ = [
    "HELD",
    "Acquired",
    "adopt",
    "Found",
    "Held",
    "Lease",
    "acquire",
    "acquire_or_wait",
    "drop",
    "hold",
    "invalidate",
    "lock",
    "release",
    "store",
    "wait",
]

#: First and longest pause between two polls of a key whose lease another caller holds.
POLL_FIRST, POLL_MAX = 0.005, 0.05


def new_owner() -> str:
    """Return a fresh lease owner token (96 random bits, hex)."""
    return os.urandom(12).hex()


class Lease:
    """One caller's claim on a key: the marker it wrote there, once it wrote one.

    The owner of a fill keeps this object from before it asks for the lease until
    it has stored or released it, so that every way out (including a cancellation
    that came while the request was on the wire) can `release` exactly its own
    marker and nobody else's.
    """

    __slots__ = ("key", "marker", "unique")

    def __init__(self, key: str) -> None:
        self.key = key
        #: The marker this caller last tried to put under `key` (None: it never tried).
        self.marker: bytes | None = None
        #: The cas unique the lease must still have to be this caller's: set for a lease
        #: the server granted itself (`adopt`), whose marker every such lease shares.
        self.unique: int | None = None

    def __repr__(self) -> str:
        return f"Lease({self.key!r})"


#: Leases this process holds now, with the backend they live on: given back at exit
#: (a fill whose thread or event loop never comes back to finish it).
_HELD: dict[int, tuple[Lease, Any]] = {}


def hold(lease: Lease, backend: Any) -> None:
    """Note that this process holds `lease` on `backend` until `drop`."""
    _HELD[id(lease)] = (lease, backend)


def drop(lease: Lease) -> None:
    """The holder has stored or released `lease`."""
    _HELD.pop(id(lease), None)


@atexit.register
def _release_held() -> None:
    from ._drive import run_sync

    for lease, backend in list(_HELD.values()):
        with contextlib.suppress(Exception):
            run_sync(backend, release(lease))
    _HELD.clear()


class Acquired:
    """This caller holds the lease: store with `store(key, ..., unique)`."""

    __slots__ = ("unique",)

    def __init__(self, unique: int) -> None:
        self.unique = unique

    def __repr__(self) -> str:
        return f"Acquired({self.unique})"


class Held:
    """Another caller holds the lease: wait for its value."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "HELD"


HELD = Held()


class Found:
    """A usable value is stored already (another caller filled it meanwhile)."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw


def acquire(
    lease: Lease | str, lease_ttl: float, usable: Callable[[bytes], bool]
) -> Steps[Acquired | Held | Found]:
    """Take the lease of `lease.key` for a fill, or say why not (a bare key: a lease nobody releases).

    `usable(raw)` tells whether stored bytes are a value the caller can return
    (fresh and decodable). A stored value that is not usable (expired, or bytes
    that cannot be decoded) is replaced by this caller's marker with `cas`, so
    that it too is refilled under a lease.
    """
    if isinstance(lease, str):
        lease = Lease(lease)
    key = lease.key
    for _ in range(3):
        marker = lease.marker = lease_marker(new_owner())
        added, found = yield (Verb.LEASE, (key, marker, lease_ttl))
        if found is None:
            continue  # deleted (an invalidate) or expired between add and gets: try again
        raw, unique = found
        if added and raw == marker:
            return Acquired(unique)
        if is_lease(raw):
            return HELD
        if usable(raw):
            return Found(raw)
        if (yield (Verb.CAS, (key, marker, lease_ttl, unique))):
            got = yield (Verb.GETS, (key,))
            if got is not None and got[0] == marker:
                return Acquired(got[1])
    return HELD


def adopt(lease: Lease, won: Won) -> None:
    """Make `lease` the one a leased read granted (`Backend.get_or_lease`): no request needed;
    the value is stored with `store(key, ..., won.unique)`.

    The server's placeholder reads as `NATIVE_LEASE` for everyone; this caller's is
    the one still carrying `won.unique`.
    """
    lease.marker, lease.unique = NATIVE_LEASE, won.unique


def release(lease: Lease, keep: tuple[bytes, float] | None = None) -> Steps[bool]:
    """Remove this caller's marker if it is still there; True if it was.

    Whatever else the key holds now (a value, another caller's marker) is left
    alone: an exit path must give back its own lease, not void someone else's.
    `keep`: `(bytes, ttl)` to put back in the marker's place instead of deleting
    it (the stale copy a fill replaced, kept for `stale_if_error`).
    """
    if lease.marker is None:
        return False
    got: tuple[bytes, int] | None = yield (Verb.GETS, (lease.key,))
    if got is None or got[0] != lease.marker or (lease.unique is not None and got[1] != lease.unique):
        return False
    if keep is not None:
        restored: bool = yield (Verb.CAS, (lease.key, keep[0], keep[1], got[1]))
        return restored
    deleted: bool = yield (Verb.DELETE, (lease.key,))
    return deleted


def store(key: str, data: bytes, ttl: float | None, unique: int) -> Steps[bool | None]:
    """Replace the lease marker with the value: True; False when the lease was lost or the store
    refused; None when the backend says the server refused the value (`Backend.cas`)."""
    stored: bool | None = yield (Verb.CAS, (key, data, ttl, unique))
    return stored


def wait(key: str, deadline: float, usable: Callable[[bytes], bool]) -> Steps[bytes | None]:
    """Poll `key` until a usable value replaces the marker; None when the marker is
    gone without one (its holder lost or dropped the lease) or `deadline` passed."""
    delay = POLL_FIRST
    while True:
        raw: bytes | None = yield (Verb.GET, (key,))
        if raw is None:
            return None
        if not is_lease(raw):
            return raw if usable(raw) else None
        left = deadline - _clock.monotonic()
        if left <= 0:
            return None
        yield (Verb.SLEEP, (min(delay, left),))
        delay = min(delay * 1.5, POLL_MAX)


def acquire_or_wait(
    lease: Lease | str,
    lease_ttl: float,
    lease_wait: float,
    usable: Callable[[bytes], bool],
    on_wait: Callable[[], object] = lambda: None,
) -> Steps[Acquired | Found | None]:
    """The miss path's first half: take the lease, or wait for the caller that holds it.

    Returns `Acquired` (compute, then `store`), `Found` (a usable value is there,
    stored meanwhile or waited for), or None: the holder is slow or gone after
    `lease_wait` seconds, so compute without storing and leave its lease alone.
    `on_wait()` is called once, when this caller starts waiting.
    """
    if isinstance(lease, str):
        lease = Lease(lease)
    outcome = yield from acquire(lease, lease_ttl, usable)
    deadline = 0.0
    while outcome is HELD:
        if not deadline:
            deadline = _clock.monotonic() + lease_wait
            on_wait()
        raw = yield from wait(lease.key, deadline, usable)
        if raw is not None:
            return Found(raw)
        if _clock.monotonic() >= deadline:
            return None
        outcome = yield from acquire(lease, lease_ttl, usable)
    assert not isinstance(outcome, Held)
    return outcome


def lock(lease: Lease | str, lease_ttl: float) -> Steps[int | None]:
    """Write path: put a marker over whatever `key` holds and return its unique.

    Use it before changing the source of truth: from then on no fill that loaded
    earlier can store (its `cas` fails), and readers wait or read the source.
    Install the new value with `store(key, data, ttl, unique)` afterwards, and
    `invalidate` the key if that fails. None: the marker could not be confirmed.
    """
    if isinstance(lease, str):
        lease = Lease(lease)
    key = lease.key
    marker = lease.marker = lease_marker(new_owner())
    if not (yield (Verb.SET, (key, marker, lease_ttl))):
        return None
    got: tuple[bytes, int] | None = yield (Verb.GETS, (key,))
    if got is None or got[0] != marker:
        return None
    return got[1]


def invalidate(key: str) -> Steps[bool]:
    """Delete `key`, voiding any lease on it: no fill that started before can store."""
    deleted: bool = yield (Verb.DELETE, (key,))
    return deleted
