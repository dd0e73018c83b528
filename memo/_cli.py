"""`memo`: the command line for operators (`memo ...` or `python -m memo ...`).

    memo ping URL                     latency of each server
    memo stats URL                    version, items, memory, evictions, hit ratio per server
    memo clear URL NS | --all         a namespace clear, exactly `Cache(URL).clear(NS)`
    memo inspect URL KEY              the header (format, flags, exact expiry, compression,
                                      size) and a preview of one stored entry
    memo key MODULE:FUNCTION ARGS...  the key a call would use
    memo sessions sql [--table NAME]  the DDL of the sessions table (memo.sessions.PostgresStore)

Readable tables by default, `--json` for scripts. Exit status: 0 success (every
server healthy), 1 unhealthy: a server or the discovery endpoint is unreachable,
a key is not found or the backend failed, 2 a usage error (bad arguments, a URL
memo does not understand), printed as one line, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import socket
import ssl
import statistics
import sys
import time
import zlib
from collections.abc import Sequence
from typing import Any, TextIO
from urllib.parse import urlsplit

import orjson

from ._backend import backend_from_url
from ._codec import EXPIRES, LEASE, PLAIN, READ_VERSIONS, ZLIB, is_lease, read_header
from ._errors import ConfigurationError, MemoError

__all__ = ["main"]

OK, FAILED, USAGE = 0, 1, 2

#: The name memo is installed under (`pip install memo-memcached`); it is imported as `memo`.
DISTRIBUTION = "memo-memcached"


def installed_version() -> str:
    """The installed distribution's version; the package's own when it runs uninstalled (a checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        from . import __version__

        return __version__


class UsageError(Exception):
    """Bad arguments: exit status 2."""


class Unreachable(Exception):
    """Nothing to ask (a discovery endpoint that does not answer): exit status 1."""


def _seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds > 0")
    return value


def _count(text: str) -> int:
    """argparse type: a whole number >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


# -- talking to each server -----------------------------------------------------------


def _scheme(url: str) -> str:
    try:
        return urlsplit(url).scheme.lower()
    except ValueError as exc:  # e.g. an unclosed "[" of an IPv6 address
        raise UsageError(f"malformed URL {url!r}: {exc}") from None


def tls_context(url: str, cafile: str | None) -> ssl.SSLContext | None:
    """The TLS context for a `memcached+tls://` URL (system CAs, or `cafile`); None otherwise."""
    if not _scheme(url).endswith("+tls"):
        if cafile:
            raise UsageError("--cafile is for memcached+tls:// (or +tls) URLs")
        return None
    try:
        return ssl.create_default_context(cafile=cafile)
    except OSError as exc:
        raise UsageError(f"cannot read --cafile {cafile!r}: {exc}") from None


def servers_of(url: str, cafile: str | None = None) -> tuple[list[tuple[str, int]], ssl.SSLContext | None]:
    """Return the (host, port) of each server a memcached URL names, and the TLS context."""
    if not _scheme(url).startswith("memcached"):
        raise UsageError(f"{url!r}: this command talks to memcached servers (memcached:// URLs)")
    # The backend parses the URL (and asks a discovery endpoint for the nodes), so the CLI
    # accepts exactly what a Cache accepts.
    backend = backend_from_url(url, {})
    try:
        ids: Sequence[str] = backend.servers  # type: ignore[attr-defined]
        discovery = backend.discovery_stats()  # type: ignore[attr-defined]
    finally:
        backend.close()
    if not ids:  # only auto-discovery can leave none: the endpoint did not answer
        reason = (discovery or {}).get("last_error") or "it listed no nodes in time"
        raise Unreachable(f"no node list from the configuration endpoint of {url!r}: {reason}")
    out = []
    for server_id in ids:
        host, _, port = server_id.rpartition(":")
        out.append((host.strip("[]"), int(port)))
    return out, tls_context(url, cafile)


class ServerConnection:
    """One short-lived text-protocol connection, for `version` and `stats`."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None, timeout: float) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        self.sock: socket.socket = tls.wrap_socket(sock, server_hostname=host) if tls else sock
        self.buffer = b""

    def request(self, command: bytes, end: bytes) -> bytes:
        self.sock.sendall(command + b"\r\n")
        while not (self.buffer.endswith(end) or self.buffer.startswith((b"ERROR", b"SERVER_ERROR"))):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buffer += chunk
        reply, self.buffer = self.buffer, b""
        if reply.startswith((b"ERROR", b"SERVER_ERROR")):
            raise ConnectionError(f"the server answered {reply.strip().decode(errors='replace')!r}")
        return reply

    def version(self) -> str:
        return self.request(b"version", b"\r\n").decode().strip().removeprefix("VERSION ")

    def stats(self) -> dict[str, str]:
        reply = self.request(b"stats", b"END\r\n").decode(errors="replace")
        return {
            parts[1]: parts[2]
            for parts in (line.split(" ", 2) for line in reply.splitlines())
            if len(parts) == 3 and parts[0] == "STAT"
        }

    def close(self) -> None:
        self.sock.close()


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def ping(url: str, count: int, timeout: float, cafile: str | None = None) -> list[dict[str, Any]]:
    servers, tls = servers_of(url, cafile)
    rows = []
    for host, port in servers:
        row: dict[str, Any] = {"server": _address(host, port), "ok": False}
        try:
            started = time.perf_counter()
            conn = ServerConnection(host, port, tls, timeout)
            row["connect_ms"] = round((time.perf_counter() - started) * 1000, 3)
            try:
                times = []
                for _ in range(count):
                    started = time.perf_counter()
                    row["version"] = conn.version()
                    times.append((time.perf_counter() - started) * 1000)
            finally:
                conn.close()
            row.update(ok=True, min_ms=round(min(times), 3), median_ms=round(statistics.median(times), 3))
        except (OSError, ConnectionError) as exc:
            row["error"] = _reason(exc)
        rows.append(row)
    return rows


def stats(url: str, timeout: float, cafile: str | None = None) -> list[dict[str, Any]]:
    servers, tls = servers_of(url, cafile)
    rows = []
    for host, port in servers:
        row: dict[str, Any] = {"server": _address(host, port), "ok": False}
        try:
            conn = ServerConnection(host, port, tls, timeout)
            try:
                version, found = conn.version(), conn.stats()
            finally:
                conn.close()
        except (OSError, ConnectionError) as exc:
            row["error"] = _reason(exc)
            rows.append(row)
            continue
        hits, misses = int(found.get("get_hits", 0)), int(found.get("get_misses", 0))
        row.update(
            ok=True,
            version=version,
            uptime_s=int(found.get("uptime", 0)),
            items=int(found.get("curr_items", 0)),
            bytes=int(found.get("bytes", 0)),
            limit_bytes=int(found.get("limit_maxbytes", 0)),
            evictions=int(found.get("evictions", 0)),
            get_hits=hits,
            get_misses=misses,
            hit_ratio=round(hits / (hits + misses), 4) if hits + misses else None,
            connections=int(found.get("curr_connections", 0)),
        )
        rows.append(row)
    return rows


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


# -- entries ------------------------------------------------------------------------------


def describe(raw: bytes, preview: int = 200) -> dict[str, Any]:
    """Return what memo's wire header says about stored bytes, and a preview of the value.

    Pure. The preview is the stored JSON tree as text (type tags included), not a
    rebuilt value: no class is imported or built.
    """
    info: dict[str, Any] = {"size": len(raw)}
    header = read_header(raw)
    if header is None:
        info.update(memo_value=False, preview=_cut(raw.decode("utf-8", "replace"), preview))
        return info
    version, flags = header.version, header.flags
    info.update(memo_value=True, format_version=version, flags=_flag_names(flags))
    if version not in READ_VERSIONS:
        readable = ", ".join(map(str, READ_VERSIONS))
        info["note"] = f"format version {version} is not one this memo reads ({readable}): a miss"
        return info
    if is_lease(raw):
        info["note"] = "a lease marker: a caller is computing this entry"
        info["lease_owner"] = raw[header.body_start :].decode("ascii", "replace").strip()
        return info
    expires = header.expires_ms
    if expires is not None:
        info["expires"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires / 1000))
        info["expires_in_s"] = round(expires / 1000 - time.time(), 3)
    body = raw[header.body_start :]
    info["compressed"] = bool(flags & ZLIB)
    try:
        if flags & ZLIB:
            body = zlib.decompress(body)
            info["body_size"] = len(body)
        info["preview"] = _cut(orjson.dumps(orjson.loads(body)).decode(), preview)
    except (zlib.error, orjson.JSONDecodeError) as exc:
        info["note"] = f"the body cannot be read ({exc}): readers treat this entry as a miss"
    return info


