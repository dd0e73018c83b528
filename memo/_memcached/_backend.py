"""`MemcachedBackend`: the façade that puts the sync side, the async side and the servers together."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import SplitResult

from .._backend import Backend, Capability
from .._errors import ConfigurationError
from .._settings import warn_if_slow
from ._async import AsyncOps
from ._checks import check_options, check_servers
from ._discovery import ClusterConfig, ClusterDiscovery, Node
from ._fork import live_backends
from ._leasing import ManyLeases
from ._parking import Parking
from ._pools import LoopPools
from ._resolve import BoundedResolver, ResolverSocketModule
from ._server import Server, ServerState
from ._sync import SyncOps
from ._topology import Topology
from ._wire import key_bytes, parse_server

__all__ = ["PROTOCOLS", "PROXIES", "MemcachedBackend"]

#: Proxies memo knows how to degrade for (`proxy=` option, `?proxy=` in URLs).
PROXIES = ("twemproxy",)
#: `protocol=` values: ask each server (`auto`), or insist on one.
PROTOCOLS = ("auto", "meta", "classic")
_SCHEMES = ("memcached", "memcached+tls", "memcached+discovery", "memcached+discovery+tls")


class MemcachedBackend(SyncOps, AsyncOps, ManyLeases, Backend):
    """Memcached servers for sync and async callers, failing fast when one is down.

    Args:
        servers: "host:port" strings (port defaults to 11211; IPv6 as
            "[addr]:port") or (host, port) pairs. Keys are spread over them by
            consistent hashing of the server ids (`memo._routing`), so
            "localhost:11211" and "127.0.0.1:11211" are different servers to
            the router: name servers the same way everywhere. Empty when
            `discovery` is given.
        connect_timeout: seconds to open a connection, TLS handshake and name
            lookup included (default 0.25). Kept short on purpose: a cache that
            cannot be reached quickly is worth less than recomputing.
        timeout: seconds to wait for a reply (default 0.25). Sync: per socket
            send/receive. Async: per request, and also the longest an operation
            waits for a free connection when `pool_size` are busy.
        pool_size: connections per server (default 16). The sync side keeps at
            most this many idle and opens more when all are busy; the async side
            opens at most this many per server and event loop and queues the rest,
            so thousands of concurrent tasks cannot open thousands of sockets.
        max_value_size: values longer than this are never sent (default 1 MiB
            minus 512 bytes, what a default memcached `-I 1m` stores with any
            key); `set`/`add` return False and `set_many` reports them.
        tls_context: an `ssl.SSLContext` to speak TLS with. `memcached+tls://`
            URLs without one get `ssl.create_default_context()` (system CAs,
            hostname checked).
        failure_threshold: consecutive failures that open a server's circuit
            breaker (default 3).
        retry_after: seconds an open breaker waits before letting one probe
            call through (default 2.0).
        discovery: "host:port" of an ElastiCache configuration endpoint: the
            servers are the nodes it lists, asked at construction (waiting at
            most `connect_timeout + timeout`) and every `discovery_interval`
            seconds after that, from a background thread (`_discovery`).
        discovery_interval: seconds between two questions (default 60).
        proxy: "twemproxy" when the servers are proxies in front of a pool:
            `get_all`/`set_all` then treat them as one store, and
            `server_stats` sends nothing (the proxy would drop the connection).
        protocol: "auto" (default): each server is asked once, on its first
            connection, whether it speaks the meta protocol (`mn`, answered
            `MN`); those that do get `mg`/`ms`/`md`, the others (memcached
            before 1.6, proxies) the classic commands. "meta" insists: a server
            that does not speak it is a `ConfigurationError` at first use.
            "classic" never asks. Behind `proxy=` it is always classic.

    Batches (`get_many`, `set_many`, `delete_many`) cost one round trip per
    server involved: one multi-key `get`, or pipelined `set`/`delete` commands
    (`_plan`). The async flavour runs the servers' round trips concurrently;
    the sync one asks them in turn. An async read of many large values is
    cut into several gets, each small enough for its reply to arrive within
    `timeout` (sized by the bytes per key the server has cost lately), and a
    part that fails fails only its own keys. When some servers answer and others fail,
    `PartialFailure` carries what arrived; when all fail, the first server's
    error is raised.

    Raises (from every operation): `BackendUnavailable` (refused, reset, closed,
    breaker open, no node discovered yet), `BackendTimeout`, `PartialFailure`,
    or `BackendError` for an error line from the server. No socket, ssl,
    asyncio or pymemcache exception escapes, except cancellation and
    exceptions raised into a call from outside (`KeyboardInterrupt`), which
    propagate unchanged after the connection they interrupted is closed. A key
    memcached cannot carry (not 1-250 printable ASCII characters without
    spaces) or a non-finite ttl is a `ValueError`, raised before anything is
    sent: the engine never builds one, so it is a bug.
    """

    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)
    OPTIONS: ClassVar[dict[str, type]] = {
        "connect_timeout": float,
        "timeout": float,
        "pool_size": int,
        "max_value_size": int,
        "tls_context": object,
        "failure_threshold": int,
        "retry_after": float,
        "discovery_interval": float,
        "proxy": str,
        # A gutter pool for down servers' keys (`_gutter.GutterBackend`).
        "gutter": str,
        "gutter_ttl": float,
        "protocol": str,
    }

    def __init__(
        self,
        servers: Sequence[str | tuple[str, int]] = (),
        *,
        connect_timeout: float = 0.25,
        timeout: float = 0.25,
        pool_size: int = 16,
        max_value_size: int = 1024 * 1024 - 512,
        tls_context: ssl.SSLContext | None = None,
        failure_threshold: int = 3,
        retry_after: float = 2.0,
        discovery: str | tuple[str, int] | None = None,
        discovery_interval: float = 60.0,
        proxy: str = "",
        protocol: str = "auto",
    ) -> None:
        addresses = _servers_or_discovery(servers, discovery)
        proxy = check_options(
            connect_timeout=connect_timeout,
            timeout=timeout,
            pool_size=pool_size,
            max_value_size=max_value_size,
            tls_context=tls_context,
            failure_threshold=failure_threshold,
            retry_after=retry_after,
            discovery_interval=discovery_interval,
            proxy=proxy,
            proxies=PROXIES,
        )
        _check_protocol(protocol, proxy)
        if discovery is not None:
            (discovery,) = check_servers([discovery])
        warn_if_slow(connect_timeout, timeout)

        self._connect_timeout = float(connect_timeout)
        self._timeout = float(timeout)
        self._pool_size = pool_size
        self.max_value_size = max_value_size
        self._tls = tls_context
        self._failure_threshold = failure_threshold
        self._retry_after = float(retry_after)
        self._proxy = proxy
        self._protocol = "classic" if proxy else protocol  # twemproxy drops a connection on `mn`
        self._socket_module = ResolverSocketModule(BoundedResolver(), self._connect_timeout)
        self._apools: dict[asyncio.AbstractEventLoop, LoopPools] = {}
        self._apools_lock = threading.RLock()
        self._parking = Parking(pool_size)
        self._topology_lock = threading.Lock()
        try:
            self._topology = Topology([self._new_server(host, port) for host, port in addresses])
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        self._discovery: ClusterDiscovery | None = None
        self._nodes: dict[str, Node] = {}  # the discovered nodes the servers were made for
        live_backends.add(self)
        if discovery is not None:
            self._start_discovery(discovery, float(discovery_interval))

    def _start_discovery(self, endpoint: str | tuple[str, int], interval: float) -> None:
        """Ask the configuration endpoint for the nodes, waiting briefly for the first answer."""
        host, port = parse_server(endpoint, endpoint) if isinstance(endpoint, str) else endpoint
        self._topology = Topology(
            [], empty_reason=f"no node list from the configuration endpoint {host}:{port} yet"
        )
        self._discovery = ClusterDiscovery(
            host,
            port,
            self._apply_cluster,
            interval=interval,
            tls_context=self._tls,
            connect_timeout=self._connect_timeout,
            timeout=self._timeout,
        )
        self._discovery.ensure_running()
        self._discovery.first_attempt.wait(self._connect_timeout + self._timeout)

    def _new_server(self, host: str, port: int, server_id: str | None = None) -> Server:
        server = Server(host, port, self._failure_threshold, self._retry_after, server_id=server_id)
        server.keep = self._pool_size
        if self._protocol == "classic":
            server.meta = False
        return server

    def _apply_cluster(self, config: ClusterConfig) -> None:
        """Route over a newly discovered node list; nodes that stay keep their state and connections."""
        with self._topology_lock:
            old = self._topology
            servers = []
            for node in config.nodes:
                # TLS checks the certificate against the node's name: connect by name then.
                host = node.host if self._tls is not None and node.host else node.address[0]
                kept = old.by_id.get(node.id)
                # A node is its (host, ip, port): a replaced node keeps its name (and so its
                # keys) but has a new address, and the old address's connections must go.
                if kept is None or self._nodes.get(node.id) != node:
                    kept = self._new_server(host, node.port, node.id)
                servers.append(kept)
            self._topology = Topology(servers)
            self._nodes = {node.id: node for node in config.nodes}
        gone = [s for s in old.servers if self._topology.by_id.get(s.id) is not s]
        for server in gone:
            server.retire()
            self._parking.close(server.id)
        if gone:
            with self._apools_lock:
                pools = list(self._apools.values())
            for loop_pools in pools:
                for server in gone:
                    loop_pools.forget_elsewhere(server.id)

    @classmethod
    def from_url(cls, parts: SplitResult, options: dict[str, Any]) -> MemcachedBackend:
        """Build from `memcached://h1[:port],h2[:port]`, `memcached+tls://...`,
        `memcached+discovery://cfg-host[:port]` or `memcached+discovery+tls://...`.

        `options` have been checked against `OPTIONS` already. A TLS URL without
        `tls_context` uses `ssl.create_default_context()`; a plain URL with one
        is refused, as it is ambiguous.
        """
        url = parts.geturl()
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES:
            raise ConfigurationError(f"not a memcached URL: {url!r}")
        if parts.path not in ("", "/"):
            raise ConfigurationError(f"memcached URLs take no path, got {parts.path!r} in {url!r}")
        if "@" in parts.netloc:
            raise ConfigurationError(f"memcached URLs take no user or password: {url!r}")
        if not parts.netloc:
            raise ConfigurationError(f"no server in {url!r}; use memcached://host:port[,host:port...]")
        specs = parts.netloc.split(",")
        servers = [parse_server(spec, url) for spec in specs]
        options = dict(options)
        if cls is MemcachedBackend and ("gutter" in options or "gutter_ttl" in options):
            if not options.get("gutter"):
                raise ConfigurationError(f"gutter_ttl needs gutter=host:port[,host:port...] in {url!r}")
            from ._gutter import GutterBackend  # a subclass: imported here, not at the top

            return GutterBackend.from_url(parts, options)
        tls_context = options.pop("tls_context", None)
        if scheme.endswith("+tls"):
            if tls_context is None:
                tls_context = ssl.create_default_context()
        elif tls_context is not None:
            raise ConfigurationError(f"tls_context given for {url!r}; use a +tls URL scheme for TLS")
        if scheme.startswith("memcached+discovery"):
            if len(servers) != 1:
                raise ConfigurationError(f"{url!r}: give one configuration endpoint, host[:port]")
            return cls(discovery=servers[0], tls_context=tls_context, **options)
        if "discovery_interval" in options:
            raise ConfigurationError(f"discovery_interval needs a memcached+discovery:// URL, not {url!r}")
        return cls(servers, tls_context=tls_context, **options)

    def __repr__(self) -> str:
        tls = ", tls" if self._tls is not None else ""
        if self._discovery is not None:
            return f"MemcachedBackend(discovery={self._discovery.host}:{self._discovery.port}{tls})"
        proxy = f", proxy={self._proxy}" if self._proxy else ""
        return f"MemcachedBackend({list(self.servers)!r}{tls}{proxy})"

    # -- introspection ---------------------------------------------------------

    @property
    def servers(self) -> tuple[str, ...]:
        """The server ids ("host:port"), in the order given or discovered."""
        return tuple(s.id for s in self._topology.servers)

    @property
    def _servers(self) -> tuple[Server, ...]:
        """The current servers (a snapshot: auto-discovery may replace the list)."""
        return self._topology.servers

    def server_for(self, key: str) -> str:
        """Return the id of the server that holds `key`."""
        return self._topology.server_for(key_bytes(key)).id

    def server_states(self) -> dict[str, ServerState]:
        """Return each server's circuit-breaker state, by server id."""
        return {s.id: s.state() for s in self._topology.servers}

    def _options(self) -> dict[str, Any]:
        return {
            "connect_timeout": self._connect_timeout,
            "timeout": self._timeout,
            "pool_size": self._pool_size,
            "max_value_size": self.max_value_size,
            "tls_context": self._tls,
            "failure_threshold": self._failure_threshold,
            "retry_after": self._retry_after,
            "proxy": self._proxy,
            "protocol": self._protocol,
        }

    def discovery_stats(self) -> dict[str, Any] | None:
        """Auto-discovery's state and counters (questions, changes, failures), or None without it."""
        return None if self._discovery is None else self._discovery.stats()

    def server_stats(self) -> dict[str, dict[str, str]]:
        """Each server's `stats` (name to value), by server id; `{}` for unreachable servers.

        Proxies (`proxy=`) are not asked: twemproxy does not forward `stats`
        and closes the connection instead. Their entries are empty.
        """
        out: dict[str, dict[str, str]] = {}
        for server in self._topology.servers:
            out[server.id] = {} if self._proxy else self._server_stats(server)
        return out

    def close(self) -> None:
        """Close every idle sync connection and parked async socket (and stop auto-discovery's thread)."""
        if self._discovery is not None:
            self._discovery.close()
        self._parking.close()
        super().close()


def _servers_or_discovery(servers: Any, discovery: Any) -> list[tuple[str, int]]:
    addresses = check_servers(servers)
    if not addresses and discovery is None:
        raise ConfigurationError("MemcachedBackend needs at least one server")
    if addresses and discovery is not None:
        raise ConfigurationError("give either servers or a discovery endpoint, not both")
    return addresses


def _check_protocol(protocol: Any, proxy: str) -> None:
    if protocol not in PROTOCOLS:
        raise ConfigurationError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if proxy and protocol == "meta":
        raise ConfigurationError(f"protocol=meta with proxy={proxy}: it speaks only the classic protocol")
