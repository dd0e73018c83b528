"""The fill lifecycle: after a miss, compute once and store, and give back what was taken.

A fill is: lease taken → function run → value encoded → stored → lease released
or replaced by the value. `fill` owns the lease (`leases.Lease`) from before it is
asked for until the fill ends, and every way out gives it back:

| exit                                  | the caller gets         | counted         | the marker       |
|---------------------------------------|-------------------------|-----------------|------------------|
| stored                                | its value               | `sets`          | now the value    |
| not to be stored (`cache_if`, codec)  | its value               | `encode_errors` | released         |
| larger than the backend's item size   | its value               | `not_stored`    | released         |
| store refused by the server           | its value               | `not_stored`    | released         |
| lease lost (invalidate, set, refresh) | its value; followers    | `lease_lost`    | another's now    |
|                                       | fill afresh             |                 |                  |
| cleared while computing               | as for a lost lease     | `lease_lost`    | released         |
| the function or the encoder raised    | the exception           |                 | released         |
| cancelled, `GeneratorExit`, Ctrl-C    | the same interruption   |                 | released         |
| backend error while storing           | its value               | `errors`        | release tried    |
| backend error taking the lease        | its value, not stored   | `errors`        | release tried    |
| the holder is slow (`lease_wait`)     | its value, not stored   | `lease_waits`   | (none taken)     |
| a value appeared meanwhile            | that value              |                 | (none taken)     |
| granted by the read, but another      | the leader's value      |                 | released before  |
| thread of this process leads the key  |                         |                 | following        |
| a leased read (meta `mg … N`) cut off | the interruption, or    | `errors`        | deleted in the   |
| by a timeout or a cancellation        | its value, not stored   |                 | background       |

An interruption's clean-up is finished by the driver even when the caller can
no longer await (`memo._drive`).

On a server with its own leases (memcached's meta protocol), the hit path's read
takes the lease when it misses (`Backend.get_or_lease` answers `Won`), and `fill`
starts from it: a miss and its fill cost two round trips. That lease is the
server's placeholder, whose cas is the owner's proof; `leases.release` compares it.

`Filled.outcome` tells followers in this process (single flight) whether the
leader's value is still the truth: after `LOST` they must do what a caller
arriving after the invalidate would, never copy the leader's value.

`fill_plain` is the same miss path for a Cache without leases.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from . import _leases as leases
from ._codec import Won
from ._drive import Steps, Verb
from ._errors import BackendError

__all__ = ["DOING", "FillTarget", "Filled", "Granted", "Outcome", "fill", "fill_plain", "shareable"]


class Outcome(enum.Enum):
    """How a fill ended, as its target counts it and its followers read it."""

    WAITING = "lease_wait"  # reported when the caller starts waiting for another's lease
    ACQUIRED = "lease_acquired"  # reported when the caller took the lease
    STORED = "set"
    NOT_STORED = "not_stored"  # the backend refused it (too large, a server error reply)
    SKIPPED = "skipped"  # not to be stored: `cache_if` said no, or it could not be encoded
    LOST = "lease_lost"  # another writer won: an invalidate, set, refresh or clear
    UNLEASED = "unleased"  # computed without a lease (backend down, holder slow): not stored
    FOUND = "found"  # another caller's value, stored meanwhile or waited for
    LEASE_FAILED = "lease_failed"  # reported with the BackendError of taking the lease
    WRITE_FAILED = "write_failed"  # reported with the BackendError of storing
    READ_FAILED = "read_failed"  # reported with the BackendError of re-reading (no leases)


#: What was being done when each kind of backend error came (for the error log).
DOING = {
    Outcome.LEASE_FAILED: "taking a lease",
    Outcome.WRITE_FAILED: "a write",
    Outcome.READ_FAILED: "a read",
}


class Filled(NamedTuple):
    """What a fill produced: the value, the bytes stored (or to copy from), how it ended."""

    value: Any
    data: bytes | None
    outcome: Outcome


def shareable(filled: Filled) -> bool:
    """Whether followers may be given (a copy of) the leader's value."""
    return filled.outcome is not Outcome.LOST


class FillTarget(Protocol):
    """What `fill` needs from its caller (a decorated function, the value API, ...).

    Attributes:
        lease_ttl: seconds the lease lasts.
        lease_wait: seconds to wait for another caller's lease.
        ttl: what the backend keeps the stored value for (None: no expiry).
        max_size: the largest value the backend stores.
        found: where `usable` puts the value it accepted.
        backend: where the lease lives (given back there at exit if the fill never ends).
        keep: `(bytes, ttl)` a released lease puts back instead of deleting (a stale copy
            kept for `stale_if_error`), or None.
    """

    backend: Any
    keep: tuple[bytes, float] | None
    lease_ttl: float
    lease_wait: float
    ttl: float | None
    max_size: int
    found: list[Any]

    def usable(self, raw: bytes) -> bool:
        """Whether stored bytes are a fresh value (then appended to `found`)."""

    def encode(self, value: Any) -> bytes | None:
        """The bytes to store for a result, or None: not to be stored. May raise (`strict`)."""

    def current(self) -> bool:
        """Whether the key is still reachable (no clear came while computing)."""

    def report(self, outcome: Outcome, error: BackendError | None = None) -> None:
        """Count an outcome (`LEASE_FAILED` and `WRITE_FAILED` come with their error)."""