def _flag_names(flags: int) -> list[str]:
    known = ((PLAIN, "plain"), (ZLIB, "zlib"), (EXPIRES, "expires"), (LEASE, "lease"))
    names = [name for bit, name in known if flags & bit]
    unknown = flags & ~(PLAIN | ZLIB | EXPIRES | LEASE)
    return [*names, f"unknown:{unknown:#x}"] if unknown else names


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def inspect_key(url: str, key: str, prefix: str | None, cafile: str | None = None) -> dict[str, Any] | None:
    context = tls_context(url, cafile)
    backend = backend_from_url(url, {} if context is None else {"tls_context": context})
    try:
        raw = backend.get(key if prefix is None or key.startswith(prefix) else prefix + key)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    finally:
        backend.close()
    return None if raw is None else {"key": key, **describe(raw)}


# -- keys of calls --------------------------------------------------------------------------

_KWARG = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.S)


def parse_arguments(texts: Sequence[str]) -> tuple[list[Any], dict[str, Any]]:
    """Parse `ARGS...`: each a JSON literal (`42`, `'"text"'`, `'[1, 2]'`) or `name=JSON`."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for text in texts:
        match = _KWARG.fullmatch(text)
        name, literal = (match.group(1), match.group(2)) if match else (None, text)
        try:
            value = json.loads(literal)
        except json.JSONDecodeError:
            raise UsageError(
                f"{literal!r} is not a JSON literal: write strings in double quotes, e.g. '\"{literal}\"'"
            ) from None
        if name is None:
            if kwargs:
                raise UsageError(f"positional argument {text!r} after keyword arguments")
            args.append(value)
        else:
            kwargs[name] = value
    return args, kwargs


def load_function(target: str) -> Any:
    module_name, colon, path = target.partition(":")
    if not colon or not module_name or not path:
        raise UsageError(f"{target!r}: expected MODULE:FUNCTION, e.g. app.users:get_user")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: modules of the current directory
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import {module_name!r}: {exc}") from None
    for part in path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"{module_name!r} has no {path!r}") from None
    if not callable(getattr(obj, "key_for", None)):
        raise UsageError(f"{target} is not a memoized function (decorate it with @cached)")
    return obj


# -- output -------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]], out: TextIO) -> None:
    """Print rows as aligned columns (every key seen, in order of appearance)."""
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(), file=out)
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip(), file=out)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    return str(value)


def emit(data: Any, as_json: bool, out: TextIO) -> None:
    if as_json:
        print(json.dumps(data, indent=2, default=str), file=out)
    elif isinstance(data, list):
        table(data, out)
    elif isinstance(data, dict):
        width = max(map(len, data))
        for name, value in data.items():
            print(f"{name.ljust(width)}  {_cell(value)}", file=out)
    else:
        print(data, file=out)


# -- commands -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memo",
        description="Operate memo caches on memcached.",
        epilog="Exit status: 0 healthy, 1 unhealthy (an unreachable server or discovery endpoint, "
        "a key not found, a backend error), 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"{DISTRIBUTION} {installed_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        if name != "key":
            p.add_argument(
                "--cafile", default=None, help="CA certificates (PEM) to verify memcached+tls:// servers with"
            )
        return p

    p = command("ping", "round-trip latency of each server")
    p.add_argument("url")
    p.add_argument("--count", type=_count, default=3, help="round trips per server (default 3)")
    p.add_argument("--timeout", type=_seconds, default=1.0, help="seconds per connect/reply (default 1)")

    p = command("stats", "version, items, memory, evictions and hit ratio of each server")
    p.add_argument("url")
    p.add_argument("--timeout", type=_seconds, default=1.0, help="seconds per connect/reply (default 1)")

    p = command("clear", "clear a namespace (or everything under the prefix), exactly as Cache.clear")
    p.add_argument("url")
    p.add_argument("ns", nargs="?", help="the namespace")
    p.add_argument("--all", action="store_true", help="clear every namespace of the prefix")
    p.add_argument("--prefix", default="memo:", help="the Cache's key prefix (default memo:)")

    p = command("inspect", "the header and a preview of one stored entry")
    p.add_argument("url")
    p.add_argument("key", help="the full key, as key_for() prints it")
    p.add_argument("--prefix", default=None, help="prepended to KEY unless it starts with it")

    p = command("key", "the key a call of a memoized function would use")
    p.add_argument("function", help="MODULE:FUNCTION, e.g. app.users:get_user")
    p.add_argument("args", nargs="*", help="JSON literals, or name=JSON for keyword arguments")
    p.add_argument("--url", default=None, help="the default Cache's URL (default: $MEMO_URL, else memory://)")

    # memo sessions sql: the DDL of memo.sessions.PostgresStore's table, for migration tools
    p = sub.add_parser("sessions", help="the SQL of the sessions table (PostgresStore)")
    p.add_argument("action", choices=["sql"], help="sql: print the CREATE TABLE and index statements")
    p.add_argument("--table", default="memo_sessions", help="the table's name (default memo_sessions)")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command line; return the exit status."""
    out = out or sys.stdout
    parser = _parser()
    ns = parser.parse_args(argv)
    try:
        return _run(ns, out)
    except (UsageError, ConfigurationError) as exc:
        print(f"memo {ns.command}: {exc}", file=sys.stderr)
        return USAGE
    except (MemoError, Unreachable) as exc:
        print(f"memo {ns.command}: {exc}", file=sys.stderr)
        return FAILED


