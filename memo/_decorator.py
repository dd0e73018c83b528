"""`@cached`: the decorator, its per-function engine and its sync and async drivers.

Everything that can be decided when a function is decorated is decided then
(as cachetools does): the argument binder, the key layout, the codec and its
classes, sync or async. The call path of each flavour is one short function;
both use the same `Memo` core and differ only by `await`.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import sys
import time
import types
import typing
from collections.abc import Callable, Coroutine, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar, overload

import orjson
import wrapt

from . import _leases as leases
from ._background import Refresher
from ._canonical import qualified_name
from ._codec import (
    EXPIRES,
    GLOBAL_TYPES,
    MAGIC,
    PLAIN,
    VERSION,
    Codec,
    DecodeError,
    TypeRegistry,
    expires_ms,
    is_lease,
    lease_marker,
)
from ._drive import Steps, run_async, run_sync
from ._errors import BackendError, BackendUnavailable, ConfigurationError, SerializationError
from ._flight import AsyncFlight, Flight, copy_for_follower
from ._generations import SCOPE, scope_of
from ._keys import KeyMaker
from ._policy import OnError, check_on_error, check_seconds, check_ttl
from ._sentinels import MISS, NOT_GIVEN

if TYPE_CHECKING:
    from ._cache import Cache

__all__ = ["AsyncCached", "Cached", "Decorator", "Memo"]

logger = logging.getLogger("memo")

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
_S = TypeVar("_S")
_C_co = TypeVar("_C_co", covariant=True)
_P2 = ParamSpec("_P2")
_HIT: Any = object()
_STALE: Any = object()
_loads = orjson.loads
_PLAIN = MAGIC + bytes([VERSION, PLAIN])
_PLAIN_EXPIRES = MAGIC + bytes([VERSION, PLAIN | EXPIRES])
_monotonic = time.monotonic
_time = time.time
_perf = time.perf_counter


async def _returning(value: Any) -> Any:
    return value


def _uncached(wrapped: Callable[..., Any], args: Any, kwargs: Any) -> tuple[Any, None]:
    return wrapped(*args, **kwargs), None


async def _auncached(wrapped: Callable[..., Any], args: Any, kwargs: Any) -> tuple[Any, None]:
    return await wrapped(*args, **kwargs), None


class _Fill:
    """A decorated function's side of `leases.fill`: what is usable, how to store, what to count."""

    __slots__ = ("bad", "cache", "found", "key", "lease_ttl", "lease_wait", "max_size", "memo", "ttl")

    def __init__(self, memo: Memo, cache: Cache, key: str, bad: bytes | None) -> None:
        self.memo, self.cache, self.key, self.bad = memo, cache, key, bad
        self.lease_ttl, self.lease_wait, self.ttl = memo._lease_ttl, memo._lease_wait, memo._hard_ttl
        self.max_size = cache.backend.max_value_size
        self.found: list[Any] = []

    def usable(self, raw: bytes) -> bool:
        return self.memo._usable(self.found, self.bad, raw)

    def encode(self, value: Any) -> bytes | None:
        return self.memo.encode(value, self.cache)

    def current(self) -> bool:
        return self.memo._generation_is(self.cache, self.key)

    def report(self, outcome: str, error: BackendError | None = None) -> None:
        memo, cache = self.memo, self.cache
        if error is not None:
            memo._failed(cache, "taking a lease" if outcome == "lease_failed" else "a write", error)
        elif outcome == "acquired":
            cache._emit("lease_acquired", memo.ns, memo.name, None, None, "cached")
        else:
            counter, kind = _FILL_OUTCOMES[outcome]
            memo._count(cache, counter, kind)


#: `leases.fill` outcomes: (the Stats counter, the event kind).
_FILL_OUTCOMES = {
    "waiting": ("lease_waits", "lease_wait"),
    "stored": ("sets", "set"),
    "not_stored": ("not_stored", "not_stored"),
    "lost": ("lease_lost", "lease_lost"),
}


