"""After `fork()` the child must not share the parent's connections.

Two processes reading replies from one socket get each other's values, so the
child forgets every connection it inherited (closing its copy of a socket
leaves the parent's connection open), and recreates the locks, which another
thread of the parent may have held at the moment of the fork. Auto-discovery's
thread did not survive the fork; it is started again when the child first
opens a connection.
"""

from __future__ import annotations

import os
import threading
import weakref

from ._core import Core

__all__ = ["live_backends"]

# Typed by what the child resets (`Core`), not by `MemcachedBackend`, which registers
# itself here: this module imports nothing that imports it back.
live_backends: weakref.WeakSet[Core] = weakref.WeakSet()


def forget_connections_after_fork() -> None:
    for backend in list(live_backends):
        servers = backend._topology.servers
        for server in servers:
            server.drain()
            server.lock = threading.Lock()
        backend._apools = {}
        backend._apools_lock = threading.RLock()
        backend._topology_lock = threading.Lock()
        backend._parking.after_fork()
        if backend._discovery is not None:
            backend._discovery.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=forget_connections_after_fork)
