"""Checks of a `MemcachedBackend`'s settings: each bad one is a `ConfigurationError` naming it.

Run once, at construction, so that nothing memo was given can fail later as a
foreign exception (`TypeError` from a comparison, `UnicodeError` from a name
lookup) inside a call.
"""

from __future__ import annotations

import ipaddress
import math
import ssl
from collections.abc import Sequence
from typing import Any

from .._errors import ConfigurationError
from ._wire import parse_server

__all__ = ["check_host", "check_options", "check_servers"]

#: DNS limits (RFC 1035): a label is 1-63 octets, a name at most 253 written out.
_MAX_LABEL = 63
_MAX_NAME = 253


def check_host(host: str, where: str) -> str:
    """Return `host` if a name lookup can take it: an IP address or a valid DNS name.

    Internationalised names are accepted when they encode (IDNA), as the
    resolver would encode them.
    """
    if not isinstance(host, str) or not host:
        raise ConfigurationError(f"{where}: the host must be a non-empty str, got {host!r}")
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    if not host.isprintable() or any(c.isspace() for c in host):
        raise ConfigurationError(f"{where}: host {host!r} holds a control or space character")
    try:
        encoded = host.encode("idna")
    except UnicodeError:
        raise ConfigurationError(
            f"{where}: host {host!r} is not a DNS name (labels of 1-{_MAX_LABEL} characters, "
            "separated by single dots)"
        ) from None
    if len(encoded.rstrip(b".")) > _MAX_NAME or any(len(label) > _MAX_LABEL for label in encoded.split(b".")):
        raise ConfigurationError(
            f"{where}: host {host!r} is longer than a DNS name may be "
            f"({_MAX_LABEL} characters per label, {_MAX_NAME} in all)"
        )
    return host


def check_servers(servers: Sequence[Any]) -> list[tuple[str, int]]:
    """Return `(host, port)` of each server given as "host:port" or a (host, port) pair."""
    out = []
    for server in [servers] if isinstance(servers, str) else servers:
        if isinstance(server, str):
            host, port = parse_server(server, server)
        elif isinstance(server, tuple) and len(server) == 2:
            host, port = server
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise ConfigurationError(f"server {server!r}: the port must be an int 1-65535")
        else:
            raise ConfigurationError(f"a server is 'host:port' or (host, port), got {server!r}")
        out.append((check_host(host, f"server {server!r}"), port))
    return out


def _seconds(name: str, value: Any, *, zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigurationError(f"{name} must be a number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not zero):
        raise ConfigurationError(f"{name} must be {'>=' if zero else '>'} 0 seconds, got {value!r}")
    return float(value)


def _whole(name: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigurationError(f"{name} must be a whole number of at least {least}, got {value!r}")
    return value


def check_options(
    *,
    connect_timeout: Any,
    timeout: Any,
    pool_size: Any,
    max_value_size: Any,
    tls_context: Any,
    failure_threshold: Any,
    retry_after: Any,
    discovery_interval: Any,
    proxy: Any,
    proxies: Sequence[str],
) -> str:
    """Check every option of `MemcachedBackend`; return the proxy kind ("" for none)."""
    for name, seconds in (
        ("connect_timeout", connect_timeout),
        ("timeout", timeout),
        ("discovery_interval", discovery_interval),
    ):
        _seconds(name, seconds)
    _seconds("retry_after", retry_after, zero=True)
    _whole("pool_size", pool_size, 1)
    _whole("failure_threshold", failure_threshold, 1)
    _whole("max_value_size", max_value_size, 0)
    if tls_context is not None and not isinstance(tls_context, ssl.SSLContext):
        raise ConfigurationError(f"tls_context must be an ssl.SSLContext, got {type(tls_context).__name__}")
    proxy = "" if proxy in ("", "none", None) else proxy
    if proxy and proxy not in proxies:
        raise ConfigurationError(f"proxy must be one of {', '.join(proxies)} or none, got {proxy!r}")
    return str(proxy)
