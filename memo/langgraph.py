"""LangGraph on memo: a node cache for `compile(cache=...)`, a node key, and scopes for `@cached` nodes.

    import memo
    from langgraph.types import CachePolicy
    from memo.langgraph import MemcachedCache, node_key

    cache = memo.Cache("memcached://127.0.0.1:11211")
    builder.add_node("summarize", summarize, cache_policy=CachePolicy(key_func=node_key, ttl=300))
    graph = builder.compile(cache=MemcachedCache(cache))

`MemcachedCache` also takes a pymemcache client, and `from_server`,
`from_servers` and `from_url` build one (see the class). `node_key` keys a node
by the exact value of its input where LangGraph's default key does not (see
the function).

This is the only module of memo that imports LangGraph; `import memo` does not.

Namespaces and clearing. LangGraph files every cached task under a namespace
tuple (for a node: the writes marker, the node function's `module.qualname`
and the node name) and a 32-hex-digit key. A `MemcachedCache` owns the memo
namespace `name` ("langgraph" by default), and maps each LangGraph namespace to
its own memo namespace, `<name>/<the tuple as JSON>`. Every entry's digest
covers the generation tokens of both, so `clear(namespaces)` (a fresh token per
namespace) drops exactly those namespaces, `clear()` (a fresh token for `name`)
drops everything this cache owns, and neither scans, sends `flush_all`, or
touches entries of functions decorated on the same `memo.Cache`. Other
processes see a clear within the Cache's `ns_refresh` seconds.

Keys: `<prefix><name>:<namespace, sanitised and shortened>:<digest><key>`.
The readable part is for people reading server dumps. `<digest>` is a
blake2b-128 of the exact namespace tuple and both generations, computed once
per namespace and generation; `<key>` is LangGraph's key as it is when it is
a 32-hex-digit digest (what LangGraph makes), else "h" and a blake2b-128 of it
(any length, any characters). So two (namespace, key) pairs never share an
entry, and a batch costs one string concatenation per key.

Values: the serializer's `(type, bytes)` in a small envelope,
`b"mlg" | version | flags | len(type) | type | body`, the body zlib-compressed
above the Cache's `compress_threshold`. Anything that does not decode (another
format, corruption, an entry written with another serializer) is a miss,
counted in `decode_errors`. LangGraph's default serializer rebuilds whatever
importable class the bytes name (it logs unregistered ones) unless
`LANGGRAPH_STRICT_MSGPACK=true` or its `allowed_msgpack_modules=` narrows it:
narrow it when others can write to the memcached servers.

Failures never fail a graph run: when memcached cannot be reached `get`
returns `{}` and `set` drops the write; both are counted in
`Cache.stats()[name]` and logged. A value the serializer cannot encode is not
cached (`encode_errors`). Only `clear` raises `memo.BackendError`, because a
clear that did not happen must not look as if it had.

Graphs sharing one `MemcachedCache`: LangGraph names a node's namespace after
the node function's qualname, except for async node functions and compiled
subgraphs used as nodes, which all get `"__dynamic__"`. Two graphs with such
nodes of the same name and equal input would read each other's entries, so give
those graphs their own cache name: `MemcachedCache(cache, name="billing")`.
Sync nodes and `@task` functions (sync or async) are told apart by qualname.
A subgraph caches its nodes with the cache it was compiled with (LangGraph
1.2 does not hand it the parent's): `subgraph_builder.compile(cache=...)`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import logging
import re
import time
import typing
import zlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

import orjson
from langgraph.cache.base import BaseCache, FullKey, Namespace, ValueT
from langgraph.checkpoint.serde.base import SerializerProtocol

from ._backend import SetItem
from ._cache import Cache
from ._canonical import canonical as _canonical  # the canonical key forms node_key is built on
from ._errors import BackendUnavailable, ConfigurationError, UnkeyableArgumentError
from ._keys import safe_segment
from ._policy import ErrorLog, check_ttl
from ._sentinels import MISS, NOT_GIVEN

__all__ = ["MemcachedCache", "by_configurable", "by_context", "node_key"]

logger = logging.getLogger("memo")


# -- which parameters LangGraph injects (asked by memo's binder; keys leave them out) --------

#: Parameters LangGraph injects that are data the result depends on: `previous` (an
#: entrypoint's last return value) and `error` (what an error handler handles) stay in the key.
_KEPT_IN_KEY = frozenset({"previous", "error"})


def _langgraph_rules() -> tuple[tuple[tuple[str, tuple[Any, ...]], ...], Any, tuple[Any, ...]]:
    """Return LangGraph's own table of injected keyword arguments: `((name, annotations), ...)`."""
    try:
        from langgraph._internal._runnable import ANY_TYPE, KWARGS_CONFIG_KEYS, VALID_KINDS
    except ImportError:  # pragma: no cover - the table moved: the same rules, stated here
        from langchain_core.runnables import RunnableConfig
        from langgraph.store.base import BaseStore
        from langgraph.types import StreamWriter

        empty = inspect.Parameter.empty
        any_type = object()
        table = (
            ("config", (RunnableConfig, "RunnableConfig", RunnableConfig | None, empty)),
            ("writer", (StreamWriter, "StreamWriter", empty)),
            ("store", (BaseStore, "BaseStore", BaseStore | None, empty)),
            ("runtime", (any_type,)),
        )
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return table, any_type, kinds
    return tuple((name, types) for name, types, _, _ in KWARGS_CONFIG_KEYS), ANY_TYPE, VALID_KINDS


