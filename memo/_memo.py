"""The engine of one memoized function: its keys, its hit paths, and its cold paths.

Everything that can be decided when a function is decorated is decided then
(as cachetools does): the argument binder, the key layout, the codec and its
classes, sync or async. The hit path of each flavour (`Memo.call`, `Memo.acall`)
is written out flat, because every call layer costs; everything after a miss
(the fill lifecycle in `memo._fill`, revalidating a stale entry, refreshing) is
written once as sans-I/O steps and run by the sync or async driver.

A `Memo` runs in a `Context` (`memo._context`): the Context that decorated it, or
the default one, picked at each call.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import math
import time
import typing
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from random import random as _random
from typing import Any, Literal

import orjson

from . import _clock
from . import _leases as leases
from ._background import Refresher
from ._canonical import qualified_name
from ._codec import (
    GLOBAL_TYPES,
    PLAIN_EXPIRES_HEADER,
    PLAIN_HEADER,
    Codec,
    DecodeError,
    TypeRegistry,
    Won,
    expires_ms,
    is_lease,
    is_placeholder,
    lease_marker,
)
from ._context import Context
from ._drive import Steps, Verb, run_async, run_sync
from ._errors import BackendError, BackendUnavailable, ConfigurationError, SerializationError
from ._fill import DOING, Filled, Granted, Outcome, fill, fill_plain, shareable
from ._flight import AsyncFlight, Flight, copy_for_follower
from ._generations import SCOPE, scope_of
from ._keys import KeyMaker
from ._near import near_for
from ._policy import OnError, check_flag, check_on_error, check_seconds, check_ttl
from ._sentinels import MISS, NOT_GIVEN

__all__ = ["Memo"]

logger = logging.getLogger("memo")

_HIT: Any = object()
_STALE: Any = object()
_EARLY: Any = object()  # fresh, but within `early_refresh` of its expiry: served and refreshed ahead
_loads = orjson.loads
_perf = time.perf_counter


async def _returning(value: Any) -> Any:
    return value


def _check_target(func: Any, ns: Any, cache_if: Any) -> None:
    if not callable(func):
        raise ConfigurationError(f"@cached needs a function, got {func!r}")
    if not isinstance(ns, str) or SCOPE in ns:
        raise ConfigurationError(f"ns must be a str without NUL characters, got {ns!r}")
    if cache_if is not None and not callable(cache_if):
        raise ConfigurationError(f"cache_if must be a callable taking the result, got {cache_if!r}")


def _check_window(seconds: Any, name: str, ttl: Any) -> float | None:
    """A window past the ttl (`stale_ttl`, `stale_if_error`): seconds > 0, and only with a ttl."""
    if seconds is None:
        return None
    if ttl is None:
        raise ConfigurationError(f"{name} needs a ttl: an entry that never expires is never stale")
    return check_seconds(seconds, name)


def _leased_aread(backend: Any, lease_ttl: float) -> Callable[[str], Awaitable[bytes | None]]:
    """The async hit path's read that takes the lease on a miss (a closure: a third of a partial's cost)."""
    aget_or_lease = backend.aget_or_lease

    def aread(key: str) -> Awaitable[bytes | None]:
        return aget_or_lease(key, lease_ttl)  # type: ignore[no-any-return]

    return aread


#: `early_refresh=XFETCH`: the XFetch rule (Vattani, Chierichetti and Lowenstein, VLDB 2015).
XFETCH = "xfetch"
#: XFetch refreshes a hit `compute time × -ln(U)` before its expiry (U uniform in (0, 1]);
#: above this many compute times the chance is under 1 in 10,000 and taken as none.
_XFETCH_TAIL = 9.2


def _check_early(seconds: Any, ttl: Any) -> float | str | None:
    """`early_refresh`: seconds > 0 before the expiry, shorter than a ttl there must be; or XFETCH."""
    if isinstance(seconds, str):
        if seconds != XFETCH:
            raise ConfigurationError(f'early_refresh is seconds or "{XFETCH}", got {seconds!r}')
        _check_window(1.0, "early_refresh", ttl)  # it needs a ttl too
        return XFETCH
    early = _check_window(seconds, "early_refresh", ttl)
    if early is not None and isinstance(ttl, (int, float)) and early >= ttl:
        raise ConfigurationError(f"early_refresh must be shorter than the ttl ({ttl}), got {seconds!r}")
    return early


def _refresh_key(cache: Context, key: str) -> str:
    """The key of the refresh lease of a stale entry's `key`."""
    return f"{cache.prefix}~r:{hashlib.blake2b(key.encode(), digest_size=16).hexdigest()}"


def _uncached(wrapped: Callable[..., Any], args: Any, kwargs: Any) -> Filled:
    return Filled(wrapped(*args, **kwargs), None, Outcome.UNLEASED)


async def _auncached(wrapped: Callable[..., Any], args: Any, kwargs: Any) -> Filled:
    return Filled(await wrapped(*args, **kwargs), None, Outcome.UNLEASED)


