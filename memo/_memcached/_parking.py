"""Idle async connections outlive the event loop that opened them.

An asyncio connection belongs to one event loop, and every `asyncio.run()`
ends its loop: without this module each run would close its connections and
the next would open new ones, leaving a socket in TIME_WAIT per connection
and paying a TCP handshake per run. Here, when a loop shuts down (through
`asyncio.run` or `loop.shutdown_asyncgens()`), each idle connection that is in
step - its last reply read in full, no TLS layer - hands its socket over: the
socket is duplicated, the transport closed (which closes only its own file
descriptor, so no FIN is sent), and the duplicate parked here. The next loop
that needs a connection to that server adopts a parked socket with
`loop.create_connection(sock=...)` instead of dialling, after checking that
nothing is readable on it (a server that closed the connection meanwhile
shows up as readable end-of-file; that socket is closed and skipped).

Explicit closes (`aclose()`, `close()`) close parked sockets too. A forked
child closes its copies (`_fork`). TLS connections are never parked: their
encryption state lives in the transport, not in the socket.
"""

from __future__ import annotations

import os
import select
import socket
import threading
from typing import Any

__all__ = ["Parking"]


class Parking:
    """Parked idle sockets of one backend, by server id, at most `cap` per server."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._lock = threading.Lock()
        self._sockets: dict[str, list[socket.socket]] = {}

    def park(self, server_id: str, transport: Any) -> bool:
        """Take over an idle transport's socket; True if parked (the caller then aborts the transport)."""
        if transport is None or transport.is_closing() or transport.get_extra_info("sslcontext") is not None:
            return False
        raw = transport.get_extra_info("socket")
        if raw is None:
            return False
        with self._lock:
            parked = self._sockets.setdefault(server_id, [])
            if len(parked) >= self.cap:
                return False
            try:
                sock = socket.socket(fileno=os.dup(raw.fileno()))
            except OSError:
                return False
            parked.append(sock)
        return True

    def take(self, server_id: str) -> socket.socket | None:
        """Return a parked socket to `server_id` that still looks healthy, or None."""
        while True:
            with self._lock:
                parked = self._sockets.get(server_id)
                if not parked:
                    return None
                sock = parked.pop()
            try:
                readable = select.select([sock], [], [], 0)[0]
            except (OSError, ValueError):
                readable = [sock]
            if not readable:
                return sock
            sock.close()  # end-of-file or bytes nobody asked for: not reusable

    def close(self, server_id: str | None = None) -> None:
        """Close the parked sockets of one server, or of all."""
        with self._lock:
            if server_id is None:
                groups = list(self._sockets.values())
                self._sockets = {}
            else:
                groups = [self._sockets.pop(server_id, [])]
        for parked in groups:
            for sock in parked:
                sock.close()

    def __del__(self) -> None:
        # A backend dropped without close(): release its parked sockets quietly,
        # as asyncio.run released the connections they came from.
        for parked in self._sockets.values():
            for sock in parked:
                sock.close()

    def after_fork(self) -> None:
        """In a forked child: close the inherited copies (the parent's connections stay open)."""
        self._lock = threading.Lock()
        self.close()

    def __len__(self) -> int:
        return sum(len(parked) for parked in self._sockets.values())