def injected_parameters(func: Callable[..., Any]) -> set[str]:
    """Return the parameters of `func` LangGraph injects when it runs it as a node or task.

    LangGraph's own rule decides, read from its table and applied as LangGraph
    applies it (`inspect.signature`, the annotation compared as written, so
    `config: "RunnableConfig"` counts and `config: "RunnableConfig | None"` does
    not). memo is stricter in two ways, so that a key never leaves out a value
    the result depends on: an unannotated parameter is kept (nothing proves
    LangGraph is the caller), and `runtime` counts only when annotated with
    LangGraph's `Runtime`. `previous` and `error` are always kept.
    """
    from langgraph.runtime import Runtime

    table, any_type, kinds = _langgraph_rules()
    params = inspect.signature(func).parameters
    found = set()
    for name, accepted in table:
        param = params.get(name)
        if param is None or param.kind not in kinds or name in _KEPT_IN_KEY:
            continue
        annotation = param.annotation
        if annotation is inspect.Parameter.empty:
            continue
        if accepted == (any_type,):
            if isinstance(annotation, str):
                with contextlib.suppress(Exception):
                    annotation = eval(annotation, dict(getattr(inspect.unwrap(func), "__globals__", {})))
            if (typing.get_origin(annotation) or annotation) is Runtime:
                found.add(name)
        elif annotation in accepted:
            found.add(name)
    return found


_MAGIC = b"mlg"
_VERSION = 2
_ZLIB = 1
#: The entry ends with its exact expiry (uint64 Unix ms): memcached's clock ticks in
#: whole seconds, so a CachePolicy's ttl is held to the millisecond by the reader.
_EXPIRES = 2
_HEADER = len(_MAGIC) + 3  # magic, version, flags, length of the type name
#: `langgraph._internal._constants.CACHE_NS_WRITES`, left out of the readable part of keys.
_WRITES_NS = "__pregel_ns_writes"
_NAME_OK = re.compile(r"[A-Za-z0-9_.:\-]{1,48}")
_MAX_SPACES = 4096  # namespaces whose key parts are kept ready
#: The constructor's `prefix` default, told apart from a prefix given with a memo.Cache.
_DEFAULT_PREFIX: Any = type("_DefaultPrefix", (str,), {"__repr__": lambda self: "'lgc:'"})("lgc:")
_KEY_VERSION = b"memo.langgraph/2"
#: LangGraph keys: 32 lowercase hex digits (an xxh3-128 digest).
_DIGEST_LEN = 32
_DIGEST_LENGTHS = {_DIGEST_LEN}
_HEX = b"0123456789abcdef"
#: The readable namespace label: at most 64 characters, so that the longest key
#: (64 prefix + 48 name + 2 colons + 64 label + 32 digest + 33 key) stays under 250 bytes.
_LABEL_MAX = 64
#: This cache's generation, and each namespace's (None: unknown, so bypass the cache).
_Generations = tuple[str | None, dict[Namespace, str | None]]


def _frame(*parts: bytes) -> bytes:
    """Length-prefix each part, so no sequence of parts can read as another."""
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def _hex(text: str) -> bool:
    """Whether `text` is lowercase hex digits only, in one C-level pass over its bytes."""
    return text.isascii() and not text.encode("ascii").translate(None, _HEX)


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


