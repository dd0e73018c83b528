"""The value API: `cache.get(key)`, `set`, `delete`, `get_or_set` and their batches.

Values go through the same typed codec as `@cached` results, carry the same
exact-expiry header, and live under the same namespace generations, so
`cache.clear(ns)` drops them too. User keys are strings; each becomes a
memcached-safe key with a readable part and a digest:

    <prefix><namespace>:=<readable key>:<generation>:<blake2b-128 of namespace and key>

The readable parts are sanitised like function keys (`safe_segment`); the `=`
that starts the second part can never start a function key's second part (a
sanitised function name), so a value key and a function key cannot collide,
whatever the user's strings.

`get_or_set` fills a miss like `@cached` does: under a lease when the Cache has
leases on (one caller across processes computes, the others wait for its value;
a `delete`, `set` or `clear` that comes while it computes voids its store), and
once per key inside a process (single flight).

Each operation is written once, as sans-I/O steps (`memo._drive`), driven by the
sync or the async driver; a backend failure is thrown back into the steps at the
`yield` that asked for it, so the fail-open handling is written once too.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from . import _clock
from . import _leases as leases
from ._codec import GLOBAL_TYPES, Codec, DecodeError, TypeRegistry, Won, expires_ms, is_placeholder
from ._drive import Steps, run_async, run_sync
from ._errors import BackendError, ConfigurationError, SerializationError
from ._fill import DOING, Filled, Granted, Outcome, fill, fill_plain, shareable
from ._flight import AsyncFlight, Flight
from ._generations import SCOPE
from ._keys import safe_segment
from ._policy import check_ttl
from ._sentinels import MISS, NOT_GIVEN

if TYPE_CHECKING:
    from ._context import Context

__all__ = ["Values", "value_key"]

logger = logging.getLogger("memo")
_perf = time.perf_counter

_SEED = b"memo/value/1\x00"


def value_key(prefix: str, ns: str, generation: str, key: str) -> str:
    """Return the backend key of the user's `key` in namespace `ns`. Pure."""
    return _compose(_namespace_part(prefix, ns), generation, key)


def _namespace_part(prefix: str, ns: str) -> tuple[str, Any]:
    """What every key of a namespace shares: its readable start and the seeded hasher."""
    if not isinstance(ns, str) or SCOPE in ns:
        raise ConfigurationError(f"a namespace is a str without NUL characters, got {ns!r}")
    ns_bytes = ns.encode("utf-8", "surrogatepass")
    h = hashlib.blake2b(_SEED, digest_size=16)
    # Length-prefixed, so ("a:b", "c") and ("a", "b:c") hash apart.
    h.update(b"%d:" % len(ns_bytes) + ns_bytes)
    return f"{prefix}{safe_segment(ns, 48)}:=", h


def _compose(part: tuple[str, Any], generation: str, key: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"cache keys are strings, got {type(key).__name__} {key!r}")
    h = part[1].copy()
    h.update(key.encode("utf-8", "surrogatepass"))
    return f"{part[0]}{safe_segment(key, 64)}:{generation}:{h.hexdigest()}"


