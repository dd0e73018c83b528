"""Adopting a pymemcache client: the memo.Cache URL and options that reach the same servers.

memo speaks to the servers itself; the client is read, never used or closed.
What is and is not taken over is listed in `MemcachedCache`'s docstring.
"""

from __future__ import annotations

from typing import Any

from .._errors import ConfigurationError

__all__ = ["WithTLS", "adopt", "server_spec"]


class WithTLS:
    """A pymemcache client to adopt with TLS on, with the system's CAs unless it has a `tls_context`."""

    def __init__(self, client: Any) -> None:
        self.client = client


def server_spec(host: str, port: int) -> str:
    """`host:port`, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def adopt(client: Any) -> tuple[str, dict[str, Any]]:
    """Return the memcached URL and `memo.Cache` options that reproduce a pymemcache client's connections.

    What is and is not taken over is listed in `MemcachedCache`'s docstring.
    """
    tls = isinstance(client, WithTLS)
    members, settings, pool = _read(client.client if tls else client)
    hosts = []
    for server in members:
        if not isinstance(server, tuple):
            raise ConfigurationError(
                f"memcached server {server!r} is a Unix socket, which memo does not speak"
            )
        hosts.append(server_spec(str(server[0]), int(server[1])))
    if not hosts:
        raise ConfigurationError(f"{client!r} has no servers")
    options: dict[str, Any] = {}
    for option in ("connect_timeout", "timeout"):
        if settings.get(option) is not None:
            options[option] = float(settings[option])
    # ObjectPool's "no limit" is 2**31: keep memo's default rather than promise that many.
    if isinstance(pool, int) and 0 < pool < 2**31:
        options["pool_size"] = pool
    if settings.get("tls_context") is not None:
        tls = True
        options["tls_context"] = settings["tls_context"]
    return f"{'memcached+tls' if tls else 'memcached'}://{','.join(hosts)}", options


def _read(client: Any) -> tuple[list[Any], dict[str, Any], Any]:
    """Return a pymemcache client's servers, its connection settings and its pool size (or None)."""
    from pymemcache.client.base import Client, PooledClient
    from pymemcache.client.hash import HashClient
    from pymemcache.client.retrying import RetryingClient

    if isinstance(client, RetryingClient):
        client = client._client
    if isinstance(client, HashClient):
        members = [member.server for member in client.clients.values()]
        members += [server for server in client._dead_clients if server not in members]
        settings = client.default_kwargs
        return members, settings, settings.get("max_pool_size") if client.use_pooling else None
    if isinstance(client, (Client, PooledClient)):
        settings = {
            "connect_timeout": client.connect_timeout,
            "timeout": client.timeout,
            "tls_context": client.tls_context,
        }
        pool = client.client_pool.max_size if isinstance(client, PooledClient) else None
        return [client.server], settings, pool
    raise ConfigurationError(
        f"MemcachedCache needs a memo.Cache or a pymemcache Client, PooledClient or HashClient, "
        f"got {client!r}; MemcachedCache.from_conn_string(url) and from_server('host:port') build one"
    )
