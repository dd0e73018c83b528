"""The servers keys are routed over, with their router: replaced as one object.

Callers read `backend._topology` once per operation and use that snapshot
throughout, so an auto-discovered node list swapped by another thread (one
attribute assignment, atomic in CPython) is seen whole or not at all: never a
router of one list indexing into the servers of another.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .._errors import BackendUnavailable
from .._routing import Router
from ._server import Server

__all__ = ["Topology"]


class Topology:
    """An immutable list of servers and the router over their ids."""

    __slots__ = ("by_id", "index", "router", "server_for", "servers")

    #: Return the index into `servers` of the server for an encoded key.
    index: Callable[[bytes], int]
    #: Return the server that holds an encoded key (one server: that one, without routing).
    server_for: Callable[[bytes], Server]

    def __init__(self, servers: Sequence[Server], *, empty_reason: str = "") -> None:
        self.servers: tuple[Server, ...] = tuple(servers)
        self.by_id = {s.id: s for s in self.servers}
        self.server_for = self._route
        if self.servers:
            self.router: Router | None = Router([s.id for s in self.servers])
            self.index = self.router.index
            if len(self.servers) == 1:
                only = self.servers[0]
                self.server_for = lambda kb: only
        else:
            self.router = None
            reason = empty_reason or "no memcached server is known"

            def no_server(key: bytes) -> int:
                raise BackendUnavailable(reason)

            self.index = no_server

    def _route(self, kb: bytes) -> Server:
        return self.servers[self.index(kb)]