class Values:
    """The value API of one `Cache` (its `get`, `set`, ... methods delegate here)."""

    def __init__(self, cache: Context) -> None:
        self.cache = cache
        self.codec = Codec(TypeRegistry(parent=GLOBAL_TYPES), compress_threshold=cache.compress_threshold)
        self._flight: Flight[Any] = Flight()
        self._aflight: AsyncFlight[Any] = AsyncFlight()
        # Bumped by every delete and set: a caller arriving after one never joins a
        # fill that started before it (the lease does the same across processes).
        self._epoch = 0
        self._warned = False
        self._namespaces: dict[str, tuple[str, Any]] = {}

    # -- the pure parts --------------------------------------------------------------

    def key(self, ns: str, generation: str, key: str) -> str:
        part = self._namespaces.get(ns)
        if part is None:
            if len(self._namespaces) > 10_000:  # namespaces made up per call: keep memory bounded
                self._namespaces.clear()
            part = self._namespaces[ns] = _namespace_part(self.cache.prefix, ns)
        return _compose(part, generation, key)

    def ttl(self, ttl: Any) -> float | None:
        return self.cache.ttl if ttl is NOT_GIVEN else check_ttl(ttl)

    @staticmethod
    def hard_ttl(ttl: float | None) -> float | None:
        # The header holds the exact expiry; memcached's clock ticks in whole seconds.
        return None if ttl is None else ttl + 1.0

    def emit(
        self, kind: str, ns: str, duration: float | None = None, error: BaseException | None = None
    ) -> None:
        self.cache.emit(kind, ns, None, duration, error, "values")

    def decode(self, ns: str, raw: bytes, duration: float | None) -> Any:
        """Return the value `raw` holds, or `MISS` (counted) when it is not a fresh value."""
        if is_placeholder(raw):
            return MISS  # another caller is filling the key
        expires = expires_ms(raw)
        if expires is not None and expires <= _clock.time() * 1000.0:
            return MISS
        try:
            return self.codec.decode(raw)
        except DecodeError as exc:
            self.cache.ns_stats(ns).decode_errors += 1
            self.emit("decode_error", ns, duration, exc)
            return MISS

    def usable(self, ns: str, found: list[Any], bad: bytes | None, raw: bytes) -> bool:
        """Whether `raw` is a fresh value (appended to `found`); `bad` is not decoded again."""
        if raw == bad:
            return False
        value = self.decode(ns, raw, None)
        if value is MISS:
            return False
        found.append(value)
        return True

    def encode(self, ns: str, value: Any, ttl: float | None) -> bytes | None:
        """Return the wire bytes of `value`, or None (counted, logged once) if it cannot be stored."""
        try:
            return self.codec.encode(value, None if ttl is None else int((_clock.time() + ttl) * 1000.0))
        except SerializationError as exc:
            self.cache.ns_stats(ns).encode_errors += 1
            if self.cache.strict:
                raise
            if not self._warned:
                self._warned = True
                logger.warning("memo: a value was not cached: %s", exc)
            return None

    def failed(self, ns: str, what: str, exc: BackendError, started: float) -> None:
        self.emit("error", ns, _perf() - started, exc)
        self.cache.record_error(ns, what, exc)

    def found(self, ns: str, raw: bytes | None, started: float) -> Any:
        """Count and report a read's outcome; return the value or `MISS`."""
        duration = _perf() - started
        value = MISS if raw is None else self.decode(ns, raw, duration)
        stats = self.cache.ns_stats(ns)
        if value is MISS:
            stats.misses += 1
            self.emit("miss", ns, duration)
        else:
            stats.hits += 1
            self.emit("hit", ns, duration)
        return value

    def stored(self, ns: str, ok: bool, started: float | None) -> None:
        stats = self.cache.ns_stats(ns)
        if ok:
            stats.sets += 1
        else:
            stats.not_stored += 1
        self.emit("set" if ok else "not_stored", ns, None if started is None else _perf() - started)

    def waiting(self, ns: str) -> None:
        self.cache.ns_stats(ns).lease_waits += 1
        self.emit("lease_wait", ns)

    def lease_lost(self, ns: str) -> None:
        self.cache.ns_stats(ns).lease_lost += 1
        self.emit("lease_lost", ns)

    def generation_is(self, ns: str, generation: str) -> bool:
        """Whether `generation` is still the namespace's, as far as this process knows."""
        entry = self.cache.known_generations.get(ns)
        return entry is not None and entry[0] == generation

    # -- reads: the hit path, kept flat --------------------------------------------------

    def read(self, ns: str, key: str, lease: bool = False) -> tuple[Any, bytes | None]:
        """Read one key: (value or `MISS`, the raw bytes read).

        `lease`: on servers with their own leases, a miss takes the lease (`Won` read).
        """
        started = _perf()
        cache = self.cache
        try:
            if lease and cache.leased_reads:
                raw = cache.backend.get_or_lease(key, cache.lease_ttl)
            else:
                raw = cache.backend.get(key)
        except BackendError as exc:
            self.failed(ns, "a read", exc, started)
            return MISS, None
        return self.found(ns, raw, started), raw

    async def aread(self, ns: str, key: str, lease: bool = False) -> tuple[Any, bytes | None]:
        """Async `read`."""
        started = _perf()
        cache = self.cache
        try:
            if lease and cache.leased_reads:
                raw = await cache.backend.aget_or_lease(key, cache.lease_ttl)
            else:
                raw = await cache.backend.aget(key)
        except BackendError as exc:
            self.failed(ns, "a read", exc, started)
            return MISS, None
        return self.found(ns, raw, started), raw

    # -- steps: each cold operation written once --------------------------------------------

    def set_steps(self, ns: str, key: str, data: bytes, ttl: float | None) -> Steps[bool]:
        started = _perf()
        try:
            ok = bool((yield ("set", (key, data, self.hard_ttl(ttl)))))
        except BackendError as exc:
            self.failed(ns, "a write", exc, started)
            return False
        self.stored(ns, ok, started)
        return ok

    def delete_steps(self, ns: str, key: str) -> Steps[bool]:
        started = _perf()
        try:
            return (yield from leases.invalidate(key))
        except BackendError as exc:
            self.failed(ns, "a delete", exc, started)
            return False

    def fill_steps(self, ns: str, gen: str, key: str, bad: bytes | None, ttl: float | None) -> Steps[Filled]:
        """The miss path of `get_or_set`: compute once and store (see `memo._fill`).

        `bad`: what the read found and could not use, if anything.
        """
        target = _ValueFill(self, ns, gen, bad, ttl)
        if not self.cache.leases:
            return (yield from fill_plain(key, target, bad))
        return (yield from fill(key, target, bad if type(bad) is Won else None))

    def get_many_steps(self, ns: str, keys: dict[str, str]) -> Steps[dict[str, Any]]:
        started = _perf()
        try:
            found: dict[str, bytes] = yield ("get_many", (list(keys.values()),))
        except BackendError as exc:
            self.failed(ns, "a batch read", exc, started)
            found = getattr(exc, "result", None) or {}
        out: dict[str, Any] = {}
        for user_key, key in keys.items():
            value = self.found(ns, found.get(key), started)
            if value is not MISS:
                out[user_key] = value
        return out

    def set_many_steps(self, ns: str, items: list[tuple[str, bytes, float | None]]) -> Steps[int]:
        started = _perf()
        try:
            refused: list[str] = yield ("set_many", (items,))
        except BackendError as exc:
            self.failed(ns, "a batch write", exc, started)
            return 0
        refused_set = set(refused)
        for key, _, _ in items:
            self.stored(ns, key not in refused_set, None)
        return len(items) - len(refused_set)

    # -- sync ----------------------------------------------------------------------

    def get(self, key: str, default: Any, ns: str) -> Any:
        gen = self.cache.generation(ns)
        if gen is None:
            return default
        value, _ = self.read(ns, self.key(ns, gen, key))
        return default if value is MISS else value

    def set(self, key: str, value: Any, ns: str, ttl: Any) -> bool:
        ttl = self.ttl(ttl)
        data = self.encode(ns, value, ttl)
        self._epoch += 1
        gen = self.cache.generation(ns)
        if gen is None or data is None:
            return False
        return run_sync(self.cache.backend, self.set_steps(ns, self.key(ns, gen, key), data, ttl))

    def delete(self, key: str, ns: str) -> bool:
        self._epoch += 1
        gen = self.cache.generation(ns)
        if gen is None:
            return False
        return run_sync(self.cache.backend, self.delete_steps(ns, self.key(ns, gen, key)))

    def get_or_set(self, key: str, fn: Callable[[], Any], ns: str, ttl: Any) -> Any:
        ttl = self.ttl(ttl)
        gen = self.cache.generation(ns)
        if gen is None:
            return fn()
        full = self.key(ns, gen, key)
        backend = self.cache.backend
        value, raw = self.read(ns, full, lease=True)
        if value is not MISS:
            return value
        granted = Granted(full, raw)

        def lead(bad: bytes | None) -> Filled:
            return run_sync(backend, self.fill_steps(ns, gen, full, bad, ttl), fn)

        # The lease the read took is used by this caller's fill, or given back if it follows
        # another's (then its fill, if it leads after all, asks afresh: granted.raw is None).
        give_back = granted.on_follow(run_sync, backend)
        filled, led = self._flight.run((full, self._epoch), lambda: lead(granted.raw), None, give_back)
        value = self.shared(ns, filled, led)
        if value is MISS:  # the fill lost its lease to an invalidate: once more, as a caller arriving now
            filled, led = self._flight.run((full, self._epoch), partial(lead, None))
            value = self.shared(ns, filled, led)
        if value is not MISS:
            return value
        return fn()  # lost twice to invalidates: compute for this caller alone

    def get_many(self, keys: Iterable[str], ns: str) -> dict[str, Any]:
        gen = self.cache.generation(ns)
        if gen is None:
            return {}
        return run_sync(self.cache.backend, self.get_many_steps(ns, {k: self.key(ns, gen, k) for k in keys}))

    def set_many(self, mapping: Mapping[str, Any], ns: str, ttl: Any) -> int:
        items = self.items(mapping, ns, ttl, self.cache.generation(ns))
        return run_sync(self.cache.backend, self.set_many_steps(ns, items)) if items else 0

    # -- async -------------------------------------------------------------------------

    async def aget(self, key: str, default: Any, ns: str) -> Any:
        gen = await self.cache.ageneration(ns)
        if gen is None:
            return default
        value, _ = await self.aread(ns, self.key(ns, gen, key))
        return default if value is MISS else value

    async def aset(self, key: str, value: Any, ns: str, ttl: Any) -> bool:
        ttl = self.ttl(ttl)
        data = self.encode(ns, value, ttl)
        self._epoch += 1
        gen = await self.cache.ageneration(ns)
        if gen is None or data is None:
            return False
        return await run_async(self.cache.backend, self.set_steps(ns, self.key(ns, gen, key), data, ttl))

    async def adelete(self, key: str, ns: str) -> bool:
        self._epoch += 1
        gen = await self.cache.ageneration(ns)
        if gen is None:
            return False
        return await run_async(self.cache.backend, self.delete_steps(ns, self.key(ns, gen, key)))

    async def aget_or_set(self, key: str, fn: Callable[[], Any], ns: str, ttl: Any) -> Any:
        ttl = self.ttl(ttl)
        compute = partial(_call_maybe_async, fn)
        gen = await self.cache.ageneration(ns)
        if gen is None:
            return await compute()
        full = self.key(ns, gen, key)
        backend = self.cache.backend
        value, raw = await self.aread(ns, full, lease=True)
        if value is not MISS:
            return value
        granted = Granted(full, raw)

        def lead(bad: bytes | None) -> Awaitable[Filled]:
            return run_async(backend, self.fill_steps(ns, gen, full, bad, ttl), compute)

        give_back = granted.on_follow(run_async, backend)
        filled, led = await self._aflight.run((full, self._epoch), lambda: lead(granted.raw), None, give_back)
        value = self.shared(ns, filled, led)
        if value is MISS:  # lost to an invalidate (see get_or_set)
            filled, led = await self._aflight.run((full, self._epoch), partial(lead, None))
            value = self.shared(ns, filled, led)
        if value is not MISS:
            return value
        return await compute()  # lost twice to invalidates: compute for this caller alone

    async def aget_many(self, keys: Iterable[str], ns: str) -> dict[str, Any]:
        gen = await self.cache.ageneration(ns)
        if gen is None:
            return {}
        steps = self.get_many_steps(ns, {k: self.key(ns, gen, k) for k in keys})
        return await run_async(self.cache.backend, steps)

    async def aset_many(self, mapping: Mapping[str, Any], ns: str, ttl: Any) -> int:
        items = self.items(mapping, ns, ttl, await self.cache.ageneration(ns))
        return await run_async(self.cache.backend, self.set_many_steps(ns, items)) if items else 0

    # -- shared by both flavours -----------------------------------------------------------

    def items(
        self, mapping: Mapping[str, Any], ns: str, ttl: Any, gen: str | None
    ) -> list[tuple[str, bytes, float | None]]:
        ttl = self.ttl(ttl)
        self._epoch += 1
        if gen is None:
            return []
        items = []
        for key, value in mapping.items():
            data = self.encode(ns, value, ttl)
            if data is not None:
                items.append((self.key(ns, gen, key), data, self.hard_ttl(ttl)))
        return items

    def shared(self, ns: str, filled: Filled, led: bool) -> Any:
        """The caller's value: the leader's, a follower's own copy, or `MISS` (fill afresh).

        A follower never gets the value of a fill whose lease an invalidate voided.
        """
        value, data, _ = filled
        if led:
            return value
        if not shareable(filled):
            return MISS
        if data is None:
            return value
        copy = self.decode(ns, data, None)
        return value if copy is MISS else copy