def _run(ns: argparse.Namespace, out: TextIO) -> int:
    if ns.command == "sessions":
        from .sessions._store import ddl

        out.write(ddl(ns.table))
        return OK
    if ns.command in ("ping", "stats"):
        rows = (
            ping(ns.url, ns.count, ns.timeout, ns.cafile)
            if ns.command == "ping"
            else stats(ns.url, ns.timeout, ns.cafile)
        )
        emit(rows, ns.json, out)
        return OK if all(row["ok"] for row in rows) else FAILED
    if ns.command == "clear":
        if ns.all == (ns.ns is not None):
            raise UsageError("give a namespace or --all (not both)")
        from ._cache import Cache

        context = tls_context(ns.url, ns.cafile)
        options: dict[str, Any] = {} if context is None else {"tls_context": context}
        with Cache(ns.url, prefix=ns.prefix, **options) as cache:
            cache.clear(None if ns.all else ns.ns)
        emit({"cleared": "everything" if ns.all else ns.ns, "prefix": ns.prefix}, ns.json, out)
        return OK
    if ns.command == "inspect":
        info = inspect_key(ns.url, ns.key, ns.prefix, ns.cafile)
        if info is None:
            print(f"memo inspect: {ns.key!r} is not stored", file=sys.stderr)
            return FAILED
        emit(info, ns.json, out)
        return OK
    # key
    if ns.url is not None:
        from ._defaults import configure

        configure(ns.url)
    function = load_function(ns.function)
    args, kwargs = parse_arguments(ns.args)
    try:
        key = function.key_for(*args, **kwargs)
    except TypeError as exc:
        raise UsageError(str(exc)) from None
    emit({"function": ns.function, "key": key} if ns.json else key, ns.json, out)
    return OK