class _Space:
    """What keys of one LangGraph namespace share, prepared once per generation."""

    __slots__ = ("made", "memo_ns", "seed", "static")

    def __init__(self, owner: str, static_prefix: str, ns: Namespace) -> None:
        #: The memo namespace whose generation `clear([ns])` renews; "/" never occurs in `owner`.
        self.memo_ns = f"{owner}/{json.dumps(list(ns), ensure_ascii=True)}"
        label = "/".join(ns[1:] if ns[:1] == (_WRITES_NS,) else ns)
        self.static = f"{static_prefix}{safe_segment(label, _LABEL_MAX)}:"
        self.seed = _frame(len(ns).to_bytes(4, "big"), *map(_utf8, ns))
        #: The last prefix made, with the generations it was made for (one tuple: threads share it).
        self.made: tuple[str, str, str] = ("", "", "")

    def prefix_for(self, owner_name: str, owner: str, gen: str) -> str:
        """Return `<static><digest of the exact namespace and both generations>`."""
        made_owner, made_gen, prefix = self.made
        if made_owner != owner or made_gen != gen:
            seed = _frame(_KEY_VERSION, owner_name.encode(), owner.encode(), gen.encode()) + self.seed
            prefix = self.static + hashlib.blake2b(seed, digest_size=16).hexdigest()
            self.made = (owner, gen, prefix)
        return prefix