class _Fill:
    """A decorated function's side of `leases.fill`: what is usable, how to store, what to count."""

    __slots__ = (
        "backend",
        "bad",
        "cache",
        "found",
        "keep",
        "key",
        "lease_ttl",
        "lease_wait",
        "max_size",
        "memo",
        "started",
        "ttl",
    )

    def __init__(
        self, memo: Memo, cache: Context, key: str, bad: bytes | None, keep: tuple[bytes, float] | None
    ) -> None:
        self.memo, self.cache, self.key, self.bad, self.keep = memo, cache, key, bad, keep
        self.backend = cache.backend
        self.lease_ttl, self.lease_wait, self.ttl = memo._lease_ttl, memo._lease_wait, memo._hard_ttl
        self.max_size = cache.backend.max_value_size
        self.found: list[Any] = []
        self.started = 0.0

    def usable(self, raw: bytes) -> bool:
        return self.memo._usable(self.found, self.bad, raw)

    def encode(self, value: Any) -> bytes | None:
        data = self.memo.encode(value, self.cache)
        self.started = _perf()  # what follows times the write
        return data

    def current(self) -> bool:
        """Whether the key still carries the namespace generation this process knows."""
        entry = self.cache.known_generations.get(self.memo.scope)
        return entry is not None and self.key.startswith(entry[0] + ":", len(self.memo._static))

    def report(self, outcome: Outcome, error: BackendError | None = None) -> None:
        memo, cache = self.memo, self.cache
        if error is not None:
            memo._failed(cache, DOING[outcome], error)
        elif outcome is Outcome.ACQUIRED:
            cache.emit(outcome.value, memo.ns, memo.name, None, None, "cached")
        else:
            memo._count(cache, _COUNTERS[outcome], outcome.value, self.started)


#: The Stats counter of each fill outcome that is counted.
_COUNTERS = {
    Outcome.WAITING: "lease_waits",
    Outcome.STORED: "sets",
    Outcome.NOT_STORED: "not_stored",
    Outcome.LOST: "lease_lost",
}


