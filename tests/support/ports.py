"""Free TCP ports on loopback, for the servers the suite starts and for addresses nobody serves.

The one place tests and benchmarks get a port from (`pythonpath` puts tests/support/ on the path of both).
"""

from __future__ import annotations

import socket

__all__ = ["HOST", "free_port", "refused_address", "refused_url"]

HOST = "127.0.0.1"


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago (the caller binds it, or retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def refused_address() -> str:
    """ "127.0.0.1:PORT" where nothing listens: connecting is refused at once."""
    return f"{HOST}:{free_port()}"


def refused_url(scheme: str = "memcached") -> str:
    """A memcached URL whose server refuses connections (`scheme` e.g. "memcached+discovery")."""
    return f"{scheme}://{refused_address()}"
