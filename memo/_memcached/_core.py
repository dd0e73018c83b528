"""What the sync and async sides of one backend share: settings, servers, pools' registry."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._errors import ConfigurationError
from ._server import Server
from ._topology import Topology

if TYPE_CHECKING:
    from ._discovery import ClusterDiscovery
    from ._parking import Parking
    from ._pools import LoopPools
    from ._resolve import ResolverSocketModule

__all__ = ["Core"]


class Core:
    """The state both flavours read; `MemcachedBackend.__init__` sets every field."""

    #: The servers and their router; replaced whole by auto-discovery.
    _topology: Topology
    max_value_size: int
    _connect_timeout: float
    _timeout: float
    _pool_size: int
    _tls: ssl.SSLContext | None
    _failure_threshold: int
    _retry_after: float
    #: The proxy the URL names ("twemproxy"), or "" for plain memcached servers.
    _proxy: str
    #: "auto", "meta" or "classic" (`protocol=`).
    _protocol: str
    _socket_module: ResolverSocketModule
    _discovery: ClusterDiscovery | None
    _apools: dict[asyncio.AbstractEventLoop, LoopPools]
    #: Idle async sockets kept between event loops (`_parking`).
    _parking: Parking
    _apools_lock: threading.RLock
    #: Held while auto-discovery swaps `_topology`.
    _topology_lock: threading.Lock

    def _settle(self, server: Server, speaks_meta: bool) -> None:
        """Record what the first connection to `server` learned; refuse a server that cannot speak meta."""
        if not speaks_meta and self._protocol == "meta":
            raise ConfigurationError(
                f"protocol=meta, but memcached {server.id} does not speak the meta protocol "
                "(memcached 1.6 or later does; use protocol=auto or protocol=classic)"
            )
        server.meta = speaks_meta

    def _every_server(self, kb: bytes) -> Sequence[Server]:
        """The servers `get_all`/`set_all` talk to.

        Behind a proxy there is one logical store: the proxy routes the key to
        one of its servers, so asking each proxy address would only ask that
        server again. Ask the one the key routes to.
        """
        topology = self._topology
        if self._proxy:
            return (topology.server_for(kb),)
        return topology.servers

    @staticmethod
    def _note_writes(groups: dict[Server, list[tuple[str, bytes, bytes, int]]]) -> None:
        """Let each server learn what a key costs from the values written to it (see `Server.read_size`)."""
        for server, entries in groups.items():
            server.note_size(sum(len(entry[2]) for entry in entries) / len(entries))

    def _store_id(self, server: Server) -> str:
        """The name a `get_all` reply gives a server: behind proxies, the one store's (the first proxy)."""
        return self._topology.servers[0].id if self._proxy else server.id