class Memo:
    """The engine of one decorated function.

    The hit path is written out twice (`call`, `acall`), flat, because every
    call layer costs; everything after a miss (filling under a lease, waiting for
    another caller's lease, revalidating a stale entry, refreshing) is written
    once as sans-I/O steps and run by the sync or async driver (`memo._drive`).
    """

    def __init__(
        self,
        cache: Context | None,
        fn: Any,
        ns: str = "default",
        ttl: Any = NOT_GIVEN,
        *,
        version: str | int | None = None,
        ignore: Iterable[str] = (),
        key: Callable[..., Any] | None = None,
        scope: Callable[..., Any] | None = None,
        types: Iterable[type] = (),
        strict: bool | None = None,
        on_error: OnError | None = None,
        stale_ttl: float | None = None,
        stale_if_error: float | None = None,
        lease_ttl: float | None = None,
        lease_wait: float | None = None,
        cache_if: Callable[[Any], bool] | None = None,
        local_ttl: float | None = None,
        early_refresh: float | Literal["xfetch"] | None = None,
        default_cache: Callable[[], Context] | None = None,
    ) -> None:
        func = fn.__func__ if isinstance(fn, (classmethod, staticmethod)) else fn
        _check_target(func, ns, cache_if)
        if (cache is None) == (default_cache is None):
            raise TypeError("Memo needs exactly one of: a Context, a default_cache callable")
        self.cache_if = cache_if
        # A partial, bound method or callable instance: keyed as its function plus what
        # is bound to it (see KeyMaker.for_callable).
        self.keys = KeyMaker.for_callable(func, ns, version, ignore=ignore, key=key, scope=scope)
        target = self.keys.target
        if inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target):
            raise ConfigurationError(
                f"{qualified_name(target)} is a generator: cache a function that returns its items as a list"
            )
        #: The Context, or None when `default_cache` picks it at each call (module-level `memo.cached`).
        self.cache = cache
        self.default_cache: Callable[[], Context] = default_cache or (lambda: cache)  # type: ignore[assignment,return-value]
        self.ns = ns
        self.ttl = ttl if ttl is NOT_GIVEN else check_ttl(ttl)
        self.stale_ttl = _check_window(stale_ttl, "stale_ttl", self.ttl)
        self.stale_if_error = _check_window(stale_if_error, "stale_if_error", self.ttl)
        self.early_refresh = _check_early(early_refresh, self.ttl)
        self.lease_ttl = None if lease_ttl is None else check_seconds(lease_ttl, "lease_ttl")
        self.local_ttl = None if local_ttl is None else check_seconds(local_ttl, "local_ttl")
        self.lease_wait = None if lease_wait is None else check_seconds(lease_wait, "lease_wait", zero=True)
        self.strict = None if strict is None else check_flag(strict, "strict")
        self.on_error = None if on_error is None else check_on_error(on_error)
        self.is_async = inspect.iscoroutinefunction(target)
        #: Methods and classmethods receive their instance or class through wrapt;
        #: it is the first parameter of the signature the key binds. What was bound
        #: before decorating (a bound method's instance) is prepended by the key maker.
        self.prepend = not isinstance(fn, staticmethod) and target is func
        self.name = qualified_name(target)
        self._set_up_engine(target, types)
        if cache is not None:
            self._bind(cache)

    def _set_up_engine(self, target: Any, types: Iterable[type]) -> None:
        """The codec, the digest, the scope and the per-process state of the decorated function."""
        registry = TypeRegistry(types, parent=GLOBAL_TYPES)
        # Unresolvable annotations are fine: returned classes are learned on encode.
        with contextlib.suppress(Exception):
            registry.add_annotation(typing.get_type_hints(target).get("return"))
        self.codec = Codec(registry)
        self._decode = self.codec.decode
        self._digest = self.keys.call_digest
        #: The generation this function's keys carry: its namespace's and its own (`clear()`).
        self.scope = scope_of(self.ns, self.keys.function_id)
        self.flight: Any = AsyncFlight() if self.is_async else Flight()
        self.refresher = Refresher(self.name)
        #: Bumped by every invalidate and refresh in this process: callers that
        #: miss afterwards never join a computation that started before.
        self._epoch = 0
        #: How long the function takes to compute, in ms (a moving average; 0: not measured yet).
        self._compute_ms = 0.0
        self._xfetch = False
        self._ttl_ms: float | None = None
        self._bound: Context | None = None
        self._warned = False

    # -- binding to a Context (once, or again after memo.configure) ---------------

    def _bind(self, cache: Context) -> Context:
        self._static = f"{cache.prefix}{self.keys.readable}:"
        self._stats = cache.function_stats(self.ns, owner=self)
        self._ttl = ttl = cache.ttl if self.ttl is NOT_GIVEN else self.ttl
        # memcached keeps an entry one second past its exact expiry plus the stale
        # window (its clock ticks in whole seconds); the header says when it expires.
        self._ttl_ms = None if ttl is None else ttl * 1000.0
        self._stale_ms = 0.0 if self.stale_ttl is None else self.stale_ttl * 1000.0
        self._spare_ms = 0.0 if self.stale_if_error is None else self.stale_if_error * 1000.0
        early = self.early_refresh if ttl is not None else None
        self._xfetch = early == XFETCH
        self._early_ms = 0.0 if early is None or isinstance(early, str) else early * 1000.0
        self._took(0.0)  # the XFetch window, from the compute time measured so far
        kept = max(self.stale_ttl or 0.0, self.stale_if_error or 0.0)
        self._hard_ttl = None if ttl is None else ttl + kept + 1.0
        self._strict = cache.strict if self.strict is None else self.strict
        self._on_error: OnError = self.on_error or cache.on_error
        self._leases = cache.leases
        self._lease_ttl = cache.lease_ttl if self.lease_ttl is None else self.lease_ttl
        self._lease_wait = cache.lease_wait if self.lease_wait is None else self.lease_wait
        self.refresher.retry_after = self._lease_ttl
        self._local_ttl = cache.local_ttl if self.local_ttl is None else self.local_ttl
        self._near = near_for(cache.near_owner, cache.local_max_entries) if self._local_ttl else None
        self.codec.compress_threshold = cache.compress_threshold
        backend = cache.backend
        # The hit path's read: on servers with their own leases it takes the lease on a miss
        # (`get_or_lease(key, lease_ttl)`, called as it is: a closure around it costs a call).
        self._read: Callable[..., bytes | None] = backend.get
        self._read_ttl: float | None = None
        self._aread: Callable[[str], Awaitable[bytes | None]] = backend.aget
        if cache.leased_reads:
            self._read, self._read_ttl = backend.get_or_lease, self._lease_ttl
            self._aread = _leased_aread(backend, self._lease_ttl)
        self._bound = cache
        return cache

    def bound_cache(self) -> Context:
        cache = self.cache or self.default_cache()
        return cache if cache is self._bound else self._bind(cache)

    # -- the pure parts -----------------------------------------------------------

    def make_key(self, gen: str, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        full = (instance, *args) if instance is not None and self.prepend else args
        return f"{self._static}{gen}:{self._digest(full, kwargs)}"

    def decode(self, raw: bytes) -> Any:
        try:
            return self.codec.decode(raw)
        except DecodeError as exc:
            if not is_lease(raw):
                self._stats.decode_errors += 1
                if self._bound is not None:
                    self._bound.emit("decode_error", self.ns, self.name, None, exc, "cached")
            return MISS

    def _observed(self, cache: Context, kind: str, t0: float) -> None:
        """Report a hit-path outcome and how long its read took to the Context's event hook."""
        cache.emit(kind, self.ns, self.name, _perf() - t0, None, "cached")

    def _undecodable(self, cache: Context, t0: float) -> None:
        """Count stored bytes the hit path could not decode (then a miss), and report it."""
        self._stats.decode_errors += 1
        if t0:
            self._observed(cache, "decode_error", t0)

    def _count(self, cache: Context, counter: str, kind: str, since: float = 0.0) -> None:
        """Count an outcome of a cold path and report it, timed from `since` when given."""
        setattr(self._stats, counter, getattr(self._stats, counter) + 1)
        cache.emit(kind, self.ns, self.name, _perf() - since if since else None, None, "cached")

    def encode(self, value: Any, cache: Context | None = None) -> bytes | None:
        """The bytes to store for a result, or None: not to be stored (`cache_if`, or not encodable)."""
        if self.cache_if is not None and not self.cache_if(value):
            if cache is not None:
                cache.emit("forbidden", self.ns, self.name, None, None, "cached")
            return None
        ttl_ms = self._ttl_ms
        try:
            return self.codec.encode(value, None if ttl_ms is None else int(_clock.time() * 1000.0 + ttl_ms))
        except SerializationError as exc:
            self._stats.encode_errors += 1
            if self._strict:
                raise
            if not self._warned:
                self._warned = True
                logger.warning("memo: results of %s are not cached: %s", self.name, exc)
            return None

    def _usable(self, found: list[Any], bad: bytes | None, raw: bytes) -> bool:
        """Whether stored bytes are a fresh value; its decoded value is appended to `found`.

        `bad`: bytes already found undecodable, not decoded (or counted) again.
        """
        if raw == bad:
            return False
        expires = expires_ms(raw)
        if expires is not None and expires <= _clock.time() * 1000.0:
            return False
        value = self.decode(raw)
        if value is MISS:
            return False
        found.append(value)
        return True

    def _classify(self, raw: bytes, early: bool = False) -> tuple[object, Any]:
        """Read stored bytes the inlined hit paths did not: `(_HIT | _STALE | _EARLY | MISS, value)`.

        Expired entries are stale while within `stale_ttl` of their expiry;
        lease markers and undecodable bytes are misses (only the latter counted).
        `early`: a fresh entry within `early_refresh` of its expiry is `_EARLY`.
        """
        if is_placeholder(raw):
            return MISS, None  # another caller's lease: a miss, never counted undecodable
        expires = expires_ms(raw)
        now_ms = _clock.time() * 1000.0
        if expires is not None and expires <= now_ms:
            if not self._stale_ms or now_ms >= expires + self._stale_ms:
                return MISS, None
            value = self.decode(raw)
            return (MISS, None) if value is MISS else (_STALE, value)
        value = self.decode(raw)
        if value is MISS:
            return MISS, None
        left_ms = None if expires is None else expires - now_ms
        if early and left_ms is not None and left_ms <= self._early_ms and self._ahead(left_ms):
            return _EARLY, value
        return _HIT, value

    def _ahead(self, left_ms: float) -> bool:
        """Whether a hit with `left_ms` to live (within the early window) is refreshed ahead now:
        always with `early_refresh` seconds; by the XFetch rule's draw with XFETCH."""
        return not self._xfetch or left_ms <= self._compute_ms * -math.log(1.0 - _random())

    def _took(self, seconds: float) -> None:
        """Record how long the function took to compute (a moving average; 0: nothing new)."""
        if seconds:
            ms = seconds * 1000.0
            self._compute_ms = ms if not self._compute_ms else 0.7 * self._compute_ms + 0.3 * ms
        if self._xfetch and self._ttl_ms:
            self._early_ms = min(self._compute_ms * _XFETCH_TAIL, self._ttl_ms)

    def _compute(self, wrapped: Callable[..., Any], args: Any, kwargs: Any) -> Callable[[], Any]:
        """The call a fill or refresh makes; timed (`_took`) for the XFetch rule."""
        if not self._xfetch:
            return partial(wrapped, *args, **kwargs)

        def timed() -> Any:
            started = _clock.monotonic()
            value = wrapped(*args, **kwargs)
            self._took(_clock.monotonic() - started)
            return value

        return timed

    def _acompute(self, wrapped: Callable[..., Any], args: Any, kwargs: Any) -> Callable[[], Any]:
        """Async `_compute`."""
        if not self._xfetch:
            return partial(wrapped, *args, **kwargs)

        async def timed() -> Any:
            started = _clock.monotonic()
            value = await wrapped(*args, **kwargs)
            self._took(_clock.monotonic() - started)
            return value

        return timed

    def _spare(self, raw: bytes) -> tuple[Any, tuple[bytes, float]] | None:
        """An expired entry still within `stale_if_error`: (its value, what to keep stored), or None."""
        expires = expires_ms(raw)
        now_ms = _clock.time() * 1000.0
        if expires is None or now_ms >= expires + self._spare_ms or is_lease(raw):
            return None
        value = self.decode(raw)
        if value is MISS:
            return None
        return value, (raw, (expires + max(self._spare_ms, self._stale_ms) - now_ms) / 1000.0 + 1.0)

    def _served_on_error(self, cache: Context, value: Any, exc: Exception) -> Any:
        """The fill raised and a copy within `stale_if_error` exists: count it and return the copy."""
        self._stats.stale_on_error += 1
        cache.emit("stale_on_error", self.ns, self.name, None, exc, "cached")
        return value

    def _failed(self, cache: Context, what: str, exc: BackendError) -> None:
        cache.emit("error", self.ns, self.name, None, exc, "cached")
        cache.record_error(self.ns, what, exc, self._on_error, self._stats)

    def _follow(self, filled: Filled, led: bool) -> Any:
        """The caller's result of a fill: the leader's value, a follower's own copy, or `MISS`.

        `MISS`: a follower must do what a caller arriving now would (the leader's
        lease was lost to an invalidate, or its value cannot be copied).
        """
        if led:
            return filled.value
        if not shareable(filled):
            return MISS
        return copy_for_follower(filled.value, filled.data, self.decode)

    def _too_big(self, cache: Context, data: bytes) -> bool:
        if len(data) > cache.backend.max_value_size:
            self._count(cache, "not_stored", "not_stored")
            return True
        return False

    # -- the cold paths, written once as sans-I/O steps ------------------------------

    def _fill(
        self, cache: Context, key: str, keep: tuple[bytes, float] | None, bad: bytes | None
    ) -> Steps[Filled]:
        """After a miss: compute once (across processes with leases) and store.

        `keep`: the copy to put back if the fill does not store (`stale_if_error`);
        `bad`: what the hit path read and could not use, if anything (given last, by
        `_fill_once`).
        """
        target = _Fill(self, cache, key, bad, keep)
        # The steps themselves, not a generator around them: one frame less at each step.
        if not self._leases:
            return fill_plain(key, target, bad)
        return fill(key, target, bad if type(bad) is Won else None)

    def _revalidate(self, cache: Context, key: str) -> Steps[None]:
        """Recompute a stale entry, by one caller across processes, under the refresh lease.

        The refresh lease is given back on every way out, interruptions included.
        """
        if not self._leases:
            # No refresh lease to take: every process that sees it stale recomputes once.
            yield from self._restore_plain(cache, key)
            return
        rkey = _refresh_key(cache, key)
        held = False
        try:
            held = yield (Verb.ADD, (rkey, lease_marker(leases.new_owner()), self._lease_ttl))
            if not held:
                return  # another process is refreshing it
            got = yield (Verb.GETS, (key,))
            if got is not None and not is_lease(got[0]) and self._due(got[0]):
                yield from self._restore(cache, key, got[1])
        except BackendError as exc:
            self._failed(cache, "revalidating a stale entry", exc)
        finally:
            if held:
                with contextlib.suppress(BackendError):
                    yield (Verb.DELETE, (rkey,))

    def _due(self, raw: bytes) -> bool:
        """Whether stored bytes need the refresh a caller started: expired, undecodable, or
        within `early_refresh` of their expiry (not a value another caller stored meanwhile)."""
        expires = expires_ms(raw)
        if expires is not None and expires <= _clock.time() * 1000.0 + self._early_ms:
            return True
        return not self._usable([], None, raw)

    def _restore(self, cache: Context, key: str, unique: int) -> Steps[None]:
        """Compute and store over the stale entry read with `unique` (lost if it changed since)."""
        value = yield (Verb.COMPUTE, ())
        data = self.encode(value, cache)
        if data is not None and not self._too_big(cache, data):
            started = _perf()
            stored = yield from leases.store(key, data, self._hard_ttl, unique)
            if stored:
                self._count(cache, "sets", "set", started)
            elif stored is None:
                self._count(cache, "not_stored", "not_stored")  # the server refused the value
            else:
                self._count(cache, "lease_lost", "lease_lost")

    def _restore_plain(self, cache: Context, key: str | None) -> Steps[Any]:
        """Compute and `set` (no leases): what refreshes do on a backend without them."""
        value = yield (Verb.COMPUTE, ())
        if key is None:
            return value
        data = self.encode(value, cache)
        try:
            if data is not None and not self._too_big(cache, data):
                started = _perf()
                if (yield (Verb.SET, (key, data, self._hard_ttl))):
                    self._count(cache, "sets", "set", started)
                else:
                    self._count(cache, "not_stored", "not_stored")
            else:
                yield (Verb.DELETE, (key,))  # the old value must not outlive a refresh
        except BackendError as exc:
            self._failed(cache, "a write", exc)
        return value

    def _drop(self, key: str) -> Steps[bool]:
        """Invalidate `key` everywhere, and this process's near copy with it."""
        try:
            return (yield from leases.invalidate(key))
        finally:
            self._forget_local(key)

    def _refresh(self, cache: Context, key: str | None) -> Steps[Any]:
        """Recompute and store now (`refresh`, `set`); the near copy goes before and after."""
        self._forget_local(key)
        try:
            return (yield from self._refresh_steps(cache, key))
        finally:
            self._forget_local(key)

    def _refresh_steps(self, cache: Context, key: str | None) -> Steps[Any]:
        """Recompute and store now; a fill that started before cannot overwrite it."""
        if key is None or not self._leases:
            return (yield from self._restore_plain(cache, key))
        lease = leases.Lease(key)
        unique = None
        try:
            unique = yield from leases.lock(lease, self._lease_ttl)
        except BackendError as exc:
            self._failed(cache, "taking a lease", exc)
        try:
            value = yield (Verb.COMPUTE, ())
            data = self.encode(value, cache)
        except BaseException:
            with contextlib.suppress(BackendError):
                yield from leases.release(lease)
            raise
        try:
            if data is not None and unique is not None and not self._too_big(cache, data):
                started = _perf()
                stored = yield from leases.store(key, data, self._hard_ttl, unique)
                if stored:
                    self._count(cache, "sets", "set", started)
                elif (yield from leases.release(lease)) or stored is None:
                    self._count(cache, "not_stored", "not_stored")  # refused; our marker dropped
                else:
                    self._count(cache, "lease_lost", "lease_lost")  # another writer came after
                return value
            # Not stored. The old value must not be served after a refresh: drop our
            # marker, or the key when no marker was confirmed.
            if unique is None:
                yield from leases.invalidate(key)
            else:
                yield from leases.release(lease)
        except BackendError as exc:
            self._failed(cache, "a write", exc)
        return value

    # -- sync driver ----------------------------------------------------------------

    def call(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        # The hit path: kept flat (no helper calls) because each call layer costs ~0.1 µs.
        cache = self.cache or self.default_cache()
        if cache is not self._bound:
            self._bind(cache)
        entry = cache.known_generations.get(self.scope)
        gen = (
            entry[0]
            if entry is not None and entry[1] > _clock.monotonic()
            else cache.generation(self.scope, self._on_error)
        )
        if gen is None:
            return wrapped(*args, **kwargs)
        full = (instance, *args) if instance is not None and self.prepend else args
        key = self._static + gen + ":" + self._digest(full, kwargs)
        t0 = _perf() if cache.event_hook is not None else 0.0  # timed only for an event hook
        if self._near is not None:
            return self._call_near(cache, key, t0, wrapped, args, kwargs)
        try:
            raw = self._read(key) if self._read_ttl is None else self._read(key, self._read_ttl)
        except BackendError as exc:
            self._failed(cache, "a read", exc)
            return wrapped(*args, **kwargs)
        if raw is not None:
            # The common hits, inlined: plain JSON with an exact expiry (or none).
            # Header bytes 0:3, expiry 3:11, body from 3 or 11: the layout in memo._codec.
            head = raw[:3]
            if (
                head == PLAIN_EXPIRES_HEADER
                and int.from_bytes(raw[3:11], "big") > _clock.time() * 1000.0 + self._early_ms
            ) or head == PLAIN_HEADER:
                try:
                    value = _loads(raw[3 if head == PLAIN_HEADER else 11 :]) if raw[-1:] == b"\n" else MISS
                except ValueError:
                    value = MISS
                if value is not MISS:
                    self._stats.hits += 1
                    if t0:
                        self._observed(cache, "hit", t0)
                    return value
                self._undecodable(cache, t0)
            elif type(raw) is not Won:  # the lease this read took is a miss, with nothing to read
                state, value = self._classify(raw, early=True)
                if state is _HIT:
                    self._stats.hits += 1
                    if t0:
                        self._observed(cache, "hit", t0)
                    return value
                if state is not MISS:
                    return self._serve_stale(cache, key, value, t0, wrapped, args, kwargs, state)
        self._stats.misses += 1
        if t0:
            self._observed(cache, "miss", t0)
        return self._miss(cache, key, raw, wrapped, args, kwargs)

    def _serve_stale(
        self,
        cache: Context,
        key: str,
        value: Any,
        t0: float,
        wrapped: Callable[..., Any],
        args: Any,
        kwargs: Any,
        state: object = _STALE,
    ) -> Any:
        """Return a stale value at once; one caller across processes refreshes it in the background.

        `state` `_EARLY`: the value is fresh, due for its refresh ahead (`early_refresh`): a hit.
        """
        self._served(cache, t0, state)
        compute = self._compute(wrapped, args, kwargs)
        job = partial(run_sync, cache.backend, self._revalidate(cache, key), compute)
        self.refresher.submit(key, job, partial(cache.backend.delete, _refresh_key(cache, key)))
        return value

    def _served(self, cache: Context, t0: float, state: object) -> None:
        """Count a value served while its refresh starts: stale, or a hit refreshed ahead."""
        kind = "stale" if state is _STALE else "hit"
        if kind == "stale":
            self._stats.stale += 1
        else:
            self._stats.hits += 1
        if t0:
            self._observed(cache, kind, t0)

    def _local(self, cache: Context, key: str, t0: float) -> Any:
        """A hit from the near-cache, or `MISS`. Flat like the hit paths: it is one."""
        kept = self._near.get(key)  # type: ignore[union-attr]
        if kept is None:
            return MISS
        head = kept[:3]  # header bytes 0:3, expiry 3:11: the layout in memo._codec
        if head == PLAIN_HEADER or (
            head == PLAIN_EXPIRES_HEADER and int.from_bytes(kept[3:11], "big") > _clock.time() * 1000.0
        ):
            value = _loads(kept[3 if head == PLAIN_HEADER else 11 :])  # decoded once already when kept
        else:
            state, value = self._classify(kept)
            if state is not _HIT:
                return MISS
        self._stats.hits += 1
        self._stats.local_hits += 1
        if t0:
            self._observed(cache, "hit", t0)
        return value

    def _keep_local(self, key: str, raw: bytes, version: int) -> None:
        near, ttl = self._near, self._local_ttl
        assert near is not None and ttl is not None
        self._stats.local_evictions += near.put(key, raw, ttl, version)

    def _call_near(
        self, cache: Context, key: str, t0: float, wrapped: Callable[..., Any], args: Any, kwargs: Any
    ) -> Any:
        """The hit path with a near-cache (`local_ttl`): this process's copy first, then the backend."""
        value = self._local(cache, key, t0)
        if value is not MISS:
            return value
        version = self._near.version  # type: ignore[union-attr]
        try:
            # On servers with their own leases, a miss's lease comes with the read (see `call`).
            raw = self._read(key) if self._read_ttl is None else self._read(key, self._read_ttl)
        except BackendError as exc:
            self._failed(cache, "a read", exc)
            return wrapped(*args, **kwargs)
        if raw is not None:
            state, value = self._classify(raw, early=True)
            if state is _HIT:
                self._keep_local(key, raw, version)
                self._stats.hits += 1
                if t0:
                    self._observed(cache, "hit", t0)
                return value
            if state is not MISS:  # stale, or due for its refresh ahead: served, refreshed
                return self._serve_stale(cache, key, value, t0, wrapped, args, kwargs, state)
        self._stats.misses += 1
        if t0:
            self._observed(cache, "miss", t0)
        return self._miss(cache, key, raw, wrapped, args, kwargs)

    def _forget_local(self, key: str | None) -> None:
        """An invalidate, refresh or set in this process: the near-cache's copy goes at once."""
        if self._near is not None and key is not None:
            self._near.discard(key)

    def _miss(
        self, cache: Context, key: str, raw: bytes | None, wrapped: Callable[..., Any], args: Any, kwargs: Any
    ) -> Any:
        """Fill `key` once per process (single flight) and return this caller's result.

        With `stale_if_error`, a copy expired less than that long ago is returned
        when the fill raises (and kept stored).
        """
        spare = self._spare(raw) if self._spare_ms and raw is not None else None
        keep = None if spare is None else spare[1]
        steps = partial(self._fill, cache, key, keep)
        if spare is None:
            return self._fill_once(cache, key, raw, wrapped, args, kwargs, steps)
        try:
            return self._fill_once(cache, key, raw, wrapped, args, kwargs, steps)
        except Exception as exc:
            return self._served_on_error(cache, spare[0], exc)

    def _fill_once(
        self,
        cache: Context,
        key: str,
        raw: bytes | None,
        wrapped: Callable[..., Any],
        args: Any,
        kwargs: Any,
        steps: Callable[[bytes | None], Steps[Filled]],
    ) -> Any:
        """One single-flight fill of `key` with `steps(bad)`; a lost lease is filled afresh once."""
        compute = self._compute(wrapped, args, kwargs)
        # A re-entrant call (the function calling itself on its own key) computes
        # without the lease: the outer call holds it.
        alone = partial(_uncached, wrapped, args, kwargs)
        granted = Granted(key, raw)
        filled, led = self.flight.run(
            (key, self._epoch),
            lambda: run_sync(cache.backend, steps(granted.raw), compute),
            alone,
            granted.on_follow(run_sync, cache.backend),
        )
        value = self._follow(filled, led)
        if value is MISS and not shareable(filled):
            # The leader's lease was lost to an invalidate: fill afresh, as a caller arriving now would.
            filled, led = self.flight.run(
                (key, self._epoch),
                partial(run_sync, cache.backend, steps(None), compute),
                alone,
            )
            value = self._follow(filled, led)
        return compute() if value is MISS else value

    def key_for(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        gen = self.bound_cache().generation(self.scope, self._on_error)
        if gen is None:
            raise BackendUnavailable("the namespace generation could not be read; see Context.stats()")
        return self.make_key(gen, instance, args, kwargs)

    def invalidate(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        cache = self.bound_cache()
        self._epoch += 1
        gen = cache.generation(self.scope, self._on_error)
        if gen is None:
            return False
        try:
            return run_sync(cache.backend, self._drop(self.make_key(gen, instance, args, kwargs)))
        except BackendError as exc:
            self._failed(cache, "a delete", exc)
            return False

    def refresh(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: Any) -> Any:
        cache = self.bound_cache()
        self._epoch += 1
        gen = cache.generation(self.scope, self._on_error)
        key = None if gen is None else self.make_key(gen, instance, args, kwargs)
        return run_sync(cache.backend, self._refresh(cache, key), partial(wrapped, *args, **kwargs))

    def _peek(self, cache: Context, key: str) -> Steps[Any]:
        try:
            raw = yield ("get", (key,))
        except BackendError as exc:
            self._failed(cache, "a read", exc)
            return MISS
        if raw is None:
            return MISS
        state, value = self._classify(raw)
        return MISS if state is MISS else value

    def peek(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        cache = self.bound_cache()
        gen = cache.generation(self.scope, self._on_error)
        if gen is None:
            return MISS
        return run_sync(cache.backend, self._peek(cache, self.make_key(gen, instance, args, kwargs)))

    def prime(self, value: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        cache = self.bound_cache()
        self._epoch += 1
        gen = cache.generation(self.scope, self._on_error)
        key = None if gen is None else self.make_key(gen, instance, args, kwargs)
        run_sync(cache.backend, self._refresh(cache, key), lambda: value)

    def clear(self) -> None:
        self._epoch += 1
        self.bound_cache().clear_scope(self.scope)

    # -- async driver -----------------------------------------------------------------

    async def acall(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: Any
    ) -> Any:
        cache = self.cache or self.default_cache()
        if cache is not self._bound:
            self._bind(cache)
        entry = cache.known_generations.get(self.scope)
        gen: str | None = entry[0] if entry is not None and entry[1] > _clock.monotonic() else None
        if gen is None:
            gen = await cache.ageneration(self.scope, self._on_error)
            if gen is None:
                return await wrapped(*args, **kwargs)
        full = (instance, *args) if instance is not None and self.prepend else args
        key = self._static + gen + ":" + self._digest(full, kwargs)
        t0 = _perf() if cache.event_hook is not None else 0.0  # timed only for an event hook
        if self._near is not None:
            return await self._acall_near(cache, key, t0, wrapped, args, kwargs)
        try:
            raw = await self._aread(key)
        except BackendError as exc:
            self._failed(cache, "a read", exc)
            return await wrapped(*args, **kwargs)
        if raw is not None:
            # Inlined as in `call`; header bytes 0:3, expiry 3:11: the layout in memo._codec.
            head = raw[:3]
            if (
                head == PLAIN_EXPIRES_HEADER
                and int.from_bytes(raw[3:11], "big") > _clock.time() * 1000.0 + self._early_ms
            ) or head == PLAIN_HEADER:
                try:
                    value = _loads(raw[3 if head == PLAIN_HEADER else 11 :]) if raw[-1:] == b"\n" else MISS
                except ValueError:
                    value = MISS
                if value is not MISS:
                    self._stats.hits += 1
                    if t0:
                        self._observed(cache, "hit", t0)
                    return value
                self._undecodable(cache, t0)
            elif type(raw) is not Won:  # the lease this read took is a miss, with nothing to read
                state, value = self._classify(raw, early=True)
                if state is _HIT:
                    self._stats.hits += 1
                    if t0:
                        self._observed(cache, "hit", t0)
                    return value
                if state is not MISS:
                    return self._aserve_stale(cache, key, value, t0, wrapped, args, kwargs, state)
        self._stats.misses += 1
        if t0:
            self._observed(cache, "miss", t0)
        return await self._amiss(cache, key, raw, wrapped, args, kwargs)

    def _aserve_stale(
        self,
        cache: Context,
        key: str,
        value: Any,
        t0: float,
        wrapped: Callable[..., Any],
        args: Any,
        kwargs: Any,
        state: object = _STALE,
    ) -> Any:
        """Async `_serve_stale`: the refresh is a task of the running loop."""
        self._served(cache, t0, state)
        compute = self._acompute(wrapped, args, kwargs)
        job = partial(run_async, cache.backend, self._revalidate(cache, key), compute)
        self.refresher.asubmit(key, job)
        return value

    async def _acall_near(
        self, cache: Context, key: str, t0: float, wrapped: Callable[..., Any], args: Any, kwargs: Any
    ) -> Any:
        """Async `_call_near`."""
        value = self._local(cache, key, t0)
        if value is not MISS:
            return value
        version = self._near.version  # type: ignore[union-attr]
        try:
            raw = await self._aread(key)
        except BackendError as exc:
            self._failed(cache, "a read", exc)
            return await wrapped(*args, **kwargs)
        if raw is not None:
            state, value = self._classify(raw, early=True)
            if state is _HIT:
                self._keep_local(key, raw, version)
                self._stats.hits += 1
                if t0:
                    self._observed(cache, "hit", t0)
                return value
            if state is not MISS:
                return self._aserve_stale(cache, key, value, t0, wrapped, args, kwargs, state)
        self._stats.misses += 1
        if t0:
            self._observed(cache, "miss", t0)
        return await self._amiss(cache, key, raw, wrapped, args, kwargs)

    async def _amiss(
        self, cache: Context, key: str, raw: bytes | None, wrapped: Callable[..., Any], args: Any, kwargs: Any
    ) -> Any:
        """Async `_miss`."""
        spare = self._spare(raw) if self._spare_ms and raw is not None else None
        keep = None if spare is None else spare[1]
        steps = partial(self._fill, cache, key, keep)
        if spare is None:
            return await self._afill_once(cache, key, raw, wrapped, args, kwargs, steps)
        try:
            return await self._afill_once(cache, key, raw, wrapped, args, kwargs, steps)
        except Exception as exc:
            return self._served_on_error(cache, spare[0], exc)

    async def _afill_once(
        self,
        cache: Context,
        key: str,
        raw: bytes | None,
        wrapped: Callable[..., Any],
        args: Any,
        kwargs: Any,
        steps: Callable[[bytes | None], Steps[Filled]],
    ) -> Any:
        """One single-flight fill of `key` with `steps(bad)`; a lost lease is filled afresh once."""
        compute = self._acompute(wrapped, args, kwargs)
        alone = partial(_auncached, wrapped, args, kwargs)
        granted = Granted(key, raw)
        filled, led = await self.flight.run(
            (key, self._epoch),
            lambda: run_async(cache.backend, steps(granted.raw), compute),
            alone,
            granted.on_follow(run_async, cache.backend),
        )
        value = self._follow(filled, led)
        if value is MISS and not shareable(filled):
            filled, led = await self.flight.run(
                (key, self._epoch),
                partial(run_async, cache.backend, steps(None), compute),
                alone,
            )
            value = self._follow(filled, led)
        return (await compute()) if value is MISS else value

    async def akey_for(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        gen = await self.bound_cache().ageneration(self.scope, self._on_error)
        if gen is None:
            raise BackendUnavailable("the namespace generation could not be read; see Context.stats()")
        return self.make_key(gen, instance, args, kwargs)

    async def ainvalidate(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        cache = self.bound_cache()
        self._epoch += 1
        gen = await cache.ageneration(self.scope, self._on_error)
        if gen is None:
            return False
        try:
            return await run_async(cache.backend, self._drop(self.make_key(gen, instance, args, kwargs)))
        except BackendError as exc:
            self._failed(cache, "a delete", exc)
            return False

    async def apeek(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        cache = self.bound_cache()
        gen = await cache.ageneration(self.scope, self._on_error)
        if gen is None:
            return MISS
        return await run_async(cache.backend, self._peek(cache, self.make_key(gen, instance, args, kwargs)))

    async def aprime(self, value: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        cache = self.bound_cache()
        self._epoch += 1
        gen = await cache.ageneration(self.scope, self._on_error)
        key = None if gen is None else self.make_key(gen, instance, args, kwargs)
        await run_async(cache.backend, self._refresh(cache, key), partial(_returning, value))

    async def aclear(self) -> None:
        self._epoch += 1
        await self.bound_cache().aclear_scope(self.scope)

    async def arefresh(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: Any
    ) -> Any:
        cache = self.bound_cache()
        self._epoch += 1
        gen = await cache.ageneration(self.scope, self._on_error)
        key = None if gen is None else self.make_key(gen, instance, args, kwargs)
        return await run_async(cache.backend, self._refresh(cache, key), partial(wrapped, *args, **kwargs))
