"""Settings from environment variables: what `Cache.from_env` reads, checked and converted.

No I/O: reads a mapping (normally `os.environ`) and returns a URL and keyword
options for `Cache`. Every bad value is a `ConfigurationError` naming the variable.

Variables, each under a prefix (`MEMO_` by default, `MEMCACHED_` for teams that
use those names):

| name | meaning |
|---|---|
| `URL` | a cache URL (`memcached://h1:11211,h2:11211`, `memory://`, `null://`) |
| `HOSTS` | `host:port,host:port`: the same as `URL=memcached://host:port,...` |
| `ENABLED` | `false` makes a pass-through cache (`null://`: same code paths, no server calls) |
| `TTL` | default lifetime in seconds; `none` for no expiry |
| `FALLBACK` | `true` (default): fail open to the function or database when the cache fails; `false`: raise |
| `POOL_SIZE` | connections per server |
| `TIMEOUT` | seconds (or `50ms`) per request; also the connect timeout unless `CONNECT_TIMEOUT` is set |
| `CONNECT_TIMEOUT` | seconds (or `ms`) to open a connection |
| `KEY_PREFIX` | the Cache's key prefix |
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from ._errors import ConfigurationError

__all__ = ["cache_arguments", "settings_from_env"]

_TRUE = frozenset({"1", "true", "yes", "on", "y", "t"})
_FALSE = frozenset({"0", "false", "no", "off", "n", "f"})
_NEVER = frozenset({"none", "never"})
#: Options a memcached URL understands; others (memory://, null://) take fewer.
_SERVER_OPTIONS = ("pool_size", "timeout", "connect_timeout")


def settings_from_env(
    environ: Mapping[str, str], prefix: str = "MEMO_"
) -> tuple[str, dict[str, Any], list[str]]:
    """Return `(url, Cache keyword options, names of the variables used)`.

    Unset and empty variables are ignored. Neither `URL` nor `HOSTS`: memory://.

    Raises:
        ConfigurationError: a variable holds a value memo cannot use; the
            message names it and what it accepts.
    """

    def read(name: str) -> str | None:
        value = environ.get(prefix + name)
        if value is None or not value.strip():
            return None
        used.append(prefix + name)
        return value.strip()

    used: list[str] = []
    options: dict[str, Any] = {}
    url = read("URL")
    hosts = read("HOSTS")
    if url is not None and hosts is not None:
        raise ConfigurationError(f"set either {prefix}URL or {prefix}HOSTS, not both")
    if hosts is not None:
        url = "memcached://" + _hosts(prefix + "HOSTS", hosts)
    enabled = read("ENABLED")
    if enabled is not None and not _bool(prefix + "ENABLED", enabled):
        url = "null://"
    url = url or "memory://"

    ttl = read("TTL")
    if ttl is not None:
        options["ttl"] = None if ttl.lower() in _NEVER else _seconds(prefix + "TTL", ttl)
    fallback = read("FALLBACK")
    if fallback is not None:
        lowered = fallback.lower()
        if lowered in ("ignore", "raise"):
            options["on_error"] = lowered
        else:
            options["on_error"] = "ignore" if _bool(prefix + "FALLBACK", fallback) else "raise"
    key_prefix = read("KEY_PREFIX")
    if key_prefix is not None:
        options["prefix"] = key_prefix
    pool_size = read("POOL_SIZE")
    timeout = read("TIMEOUT")
    connect_timeout = read("CONNECT_TIMEOUT")
    server: dict[str, Any] = {}
    if pool_size is not None:
        server["pool_size"] = _positive_int(prefix + "POOL_SIZE", pool_size)
    if timeout is not None:
        server["timeout"] = server["connect_timeout"] = _seconds(prefix + "TIMEOUT", timeout)
    if connect_timeout is not None:
        server["connect_timeout"] = _seconds(prefix + "CONNECT_TIMEOUT", connect_timeout)
    if url.lower().startswith("memcached"):
        options.update(server)
    # Elsewhere (memory://, a disabled cache) the server settings have nothing to act on:
    # they are accepted, so flipping ENABLED needs no other change.
    return url, options, used


def cache_arguments(
    prefix: str, environ: Mapping[str, str] | None, overrides: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """Return the URL and keyword arguments of `Cache.from_env`: the variables, then `overrides`.

    `key_prefix=` overrides the key prefix (`prefix` names the variables there);
    `url=` another URL, which then takes none of the variables' server options.
    """
    url, settings, _ = settings_from_env(os.environ if environ is None else environ, prefix)
    overrides = dict(overrides)
    if "key_prefix" in overrides:
        overrides["prefix"] = overrides.pop("key_prefix")
    if overrides.get("url", url) != url:
        settings = {k: v for k, v in settings.items() if k in ("ttl", "on_error", "prefix")}
    return overrides.pop("url", url), {**settings, **overrides}


def _bool(name: str, text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigurationError(f"{name}={text!r} is not a boolean; use true/false, 1/0, yes/no or on/off")


def _seconds(name: str, text: str) -> float:
    lowered = text.lower()
    scale = 1.0
    if lowered.endswith("ms"):
        lowered, scale = lowered[:-2], 0.001
    elif lowered.endswith("s"):
        lowered = lowered[:-1]
    try:
        value = float(lowered.strip()) * scale
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigurationError(
            f"{name}={text!r} is not a positive number of seconds (e.g. 1800, 0.05 or 50ms)"
        )
    return int(value) if value == int(value) and scale == 1.0 else value


def _positive_int(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigurationError(f"{name}={text!r} is not a whole number of at least 1")
    return value


def _hosts(name: str, text: str) -> str:
    specs = [spec.strip() for spec in text.split(",")]
    if not all(specs):
        raise ConfigurationError(f"{name}={text!r} has an empty entry; use host:port,host:port")
    for spec in specs:
        if "/" in spec or "@" in spec or " " in spec:
            raise ConfigurationError(f"{name}={text!r}: {spec!r} is not host or host:port")
        host, colon, port = spec.rpartition(":") if not spec.startswith("[") else (spec, "", "")
        if colon and not (port.isdigit() and 0 < int(port) < 65536 and host):
            raise ConfigurationError(f"{name}={text!r}: {spec!r} is not host:port (port 1-65535)")
    return ",".join(specs)
