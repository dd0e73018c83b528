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

import contextlib
import os
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

from ._codec import is_lease, lease_marker
from ._drive import Steps
from ._errors import BackendError

__all__ = [
    "HELD",
    "Acquired",
    "Found",
    "Held",
    "acquire",
    "acquire_or_wait",
    "FillTarget",
    "fill",
    "invalidate",
    "lock",
    "store",
    "wait",
]

_monotonic = time.monotonic

#: First and longest pause between two polls of a key whose lease another caller holds.
POLL_FIRST, POLL_MAX = 0.005, 0.05


def new_owner() -> str:
    """Return a fresh lease owner token (96 random bits, hex)."""
    return os.urandom(12).hex()


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


def acquire(key: str, lease_ttl: float, usable: Callable[[bytes], bool]) -> Steps[Acquired | Held | Found]:
    """Take the lease of `key` for a fill, or say why not.

    `usable(raw)` tells whether stored bytes are a value the caller can return
    (fresh and decodable). A stored value that is not usable (expired, or bytes
    that cannot be decoded) is replaced by this caller's marker with `cas`, so
    that it too is refilled under a lease.
    """
    for _ in range(3):
        marker = lease_marker(new_owner())
        added, found = yield ("lease", (key, marker, lease_ttl))
        if found is None:
            continue  # deleted (an invalidate) or expired between add and gets: try again
        raw, unique = found
        if added and raw == marker:
            return Acquired(unique)
        if is_lease(raw):
            return HELD
        if usable(raw):
            return Found(raw)
        if (yield ("cas", (key, marker, lease_ttl, unique))):
            got = yield ("gets", (key,))
            if got is not None and got[0] == marker:
                return Acquired(got[1])
    return HELD


def store(key: str, data: bytes, ttl: float | None, unique: int) -> Steps[bool]:
    """Replace the lease marker with the value; False when the lease was lost."""
    stored: bool = yield ("cas", (key, data, ttl, unique))
    return stored


def wait(key: str, deadline: float, usable: Callable[[bytes], bool]) -> Steps[bytes | None]:
    """Poll `key` until a usable value replaces the marker; None when the marker is
    gone without one (its holder lost or dropped the lease) or `deadline` passed."""
    delay = POLL_FIRST
    while True:
        raw: bytes | None = yield ("get", (key,))
        if raw is None:
            return None
        if not is_lease(raw):
            return raw if usable(raw) else None
        left = deadline - _monotonic()
        if left <= 0:
            return None
        yield ("sleep", (min(delay, left),))
        delay = min(delay * 1.5, POLL_MAX)


def acquire_or_wait(
    key: str,
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
    outcome = yield from acquire(key, lease_ttl, usable)
    deadline = 0.0
    while outcome is HELD:
        if not deadline:
            deadline = _monotonic() + lease_wait
            on_wait()
        raw = yield from wait(key, deadline, usable)
        if raw is not None:
            return Found(raw)
        if _monotonic() >= deadline:
            return None
        outcome = yield from acquire(key, lease_ttl, usable)
    assert not isinstance(outcome, Held)
    return outcome


def lock(key: str, lease_ttl: float) -> Steps[int | None]:
    """Write path: put a marker over whatever `key` holds and return its unique.

    Use it before changing the source of truth: from then on no fill that loaded
    earlier can store (its `cas` fails), and readers wait or read the source.
    Install the new value with `store(key, data, ttl, unique)` afterwards, and
    `invalidate` the key if that fails. None: the marker could not be confirmed.
    """
    marker = lease_marker(new_owner())
    if not (yield ("set", (key, marker, lease_ttl))):
        return None
    got: tuple[bytes, int] | None = yield ("gets", (key,))
    if got is None or got[0] != marker:
        return None
    return got[1]


def invalidate(key: str) -> Steps[bool]:
    """Delete `key`, voiding any lease on it: no fill that started before can store."""
    deleted: bool = yield ("delete", (key,))
    return deleted


class FillTarget(Protocol):
    """What `fill` needs from its caller: a decorated function, the value API, ...

    Attributes:
        lease_ttl: seconds the lease lasts.
        lease_wait: seconds to wait for another caller's lease.
        ttl: what memcached keeps the stored value for (None: no expiry).
        max_size: the largest value the backend stores.
        found: where `usable` puts the value it accepted.
    """

    lease_ttl: float
    lease_wait: float
    ttl: float | None
    max_size: int
    found: list[Any]

    def usable(self, raw: bytes) -> bool:
        """Whether stored bytes are a fresh value (then appended to `found`)."""

    def encode(self, value: Any) -> bytes | None:
        """The bytes to store for a result, or None: not to be stored."""

    def current(self) -> bool:
        """Whether the key is still reachable (no clear came while computing)."""

    def report(self, outcome: str, error: BackendError | None = None) -> None:
        """Count an outcome: "waiting", "acquired", "stored", "not_stored", "lost",
        "lease_failed" or "write_failed" (the last two with the error)."""


def fill(key: str, target: FillTarget) -> Steps[tuple[Any, bytes | None]]:
    """The miss path: compute once across processes and store under the lease.

    Returns `(value, bytes stored or to copy from)`. A value stored meanwhile, or
    waited for, is returned from `target.found`. When the lease cannot be taken
    (backend down) or its holder is slow, the value is computed and not stored.
    """
    try:
        outcome = yield from acquire_or_wait(
            key, target.lease_ttl, target.lease_wait, target.usable, partial(target.report, "waiting")
        )
    except BackendError as exc:
        target.report("lease_failed", exc)
        value = yield ("compute", ())
        return value, None
    if outcome is None:
        # The holder is slow or gone: compute, but leave its lease alone.
        value = yield ("compute", ())
        return value, target.encode(value)
    if isinstance(outcome, Found):
        return target.found[-1], outcome.raw
    target.report("acquired")
    try:
        value = yield ("compute", ())
    except BaseException:
        # Release the lease, so that others compute now instead of waiting for nothing.
        with contextlib.suppress(BackendError):
            yield from invalidate(key)
        raise
    data = target.encode(value)
    try:
        if data is None or len(data) > target.max_size:
            if data is not None:
                target.report("not_stored")
            yield from invalidate(key)  # release the lease: nobody waits for nothing
        elif not target.current():
            # Cleared while computing: the key is unreachable; leave nothing behind.
            target.report("lost")
            yield from invalidate(key)
        elif (yield from store(key, data, target.ttl, outcome.unique)):
            target.report("stored")
        else:
            target.report("lost")
    except BackendError as exc:
        target.report("write_failed", exc)
    return value, data
