"""Ways to build a `MemcachedCache` besides its constructor: from a URL, servers, or a client.

Each of `from_url`, `from_conn_string`, `from_server` and `from_servers`
builds a `memo.Cache` that the graph cache owns: `close()`/`aclose()` (or
leaving a `with`/`async with` block) release its connections. The result is
the cache itself, usable as it is or as a context manager, sync or async, so
code written for LangGraph's `ValkeyCache` (`with X.from_conn_string(...) as
cache:`) works unchanged. `from_pool` adopts a pymemcache client as the
constructor does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from langgraph.checkpoint.serde.base import SerializerProtocol

from .._cache import Cache
from .._errors import ConfigurationError
from ._adopt import WithTLS, server_spec

__all__ = ["Constructors", "DEFAULT_PREFIX"]

#: The key prefix of every memo.Cache a graph cache builds (the LangGraph design's own).
DEFAULT_PREFIX = "lgc:"

C = TypeVar("C", bound="Constructors")


class Constructors:
    """The class methods that build a graph cache; mixed into `MemcachedCache`."""

    _owns_cache: bool

    @classmethod
    def from_url(
        cls: type[C],
        url: str,
        *,
        serde: SerializerProtocol | None = None,
        prefix: str = DEFAULT_PREFIX,
        ttl: float | None = None,
        name: str = "langgraph",
        hash_long_keys: bool = True,
        **options: Any,
    ) -> C:
        """Build a cache on a new `memo.Cache(url, prefix=prefix, **options)`.

        Args:
            url: `memcached://host:port[,host:port...]`, `memcached+tls://...` or `memory://`.
            serde: as for the constructor.
            prefix: as for the constructor.
            ttl: as for the constructor.
            name: as for the constructor.
            hash_long_keys: as for the constructor.
            **options: `memo.Cache` options: `ns_refresh`, `compress_threshold`,
                `timeout`, `connect_timeout`, `pool_size`, `tls_context`...
        """
        build: Any = cls  # MemcachedCache, whose constructor this mixin does not declare
        made: C = build(
            Cache(url, prefix=prefix, **options),
            serde=serde,
            ttl=ttl,
            name=name,
            hash_long_keys=hash_long_keys,
        )
        made._owns_cache = True
        return made

    @classmethod
    def from_conn_string(
        cls: type[C],
        conn_string: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        ttl_seconds: float | None = None,
        serde: SerializerProtocol | None = None,
        pool_size: int | None = None,
        pool_timeout: float | None = None,
        name: str = "langgraph",
        hash_long_keys: bool = True,
        **options: Any,
    ) -> C:
        """Build a cache from a connection string, as LangGraph's `ValkeyCache.from_conn_string` does.

            with MemcachedCache.from_conn_string("memcached://127.0.0.1:11211", ttl_seconds=3600) as cache:
                graph = builder.compile(cache=cache)

        Args:
            conn_string: a memo URL (`memcached://host:port[,host:port...]`,
                `memcached+tls://...`, `memory://`), or servers without a
                scheme (`"host:port,host:port"`), read as `memcached://`.
            prefix: as for the constructor (default `"lgc:"`).
            ttl_seconds: the default TTL (`ttl` of the constructor).
            serde: as for the constructor.
            pool_size: connections per server; None keeps memo's default (16).
            pool_timeout: accepted for code written for `ValkeyCache`; memo bounds
                a wait for a pooled connection by its operation `timeout`
                (0.25 s by default) and then fails open, so it is not used.
            name: as for the constructor.
            hash_long_keys: as for the constructor.
            **options: other `memo.Cache` options (`timeout`, `connect_timeout`, `tls_context`...).
        """
        del pool_timeout  # see the docstring: memo never waits longer than `timeout`
        if not isinstance(conn_string, str) or not conn_string.strip():
            raise ConfigurationError(
                f"conn_string must be a memcached URL or host:port list, got {conn_string!r}"
            )
        url = conn_string if "://" in conn_string else f"memcached://{conn_string.strip()}"
        if pool_size is not None:
            options["pool_size"] = pool_size
        return cls.from_url(
            url,
            serde=serde,
            prefix=prefix,
            ttl=ttl_seconds,
            name=name,
            hash_long_keys=hash_long_keys,
            **options,
        )

    @classmethod
    def from_pool(
        cls: type[C],
        pool: Any,
        *,
        ssl: bool = False,
        prefix: str = DEFAULT_PREFIX,
        ttl_seconds: float | None = None,
        serde: SerializerProtocol | None = None,
        name: str = "langgraph",
        hash_long_keys: bool = True,
    ) -> C:
        """Build a cache on the servers of a pymemcache client, as `ValkeyCache.from_pool` does with a pool.

            pool = PooledClient("127.0.0.1:11211", max_pool_size=20, timeout=1)
            with MemcachedCache.from_pool(pool, ttl_seconds=3600) as cache: ...

        The client (`PooledClient`, `HashClient`, `Client`, or a `RetryingClient`
        around one) is adopted as by the constructor: memo builds its own
        connections to the same servers with the same timeouts, TLS context and
        pool size, and neither uses nor closes the client; closing the graph cache
        closes memo's connections. A `memo.Cache` is taken as the constructor takes it.

        Args:
            pool: the pymemcache client (or a `memo.Cache`).
            ssl: speak TLS with the system's certificate authorities when the
                client has no `tls_context` of its own.
            prefix: as for the constructor (default `"lgc:"`).
            ttl_seconds: the default TTL (`ttl` of the constructor).
            serde: as for the constructor.
            name: as for the constructor.
            hash_long_keys: as for the constructor.

        Raises:
            memo.ConfigurationError: `pool` is None or of another kind, or `ssl=True`
                with a `memo.Cache`.
        """
        if pool is None:
            raise ConfigurationError("from_pool needs a pymemcache client (or a memo.Cache), got None")
        if not isinstance(ssl, bool):
            raise ConfigurationError(f"ssl must be True or False, got {ssl!r}")
        if ssl and isinstance(pool, Cache):
            raise ConfigurationError(
                "ssl=True adopts a pymemcache client with TLS; a memo.Cache keeps its URL's scheme"
            )
        if ssl:
            pool = WithTLS(pool)
        build: Any = cls
        made: C = build(
            pool, serde=serde, prefix=prefix, ttl=ttl_seconds, name=name, hash_long_keys=hash_long_keys
        )
        return made

    @classmethod
    def from_server(
        cls: type[C],
        server: str | tuple[str, int],
        *,
        serde: SerializerProtocol | None = None,
        prefix: str = DEFAULT_PREFIX,
        ttl_seconds: float | None = None,
        pool_size: int | None = None,
        connect_timeout: float | None = None,
        timeout: float | None = None,
        name: str = "langgraph",
        **options: Any,
    ) -> C:
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
        cls: type[C],
        servers: Iterable[str | tuple[str, int]],
        *,
        serde: SerializerProtocol | None = None,
        prefix: str = DEFAULT_PREFIX,
        ttl_seconds: float | None = None,
        pool_size: int | None = None,
        connect_timeout: float | None = None,
        timeout: float | None = None,
        name: str = "langgraph",
        **options: Any,
    ) -> C:
        """Build a cache on memcached servers given as `"host:port"` or `(host, port)`.

        Keys are spread over the servers by memo's consistent-hash ring. Arguments as
        for `from_server`; a `tls_context=` option speaks TLS to every server.
        """
        hosts = [server if isinstance(server, str) else server_spec(*server) for server in servers]
        if not hosts:
            raise ConfigurationError("from_servers needs at least one server")
        given = {"pool_size": pool_size, "connect_timeout": connect_timeout, "timeout": timeout}
        options.update({key: value for key, value in given.items() if value is not None})
        scheme = "memcached+tls" if options.get("tls_context") is not None else "memcached"
        return cls.from_url(
            f"{scheme}://{','.join(hosts)}", serde=serde, prefix=prefix, ttl=ttl_seconds, name=name, **options
        )