class MemcachedCache(BaseCache[ValueT]):
    """A LangGraph node cache on memcached: `builder.compile(cache=MemcachedCache(client))`.

        cache = MemcachedCache(memo.Cache("memcached://127.0.0.1:11211"))
        cache = MemcachedCache(PooledClient("127.0.0.1:11211", timeout=1), ttl=3600)
        with MemcachedCache.from_server("127.0.0.1:11211", ttl_seconds=3600) as cache: ...

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
            spaces) of the `memo.Cache` built for a pymemcache client; every
            key and generation record of this cache starts with it, so
            applications sharing servers stay apart. A `memo.Cache` passed in
            keeps its own prefix (`memo.Cache(url, prefix=...)`): giving
            `prefix=` with one raises `ConfigurationError`.
        ttl: seconds an entry lives when its node's `CachePolicy` gives no
            `ttl` (None, the default: such entries never expire). Memcached
            counts whole seconds, so a fraction is rounded up. A `memo.Cache`'s
            own `ttl=` is the default of its `@cached` functions, not this one.
        name: this cache's memo namespace: letters, digits and `_.:-`, at most 48.
            Not also a `@cached(ns=...)` of the same Cache, or each clear drops the
            other's entries. Give graphs whose async nodes share names their own
            name (see the module doc).

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
    ) -> None:
        super().__init__(serde=serde)
        if not isinstance(name, str) or not _NAME_OK.fullmatch(name):
            raise ConfigurationError(f"name must be 1 to 48 letters, digits or '_.:-', got {name!r}")
        self.ttl = check_ttl(ttl)
        owns = False
        if isinstance(client, Cache):
            if prefix is not _DEFAULT_PREFIX and prefix != client.prefix:
                raise ConfigurationError(
                    f"prefix={prefix!r} is the key prefix of a Cache MemcachedCache builds; the "
                    f"memo.Cache passed in keeps its own ({client.prefix!r}): set it with "
                    "memo.Cache(url, prefix=...)"
                )
            cache = client
        else:
            url, options = _adopt(client)
            cache = Cache(url, prefix=str(prefix), **options)
            owns = True
        self.cache = cache
        self.name = name
        #: The header of the last uncompressed entry decoded and its type name, as one tuple
        #: (threads share it: a header never meets another header's type name).
        self._last: tuple[bytes, str] = (b"", "")
        self._owns_cache = owns
        self._static = f"{cache.prefix}{name}:"
        self._spaces: dict[Namespace, _Space] = {}
        self._stats = cache.ns_stats(name)
        self._errors = ErrorLog(logger)

    # -- other ways to build one ---------------------------------------------------
    # Each builds a memo.Cache that this object owns: `close()`/`aclose()` (or leaving
    # a `with`/`async with` block) release its connections.

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        serde: SerializerProtocol | None = None,
        prefix: str = "lgc:",
        ttl: float | None = None,
        name: str = "langgraph",
        **options: Any,
    ) -> MemcachedCache[Any]:
        """Build a cache on a new `memo.Cache(url, prefix=prefix, **options)`.

        Args:
            url: `memcached://host:port[,host:port...]`, `memcached+tls://...` or `memory://`.
            serde: as for the constructor.
            prefix: as for the constructor.
            ttl: as for the constructor.
            name: as for the constructor.
            **options: `memo.Cache` options: `ns_refresh`, `compress_threshold`,
                `timeout`, `connect_timeout`, `pool_size`, `tls_context`...
        """
        made: MemcachedCache[Any] = cls(Cache(url, prefix=prefix, **options), serde=serde, ttl=ttl, name=name)
        made._owns_cache = True
        return made

    @classmethod
    def from_server(
        cls,
        server: str | tuple[str, int],
        *,
        serde: SerializerProtocol | None = None,
        prefix: str = "lgc:",
        ttl_seconds: float | None = None,
        pool_size: int | None = None,
        connect_timeout: float | None = None,
        timeout: float | None = None,
        name: str = "langgraph",
        **options: Any,
    ) -> MemcachedCache[Any]:
        """Build a cache on one memcached server, `"host:port"` or `(host, port)`.

        Use it as it is or as a context manager, sync or async:

            with MemcachedCache.from_server("127.0.0.1:11211", ttl_seconds=600) as cache:
                graph = builder.compile(cache=cache)

        Args:
            server: the server; IPv6 as `"[addr]:port"`.
            ttl_seconds: the default TTL (`ttl` of the constructor).
            pool_size: connections per server; None keeps memo's default (16).
            connect_timeout: seconds to connect; None keeps memo's default (0.25).
            timeout: seconds per request; None keeps memo's default (0.25).
            serde: as for the constructor.
            prefix: as for the constructor.
            name: as for the constructor.
            **options: other `memo.Cache` options (`tls_context`, `ns_refresh`...).
        """
        return cls.from_servers(
            [server],
            serde=serde,
            prefix=prefix,
            ttl_seconds=ttl_seconds,
            pool_size=pool_size,
            connect_timeout=connect_timeout,
            timeout=timeout,
            name=name,
            **options,
        )

    @classmethod
    def from_servers(
        cls,
        servers: Iterable[str | tuple[str, int]],
        *,
        serde: SerializerProtocol | None = None,
        prefix: str = "lgc:",
        ttl_seconds: float | None = None,
        pool_size: int | None = None,
        connect_timeout: float | None = None,
        timeout: float | None = None,
        name: str = "langgraph",
        **options: Any,
    ) -> MemcachedCache[Any]:
        """Build a cache on memcached servers given as `"host:port"` or `(host, port)`.

        Keys are spread over the servers by memo's consistent-hash ring. Arguments as
        for `from_server`; a `tls_context=` option speaks TLS to every server.
        """
        hosts = [server if isinstance(server, str) else _server_spec(*server) for server in servers]
        if not hosts:
            raise ConfigurationError("from_servers needs at least one server")
        given = {"pool_size": pool_size, "connect_timeout": connect_timeout, "timeout": timeout}
        options.update({key: value for key, value in given.items() if value is not None})
        scheme = "memcached+tls" if options.get("tls_context") is not None else "memcached"
        return cls.from_url(
            f"{scheme}://{','.join(hosts)}", serde=serde, prefix=prefix, ttl=ttl_seconds, name=name, **options
        )

    def __repr__(self) -> str:
        return f"MemcachedCache({self.cache!r}, name={self.name!r}, ttl={self.ttl!r})"

    # -- the pure parts ----------------------------------------------------------

    def _space(self, ns: Namespace) -> _Space:
        space = self._spaces.get(ns)
        if space is None:
            if len(self._spaces) >= _MAX_SPACES:
                self._spaces.clear()
            space = self._spaces[ns] = _Space(self.name, self._static, ns)
        return space

    def _spaces_of(self, full_keys: Iterable[FullKey]) -> dict[Namespace, _Space]:
        # A batch holds many keys of few namespaces: look each namespace up once.
        return {ns: self._space(ns) for ns in {full[0] for full in full_keys}}

    def _prefixes(
        self, spaces: Mapping[Namespace, _Space], owner: str, gens: Mapping[Namespace, str | None]
    ) -> dict[Namespace, str]:
        """Each namespace's key prefix; namespaces whose generation is unknown are left out."""
        name = self.name
        return {
            ns: space.prefix_for(name, owner, gen)
            for ns, space in spaces.items()
            if (gen := gens[ns]) is not None
        }

    def _storage(
        self,
        full_keys: Collection[FullKey],
        spaces: Mapping[Namespace, _Space],
        owner: str | None,
        gens: Mapping[Namespace, str | None],
    ) -> dict[FullKey, str]:
        if owner is None:
            return {}
        return self._storage_keys(full_keys, self._prefixes(spaces, owner, gens))

    @staticmethod
    def _storage_keys(
        full_keys: Collection[FullKey], prefixes: Mapping[Namespace, str]
    ) -> dict[FullKey, str]:
        """Map LangGraph keys to memcached keys; keys of namespaces not in `prefixes` are left out.

        The prefix ends in a digest of the exact namespace and both generations,
        so what follows only has to tell the keys of one namespace apart. A
        LangGraph key is a 32-hex-digit digest already, safe in memcached as it
        is, so it is appended unchanged (the whole batch is checked at once);
        any other string is replaced by "h" and its blake2b-128 digest, which is
        33 characters long and cannot equal a 32-digit key.
        """
        if set(map(len, keys := [full[1] for full in full_keys])) == _DIGEST_LENGTHS and _hex("".join(keys)):
            if len(prefixes) == 1:
                ((only, one),) = prefixes.items()
                return {full: one + full[1] for full in full_keys if full[0] == only}
            return {full: hit + full[1] for full in full_keys if (hit := prefixes.get(full[0])) is not None}
        out: dict[FullKey, str] = {}
        for full in full_keys:
            prefix = prefixes.get(full[0])
            if prefix is not None:
                key = full[1]
                if len(key) == _DIGEST_LEN and _hex(key):
                    out[full] = prefix + key
                else:
                    out[full] = f"{prefix}h{hashlib.blake2b(_utf8(key), digest_size=16).hexdigest()}"
        return out

    def _encode(self, value: Any, ttl: float | None = None) -> bytes | None:
        try:
            kind, body = self.serde.dumps_typed(value)
            tag = kind.encode("ascii")
            if len(tag) > 255:
                raise ValueError(f"serializer type name {kind!r} is longer than 255 bytes")
        except Exception as exc:  # a value that cannot be stored is not cached; the run goes on
            self._stats.encode_errors += 1
            self._errors.report(f"encoding a {type(value).__name__} for the graph cache", exc)
            return None
        flags = 0
        threshold = self.cache.compress_threshold
        if threshold is not None and len(body) > threshold:
            packed = zlib.compress(body, 3)
            if len(packed) < len(body):
                body, flags = packed, _ZLIB
        if ttl is None:
            return b"".join((_MAGIC, bytes((_VERSION, flags, len(tag))), tag, body))
        expires = int(time.time() * 1000.0 + ttl * 1000.0).to_bytes(8, "big")
        return b"".join((_MAGIC, bytes((_VERSION, flags | _EXPIRES, len(tag))), tag, body, expires))

    def _decode(self, raw: bytes) -> Any:
        """Decode one entry, reading its header (`_collect` does the common case inline)."""
        try:
            if raw[:3] != _MAGIC or raw[3] != _VERSION or raw[4] & ~(_ZLIB | _EXPIRES):
                raise ValueError("not a memo.langgraph entry of a known version")
            end = _HEADER + raw[5]
            kind = raw[_HEADER:end].decode("ascii")
            if len(kind) != raw[5]:
                raise ValueError("truncated entry")
            body = raw[end:]
            if raw[4] & _EXPIRES:
                if len(body) < 8:
                    raise ValueError("truncated entry")
                if int.from_bytes(body[-8:], "big") <= time.time() * 1000.0:
                    return MISS  # expired: a miss, not a decode error
                body = body[:-8]
            if raw[4] & _ZLIB:
                return self.serde.loads_typed((kind, zlib.decompress(body)))
            self._last = (raw[:end], kind)
            return self.serde.loads_typed((kind, body))
        except Exception:  # corrupt, foreign or another serializer's bytes: a miss, never an error
            self._stats.decode_errors += 1
            return MISS

    def _collect(
        self, asked: int, storage: Mapping[FullKey, str], found: Mapping[str, bytes]
    ) -> dict[FullKey, ValueT]:
        values: dict[FullKey, ValueT] = {}
        if found:
            # The common case inlined: every entry has the header of the last one decoded
            # (one serializer type, uncompressed), so only the body is handed to the serde.
            header, kind = self._last
            start = len(header)
            timed = start and header[4] & _EXPIRES
            now_ms = time.time() * 1000.0
            loads = self.serde.loads_typed
            for full, key in storage.items():
                raw = found.get(key)
                if raw is None:
                    continue
                if start and raw.startswith(header):
                    try:
                        if not timed:
                            values[full] = loads((kind, raw[start:]))
                            continue
                        if len(raw) >= start + 8 and int.from_bytes(raw[-8:], "big") > now_ms:
                            values[full] = loads((kind, raw[start:-8]))
                            continue
                    except Exception:
                        pass  # counted by _decode below, which fails the same way
                value = self._decode(raw)
                if value is not MISS:
                    values[full] = value
        self._stats.hits += len(values)
        self._stats.misses += asked - len(values)
        if self.cache._events.hook is not None:
            for kind, n in (("hit", len(values)), ("miss", asked - len(values))):
                for _ in range(n):
                    self.cache._emit(kind, self.name, None, None, None, "langgraph")
        return values

    def _items(
        self, pairs: Mapping[FullKey, tuple[ValueT, int | None]], storage: Mapping[FullKey, str]
    ) -> list[SetItem]:
        items: list[SetItem] = []
        default = self.ttl
        for full, key in storage.items():
            value, given = pairs[full]
            ttl: float | None = default if given is None else given  # default: for policies giving none
            # LangGraph's ttl is whole seconds or None; memcached would read 0 as "never expires".
            if ttl is not None and ttl <= 0:
                continue
            data = self._encode(value, ttl)
            if data is not None:
                # memcached keeps it a second longer; the reader holds the exact expiry.
                items.append((key, data, None if ttl is None else ttl + 1))
        return items

    # -- sync driver ---------------------------------------------------------------

    def _generations(self, spaces: Mapping[Namespace, _Space]) -> _Generations:
        return self._split(spaces, self.cache.generations(self._names(spaces), "ignore"))

    def _names(self, spaces: Mapping[Namespace, _Space]) -> list[str]:
        return [self.name, *(space.memo_ns for space in spaces.values())]

    def _split(self, spaces: Mapping[Namespace, _Space], read: Mapping[str, str | None]) -> _Generations:
        # This cache's own generation, then each namespace's: all read in one batch when stale.
        owner = read[self.name]
        if owner is None:
            return None, {}
        return owner, {ns: read[space.memo_ns] for ns, space in spaces.items()}

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """Return the cached values of `keys` that were found; one batch read per call."""
        if not keys:
            return {}
        spaces = self._spaces_of(keys)
        storage = self._storage(keys, spaces, *self._generations(spaces))
        found = (
            self.cache._get_many(list(storage.values()), self.name, "ignore", "langgraph") if storage else {}
        )
        return self._collect(len(keys), storage, found)

    def set(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Store values with their ttl in seconds (None: never expire); one batch write per call."""
        if not pairs:
            return
        spaces = self._spaces_of(pairs)
        owner, gens = self._generations(spaces)
        if owner is None:
            return
        items = self._items(pairs, self._storage(pairs, spaces, owner, gens))
        if items:
            self.cache._set_many(items, self.name, "ignore", "langgraph")

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Drop the entries of exactly `namespaces`, or, with None, everything this cache owns.

        Raises:
            memo.BackendError: the new generation could not be written.
        """
        if namespaces is None:
            self.cache.clear(self.name)
            return
        for ns in dict.fromkeys(tuple(ns) for ns in namespaces):
            self.cache.clear(self._space(ns).memo_ns)

    def key_for(self, ns: Namespace, key: str) -> str:
        """Return the memcached key that `(ns, key)` reads now (for debugging).

        Raises:
            memo.BackendUnavailable: the generations could not be read.
        """
        spaces = {ns: self._space(ns)}
        owner, gens = self._generations(spaces)
        return self._key_or_raise(ns, key, spaces, owner, gens)

    def _key_or_raise(
        self,
        ns: Namespace,
        key: str,
        spaces: Mapping[Namespace, _Space],
        owner: str | None,
        gens: Mapping[Namespace, str | None],
    ) -> str:
        storage = self._storage([(ns, key)], spaces, owner, gens)
        if not storage:
            raise BackendUnavailable("the generations could not be read; see Cache.stats()")
        return storage[(ns, key)]

    # -- async driver: the same steps, awaited --------------------------------------

    async def akey_for(self, ns: Namespace, key: str) -> str:
        """Async `key_for`."""
        spaces = {ns: self._space(ns)}
        owner, gens = await self._agenerations(spaces)
        return self._key_or_raise(ns, key, spaces, owner, gens)

    async def _agenerations(self, spaces: Mapping[Namespace, _Space]) -> _Generations:
        return self._split(spaces, await self.cache.agenerations(self._names(spaces), "ignore"))

    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """Async `get`."""
        if not keys:
            return {}
        spaces = self._spaces_of(keys)
        storage = self._storage(keys, spaces, *await self._agenerations(spaces))
        found = (
            await self.cache._aget_many(list(storage.values()), self.name, "ignore", "langgraph")
            if storage
            else {}
        )
        return self._collect(len(keys), storage, found)

    async def aset(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Async `set`."""
        if not pairs:
            return
        spaces = self._spaces_of(pairs)
        owner, gens = await self._agenerations(spaces)
        if owner is None:
            return
        items = self._items(pairs, self._storage(pairs, spaces, owner, gens))
        if items:
            await self.cache._aset_many(items, self.name, "ignore", "langgraph")

    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Async `clear`."""
        if namespaces is None:
            await self.cache.aclear(self.name)
            return
        for ns in dict.fromkeys(tuple(ns) for ns in namespaces):
            await self.cache.aclear(self._space(ns).memo_ns)

    # -- lifecycle -------------------------------------------------------------------
    # Only a Cache made by `from_url`/`from_servers` is closed here: one passed in
    # may serve decorated functions and other graphs, and belongs to its creator.

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


def _server_spec(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _adopt(client: Any) -> tuple[str, dict[str, Any]]:
    """Return the memcached URL and `memo.Cache` options that reproduce a pymemcache client's connections.

    What is and is not taken over is listed in `MemcachedCache`'s docstring.
    """
    from pymemcache.client.base import Client, PooledClient
    from pymemcache.client.hash import HashClient
    from pymemcache.client.retrying import RetryingClient

    if isinstance(client, RetryingClient):
        client = client._client
    pool: Any = None
    if isinstance(client, HashClient):
        members = [member.server for member in client.clients.values()]
        members += [server for server in client._dead_clients if server not in members]
        settings = client.default_kwargs
        if client.use_pooling:
            pool = settings.get("max_pool_size")
    elif isinstance(client, (Client, PooledClient)):
        members = [client.server]
        settings = {
            "connect_timeout": client.connect_timeout,
            "timeout": client.timeout,
            "tls_context": client.tls_context,
        }
        if isinstance(client, PooledClient):
            pool = client.client_pool.max_size
    else:
        raise ConfigurationError(
            f"MemcachedCache needs a memo.Cache or a pymemcache Client, PooledClient or HashClient, "
            f"got {client!r}; MemcachedCache.from_url(url) and from_server('host:port') build one"
        )
    hosts = []
    for server in members:
        if not isinstance(server, tuple):
            raise ConfigurationError(
                f"memcached server {server!r} is a Unix socket, which memo does not speak"
            )
        hosts.append(_server_spec(str(server[0]), int(server[1])))
    if not hosts:
        raise ConfigurationError(f"{client!r} has no servers")
    options: dict[str, Any] = {}
    for option in ("connect_timeout", "timeout"):
        if settings.get(option) is not None:
            options[option] = float(settings[option])
    # ObjectPool's "no limit" is 2**31: keep memo's default rather than promise that many.
    if isinstance(pool, int) and 0 < pool < 2**31:
        options["pool_size"] = pool
    scheme = "memcached"
    if settings.get("tls_context") is not None:
        scheme = "memcached+tls"
        options["tls_context"] = settings["tls_context"]
    return f"{scheme}://{','.join(hosts)}", options


# -- scopes for @cached nodes -------------------------------------------------------


def _pick(source: Any, names: tuple[str, ...], default: Any, where: str) -> Any:
    values = []
    for name in names:
        if isinstance(source, Mapping):
            value = source.get(name, NOT_GIVEN)
        else:
            value = getattr(source, name, NOT_GIVEN)
        if value is NOT_GIVEN:
            if default is NOT_GIVEN:
                raise KeyError(
                    f"{where} has no {name!r}, which this node's cache key is scoped by; "
                    f"pass it, or give the scope a default= for calls without it"
                )
            value = default
        values.append(value)
    return values[0] if len(values) == 1 else tuple(values)


def by_configurable(*names: str, default: Any = NOT_GIVEN) -> Callable[[Any], Any]:
    """Return a `scope=` that keys a node by entries of `config["configurable"]`.

        @cached(ns="answers", scope=by_configurable("user_id"))
        def answer(state: State, config: RunnableConfig) -> dict: ...

    The node must take `config`. A call whose configurable lacks a name raises
    `KeyError` (one user's entry is never served to a caller who gave no user),
    unless `default=` is given.
    """
    if not names:
        raise ConfigurationError("by_configurable needs at least one configurable key")

    def scope(config: Any) -> Any:
        configurable = (config or {}).get("configurable") or {}
        return _pick(configurable, names, default, 'config["configurable"]')

    return scope


def by_context(*names: str, default: Any = NOT_GIVEN) -> Callable[[Any], Any]:
    """Return a `scope=` that keys a node by fields of the run context, `runtime.context`.

        @cached(ns="answers", scope=by_context("user_id"))
        def answer(state: State, runtime: Runtime[Context]) -> dict: ...

    The node must take `runtime`; the context may be a dataclass, a pydantic
    model or a dict. A missing field raises `KeyError` unless `default=` is given.
    """
    if not names:
        raise ConfigurationError("by_context needs at least one context field")

    def scope(runtime: Any) -> Any:
        return _pick(getattr(runtime, "context", None), names, default, "runtime.context")

    return scope


# -- a node key that is right -------------------------------------------------------

_NODE_KEY_TAG = "memo.langgraph.node_key/1"


def node_key(*args: Any, **kwargs: Any) -> bytes:
    """Key a cached node or task by the exact value of its input: `CachePolicy(key_func=node_key)`.

        from langgraph.types import CachePolicy
        from memo.langgraph import node_key

        builder.add_node("summarize", summarize, cache_policy=CachePolicy(key_func=node_key, ttl=300))

        @task(cache_policy=CachePolicy(key_func=node_key))
        def expand(point: str, *, style: dict[str, str]) -> str: ...

    LangGraph calls the key function with a node's input (its state, or a
    `Send` payload), or with a `@task`'s arguments, and hashes the bytes it
    returns. Its default, `default_cache_key`, pickles the input after a shallow
    freeze, which gets three things wrong that this key gets right:

    - dict key order: `{"a": 1, "b": 2}` and `{"b": 2, "a": 1}` are one input
      and get one key (the default gives two: misses);
    - sets and frozensets key by their members in a canonical order, so every
      process computes the same key whatever its `PYTHONHASHSEED` (the default
      pickles iteration order, which differs between processes for strings:
      workers sharing memcached miss each other's entries forever);
    - types: `[1, 2]` and `(1, 2)`, `1`, `1.0`, `True` and `"1"` get different
      keys (the default gives `@task` keyword arguments `[1, 2]` and `(1, 2)`
      one entry), and dicts whose keys mix types (`{1: "a", "b": 2}`) are keyed,
      where the default raises `TypeError` from `sorted`.

    Values are keyed by memo's canonical forms, the ones `@cached` uses:
    built-in values and containers, dataclasses, pydantic models (LangChain
    messages included), enums, named tuples, datetimes, UUIDs, Decimals, paths,
    and any class with a `__cache_key__()` method. What has no value-based
    identity (an object whose repr is its address, a lambda) is refused with
    `memo.UnkeyableArgumentError` naming where in the input it sits: the run
    fails rather than cache under a key that does not identify the input.

    Use it for every node and task whose input holds dicts built in varying
    order, sets, or values whose types matter, and always when several
    processes share one `MemcachedCache`. It walks the input in Python, several
    times the cost of the default's pickling: nothing beside a model call, but
    noticeable for inputs of thousands of items. Entries keyed one way are not
    found the other way: switching a node to `node_key` starts it from empty
    entries.

    Returns:
        The canonical bytes of `(args, kwargs)`; LangGraph hashes them.

    Raises:
        memo.UnkeyableArgumentError: a part of the input cannot be keyed.
    """
    try:
        tree = [_NODE_KEY_TAG, [_canonical(value) for value in args], _canonical(kwargs)]
    except Exception as exc:  # the canonical forms refuse what they cannot key
        raise _node_key_error(args, kwargs, exc) from None
    return orjson.dumps(tree)


def _node_key_error(args: tuple[Any, ...], kwargs: dict[str, Any], exc: Exception) -> UnkeyableArgumentError:
    """Name the first part of a node's input that cannot be keyed, and the ways out."""
    found: tuple[str, Any] | None = None
    if len(args) == 1 and not kwargs:
        found = _unkeyable_part(args[0], "the node input")
    else:
        parts = [(f"argument {i}", value) for i, value in enumerate(args)]
        parts += [(f"keyword argument {name!r}", value) for name, value in kwargs.items()]
        for where, value in parts:
            found = _unkeyable_part(value, where)
            if found is not None:
                break
    where, value = found if found is not None else ("the node input", args)
    why = getattr(exc, "why", None) or str(exc)
    cls = type(value)
    return UnkeyableArgumentError(
        f"memo.langgraph.node_key cannot key {where}: {why}. Give "
        f"{cls.__module__}.{cls.__qualname__} a __cache_key__() method returning the values that "
        "identify it, keep it out of the cached node's input, or give this node a "
        "CachePolicy(key_func=...) of its own that picks the fields that matter"
    )


def _unkeyable_part(value: Any, where: str) -> tuple[str, Any] | None:
    """Return (path, value) of the innermost part of `value` that cannot be keyed, or None."""
    try:
        _canonical(value)
        return None
    except Exception:
        pass
    children: list[tuple[str, Any]] = []
    if isinstance(value, Mapping):
        children = [(f"a key of {where}", key) for key in value]
        children += [(f"{where}[{key!r}]", item) for key, item in value.items()]
    elif isinstance(value, (list, tuple, set, frozenset)):
        children = [(f"{where}[{i}]", item) for i, item in enumerate(value)]
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        children = [(f"{where}.{f.name}", getattr(value, f.name)) for f in dataclasses.fields(value)]
    for path, item in children:
        found = _unkeyable_part(item, path)
        if found is not None:
            return found
    return where, value