def fill(key: str, target: FillTarget, won: Won | None = None) -> Steps[Filled]:
    """The miss path under a lease: compute once across processes and store (see the table above).

    `won`: the lease a leased read granted already (`Backend.get_or_lease`); else it is asked for.
    """
    lease = leases.Lease(key)
    if won is None:
        got = yield from _take(lease, target)
        if isinstance(got, Filled):
            return got
        unique = got.unique
    else:
        leases.adopt(lease, won)
        unique = won.unique
    try:
        target.report(Outcome.ACQUIRED)  # an event hook may raise: the lease goes back then too
        leases.hold(lease, target.backend)
        value = yield (Verb.COMPUTE, ())
        data = target.encode(value)
        outcome = yield from _settle(lease, unique, data, target)
    except BaseException:
        yield from _release_quietly(lease, target.keep)
        raise
    finally:
        leases.drop(lease)
    return Filled(value, data, outcome)


def _take(lease: leases.Lease, target: FillTarget) -> Steps[leases.Acquired | Filled]:
    """Ask for the lease: `Acquired`, or the fill's end when it is not to be had."""
    try:
        got = yield from leases.acquire_or_wait(
            lease, target.lease_ttl, target.lease_wait, target.usable, lambda: target.report(Outcome.WAITING)
        )
    except BackendError as exc:
        target.report(Outcome.LEASE_FAILED, exc)
        yield from _release_quietly(lease, target.keep)
        value = yield (Verb.COMPUTE, ())
        return Filled(value, None, Outcome.UNLEASED)
    except BaseException:
        yield from _release_quietly(lease, target.keep)  # interrupted while asking: our marker may be there
        raise
    if got is None:
        # The holder is slow or gone: compute, but leave its lease alone.
        value = yield (Verb.COMPUTE, ())
        return Filled(value, target.encode(value), Outcome.UNLEASED)
    if isinstance(got, leases.Found):
        return Filled(target.found[-1], got.raw, Outcome.FOUND)
    return got


def _settle(lease: leases.Lease, unique: int, data: bytes | None, target: FillTarget) -> Steps[Outcome]:
    """Store the value under the lease, or release the lease; return (and count) how it ended."""
    try:
        if data is None:
            outcome = Outcome.SKIPPED
        elif len(data) > target.max_size:
            outcome = Outcome.NOT_STORED
        elif not target.current():
            outcome = Outcome.LOST  # cleared while computing: the key is unreachable now
        else:
            stored = yield from leases.store(lease.key, data, target.ttl, unique)
            if stored:
                target.report(Outcome.STORED)
                return Outcome.STORED
            # Not stored: the server refused the value (None: an error reply; memcached
            # may drop our marker itself then), or our marker is still there (a refusal
            # without a reason), or another writer replaced it (lost).
            released = yield from leases.release(lease, target.keep)
            outcome = Outcome.NOT_STORED if stored is None or released else Outcome.LOST
            target.report(outcome)
            return outcome
    except BackendError as exc:
        target.report(Outcome.WRITE_FAILED, exc)
        yield from _release_quietly(lease, target.keep)
        return Outcome.UNLEASED
    if outcome is not Outcome.SKIPPED:
        target.report(outcome)
    yield from _release_quietly(lease, target.keep)
    return outcome


def _release_quietly(lease: leases.Lease, keep: tuple[bytes, float] | None = None) -> Steps[None]:
    with contextlib.suppress(BackendError):
        yield from leases.release(lease, keep)


def fill_plain(key: str, target: FillTarget, bad: bytes | None) -> Steps[Filled]:
    """The miss path without leases: re-read (another caller may just have filled), compute, set.

    `bad`: what the hit path read and could not use, if anything (not read again as a value).
    """
    try:
        raw = yield (Verb.GET, (key,))
    except BackendError as exc:
        target.report(Outcome.READ_FAILED, exc)
        value = yield (Verb.COMPUTE, ())
        return Filled(value, None, Outcome.UNLEASED)
    if raw is not None and raw != bad and target.usable(raw):
        return Filled(target.found[-1], raw, Outcome.FOUND)
    value = yield (Verb.COMPUTE, ())
    data = target.encode(value)
    if data is None:
        return Filled(value, None, Outcome.SKIPPED)
    try:
        stored = len(data) <= target.max_size and (yield (Verb.SET, (key, data, target.ttl)))
    except BackendError as exc:
        target.report(Outcome.WRITE_FAILED, exc)
        return Filled(value, data, Outcome.UNLEASED)
    outcome = Outcome.STORED if stored else Outcome.NOT_STORED
    target.report(outcome)
    return Filled(value, data, outcome)


class Granted:
    """What a read found, holding the lease a leased read granted (`Won`) until it is used.

    A caller granted the lease may still find another thread or task of this process
    leading the key's fill (and waiting for that very lease): it gives the lease back
    before following, and a fill it leads later asks for a lease afresh.
    """

    __slots__ = ("key", "raw", "won")

    def __init__(self, key: str, raw: bytes | None) -> None:
        self.key, self.raw = key, raw
        self.won = raw if type(raw) is Won else None

    def on_follow(self, drive: Callable[[Any, Steps[None]], Any], backend: Any) -> Callable[[], Any] | None:
        """What the single flight runs before this caller follows another's fill (`run_sync` or
        `run_async` driving `give_back`), or None when the read granted no lease."""
        if self.won is None:
            return None
        return lambda: drive(backend, self.give_back())

    def give_back(self) -> Steps[None]:
        """Release the granted lease (sync and async callers drive these steps alike)."""
        assert self.won is not None
        lease = leases.Lease(self.key)
        leases.adopt(lease, self.won)
        self.raw = None
        with contextlib.suppress(BackendError):
            yield from leases.release(lease)
