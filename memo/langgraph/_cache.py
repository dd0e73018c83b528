"""`MemcachedCache`: LangGraph's `BaseCache` on a memo Cache (keys in `_storage`, values in `_entries`)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from langgraph.cache.base import BaseCache, FullKey, Namespace, ValueT
from langgraph.checkpoint.serde.base import SerializerProtocol

from .._cache import Cache
from .._errors import BackendUnavailable, ConfigurationError
from .._policy import check_ttl
from ._adopt import WithTLS, adopt
from ._clearing import Clears
from ._constructors import DEFAULT_PREFIX, Constructors
from ._entries import Entries
from ._storage import Space, storage_keys

__all__ = ["MemcachedCache"]

logger = logging.getLogger("memo")

_NAME_OK = re.compile(r"[A-Za-z0-9_.:\-]{1,48}")
_MAX_SPACES = 4096  # namespaces whose key parts are kept ready
#: The constructor's `prefix` default, told apart from a prefix given with a memo.Cache.
_DEFAULT_PREFIX: Any = type("_DefaultPrefix", (str,), {"__repr__": lambda self: repr(DEFAULT_PREFIX)})(
    DEFAULT_PREFIX
)
#: This cache's generation, and each namespace's generations (None: unknown or waiting for
#: a clear, so bypass the cache).
_Generations = tuple[str | None, dict[Namespace, tuple[str, ...] | None]]


class MemcachedCache(Constructors, BaseCache[ValueT]):
    """A LangGraph node cache on memcached: `builder.compile(cache=MemcachedCache(client))`.

        cache = MemcachedCache(memo.Cache("memcached://127.0.0.1:11211"))
        cache = MemcachedCache(PooledClient("127.0.0.1:11211", timeout=1), ttl=3600)
        with MemcachedCache.from_conn_string("memcached://127.0.0.1:11211", ttl_seconds=3600) as cache: ...

    One `memo.Cache` can serve decorated functions and any number of graph
    caches at once; each `MemcachedCache` owns the memo namespace `name`.

    Args:
        client: a `memo.Cache` (its backend, key prefix, stats and generations
            are used; closing this object leaves it open), or a pymemcache
            `Client`, `PooledClient`, `HashClient` or `RetryingClient` around
            one. A pymemcache client is adopted: memo builds its own
            `memo.Cache` on the same servers and speaks to them itself, so
            the client is neither used nor closed. Taken over: the server list
            (a `HashClient`'s dead servers included), `connect_timeout`,
            `timeout`, `tls_context`, and the pool size (`PooledClient`'s
            `max_pool_size`, a pooling `HashClient`'s). Not taken over:
            `serde`/`serializer`/`deserializer` (values use `serde=` below),
            `key_prefix` (use `prefix=`), the `hasher` (memo routes keys with
            its own consistent-hash ring), retries (`retry_attempts`,
            `retry_timeout`, `dead_timeout`, a `RetryingClient`'s attempts:
            memo fails open at once and rests a failing server behind a
            circuit breaker instead), `ignore_exc` (graph reads and writes
            always fail open), `default_noreply` (memo always reads replies),
            `no_delay` (always on), `socket_keepalive`, `socket_module`,
            `encoding`/`allow_unicode_keys`, `pool_idle_timeout` and
            `lock_generator`. Timeouts the client leaves at None (wait
            forever) get memo's bounded defaults (0.25 s). Unix-socket servers
            are refused.
        serde: how values become bytes; default LangGraph's own
            (`JsonPlusSerializer(pickle_fallback=False)`, as its `BaseCache` uses),
            so messages, pydantic state and the stored writes round-trip. Any
            `SerializerProtocol` works, `memo.Codec()` included.
        prefix: the key prefix (at most 64 printable ASCII characters, no
            spaces; default `"lgc:"`) of the `memo.Cache` built for a
            pymemcache client or by the `from_*` constructors; every key and
            generation record of this cache starts with it, so applications
            sharing servers stay apart. A `memo.Cache` passed in keeps its own
            prefix (`memo.Cache(url, prefix=...)`, `"memo:"` by default), so
            the entries it already holds stay readable: giving `prefix=` with
            one raises `ConfigurationError`.
        ttl: seconds an entry lives when its node's `CachePolicy` gives no
            `ttl` (None, the default: such entries never expire). Memcached
            counts whole seconds, so a fraction is rounded up. A `memo.Cache`'s
            own `ttl=` is the default of its `@cached` functions, not this one.
        name: this cache's memo namespace: letters, digits and `_.:-`, at most 48.
            Not also a `@cached(ns=...)` of the same Cache, or each clear drops the
            other's entries. Give graphs whose async nodes share names their own
            name (see the module doc).
        hash_long_keys: accepted for code written for other memcached caches,
            which hash keys longer than memcached's 250 bytes only when asked.
            memo always does: every key is at most 250 bytes whatever the
            namespace and key, so the flag changes nothing (True or False).

    Attributes:
        client: what the cache was built from: the `memo.Cache` passed in or
            built by a `from_*` constructor, or the adopted pymemcache client
            (kept for reference: memo neither uses nor closes it).
        cache: the `memo.Cache` that speaks to memcached (stats, health, close).
        prefix: the key prefix every key of this cache starts with (`cache.prefix`).
        memcached_available: whether the cache can serve now, without I/O
            (False while every server's circuit breaker is open; see
            `memo.Cache.is_available`).

    Raises:
        memo.ConfigurationError: a client of another kind, a Unix-socket server,
            or an invalid prefix, ttl or name.
    """

    def __init__(
        self,
        client: Cache | Any,
        *,
        serde: SerializerProtocol | None = None,
        prefix: str = _DEFAULT_PREFIX,
        ttl: float | None = None,
        name: str = "langgraph",
        hash_long_keys: bool = True,
    ) -> None:
        super().__init__(serde=serde)
        if not isinstance(name, str) or not _NAME_OK.fullmatch(name):
            raise ConfigurationError(f"name must be 1 to 48 letters, digits or '_.:-', got {name!r}")
        if not isinstance(hash_long_keys, bool):
            raise ConfigurationError(f"hash_long_keys must be True or False, got {hash_long_keys!r}")
        self.ttl = check_ttl(ttl)
        self.hash_long_keys = hash_long_keys
        self.client = client.client if isinstance(client, WithTLS) else client
        self.cache = _cache_for(client, prefix)
        self._owns_cache = self.cache is not client
        self.name = name
        self._static = f"{self.cache.prefix}{name}:"
        self._spaces: dict[Namespace, Space] = {}
        self._entries = Entries(self.cache, name, self.serde)
        self._clears = Clears(self.cache, name)

    @property
    def prefix(self) -> str:
        """The key prefix every key and generation record of this cache starts with."""
        return self.cache.prefix

    @property
    def memcached_available(self) -> bool:
        """Whether the cache can serve now, without I/O (`memo.Cache.is_available`)."""
        return self.cache.is_available

    def __repr__(self) -> str:
        return f"MemcachedCache({self.cache!r}, name={self.name!r}, ttl={self.ttl!r})"

    # -- the pure parts ----------------------------------------------------------

    def _space(self, ns: Namespace) -> Space:
        space = self._spaces.get(ns)
        if space is None:
            if len(self._spaces) >= _MAX_SPACES:
                self._spaces.clear()
            space = self._spaces[ns] = Space(self.name, self._static, ns)
        return space

    def _spaces_of(self, full_keys: Iterable[FullKey]) -> dict[Namespace, Space]:
        # A batch holds many keys of few namespaces: look each namespace up once.
        return {ns: self._space(ns) for ns in {full[0] for full in full_keys}}

    def _storage(
        self,
        full_keys: Sequence[FullKey] | Mapping[FullKey, Any],
        spaces: Mapping[Namespace, Space],
        owner: str | None,
        gens: Mapping[Namespace, tuple[str, ...] | None],
    ) -> dict[FullKey, str]:
        """Map keys to memcached keys; keys of namespaces whose generations are unknown are left out."""
        if owner is None:
            return {}
        name = self.name
        prefixes = {
            ns: space.prefix_for(name, owner, known)
            for ns, space in spaces.items()
            if (known := gens[ns]) is not None
        }
        return storage_keys(full_keys, prefixes)

    def _names(self, spaces: Mapping[Namespace, Space]) -> list[str]:
        """This cache's memo namespace, then every namespace the spaces are read under, once each."""
        return list(dict.fromkeys([self.name, *(name for space in spaces.values() for name in space.chain)]))

    def _split(self, spaces: Mapping[Namespace, Space], read: Mapping[str, str | None]) -> _Generations:
        owner = read[self.name]
        clears = self._clears
        if owner is None or (clears.pending and self.name in clears.pending):
            return None, {}
        gens: dict[Namespace, tuple[str, ...] | None] = {}
        for ns, space in spaces.items():
            known = tuple(read[name] for name in space.chain)
            gens[ns] = None if None in known or (clears.pending and clears.blocked(space.chain)) else known  # type: ignore[assignment]
        return owner, gens

    def _namespaces_to_clear(self, namespaces: Sequence[Namespace] | None) -> list[str]:
        if namespaces is None:
            return [self.name]
        return [self._space(ns).memo_ns for ns in dict.fromkeys(tuple(ns) for ns in namespaces)]

    def _key_or_raise(
        self, ns: Namespace, key: str, spaces: Mapping[Namespace, Space], generations: _Generations
    ) -> str:
        storage = self._storage([(ns, key)], spaces, *generations)
        if not storage:
            raise BackendUnavailable(
                "the generations could not be read, or a clear of this namespace is still to be written; "
                "see Cache.stats()"
            )
        return storage[(ns, key)]

    # -- sync driver ---------------------------------------------------------------

    def _generations(self, spaces: Mapping[Namespace, Space]) -> _Generations:
        if self._clears.pending and (due := self._clears.due()):
            self._clears.clear(due)
        return self._split(spaces, self.cache.generations(self._names(spaces), "ignore"))

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """Return the cached values of `keys` that were found; one batch read per call."""
        if not keys:
            return {}
        spaces = self._spaces_of(keys)
        storage = self._storage(keys, spaces, *self._generations(spaces))
        found = (
            self.cache.get_many_bytes(list(storage.values()), self.name, "ignore", "langgraph")
            if storage
            else {}
        )
        return self._entries.collect(len(keys), storage, found)

    def set(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Store values with their ttl in seconds (None: never expire); one batch write per call."""
        if not pairs:
            return
        spaces = self._spaces_of(pairs)
        storage = self._storage(pairs, spaces, *self._generations(spaces))
        items = self._entries.items(pairs, storage, self.ttl)
        if items:
            self.cache.set_many_bytes(items, self.name, "ignore", "langgraph")

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Drop the entries of `namespaces` and of the namespaces nested in them, or, with None, all.

        Clearing `("a",)` drops `("a", "b")` too; the empty namespace `()` is
        the exception: `clear([()])` drops only its own entries (`clear()` is
        how LangGraph says "everything"). Fails open: when memcached cannot
        store the clear, the error is counted and reported to `on_event`, and
        this process reads and writes nothing in those namespaces until a retry
        of the clear succeeds (see `memo.langgraph._clearing`).
        """
        self._clears.clear(self._namespaces_to_clear(namespaces))

    def key_for(self, ns: Namespace, key: str) -> str:
        """Return the memcached key that `(ns, key)` reads now (for debugging).

        Raises:
            memo.BackendUnavailable: the generations could not be read.
        """
        spaces = {ns: self._space(ns)}
        return self._key_or_raise(ns, key, spaces, self._generations(spaces))

    # -- async driver: the same steps, awaited --------------------------------------

    async def _agenerations(self, spaces: Mapping[Namespace, Space]) -> _Generations:
        if self._clears.pending and (due := self._clears.due()):
            await self._clears.aclear(due)
        return self._split(spaces, await self.cache.agenerations(self._names(spaces), "ignore"))

    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """Async `get`."""
        if not keys:
            return {}
        spaces = self._spaces_of(keys)
        storage = self._storage(keys, spaces, *await self._agenerations(spaces))
        found = (
            await self.cache.aget_many_bytes(list(storage.values()), self.name, "ignore", "langgraph")
            if storage
            else {}
        )
        return self._entries.collect(len(keys), storage, found)

    async def aset(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Async `set`."""
        if not pairs:
            return
        spaces = self._spaces_of(pairs)
        storage = self._storage(pairs, spaces, *await self._agenerations(spaces))
        items = self._entries.items(pairs, storage, self.ttl)
        if items:
            await self.cache.aset_many_bytes(items, self.name, "ignore", "langgraph")

    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Async `clear`."""
        await self._clears.aclear(self._namespaces_to_clear(namespaces))

    async def akey_for(self, ns: Namespace, key: str) -> str:
        """Async `key_for`."""
        spaces = {ns: self._space(ns)}
        return self._key_or_raise(ns, key, spaces, await self._agenerations(spaces))

    # -- lifecycle -------------------------------------------------------------------
    # Only a Cache this object built is closed here: one passed in may serve decorated
    # functions and other graphs, and belongs to its creator.

    def close(self) -> None:
        """Release the sync connections of a Cache this object created."""
        if self._owns_cache:
            self.cache.close()

    async def aclose(self) -> None:
        """Release every connection of a Cache this object created."""
        if self._owns_cache:
            await self.cache.aclose()

    def __enter__(self) -> MemcachedCache[ValueT]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> MemcachedCache[ValueT]:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _cache_for(client: Any, prefix: str) -> Cache:
    """The memo Cache a graph cache runs on: the one given, or one built on an adopted client's servers."""
    if isinstance(client, Cache):
        if prefix is not _DEFAULT_PREFIX and prefix != client.prefix:
            raise ConfigurationError(
                f"prefix={prefix!r} is the key prefix of a Cache MemcachedCache builds; the "
                f"memo.Cache passed in keeps its own ({client.prefix!r}): set it with "
                "memo.Cache(url, prefix=...)"
            )
        return client
    url, options = adopt(client)
    return Cache(url, prefix=str(prefix), **options)