class Cached(Protocol[P, R_co]):
    """A memoized sync function (what `@cached` returns for a `def`)."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...
    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool: ...
    async def ainvalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool: ...
    def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...
    def key_for(self, *args: P.args, **kwargs: P.kwargs) -> str: ...
    async def akey_for(self, *args: P.args, **kwargs: P.kwargs) -> str: ...
    def get(self, *args: P.args, **kwargs: P.kwargs) -> Any: ...
    async def aget(self, *args: P.args, **kwargs: P.kwargs) -> Any: ...
    def set(self, value: Any, *args: P.args, **kwargs: P.kwargs) -> None: ...
    async def aset(self, value: Any, *args: P.args, **kwargs: P.kwargs) -> None: ...
    def clear(self) -> None: ...
    async def aclear(self) -> None: ...
    def cache_info(self) -> dict[str, int]: ...
    @property
    def uncached(self) -> Callable[P, R_co]: ...
    @property
    def __wrapped__(self) -> Callable[P, R_co]: ...

    if TYPE_CHECKING:  # a class body cannot define these at run time; wrapt's proxy has them

        @property
        def __name__(self) -> str: ...
        @property
        def __qualname__(self) -> str: ...

    # Accessed on an instance, a memoized method is bound like a function: `self` leaves P.
    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Cached[P, R_co]: ...
    @overload
    def __get__(
        self: Cached[Concatenate[_S, _P2], R_co], instance: _S, owner: type[Any] | None = None
    ) -> Cached[_P2, R_co]: ...
    @overload
    def __get__(  # `@cached` above `@staticmethod`, called on an instance: nothing is bound
        self, instance: Any, owner: type[Any] | None = None
    ) -> Cached[P, R_co]: ...


class AsyncCached(Protocol[P, R_co]):
    """A memoized coroutine function (what `@cached` returns for an `async def`)."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R_co]: ...
    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool: ...
    async def ainvalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool: ...
    async def arefresh(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...
    def key_for(self, *args: P.args, **kwargs: P.kwargs) -> str: ...
    async def akey_for(self, *args: P.args, **kwargs: P.kwargs) -> str: ...
    async def aget(self, *args: P.args, **kwargs: P.kwargs) -> Any: ...
    async def aset(self, value: Any, *args: P.args, **kwargs: P.kwargs) -> None: ...
    def clear(self) -> None: ...
    async def aclear(self) -> None: ...
    def cache_info(self) -> dict[str, int]: ...
    @property
    def uncached(self) -> Callable[P, Coroutine[Any, Any, R_co]]: ...
    @property
    def __wrapped__(self) -> Callable[P, Coroutine[Any, Any, R_co]]: ...

    if TYPE_CHECKING:

        @property
        def __name__(self) -> str: ...
        @property
        def __qualname__(self) -> str: ...

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> AsyncCached[P, R_co]: ...
    @overload
    def __get__(
        self: AsyncCached[Concatenate[_S, _P2], R_co], instance: _S, owner: type[Any] | None = None
    ) -> AsyncCached[_P2, R_co]: ...
    @overload
    def __get__(  # `@cached` above `@staticmethod`, called on an instance: nothing is bound
        self, instance: Any, owner: type[Any] | None = None
    ) -> AsyncCached[P, R_co]: ...


class CachedClassMethod(Cached[Concatenate[type[_C_co], P], R_co], Protocol[_C_co, P, R_co]):
    """`@cached` above `@classmethod`: type checkers hand the decorator the function with `cls`.

    Accessed on the class or an instance, the class is bound, as `classmethod` binds it.
    """

    def __get__(self, instance: Any, owner: type[Any] | None = None) -> Cached[P, R_co]: ...  # type: ignore[override]


class AsyncCachedClassMethod(AsyncCached[Concatenate[type[_C_co], P], R_co], Protocol[_C_co, P, R_co]):
    """`@cached` above `@classmethod` on an `async def`."""

    def __get__(self, instance: Any, owner: type[Any] | None = None) -> AsyncCached[P, R_co]: ...  # type: ignore[override]


class Memo:
    """The engine of one decorated function.

    The hit path is written out twice (`call`, `acall`), flat, because every
    call layer costs; everything after a miss (filling under a lease, waiting for
    another caller's lease, revalidating a stale entry, refreshing) is written
    once as sans-I/O steps and run by the sync or async driver (`memo._drive`).
    """

    def __init__(
        self,
        cache: Cache | None,
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
        lease_ttl: float | None = None,
        lease_wait: float | None = None,
        cache_if: Callable[[Any], bool] | None = None,
        default_cache: Callable[[], Cache] | None = None,
    ) -> None:
        func = fn.__func__ if isinstance(fn, (classmethod, staticmethod)) else fn
        if not callable(func):
            raise ConfigurationError(f"@cached needs a function, got {fn!r}")
        if not isinstance(ns, str) or SCOPE in ns:
            raise ConfigurationError(f"ns must be a str without NUL characters, got {ns!r}")
        if cache_if is not None and not callable(cache_if):
            raise ConfigurationError(f"cache_if must be a callable taking the result, got {cache_if!r}")
        self.cache_if = cache_if
        if (cache is None) == (default_cache is None):
            raise TypeError("Memo needs exactly one of: a Cache, a default_cache callable")
        # A partial, bound method or callable instance: keyed as its function plus what
        # is bound to it (see KeyMaker.for_callable).
        self.keys = KeyMaker.for_callable(func, ns, version, ignore=ignore, key=key, scope=scope)
        target = self.keys.target
        if inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target):
            raise ConfigurationError(
                f"{qualified_name(target)} is a generator: cache a function that returns its items as a list"
            )
        #: The Cache, or None when `default_cache` picks it at each call (module-level `memo.cached`).
        self.cache = cache
        self.default_cache: Callable[[], Cache] = default_cache or (lambda: cache)  # type: ignore[assignment,return-value]
        self.ns = ns
        self.ttl = ttl if ttl is NOT_GIVEN else check_ttl(ttl)
        self.stale_ttl = None if stale_ttl is None else check_seconds(stale_ttl, "stale_ttl")
        if self.stale_ttl is not None and self.ttl is None:
            raise ConfigurationError("stale_ttl needs a ttl: an entry that never expires is never stale")
        self.lease_ttl = None if lease_ttl is None else check_seconds(lease_ttl, "lease_ttl")
        self.lease_wait = None if lease_wait is None else check_seconds(lease_wait, "lease_wait", zero=True)
        self.strict = strict
        self.on_error = None if on_error is None else check_on_error(on_error)
        self.is_async = inspect.iscoroutinefunction(target)
        #: Methods and classmethods receive their instance or class through wrapt;
        #: it is the first parameter of the signature the key binds. What was bound
        #: before decorating (a bound method's instance) is prepended by the key maker.
        self.prepend = not isinstance(fn, staticmethod) and target is func
        self.name = qualified_name(target)
        func = target
        registry = TypeRegistry(types, parent=GLOBAL_TYPES)
        # Unresolvable annotations are fine: returned classes are learned on encode.
        with contextlib.suppress(Exception):
            registry.add_annotation(typing.get_type_hints(func).get("return"))
        self.codec = Codec(registry)
        self._decode = self.codec.decode
        self._digest = self.keys.call_digest
        #: The generation this function's keys carry: its namespace's and its own (`clear()`).
        self.scope = scope_of(ns, self.keys.function_id)
        self.flight: Any = AsyncFlight() if self.is_async else Flight()
        self.refresher = Refresher(self.name)
        #: Bumped by every invalidate and refresh in this process: callers that
        #: miss afterwards never join a computation that started before.
        self._epoch = 0
        self._bound: Cache | None = None
        self._warned = False
        if cache is not None:
            self._bind(cache)

    # -- binding to a Cache (once, or again after memo.configure) ---------------

    def _bind(self, cache: Cache) -> Cache:
        self._static = f"{cache.prefix}{self.keys.readable}:"
        self._stats = cache.function_stats(self.ns, owner=self)
        self._ttl = ttl = cache.ttl if self.ttl is NOT_GIVEN else self.ttl
        # memcached keeps an entry one second past its exact expiry plus the stale
        # window (its clock ticks in whole seconds); the header says when it expires.
        self._ttl_ms = None if ttl is None else ttl * 1000.0
        self._stale_ms = 0.0 if self.stale_ttl is None else self.stale_ttl * 1000.0
        self._hard_ttl = None if ttl is None else ttl + (self.stale_ttl or 0.0) + 1.0
        self._strict = cache.strict if self.strict is None else self.strict
        self._on_error: OnError = self.on_error or cache.on_error
        self._leases = cache.leases
        self._lease_ttl = cache.lease_ttl if self.lease_ttl is None else self.lease_ttl
        self._lease_wait = cache.lease_wait if self.lease_wait is None else self.lease_wait
        self.codec.compress_threshold = cache.compress_threshold
        self._bound = cache
        return cache

    def bound_cache(self) -> Cache:
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
                    self._bound._emit("decode_error", self.ns, self.name, None, exc, "cached")
            return MISS

    def _observed(self, cache: Cache, kind: str, t0: float) -> None:
        """Report a hit-path outcome and how long its read took to the Cache's event hook."""
        cache._emit(kind, self.ns, self.name, _perf() - t0, None, "cached")

    def _count(self, cache: Cache, counter: str, kind: str) -> None:
        """Count an outcome of a cold path and report it to the Cache's event hook."""
        setattr(self._stats, counter, getattr(self._stats, counter) + 1)
        cache._emit(kind, self.ns, self.name, None, None, "cached")

    def encode(self, value: Any, cache: Cache | None = None) -> bytes | None:
        """The bytes to store for a result, or None: not to be stored (`cache_if`, or not encodable)."""
        if self.cache_if is not None and not self.cache_if(value):
            if cache is not None:
                cache._emit("forbidden", self.ns, self.name, None, None, "cached")
            return None
        ttl_ms = self._ttl_ms
        try:
            return self.codec.encode(value, None if ttl_ms is None else int(_time() * 1000.0 + ttl_ms))
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
        if expires is not None and expires <= _time() * 1000.0:
            return False
        value = self.decode(raw)
        if value is MISS:
            return False
        found.append(value)
        return True

    def _classify(self, raw: bytes) -> tuple[object, Any]:
        """Read stored bytes the inlined hit paths did not: `(_HIT | _STALE | MISS, value)`.

        Expired entries are stale while within `stale_ttl` of their expiry;
        lease markers and undecodable bytes are misses (only the latter counted).
        """
        expires = expires_ms(raw)
        if expires is not None and expires <= _time() * 1000.0:
            if not self._stale_ms or _time() * 1000.0 >= expires + self._stale_ms:
                return MISS, None
            value = self.decode(raw)
            return (MISS, None) if value is MISS else (_STALE, value)
        value = self.decode(raw)
        return (MISS, None) if value is MISS else (_HIT, value)

    def _generation_is(self, cache: Cache, key: str) -> bool:
        """Whether `key` still carries the namespace generation this process knows."""
        entry = cache._generations.get(self.scope)
        return entry is not None and key.startswith(entry[0] + ":", len(self._static))

    def _failed(self, cache: Cache, what: str, exc: BackendError) -> None:
        cache._emit("error", self.ns, self.name, None, exc, "cached")
        cache.record_error(self.ns, what, exc, self._on_error, self._stats)

    def _shared(self, outcome: tuple[Any, bytes | None], led: bool) -> Any:
        """The caller's result: a follower gets its own copy, or `MISS` (it must compute itself)."""
        value, data = outcome
        if led:
            return value
        return copy_for_follower(value, data, self.decode)

    def _too_big(self, cache: Cache, data: bytes) -> bool:
        if len(data) > cache.backend.max_value_size:
            self._count(cache, "not_stored", "not_stored")
            return True
        return False

    # -- the cold paths, written once as sans-I/O steps ------------------------------

    def _fill(self, cache: Cache, key: str, bad: bytes | None) -> Steps[tuple[Any, bytes | None]]:
        """After a miss: compute once (across processes with leases) and store.

        `bad`: what the hit path read and could not use, if anything.
        """
        if not self._leases:
            return (yield from self._fill_plain(cache, key, bad))
        return (yield from leases.fill(key, _Fill(self, cache, key, bad)))

    def _fill_plain(self, cache: Cache, key: str, bad: bytes | None) -> Steps[tuple[Any, bytes | None]]:
        """A fill without leases: re-read (another caller may just have filled), compute, set."""
        found: list[Any] = []
        try:
            raw = yield ("get", (key,))
        except BackendError as exc:
            self._failed(cache, "a read", exc)
            value = yield ("compute", ())
            return value, None
        if raw is not None and self._usable(found, bad, raw):
            return found[-1], raw
        value = yield ("compute", ())
        data = self.encode(value, cache)
        if data is not None:
            try:
                if (yield ("set", (key, data, self._hard_ttl))):
                    self._count(cache, "sets", "set")
                else:
                    self._count(cache, "not_stored", "not_stored")
            except BackendError as exc:
                self._failed(cache, "a write", exc)
        return value, data

    def _revalidate(self, cache: Cache, key: str) -> Steps[None]:
        """Recompute a stale entry, by one caller across processes, under the refresh lease."""
        rkey = f"{cache.prefix}~r:{hashlib.blake2b(key.encode(), digest_size=16).hexdigest()}"
        try:
            if not (yield ("add", (rkey, lease_marker(leases.new_owner()), self._lease_ttl))):
                return  # another process is refreshing it
            got = yield ("gets", (key,))
            if got is None or is_lease(got[0]) or self._usable([], None, got[0]):
                yield ("delete", (rkey,))
                return  # invalidated (the next miss fills it) or refreshed meanwhile
            try:
                value = yield ("compute", ())
            except BaseException:
                with contextlib.suppress(BackendError):
                    yield ("delete", (rkey,))
                raise
            data = self.encode(value, cache)
            if data is not None and not self._too_big(cache, data):
                if (yield from leases.store(key, data, self._hard_ttl, got[1])):
                    self._count(cache, "sets", "set")
                else:
                    self._count(cache, "lease_lost", "lease_lost")
            yield ("delete", (rkey,))
        except BackendError as exc:
            self._failed(cache, "revalidating a stale entry", exc)

    def _refresh(self, cache: Cache, key: str | None) -> Steps[Any]:
        """Recompute and store now; a fill that started before cannot overwrite it."""
        unique = None
        if key is not None:
            try:
                unique = yield from leases.lock(key, self._lease_ttl)
            except BackendError as exc:
                self._failed(cache, "taking a lease", exc)
        try:
            value = yield ("compute", ())
        except BaseException:
            if key is not None and unique is not None:
                with contextlib.suppress(BackendError):
                    yield from leases.invalidate(key)
            raise
        if key is None:
            return value
        data = self.encode(value, cache)
        try:
            if data is not None and unique is not None and not self._too_big(cache, data):
                if (yield from leases.store(key, data, self._hard_ttl, unique)):
                    self._count(cache, "sets", "set")
                    return value
                self._count(cache, "lease_lost", "lease_lost")
            # Not stored: drop our marker (or whatever replaced it) rather than leave it.
            yield from leases.invalidate(key)
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
        entry = cache._generations.get(self.scope)
        gen = (
            entry[0]
            if entry is not None and entry[1] > _monotonic()
            else cache.generation(self.scope, self._on_error)
        )
        if gen is None:
            return wrapped(*args, **kwargs)
        full = (instance, *args) if instance is not None and self.prepend else args
        key = self._static + gen + ":" + self._digest(full, kwargs)
        t0 = _perf() if cache._events.hook is not None else 0.0  # timed only for an event hook
        try:
            raw = cache.backend.get(key)
        except BackendError as exc:
            self._failed(cache, "a read", exc)
            return wrapped(*args, **kwargs)
        if raw is not None:
            # The common hits, inlined: plain JSON with an exact expiry (or none).
            head = raw[:3]
            if (head == _PLAIN_EXPIRES and int.from_bytes(raw[3:11], "big") > _time() * 1000.0) or (
                head == _PLAIN
            ):
                try:
                    value = _loads(raw[3 if head == _PLAIN else 11 :]) if raw[-1:] == b"\n" else MISS
                except ValueError:
                    value = MISS
                if value is not MISS:
                    self._stats.hits += 1
                    if t0:
                        self._observed(cache, "hit", t0)
                    return value
                self._stats.decode_errors += 1
                if t0:
                    self._observed(cache, "decode_error", t0)
            else:
                state, value = self._classify(raw)
                if state is _HIT:
                    self._stats.hits += 1
                    if t0:
                        self._observed(cache, "hit", t0)
                    return value
                if state is _STALE:
                    self._stats.stale += 1
                    if t0:
                        self._observed(cache, "stale", t0)
                    self.refresher.submit(
                        key,
                        partial(
                            run_sync,
                            cache.backend,
                            self._revalidate(cache, key),
                            partial(wrapped, *args, **kwargs),
                        ),
                    )
                    return value
        self._stats.misses += 1
        if t0:
            self._observed(cache, "miss", t0)
        outcome, led = self.flight.run(
            (key, self._epoch),
            partial(run_sync, cache.backend, self._fill(cache, key, raw), partial(wrapped, *args, **kwargs)),
            # A re-entrant call (the function calling itself on its own key) computes
            # without the lease: the outer call holds it.
            partial(_uncached, wrapped, args, kwargs),
        )
        value = self._shared(outcome, led)
        return wrapped(*args, **kwargs) if value is MISS else value

    def key_for(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        gen = self.bound_cache().generation(self.scope, self._on_error)
        if gen is None:
            raise BackendUnavailable("the namespace generation could not be read; see Cache.stats()")
        return self.make_key(gen, instance, args, kwargs)

    def invalidate(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        cache = self.bound_cache()
        self._epoch += 1
        gen = cache.generation(self.scope, self._on_error)
        if gen is None:
            return False
        try:
            return run_sync(cache.backend, leases.invalidate(self.make_key(gen, instance, args, kwargs)))
        except BackendError as exc:
            self._failed(cache, "a delete", exc)
            return False

    def refresh(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: Any) -> Any:
        cache = self.bound_cache()
        self._epoch += 1
        gen = cache.generation(self.scope, self._on_error)
        key = None if gen is None else self.make_key(gen, instance, args, kwargs)
        return run_sync(cache.backend, self._refresh(cache, key), partial(wrapped, *args, **kwargs))

    def _peek(self, cache: Cache, key: str) -> Steps[Any]:
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
        self.bound_cache()._clear_generation(self.scope)

    # -- async driver -----------------------------------------------------------------

    async def acall(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: Any
    ) -> Any:
        cache = self.cache or self.default_cache()
        if cache is not self._bound:
            self._bind(cache)
        entry = cache._generations.get(self.scope)
        gen: str | None = entry[0] if entry is not None and entry[1] > _monotonic() else None
        if gen is None:
            gen = await cache.ageneration(self.scope, self._on_error)
            if gen is None:
                return await wrapped(*args, **kwargs)
        full = (instance, *args) if instance is not None and self.prepend else args
        key = self._static + gen + ":" + self._digest(full, kwargs)
        t0 = _perf() if cache._events.hook is not None else 0.0  # timed only for an event hook
        try:
            raw = await cache.backend.aget(key)
        except BackendError as exc:
            self._failed(cache, "a read", exc)
            return await wrapped(*args, **kwargs)
        if raw is not None:
            head = raw[:3]
            if (head == _PLAIN_EXPIRES and int.from_bytes(raw[3:11], "big") > _time() * 1000.0) or (
                head == _PLAIN
            ):
                try:
                    value = _loads(raw[3 if head == _PLAIN else 11 :]) if raw[-1:] == b"\n" else MISS
                except ValueError:
                    value = MISS
                if value is not MISS:
                    self._stats.hits += 1
                    if t0:
                        self._observed(cache, "hit", t0)
                    return value
                self._stats.decode_errors += 1
                if t0:
                    self._observed(cache, "decode_error", t0)
            else:
                state, value = self._classify(raw)
                if state is _HIT:
                    self._stats.hits += 1
                    if t0:
                        self._observed(cache, "hit", t0)
                    return value
                if state is _STALE:
                    self._stats.stale += 1
                    if t0:
                        self._observed(cache, "stale", t0)
                    self.refresher.asubmit(
                        key,
                        partial(
                            run_async,
                            cache.backend,
                            self._revalidate(cache, key),
                            partial(wrapped, *args, **kwargs),
                        ),
                    )
                    return value
        self._stats.misses += 1
        if t0:
            self._observed(cache, "miss", t0)
        outcome, led = await self.flight.run(
            (key, self._epoch),
            partial(run_async, cache.backend, self._fill(cache, key, raw), partial(wrapped, *args, **kwargs)),
            partial(_auncached, wrapped, args, kwargs),
        )
        value = self._shared(outcome, led)
        return (await wrapped(*args, **kwargs)) if value is MISS else value

    async def akey_for(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        gen = await self.bound_cache().ageneration(self.scope, self._on_error)
        if gen is None:
            raise BackendUnavailable("the namespace generation could not be read; see Cache.stats()")
        return self.make_key(gen, instance, args, kwargs)

    async def ainvalidate(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        cache = self.bound_cache()
        self._epoch += 1
        gen = await cache.ageneration(self.scope, self._on_error)
        if gen is None:
            return False
        try:
            return await run_async(
                cache.backend, leases.invalidate(self.make_key(gen, instance, args, kwargs))
            )
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
        await self.bound_cache()._aclear_generation(self.scope)

    async def arefresh(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: Any
    ) -> Any:
        cache = self.bound_cache()
        self._epoch += 1
        gen = await cache.ageneration(self.scope, self._on_error)
        key = None if gen is None else self.make_key(gen, instance, args, kwargs)
        return await run_async(cache.backend, self._refresh(cache, key), partial(wrapped, *args, **kwargs))


# -- the wrapper objects (wrapt keeps methods, classmethods, signatures, async-ness) ----


class _Controls:
    """`invalidate`, `refresh`, `key_for`... on a memoized function, bound like a call."""

    def _target(self) -> tuple[Memo, Callable[..., Any], Any]:
        raise NotImplementedError

    def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        """Drop exactly the entry a call with these arguments would read."""
        memo, _, instance = self._target()
        return memo.invalidate(instance, args, kwargs)

    async def ainvalidate(self, *args: Any, **kwargs: Any) -> bool:
        """Async `invalidate`."""
        memo, _, instance = self._target()
        return await memo.ainvalidate(instance, args, kwargs)

    def refresh(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function now, store its result, and return it."""
        memo, wrapped, instance = self._target()
        if memo.is_async:
            raise TypeError(f"{memo.name} is async: use `await {memo.name}.arefresh(...)`")
        return memo.refresh(wrapped, instance, args, kwargs)

    async def arefresh(self, *args: Any, **kwargs: Any) -> Any:
        """Async `refresh`, for coroutine functions."""
        memo, wrapped, instance = self._target()
        if not memo.is_async:
            raise TypeError(f"{memo.name} is not async: use `{memo.name}.refresh(...)`")
        return await memo.arefresh(wrapped, instance, args, kwargs)

    def key_for(self, *args: Any, **kwargs: Any) -> str:
        """Return the backend key a call with these arguments reads (for debugging)."""
        memo, _, instance = self._target()
        return memo.key_for(instance, args, kwargs)

    async def akey_for(self, *args: Any, **kwargs: Any) -> str:
        """Async `key_for`."""
        memo, _, instance = self._target()
        return await memo.akey_for(instance, args, kwargs)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        """Return the cached result of a call with these arguments, or `memo.MISS`; never computes."""
        memo, _, instance = self._target()
        return memo.peek(instance, args, kwargs)

    async def aget(self, *args: Any, **kwargs: Any) -> Any:
        """Async `get`."""
        memo, _, instance = self._target()
        return await memo.apeek(instance, args, kwargs)

    def set(self, value: Any, *args: Any, **kwargs: Any) -> None:
        """Store `value` as the result of a call with these arguments (prime the cache).

        Like `refresh`, it wins over fills that started before it.
        """
        memo, _, instance = self._target()
        memo.prime(value, instance, args, kwargs)

    async def aset(self, value: Any, *args: Any, **kwargs: Any) -> None:
        """Async `set`."""
        memo, _, instance = self._target()
        await memo.aprime(value, instance, args, kwargs)

    def clear(self) -> None:
        """Drop every entry of this function (in every process), leaving its namespace alone.

        Raises:
            BackendError: the backend could not store the new generation.
        """
        self._target()[0].clear()

    async def aclear(self) -> None:
        """Async `clear`."""
        await self._target()[0].aclear()

    def cache_info(self) -> dict[str, int]:
        """This function's counters in this process (hits, misses, sets, stale, lease_lost, ...)."""
        memo = self._target()[0]
        memo.bound_cache()  # the counters of the Cache in use now (memo.configure, memo_cache)
        return memo._stats.as_dict()

    @property
    def uncached(self) -> Callable[..., Any]:
        """The original function, bypassing the cache."""
        return self._target()[1]

    # A memoized function is a function for copy and pickle: copies are itself, and it
    # pickles by reference (as functools.lru_cache's wrappers do), so unpickled in a
    # process pool's worker it is that process's own decorated function.

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: Any) -> Any:
        return self

    def __reduce_ex__(self, protocol: Any) -> Any:
        return self.__reduce__()


class _BoundCachedFunction(_Controls, wrapt.BoundFunctionWrapper[..., Any]):
    def _target(self) -> tuple[Memo, Callable[..., Any], Any]:
        memo: Memo = self._self_parent._self_memo
        binding = self._self_binding
        if binding == "classmethod":
            instance = getattr(self.__wrapped__, "__self__", None)
        elif binding == "staticmethod":
            instance = None
        else:
            instance = self._self_instance
        return memo, self.__wrapped__, instance

    def __reduce__(self) -> Any:
        # As a bound method pickles: the attribute of what it was bound to.
        if self._self_binding == "classmethod":
            holder = getattr(self.__wrapped__, "__self__", None)
        else:
            holder = self._self_instance if self._self_binding == "function" else None
        return getattr, (self._self_owner if holder is None else holder, self.__name__)


class _CachedFunction(_Controls, wrapt.FunctionWrapper[..., Any]):
    __bound_function_wrapper__ = _BoundCachedFunction

    def __init__(self, wrapped: Any, memo: Memo) -> None:
        super().__init__(wrapped, memo.acall if memo.is_async else memo.call)
        self._self_memo = memo

    def _target(self) -> tuple[Memo, Callable[..., Any], Any]:
        owner = _classmethod_owner(self)
        if owner is None:
            return self._self_memo, self.__wrapped__, None
        return self._self_memo, types.MethodType(self.__wrapped__, owner), owner

    def __repr__(self) -> str:
        return f"<memoized {self._self_memo.name} ns={self._self_memo.ns!r}>"

    def __reduce__(self) -> Any:
        # A global name, found by pickle as `__module__` + `__qualname__` (those of the function).
        return self.__qualname__


def _classmethod_owner(wrapper: _CachedFunction) -> type | None:
    """The class whose `@classmethod` wraps `wrapper` (`@classmethod` above `@cached`), or None.

    Up to Python 3.12 `classmethod` binds the object it wraps, so `A.f` is a
    bound wrapper that knows `A`. Since 3.13 it does not: `A.f` is a plain method
    object, and `A.f.key_for(1)` reaches the unbound wrapper without `A`. The class
    is then found by the function's qualified name; when that cannot tell which
    class is meant (a subclass may be the one accessed, or the class is local to
    a function), this raises rather than build a key for the wrong class.
    """
    func = wrapper.__wrapped__
    if not inspect.isfunction(func):
        return None  # `@cached` above `@classmethod`/`@staticmethod`: wrapt binds those
    *outer, name = func.__qualname__.split(".")
    if not outer or outer[-1] == "<locals>":
        return None  # not defined in a class body
    owner: Any = None
    if "<locals>" not in outer:
        owner = sys.modules.get(func.__module__)
        for part in outer:
            owner = getattr(owner, part, None)
    if isinstance(owner, type):
        attr: Any = vars(owner).get(name)
        if not (isinstance(attr, classmethod) and attr.__func__ is wrapper):
            return None
        if not any(inspect.getattr_static(heir, name, None) is attr for heir in _subclasses(owner)):
            return owner
        reason = f"subclasses of {owner.__qualname__} share it"
    elif next(iter(inspect.signature(func).parameters), None) == "cls":
        reason = "its class is defined inside a function"
    else:
        return None
    raise TypeError(
        f"{func.__qualname__}: with @classmethod above @cached, Python 3.13+ does not tell which "
        f"class the method was called on ({reason}); put @cached above @classmethod instead"
    )


def _subclasses(cls: type) -> list[type]:
    found: list[type] = []
    subs: list[type] = type.__subclasses__(cls)
    for sub in subs:
        found += [sub, *_subclasses(sub)]
    return found


class Decorator:
    """What `cached(...)` returns: apply it to a sync or async function."""

    def __init__(self, cache: Cache | None, ns: str, ttl: Any, **options: Any) -> None:
        if callable(ns):  # `@cached` without parentheses: refused here, not at the first call
            raise _bare_form(cache, ns)
        if ttl is not NOT_GIVEN:
            check_ttl(ttl)
        if "on_error" in options and options["on_error"] is not None:
            check_on_error(options["on_error"])
        self._cache, self._ns, self._ttl, self._options = cache, ns, ttl, options

    # Async first (an async function also matches `Callable[P, R]`); a first parameter typed
    # `type[...]` is a classmethod's `cls` (what type checkers pass above `@classmethod`), and
    # a partial's `(*args: Any)` is none.
    @overload
    def __call__(self, fn: partial[R]) -> Cached[..., R]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[Concatenate[type[_S], P], Coroutine[Any, Any, R]]
    ) -> AsyncCachedClassMethod[_S, P, R]: ...
    @overload
    def __call__(self, fn: Callable[Concatenate[type[_S], P], R]) -> CachedClassMethod[_S, P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> AsyncCached[P, R]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, fn: Callable[P, R]) -> Cached[P, R]: ...
    def __call__(self, fn: Any) -> Any:
        memo = Memo(self._cache, fn, self._ns, self._ttl, **self._options)
        return _CachedFunction(fn, memo)


def _bare_form(cache: Cache | None, fn: Callable[..., Any]) -> ConfigurationError:
    # Not supported on purpose: the first argument is the namespace (what `clear(ns)` drops),
    # and a decorator whose first argument is sometimes a function hides typos from type checkers.
    door = "memo.cached" if cache is None else "cache.cached"
    name = getattr(fn, "__qualname__", None) or repr(fn)
    return ConfigurationError(
        f"@{door} needs parentheses (above {name}): write @{door}() for the defaults "
        f'(namespace "default", the Cache\'s ttl), or @{door}(ns="...", ttl=60)'
    )
