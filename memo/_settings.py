"""Settings from environment variables: what `Cache.from_env` reads, checked and converted.

No I/O: reads a mapping (normally `os.environ`) and returns a URL and keyword
options for `Cache`. Every bad value is a `ConfigurationError` naming the variable.

Variables, each under a prefix (`MEMO_` by default, `MEMCACHED_` for teams that
use those names):

| name | default | meaning |
|---|---|---|
| `ENABLED` | true if `URL` or `HOSTS` is set, else false | false: `null://`, every read goes to the source |
| `HOSTS` | `localhost:11211` | `host:port,host:port`, the same as `URL=memcached://host:port,...` |
| `URL` | — | a cache URL (`memcached://h1:11211,h2:11211`, `memory://`, `null://`) |
| `TTL` | none | default lifetime in seconds; `none` for no expiry |
| `FALLBACK` | true | true: fail open to the function or database when the cache fails; false: raise |
| `POOL_SIZE` | 16 | connections per server |
| `TIMEOUT` | 0.25 | seconds (or `50ms`) to open a connection, name lookup included |
| `CONNECT_TIMEOUT` | — | another name for `TIMEOUT` |
| `OPERATION_TIMEOUT` | 0.25 | seconds to wait for a reply |
| `KEY_PREFIX` | `memo:` | the Cache's key prefix |

A cache is switched on only when asked: with nothing set it is disabled, never a
per-process `memory://` store that another worker of the same service cannot see.
`memory://` is used only when a URL names it, and a warning says so when the
process is one of several workers of a server (`warn_if_per_process`).
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from ._errors import ConfigurationError

__all__ = [
    "FAIL_OPEN_SECONDS",
    "VARIABLES",
    "cache_arguments",
    "parse_bool",
    "server_workers",
    "settings_from_env",
    "warn_if_per_process",
    "warn_if_slow",
]

logger = logging.getLogger("memo")

#: The variables `settings_from_env` reads, each under the prefix.
VARIABLES = (
    "ENABLED",
    "HOSTS",
    "URL",
    "TTL",
    "FALLBACK",
    "POOL_SIZE",
    "TIMEOUT",
    "CONNECT_TIMEOUT",
    "OPERATION_TIMEOUT",
    "KEY_PREFIX",
)
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_NEVER = frozenset({"none", "never"})
#: Where `ENABLED=true` without `URL` or `HOSTS` connects.
DEFAULT_HOSTS = "localhost:11211"
#: A timeout above this many seconds lets a hung server hold every request that long:
#: more than a fallback to the source is allowed to cost.
FAIL_OPEN_SECONDS = 1.0


def parse_bool(name: str, text: str) -> bool:
    """Read a boolean setting: 1/0, true/false, yes/no, on/off, in any case.

    Raises:
        ConfigurationError: anything else; the message names `name`.
    """
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigurationError(f"{name}={text!r} is not a boolean; use 1/0, true/false, yes/no or on/off")


def settings_from_env(
    environ: Mapping[str, str], prefix: str = "MEMO_"
) -> tuple[str, dict[str, Any], list[str]]:
    """Return `(url, Cache keyword options, names of the variables used)`.

    Unset and empty variables are ignored. Nothing set: a disabled cache (`null://`).

    Raises:
        ConfigurationError: a variable holds a value memo cannot use; the
            message names it and what it accepts.
    """
    used: list[str] = []

    def read(name: str) -> str | None:
        value = environ.get(prefix + name)
        if value is None or not value.strip():
            return None
        used.append(prefix + name)
        return value.strip()

    url = _url(prefix, read)
    options: dict[str, Any] = {}
    ttl = read("TTL")
    if ttl is not None:
        options["ttl"] = None if ttl.lower() in _NEVER else _seconds(prefix + "TTL", ttl)
    fallback = read("FALLBACK")
    if fallback is not None:
        lowered = fallback.lower()
        if lowered in ("ignore", "raise"):
            options["on_error"] = lowered
        else:
            options["on_error"] = "ignore" if parse_bool(prefix + "FALLBACK", fallback) else "raise"
    key_prefix = read("KEY_PREFIX")
    if key_prefix is not None:
        options["prefix"] = key_prefix
    server = _server_options(prefix, read)
    if url.lower().startswith("memcached"):
        options.update(server)
    # Elsewhere (memory://, a disabled cache) the server settings have nothing to act on:
    # they are accepted, so flipping ENABLED needs no other change.
    return url, options, used


def _url(prefix: str, read: Any) -> str:
    url, hosts, enabled = read("URL"), read("HOSTS"), read("ENABLED")
    if url is not None and hosts is not None:
        raise ConfigurationError(f"set either {prefix}URL or {prefix}HOSTS, not both")
    if hosts is not None:
        url = "memcached://" + _hosts(prefix + "HOSTS", hosts)
    on = url is not None if enabled is None else parse_bool(prefix + "ENABLED", enabled)
    if not on:
        return "null://"
    return url or "memcached://" + DEFAULT_HOSTS


def _server_options(prefix: str, read: Any) -> dict[str, Any]:
    server: dict[str, Any] = {}
    pool_size = read("POOL_SIZE")
    if pool_size is not None:
        server["pool_size"] = _positive_int(prefix + "POOL_SIZE", pool_size)
    # TIMEOUT is the connect timeout (name lookup and TLS included), as session
    # settings mean it; replies have their own short OPERATION_TIMEOUT.
    timeout, connect = read("TIMEOUT"), read("CONNECT_TIMEOUT")
    if timeout is not None and connect is not None:
        raise ConfigurationError(
            f"{prefix}TIMEOUT and {prefix}CONNECT_TIMEOUT are the same setting; set one of them"
        )
    if timeout is not None or connect is not None:
        name = prefix + ("TIMEOUT" if timeout is not None else "CONNECT_TIMEOUT")
        server["connect_timeout"] = _seconds(name, timeout or connect or "")
    operation = read("OPERATION_TIMEOUT")
    if operation is not None:
        server["timeout"] = _seconds(prefix + "OPERATION_TIMEOUT", operation)
    return server


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


# -- warnings at start ------------------------------------------------------------------------

#: Servers whose command line says how many worker processes they run, and its flags.
_SERVERS = {"uvicorn": ("--workers",), "gunicorn": ("--workers", "-w"), "hypercorn": ("--workers", "-w")}
_warned_pid = 0


def server_workers(environ: Mapping[str, str] | None = None, argv: Sequence[str] | None = None) -> int:
    """How many worker processes the server running this process starts, as far as can be told.

    Read from `WEB_CONCURRENCY` (uvicorn's and gunicorn's default worker count),
    `GUNICORN_CMD_ARGS`, and the command line of uvicorn, gunicorn or hypercorn
    (`--workers N`, `-w N`; uvicorn's workers keep their parent's `sys.argv`).
    A server started from Python (`uvicorn.run(app, workers=4)`) cannot be seen:
    1 then.
    """
    environ = os.environ if environ is None else environ
    argv = sys.argv if argv is None else argv
    counts = [_int_or_1(environ.get("WEB_CONCURRENCY", ""))]
    counts.append(_flag_value(shlex.split(environ.get("GUNICORN_CMD_ARGS", "")), ("--workers", "-w")))
    program = os.path.basename(argv[0]) if argv else ""
    if program == "__main__.py" and argv:
        program = os.path.basename(os.path.dirname(argv[0]))
    for server, flags in _SERVERS.items():
        if program.startswith(server):
            counts.append(_flag_value(argv[1:], flags))
    return max(counts)


def _flag_value(args: Sequence[str], flags: tuple[str, ...]) -> int:
    found = 1
    for i, arg in enumerate(args):
        for flag in flags:
            if arg == flag and i + 1 < len(args):
                found = _int_or_1(args[i + 1])
            elif arg.startswith(flag + "=") or (flag == "-w" and arg[:2] == "-w" and arg[2:].isdigit()):
                found = _int_or_1(arg[len(flag) :].lstrip("="))
    return found


def _int_or_1(text: str) -> int:
    return int(text) if text.strip().isdigit() else 1


def warn_if_per_process(url: str) -> None:
    """Warn once per process when a per-process store serves one of several server workers.

    Each worker would keep its own copy: a write in one is invisible to the others,
    which serve their stale copies.
    """
    global _warned_pid
    workers = server_workers()
    if workers <= 1 or _warned_pid == os.getpid():
        return
    _warned_pid = os.getpid()
    logger.warning(
        "memo: %s is a per-process cache, and this server runs %d worker processes: each keeps "
        "its own copy, so a write in one worker is not seen by the others, which serve stale "
        "values. Use memcached:// (MEMCACHED_HOSTS) or null:// to share or disable the cache.",
        url,
        workers,
    )


def warn_if_slow(connect_timeout: float, timeout: float) -> None:
    """Warn when a timeout lets a hung server hold a caller longer than failing open should take."""
    for name, seconds in (("connect_timeout", connect_timeout), ("timeout", timeout)):
        if seconds > FAIL_OPEN_SECONDS:
            logger.warning(
                "memo: %s=%ss: a hung memcached will hold each call up to that long before "
                "memo falls back to the source; fail-open needs at most %ss",
                name,
                seconds,
                FAIL_OPEN_SECONDS,
            )