async def _call_maybe_async(fn: Callable[[], Any]) -> Any:
    """Call `fn`; await what it returns when that is awaitable (`aget_or_set` takes both)."""
    result = fn()
    if inspect.isawaitable(result):
        result = await result
    return result


class _ValueFill:
    """The value API's side of `leases.fill`: what is usable, how to store, what to count."""

    __slots__ = (
        "_value_ttl",
        "backend",
        "bad",
        "found",
        "gen",
        "keep",
        "lease_ttl",
        "lease_wait",
        "max_size",
        "ns",
        "started",
        "ttl",
        "values",
    )

    def __init__(self, values: Values, ns: str, gen: str, bad: bytes | None, ttl: float | None) -> None:
        cache = values.cache
        self.backend = cache.backend
        self.keep: tuple[bytes, float] | None = None
        self.values, self.ns, self.gen, self.bad = values, ns, gen, bad
        self.lease_ttl, self.lease_wait, self.ttl = cache.lease_ttl, cache.lease_wait, values.hard_ttl(ttl)
        self.max_size = cache.backend.max_value_size
        self.found: list[Any] = []
        self._value_ttl = ttl
        self.started = _perf()

    def usable(self, raw: bytes) -> bool:
        return self.values.usable(self.ns, self.found, self.bad, raw)

    def encode(self, value: Any) -> bytes | None:
        data = self.values.encode(self.ns, value, self._value_ttl)
        self.started = _perf()  # what follows times the write
        return data

    def current(self) -> bool:
        return self.values.generation_is(self.ns, self.gen)

    def report(self, outcome: Outcome, error: BackendError | None = None) -> None:
        values, ns = self.values, self.ns
        if error is not None:
            values.failed(ns, DOING[outcome], error, self.started)
        elif outcome is Outcome.ACQUIRED:
            values.emit(outcome.value, ns, _perf() - self.started)
        elif outcome is Outcome.WAITING:
            values.waiting(ns)
        elif outcome is Outcome.LOST:
            values.lease_lost(ns)
        else:
            stored = outcome is Outcome.STORED
            values.stored(ns, stored, self.started if stored else None)
