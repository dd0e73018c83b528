"""`Cache`: one backend, one key prefix, namespaces with generations, stats.

How clearing works, and why a clear is never undone: memo/_generations.py.
"""

from __future__ import annotations

import collections
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from . import _health, _touch
from ._backend import Backend, Capability, PartialFailure, SetItem, backend_from_url
from ._batch import BatchDecorator
from ._decorator import Decorator
from ._drive import Op, run_async, run_sync
from ._errors import BackendError, ConfigurationError
from ._events import Emitter, EventHook, combine_hooks
from ._flight import AsyncFlight
from ._generations import SCOPE, Generations
from ._keys import check_prefix
from ._near import servers_of
from ._policy import (
    ErrorLog,
    OnError,
    Stats,
    check_flag,
    check_on_error,
    check_seconds,
    check_size,
    check_ttl,
)
from ._sentinels import NOT_GIVEN
from ._tags import bump, tag_key

if TYPE_CHECKING:
    from ._values import Values

# run_sync, run_async and Op are re-exported: flows driven from a Cache import them from here too.
__all__ = ["Cache", "Op", "run_async", "run_sync"]

T = TypeVar("T")

logger = logging.getLogger("memo")


class Cache:
    """A cache: a backend reached through one URL, shared by every function decorated on it.

    Args:
        url: `memory://` (in-process, the default) or
            `memcached://host:port[,host:port...]`; `memcached+tls://` for TLS.
            URL query parameters are backend options.
        backend: a `memo.Backend` instance to use instead of a URL (a backend
            you wrote; see the backend contract in the documentation).
        prefix: prepended to every key, so several applications can share a server.
        ttl: default lifetime in seconds of entries whose decorator gives none;
            None means never expire.
        strict: raise `SerializationError` when a result cannot be stored
            (default: return it uncached, count it and log once per function).
        on_error: "ignore" (default) fails open when the backend fails: the
            function runs and the error is counted; "raise" raises `BackendError`.
        ns_refresh: seconds a process trusts the namespace generations it has
            read; another process sees a `clear()` within this time.
        compress_threshold: encoded values longer than this many bytes are
            zlib-compressed (None: never).
        on_event: a callable receiving a `memo.Event` for each hit, miss, set,
            error... (or a list of them); it runs in the caller's thread, so keep
            it quick. A hook that raises is logged once and never fails a call.
        leases: fill misses under a lease (default True): an invalidate, refresh
            or clear in any process voids a fill that started before it, and one
            caller per key computes while the others wait. False, or a backend that
            does not declare `Capability.LEASES`: plain `set`.
        lease_ttl: seconds a lease lasts; a holder that died delays the others
            by at most this long (default 10).
        lease_wait: seconds a caller waits for another's lease before computing
            itself, without storing (default 5).
        local_ttl: default `local_ttl` of the functions decorated on it (None: no
            near-cache). A hit is then kept in this process for that many seconds
            and served without asking the backend (see `cached`).
        local_max_entries: how many hits the near-cache of these servers keeps
            (least recently used first out; default 10,000).
        **options: backend options, e.g. `max_entries` for memory://,
            `timeout`, `connect_timeout`, `pool_size`, `tls_context` for memcached.
    """

    def __init__(
        self,
        url: str = "memory://",
        *,
        backend: Backend | None = None,
        prefix: str = "memo:",
        ttl: float | None = None,
        strict: bool = False,
        on_error: OnError = "ignore",
        ns_refresh: float = 1.0,
        compress_threshold: int | None = 16 * 1024,
        on_event: EventHook | Iterable[EventHook] | None = None,
        leases: bool = True,
        lease_ttl: float = 10.0,
        lease_wait: float = 5.0,
        local_ttl: float | None = None,
        local_max_entries: int = 10_000,
        **options: Any,
    ) -> None:
        self.url = url = url if backend is None else _backend_url(url, backend, options)
        self.prefix = check_prefix(prefix)
        self.ttl = check_ttl(ttl)
        self.strict = check_flag(strict, "strict")
        self.on_error = check_on_error(on_error)
        self.ns_refresh = check_seconds(ns_refresh, "ns_refresh", zero=True)
        self.compress_threshold = check_size(compress_threshold, "compress_threshold", none=True)
        self.leases = check_flag(leases, "leases")
        self.lease_ttl = check_seconds(lease_ttl, "lease_ttl")
        self.lease_wait = check_seconds(lease_wait, "lease_wait", zero=True)
        self.backend: Backend = backend if backend is not None else backend_from_url(url, options)
        self.local_ttl = None if local_ttl is None else check_seconds(local_ttl, "local_ttl")
        self.local_max_entries = check_size(local_max_entries, "local_max_entries") or 1
        # One near-cache per set of servers: memcached URLs name them; any other backend is its own.
        self.near_owner: object = servers_of(url) if url.startswith("memcached") else self.backend
        # A backend without add/gets/cas cannot hold a lease: fills are plain `set`s there.
        self.leases = self.leases and Capability.LEASES in self.backend.capabilities
        self.leased_reads = self.leases and _reads_lease(self.backend)
        self._events = Emitter(combine_hooks(on_event))
        #: The combined hook the engine delivers events to (None: no events are built). An
        #: attribute, not a property: every hit reads it. `on_event` sets both.
        self.event_hook: EventHook | None = self._events.hook
        #: Deliver one event to the `on_event` hook; does nothing when there is none.
        #: The engine calls it as `cache.emit(kind, ns, function, duration, error, source)`.
        self.emit = self._events.emit
        self._values_api: Values | None = None
        self._gens = Generations(self.prefix, ns_refresh)
        self._generation_reads: AsyncFlight[dict[str, str | None]] = AsyncFlight()  # one per stale set
        #: scope -> (generation, trusted until); read directly by the hit paths.
        self.known_generations = self._gens.known
        self._stats: dict[str, Stats] = {}
        #: ns -> the live counters of its decorated functions, by id.
        self._functions: dict[str, dict[int, Stats]] = {}
        #: (ns, counters) of functions that were collected, not yet folded into their namespace.
        self._retired: collections.deque[tuple[str, Stats]] = collections.deque()
        self._stats_lock = threading.Lock()
        self._errors = ErrorLog(logger)

    def __repr__(self) -> str:
        return f"Cache({self.url!r}, prefix={self.prefix!r})"

    # -- decorating ----------------------------------------------------------

    def cached(
        self,
        ns: str = "default",
        ttl: float | None = NOT_GIVEN,
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
        tags: Iterable[str] | Callable[..., Iterable[str]] | None = None,
        local_ttl: float | None = None,
        early_refresh: float | Literal["xfetch"] | None = None,
    ) -> Decorator:
        """Return a decorator that memoizes a sync or async function in namespace `ns`.

        Args:
            ns: the namespace; `clear(ns=...)` drops all its entries at once.
            ttl: seconds an entry lives (int or float > 0), None for no expiry; default: the Cache's `ttl`.
            version: change it when the function's results change meaning.
            ignore: parameter names left out of the key (e.g. a database session).
            key: a callable taking the function's arguments and returning the value to key on, replacing the
                bound arguments.
            scope: a callable whose parameter names pick arguments of the call, ignored ones included; what it
                returns is added to the key. Scope a LangGraph node by user:
                `scope=lambda config: config["configurable"]["user_id"]`.
            types: classes the codec may rebuild beyond those the return annotation names.
            strict: overrides the Cache's `strict` for this function.
            on_error: overrides the Cache's `on_error` for this function.
            stale_ttl: seconds after `ttl` during which an expired entry is still served at once while one
                caller (across processes) recomputes it in the background (stale-while-revalidate). Needs a
                `ttl`.
            stale_if_error: seconds after `ttl` during which an expired entry is still returned when
                recomputing it raises (RFC 5861's rule): the caller gets the copy (counted `stale_on_error`)
                instead of the exception. Exceptions are never cached. Needs a `ttl`.
            lease_ttl: overrides the Cache's `lease_ttl` for this function.
            lease_wait: overrides the Cache's `lease_wait` for this function.
            cache_if: a predicate on the result; results for which it is false are returned but not stored
                (empty answers, error payloads).
            tags: what each entry depends on: parameter names (each bound value becomes a tag;
                `fn.invalidate_where(name=value)` drops its entries) or a callable taking the bound arguments
                by name and returning tag strings (`cache.invalidate_tags(tag)` drops their entries).
            local_ttl: seconds a hit is kept and served in this process (a near-cache; default: the Cache's):
                changes made here are seen by the next call, elsewhere within `local_ttl` (near-cache.md).
            early_refresh: seconds before its expiry from which a hit is still served but refreshed ahead, in
                the background, by one caller across processes: a key in steady use never expires for its
                callers. Or `"xfetch"`: each hit draws whether it refreshes ahead, likelier the closer the
                expiry and the longer the function takes to compute (the XFetch rule). Needs a `ttl`.
        """
        options = {name: value for name, value in locals().items() if name not in ("self", "ns", "ttl")}
        return Decorator(self, ns, ttl, **options)

    def cached_many(
        self,
        ns: str = "default",
        ttl: float | None = NOT_GIVEN,
        *,
        each: str,
        version: str | int | None = None,
        ignore: Iterable[str] = (),
        scope: Callable[..., Any] | None = None,
        types: Iterable[type] = (),
        strict: bool | None = None,
        on_error: OnError | None = None,
        lease_ttl: float | None = None,
        lease_wait: float | None = None,
        cache_absent: bool = False,
    ) -> BatchDecorator:
        """Memoize a function of many items item by item, computing only the missing ones.

        `each` names the parameter taking the items (a list of ids); the function
        returns `{item: value}`. Other arguments as `cached`; `cache_absent=True`
        caches items the function did not return as absent. See docs/batches.md.
        """
        return BatchDecorator(
            self,
            ns,
            ttl,
            each=each,
            version=version,
            ignore=ignore,
            scope=scope,
            types=types,
            strict=strict,
            on_error=on_error,
            lease_ttl=lease_ttl,
            lease_wait=lease_wait,
            cache_absent=cache_absent,
        )

    # -- events --------------------------------------------------------------

    @property
    def on_event(self) -> EventHook | None:
        """The event hook (settable; None: no events are built at all)."""
        return self._events.hook

    @on_event.setter
    def on_event(self, hook: EventHook | Iterable[EventHook] | None) -> None:
        self._events.hook = self.event_hook = combine_hooks(hook)

    # -- values ----------------------------------------------------------------

    @property
    def _values(self) -> Values:
        api = self._values_api
        if api is None:
            from ._values import Values

            api = self._values_api = Values(self)
        return api

    def get(self, key: str, default: Any = None, *, ns: str = "default") -> Any:
        """Return the value stored under `key` in namespace `ns`, or `default`.

        Fails open: when the backend fails, the error is counted and `default`
        returned (`on_error="raise"` raises instead). Bytes that cannot be
        decoded are a miss. Pass a sentinel `default` to tell a stored None apart.
        """
        return self._values.get(key, default, ns)

    def set(self, key: str, value: Any, *, ns: str = "default", ttl: float | None = NOT_GIVEN) -> bool:
        """Store `value` under `key`; return True if the backend stored it (False on a disabled cache).

        Args:
            ttl: seconds (int or float > 0), None for no expiry; default the Cache's.

        Raises:
            SerializationError: under `strict=True`, when `value` cannot be encoded
                (otherwise it is not stored, counted, and False is returned).
        """
        return self._values.set(key, value, ns, ttl)

    def delete(self, key: str, *, ns: str = "default") -> bool:
        """Remove `key` from namespace `ns`; return True if it was there."""
        return self._values.delete(key, ns)

    def get_or_set(
        self, key: str, fn: Callable[[], T], *, ns: str = "default", ttl: float | None = NOT_GIVEN
    ) -> T:
        """Return the value under `key`; on a miss call `fn()`, store its result and return it.

        Concurrent misses on one key in this process call `fn` once.
        """
        return self._values.get_or_set(key, fn, ns, ttl)  # type: ignore[no-any-return]

    def get_many(self, keys: Iterable[str], *, ns: str = "default") -> dict[str, Any]:
        """Return `{key: value}` for the keys found (one round trip per server)."""
        return self._values.get_many(keys, ns)

    def set_many(
        self, mapping: Mapping[str, Any], *, ns: str = "default", ttl: float | None = NOT_GIVEN
    ) -> int:
        """Store every `key: value` of `mapping`; return how many were stored."""
        return self._values.set_many(mapping, ns, ttl)

    async def aget(self, key: str, default: Any = None, *, ns: str = "default") -> Any:
        """Async `get`."""
        return await self._values.aget(key, default, ns)

    async def aset(self, key: str, value: Any, *, ns: str = "default", ttl: float | None = NOT_GIVEN) -> bool:
        """Async `set`."""
        return await self._values.aset(key, value, ns, ttl)

    async def adelete(self, key: str, *, ns: str = "default") -> bool:
        """Async `delete`."""
        return await self._values.adelete(key, ns)

    @overload
    async def aget_or_set(
        self, key: str, fn: Callable[[], Awaitable[T]], *, ns: str = "default", ttl: float | None = NOT_GIVEN
    ) -> T: ...
    @overload
    async def aget_or_set(
        self, key: str, fn: Callable[[], T], *, ns: str = "default", ttl: float | None = NOT_GIVEN
    ) -> T: ...
    async def aget_or_set(
        self, key: str, fn: Callable[[], Any], *, ns: str = "default", ttl: float | None = NOT_GIVEN
    ) -> Any:
        """Async `get_or_set`; `fn` may be a plain function or return an awaitable."""
        return await self._values.aget_or_set(key, fn, ns, ttl)

    async def aget_many(self, keys: Iterable[str], *, ns: str = "default") -> dict[str, Any]:
        """Async `get_many`."""
        return await self._values.aget_many(keys, ns)

    async def aset_many(
        self, mapping: Mapping[str, Any], *, ns: str = "default", ttl: float | None = NOT_GIVEN
    ) -> int:
        """Async `set_many`."""
        return await self._values.aset_many(mapping, ns, ttl)

    # -- tags ------------------------------------------------------------------

    def invalidate_tags(self, *tags: str) -> int:
        """Make every entry carrying one of `tags` a miss, in every process; return how many were bumped.

        Raises:
            BackendError: a tag's new version could not be stored. Like `clear`, an
                invalidation that did not happen must not look done.
        """
        return run_sync(self.backend, bump(tag_key(self.prefix, tag) for tag in tags))

    async def ainvalidate_tags(self, *tags: str) -> int:
        """Async `invalidate_tags`."""
        return await run_async(self.backend, bump(tag_key(self.prefix, tag) for tag in tags))

    # -- touch, connect, disconnect (the work is in _touch.py and _health.py) ---------

    def touch(self, key: str, ttl: float | None = NOT_GIVEN, *, ns: str = "default") -> bool:
        """Give the value under `key` a new lifetime; return True if it was extended.

        Only a live value is extended: an absent, expired or concurrently
        rewritten entry is left as it is (False). `ttl`: seconds, None for no
        expiry; default the Cache's. Fails open like `get`.
        """
        return _touch.touch(self._values, key, ttl, ns)

    async def atouch(self, key: str, ttl: float | None = NOT_GIVEN, *, ns: str = "default") -> bool:
        """Async `touch`."""
        return await _touch.atouch(self._values, key, ttl, ns)

    def connect(self) -> bool:
        """Open a connection to every server now (e.g. at startup); True if every one answered.

        Never raises: a cache that cannot connect fails open. True for a disabled cache.
        """
        return _health.connect(self)

    async def aconnect(self) -> bool:
        """Async `connect`."""
        return await _health.aconnect(self)

    def disconnect(self) -> None:
        """Close the sync connections (`close`); the next call opens new ones."""
        self.close()

    async def adisconnect(self) -> None:
        """Close every connection, sync and async (`aclose`)."""
        await self.aclose()

    # -- statistics ----------------------------------------------------------

    def ns_stats(self, ns: str) -> Stats:
        """Return the live counters of namespace `ns` (created on first use)."""
        stats = self._stats.get(ns)
        if stats is None:
            with self._stats_lock:
                stats = self._stats.setdefault(ns, Stats())
        return stats

    def function_stats(self, ns: str, owner: object | None = None) -> Stats:
        """Return new live counters for one decorated function in namespace `ns`.

        They count in `stats(ns)` too: a namespace's figures are its own plus its functions'.
        With `owner` (the function's engine), they go with it: once it is collected, its
        counts move into the namespace's own and nothing of it stays here (a bound method
        decorated per instance leaves nothing behind).
        """
        stats = Stats()
        with self._stats_lock:
            self._fold_retired()
            self._functions.setdefault(ns, {})[id(stats)] = stats
        if owner is not None:
            # Only a deque append at collection time: the collector may run while this
            # thread holds the lock, so the folding waits for the next look at the counters.
            finalizer = weakref.finalize(owner, self._retired.append, (ns, stats))
            finalizer.atexit = False
        return stats

    def _fold_retired(self) -> None:
        # Caller holds the lock.
        while self._retired:
            ns, stats = self._retired.popleft()
            functions = self._functions.get(ns, {})
            if functions.pop(id(stats), None) is None:
                continue
            if not functions:
                del self._functions[ns]
            into = self._stats.setdefault(ns, Stats())
            for name in Stats.__slots__:
                setattr(into, name, getattr(into, name) + getattr(stats, name))

    def _ns_totals(self, ns: str) -> dict[str, int]:
        if self._retired:
            with self._stats_lock:
                self._fold_retired()
        total = self.ns_stats(ns).as_dict()
        for stats in list(self._functions.get(ns, {}).values()):
            for name in Stats.__slots__:
                total[name] += getattr(stats, name)
        return total

    def stats(self, ns: str | None = None) -> dict[str, Any]:
        """Return counters: for one namespace, or `{ns: counters}` plus `"total"`.

        Counters: hits, misses, sets, errors (backend failures), decode_errors
        (stored bytes that could not be read back: treated as misses),
        encode_errors (results that could not be stored), not_stored (values
        the backend refused, e.g. larger than its item size), stale (expired
        entries served during `stale_ttl` while being recomputed), lease_lost
        (fills refused because an invalidate, refresh, write or clear came
        after their lease), lease_waits (misses that waited for another
        caller's lease instead of computing).
        """
        if ns is not None:
            return self._ns_totals(ns)
        with self._stats_lock:
            self._fold_retired()
        per_ns = {name: self._ns_totals(name) for name in dict.fromkeys([*self._stats, *self._functions])}
        total = dict.fromkeys(Stats.__slots__, 0)
        for counters in per_ns.values():
            for name, value in counters.items():
                total[name] += value
        return {**per_ns, "total": total}

    def record_error(
        self,
        ns: str,
        what: str,
        exc: BackendError,
        on_error: OnError | None = None,
        stats: Stats | None = None,
    ) -> None:
        """Count and log a backend failure, or raise it under `on_error="raise"`.

        `stats`: the counters to count it in (a function's), by default the namespace's.
        """
        (stats or self.ns_stats(ns)).errors += 1
        if (on_error or self.on_error) == "raise":
            raise exc
        self._errors.report(what, exc)

    # -- generations (the rules live in memo/_generations.py) -------------------

    def _ns_key(self, ns: str) -> str:
        return self._gens.ns_key(ns)

    def generation(self, ns: str, on_error: OnError | None = None) -> str | None:
        """Return the generation part of keys in `ns`, reading the backend when stale.

        None means the generation could not be read and was never known: the
        caller must bypass the cache (fail open) rather than guess.
        """
        return self._gens.fresh(ns) or self.generations((ns,), on_error)[ns]

    async def ageneration(self, ns: str, on_error: OnError | None = None) -> str | None:
        """Async `generation`."""
        return self._gens.fresh(ns) or (await self.agenerations((ns,), on_error))[ns]

    def generations(self, names: Iterable[str], on_error: OnError | None = None) -> dict[str, str | None]:
        """`generation` of several namespaces; only the stale ones are read."""
        known, stale = self._gens.split_stale(names)
        if stale:
            errors: list[BackendError] = []
            try:
                read: dict[str, str | None] = dict(run_sync(self.backend, self._gens.read(stale, errors)))
            except BackendError as exc:
                errors.append(exc)
                read = self._gens.keep_last(stale)
            known.update(read)
            self._record_errors(stale[0], "reading namespace generations", errors, on_error)
        return known

    async def agenerations(
        self, names: Iterable[str], on_error: OnError | None = None
    ) -> dict[str, str | None]:
        """Async `generations`. Tasks reading the same stale namespaces at once share one read
        (a cold start of many tasks is one request, not one per task)."""
        known, stale = self._gens.split_stale(names)
        if stale:
            read, _ = await self._generation_reads.run(
                (tuple(stale), on_error), partial(self._aread_generations, stale, on_error)
            )
            known.update(read)
        return known

    async def _aread_generations(self, stale: list[str], on_error: OnError | None) -> dict[str, str | None]:
        errors: list[BackendError] = []
        try:
            read: dict[str, str | None] = dict(await run_async(self.backend, self._gens.read(stale, errors)))
        except BackendError as exc:
            errors.append(exc)
            read = self._gens.keep_last(stale)
        self._record_errors(stale[0], "reading namespace generations", errors, on_error)
        return read

    def _record_errors(
        self, ns: str, what: str, errors: list[BackendError], on_error: OnError | None = None
    ) -> None:
        # Failures of one multi-server operation are one error, counted under `ns`
        # (a function's scope counts in its namespace, and its events say "cached").
        if errors:
            name, scoped, _ = ns.partition(SCOPE)
            self.emit("error", name, None, None, errors[0], "cached" if scoped else "values")
            self.record_error(name, what, errors[0], on_error)

    def clear(self, ns: str | None = None) -> None:
        """Invalidate every entry of namespace `ns`, or everything this Cache owns.

        This process sees the clear at once; other processes sharing the backend
        within `ns_refresh` seconds. The new generation is written to every
        server, so a server that was away cannot bring the old one back. Never
        flushes a server: other applications' keys are untouched.

        Raises:
            BackendError: no server stored the new generation. Unlike reads and
                writes, a clear does not fail open: a clear that did not happen
                must not look done.
        """
        self.clear_scope(_check_ns(ns))

    async def aclear(self, ns: str | None = None) -> None:
        """Async `clear`."""
        await self.aclear_scope(_check_ns(ns))

    def clear_scope(self, name: str | None) -> None:
        """Renew the generation of a namespace or of one function's scope (`scope_of`)."""
        errors: list[BackendError] = []
        run_sync(self.backend, self._gens.clear(name, errors))
        self._record_errors(name or "default", "clearing a namespace on some servers", errors)

    async def aclear_scope(self, name: str | None) -> None:
        """Async `clear_scope`."""
        errors: list[BackendError] = []
        await run_async(self.backend, self._gens.clear(name, errors))
        self._record_errors(name or "default", "clearing a namespace on some servers", errors)

    # -- stored bytes in batches (fail open) ------------------------------------

    def get_many_bytes(
        self, keys: Sequence[str], ns: str, on_error: OnError | None = None, source: str = "values"
    ) -> dict[str, bytes]:
        """Return `{key: stored bytes}` for the backend keys found: one batch read, no codec.

        For integrations that keep their own format under keys they build (the LangGraph
        cache). Fails open: a backend failure is counted against `ns`, reported to
        `on_event` (with `source`) and handled by `on_error` (default: the Cache's);
        what the healthy servers answered is still returned.
        """
        try:
            return self.backend.get_many(keys)
        except BackendError as exc:
            return self._batch_failed(exc, ns, "a batch read", on_error, {}, source)  # type: ignore[no-any-return]

    async def aget_many_bytes(
        self, keys: Sequence[str], ns: str, on_error: OnError | None = None, source: str = "values"
    ) -> dict[str, bytes]:
        """Async `get_many_bytes`."""
        try:
            return await self.backend.aget_many(keys)
        except BackendError as exc:
            return self._batch_failed(exc, ns, "a batch read", on_error, {}, source)  # type: ignore[no-any-return]

    def set_many_bytes(
        self, items: Sequence[SetItem], ns: str, on_error: OnError | None = None, source: str = "values"
    ) -> int:
        """Store `(key, bytes, ttl)` items in one batch write, no codec; return how many were stored.

        The counterpart of `get_many_bytes`: sets and refusals are counted against
        `ns` and reported to `on_event`; a failure is handled as there.
        """
        try:
            failed = self.backend.set_many(items)
        except BackendError as exc:
            failed = self._batch_failed(exc, ns, "a batch write", on_error, None, source)
        return self._count_writes(ns, len(items), failed, source)

    async def aset_many_bytes(
        self, items: Sequence[SetItem], ns: str, on_error: OnError | None = None, source: str = "values"
    ) -> int:
        """Async `set_many_bytes`."""
        try:
            failed = await self.backend.aset_many(items)
        except BackendError as exc:
            failed = self._batch_failed(exc, ns, "a batch write", on_error, None, source)
        return self._count_writes(ns, len(items), failed, source)

    def _batch_failed(
        self, exc: BackendError, ns: str, what: str, on_error: OnError | None, nothing: Any, source: str
    ) -> Any:
        # A partial failure still carries what the healthy servers answered.
        self.emit("error", ns, None, None, exc, source)
        self.record_error(ns, what, exc, on_error)
        return exc.result if isinstance(exc, PartialFailure) else nothing

    def _count_writes(self, ns: str, attempted: int, failed: list[str] | None, source: str) -> int:
        if failed is None:  # the whole batch failed: counted as an error already
            return 0
        stats = self.ns_stats(ns)
        stats.not_stored += len(failed)
        stats.sets += attempted - len(failed)
        if self._events.hook is not None:
            for kind, n in (("set", attempted - len(failed)), ("not_stored", len(failed))):
                for _ in range(n):
                    self.emit(kind, ns, None, None, None, source)
        return attempted - len(failed)

    # -- lifecycle -------------------------------------------------------------

    def close(self) -> None:
        """Release the backend's sync connections."""
        self.backend.close()

    async def aclose(self) -> None:
        """Release every connection, sync and async."""
        self.backend.close()
        await self.backend.aclose()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Cache:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- configuration from the environment, readiness -----------------------------
    # Thin doors: the work is in _settings.py and _health.py.

    @classmethod
    def from_env(
        cls, prefix: str = "MEMO_", *, environ: Mapping[str, str] | None = None, **options: Any
    ) -> Cache:
        """Build a Cache from environment variables named `<prefix>URL`, `<prefix>HOSTS`, ...

        Reads URL or HOSTS (`host:port,host:port`, default `localhost:11211`), ENABLED
        (default: false unless URL or HOSTS is set; false is a `null://` cache, so with
        nothing set every read goes to the source), TTL, FALLBACK (false:
        `on_error="raise"`), POOL_SIZE, TIMEOUT (the connect timeout; CONNECT_TIMEOUT is
        another name for it), OPERATION_TIMEOUT and KEY_PREFIX; `prefix="MEMCACHED_"`
        reads `MEMCACHED_HOSTS`, `MEMCACHED_ENABLED`, ... Keyword `options` (those of
        `Cache`, with `key_prefix=` for the key prefix, and `url=`) override them.

        Raises:
            ConfigurationError: a variable holds a bad value (the message names it).
        """
        from ._settings import cache_arguments

        url, arguments = cache_arguments(prefix, environ, options)
        return cls(url, **arguments)

    @property
    def is_available(self) -> bool:
        """Whether the cache can serve now, without any I/O: enabled, and some server not marked down.

        False for a disabled (`null://`) cache and while every server's circuit
        breaker is open. Use `health()` for a probe that talks to the servers.
        """
        return _health.is_available(self)

    def health(self) -> dict[str, Any]:
        """Probe every server once (one read each, bounded by the timeouts) for a readiness check.

        Returns a JSON-able dict: `status` is "ok", "degraded" (some servers
        answer), "down" or "disabled"; `servers` maps each server to "up" or
        "down"; `latency_ms` is the probe's duration. Never raises: memo fails
        open, so a cache that is down leaves the application working.
        """
        return _health.health(self)

    async def ahealth(self) -> dict[str, Any]:
        """Async `health`."""
        return await _health.ahealth(self)


def _check_ns(ns: str | None) -> str | None:
    if ns is not None and (not isinstance(ns, str) or SCOPE in ns):
        raise ConfigurationError(f"a namespace is a str without NUL characters, got {ns!r}")
    return ns


def _reads_lease(backend: Backend) -> bool:
    """Whether misses can take their lease in the read (`Capability.LEASED_READS`).

    Backends written before leased reads existed may declare every Capability
    (`frozenset(Capability)`): a leased read is used only where it is implemented too.
    """
    return (
        Capability.LEASED_READS in backend.capabilities
        and type(backend).get_or_lease is not Backend.get_or_lease
    )


def _backend_url(url: str, backend: Any, options: dict[str, Any]) -> str:
    """What a Cache built on `backend=` calls its URL; a URL given as well is refused."""
    if not isinstance(backend, Backend):
        raise ConfigurationError(f"backend= takes a memo.Backend instance, got {type(backend).__name__}")
    if url != "memory://" or options:
        raise ConfigurationError("give either a URL (with its options) or backend=, not both")
    return f"backend:{type(backend).__qualname__}"
