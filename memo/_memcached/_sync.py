"""The sync side: pooled pymemcache clients, one small free-list per server.

`PooledClient` is not used: it raises `RuntimeError("Too many objects")` when
its pool runs dry and costs 2-25 µs per call. Here an empty free-list just
means a new connection, and at most `pool_size` idle ones are kept. A client
whose call raised anything at all - a socket error, but also a
`KeyboardInterrupt` or a timeout raised into the thread from outside - is
closed and never pooled again: its socket may hold an unread reply that the
next call would take for its own.

Three commands bypass pymemcache's methods and speak on the pooled client's
socket directly: `get` (the hit path: one send, usually one recv, no
per-call keyword handling), `set_many` (every set of a server in one pipeline
whatever their TTLs, each reply read even when one is an error, so one value
a server refuses cannot stop the others) and `lease` (`add` + `gets` in one
round trip). pymemcache keeps connecting, TLS and the other commands.
"""

from __future__ import annotations

import socket
import struct
import sys
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, NoReturn

from pymemcache.client.base import Client as _PymemcacheClient
from pymemcache.client.base import _readline, _readvalue
from pymemcache.exceptions import (
    MemcacheClientError,
    MemcacheServerError,
    MemcacheUnexpectedCloseError,
    MemcacheUnknownError,
)

from .._backend import SetItem
from .._errors import BackendError, BackendTimeout, BackendUnavailable
from ._core import Core
from ._plan import all_outcome, finish, group_items, group_keys, merge_deleted, merge_found, merge_not_stored
from ._server import Server
from ._wire import ServerError, expiry, key_bytes, whole_reply

__all__ = ["SyncOps"]

KERNEL_TIMEOUTS = sys.platform.startswith("linux") and hasattr(socket, "SO_RCVTIMEO")


class KernelTimeoutClient(_PymemcacheClient):  # type: ignore[misc]
    """A pymemcache Client whose send and receive timeouts the kernel enforces.

    A Python socket with a timeout polls before every recv and send: about
    1.5 µs per hit on loopback. Here the socket stays blocking (no poll) and
    SO_RCVTIMEO/SO_SNDTIMEO bound each system call instead; an expired wait
    surfaces as BlockingIOError, which the backend reports as a timeout. Not
    used for TLS, where an expired wait would leave the TLS layer mid-record.
    """

    def __init__(self, server: tuple[str, int], *, io_timeout: float, **kwargs: Any) -> None:
        super().__init__(server, timeout=None, **kwargs)
        seconds = int(io_timeout)
        self._timeval = struct.pack("ll", seconds, int((io_timeout - seconds) * 1_000_000))

    def _connect(self) -> None:
        super()._connect()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, self._timeval)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, self._timeval)


def _socket(client: Any) -> Any:
    sock = client.sock
    if sock is None:
        client._connect()
        sock = client.sock
    return sock


_RECV_SIZE = 256 * 1024


def get_many_sync(client: Any, kbs: list[bytes]) -> dict[bytes, bytes]:
    """`pymemcache.Client.get_many(kbs)` for key bytes, its reply parsed here instead.

    pymemcache reads the reply line by line and checks each key again on the
    way. Here a reply that arrived whole in one read (the usual case on a LAN)
    is cut at every CRLF in one call and checked piece by piece
    (`whole_reply`); anything else - a reply in several reads, a value holding
    CRLF, an error line - goes through `read_reply`, which parses as bytes
    arrive. The socket, its timeouts and error handling stay pymemcache's; a
    reply that is not an answer to the request raises, and the caller closes
    the connection.
    """
    wanted = frozenset(kbs)
    if client.sock is None:
        client._connect()
    sock = client.sock
    sock.sendall(b"get " + b" ".join(kbs) + b"\r\n")
    recv = sock.recv
    buf = recv(_RECV_SIZE)
    if buf.endswith(b"END\r\n"):
        found = whole_reply(buf, wanted)
        if found is not None:
            return found
    return read_reply(recv, buf, wanted)


def read_reply(
    recv: Callable[[int], bytes], buf: bytes | bytearray, wanted: Collection[bytes]
) -> dict[bytes, bytes]:
    """Parse a `get` reply from `buf` on, reading more as needed; raise on anything unexpected."""
    pos = 0
    found: dict[bytes, bytes] = {}
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            buf = more_reply(recv, buf)
            continue
        if buf.startswith(b"VALUE ", pos):
            fields = buf[pos + 6 : eol].split(b" ")
            key = bytes(fields[0])
            if key not in wanted or len(fields) not in (3, 4) or not fields[2].isdigit():
                raise MemcacheUnknownError(bytes(buf[pos:eol])[:80])
            start = eol + 2
            end = start + int(fields[2])
            while len(buf) < end + 2:
                buf = more_reply(recv, buf)
            if buf[end : end + 2] != b"\r\n":
                raise MemcacheUnknownError("value not followed by CRLF")
            found[key] = bytes(buf[start:end])
            pos = end + 2
        elif eol - pos == 3 and buf.startswith(b"END", pos):
            if eol + 2 != len(buf):
                raise MemcacheUnknownError("bytes after END")
            return found
        else:
            line = bytes(buf[pos:eol])
            if line.startswith(b"SERVER_ERROR"):
                raise MemcacheServerError(line[:200])
            if line.startswith((b"CLIENT_ERROR", b"ERROR")):
                raise MemcacheClientError(line[:200])
            raise MemcacheUnknownError(line[:80])


def more_reply(recv: Callable[[int], bytes], buf: bytes | bytearray) -> bytes | bytearray:
    """Append the next chunk of a reply; a closed connection raises."""
    chunk = recv(_RECV_SIZE)
    if not chunk:
        raise MemcacheUnexpectedCloseError()
    if not buf:
        return chunk
    if type(buf) is bytes:
        buf = bytearray(buf)
    buf += chunk
    return buf


def lean_get(client: Any, kb: bytes) -> bytes | None:
    """`get` one key on a pymemcache client's socket; the common reply is parsed in place."""
    sock = _socket(client)
    sock.sendall(b"get " + kb + b"\r\n")
    buf = sock.recv(65536)  # a small reply whole; a larger buffer costs an allocation per hit
    if buf == b"END\r\n":
        return None
    eol = buf.find(b"\r\n")
    if eol > 6 and buf.startswith(b"VALUE "):
        fields = buf[6:eol].split(b" ")
        if len(fields) == 3 and fields[0] == kb:
            start = eol + 2
            end = start + int(fields[2])
            if len(buf) == end + 7 and buf.endswith(b"\r\nEND\r\n"):
                value: bytes = buf[start:end]
                return value
    if not buf:
        raise MemcacheUnexpectedCloseError()
    return read_reply(sock.recv, buf, (kb,)).get(kb)


def add_or_append_sync(client: Any, kb: bytes, value: bytes, exp: int) -> bool:
    return bool(client.add(kb, value, exp, False) or client.append(kb, value, 0, False))


def gets_sync(client: Any, kb: bytes) -> tuple[bytes, int] | None:
    value, unique = client.gets(kb)
    return None if value is None else (value, int(unique))


def lease_sync(client: Any, kb: bytes, marker: bytes, exp: int) -> tuple[bool, tuple[bytes, int] | None]:
    """`add` the marker and `gets` the key in one round trip on a pymemcache client's socket."""
    sock = _socket(client)
    sock.sendall(b"add %b 0 %d %d\r\n%b\r\ngets %b\r\n" % (kb, exp, len(marker), marker, kb))
    buf, line = _readline(sock, b"")
    if line not in (b"STORED", b"NOT_STORED"):
        raise MemcacheUnknownError(line[:80])
    added = line == b"STORED"
    buf, line = _readline(sock, buf)
    found: tuple[bytes, int] | None = None
    if line.startswith(b"VALUE "):
        fields = line.split()
        if len(fields) != 5 or fields[1] != kb:
            raise MemcacheUnknownError(line[:80])
        buf, value = _readvalue(sock, buf, int(fields[3]))
        found = (value, int(fields[4]))
        buf, line = _readline(sock, buf)
    if line != b"END" or buf:
        raise MemcacheUnknownError(line[:80])
    return added, found


def set_many_sync(client: Any, entries: list[tuple[str, bytes, bytes, int]]) -> list[str]:
    """Pipeline every set of one server in one send; return the keys not stored.

    Each set has its own exptime, so one pipeline carries any mix of TTLs. Every
    reply line is read: `SERVER_ERROR` (e.g. a value above the server's `-I`:
    memcached reads and drops it) marks only that key not stored.
    """
    sock = _socket(client)
    sock.sendall(
        b"".join(
            [b"set %b 0 %d %d\r\n%b\r\n" % (kb, exp, len(value), value) for _, kb, value, exp in entries]
        )
    )
    buf = b""
    failed: list[str] = []
    for key, _, _, _ in entries:
        buf, line = _readline(sock, buf)
        if line == b"STORED":
            continue
        if line == b"NOT_STORED" or line.startswith(b"SERVER_ERROR"):
            failed.append(key)
            continue
        raise MemcacheUnknownError(line[:80])  # out of step: the connection is closed
    if buf:
        raise MemcacheUnknownError(b"more reply lines than requests")
    return failed


class SyncOps(Core):
    """The sync operations of `MemcachedBackend`."""

    def _new_client(self, server: Server) -> Any:
        if self._discovery is not None:
            self._discovery.ensure_running()
        if self._tls is None and KERNEL_TIMEOUTS:
            return KernelTimeoutClient(
                (server.host, server.port),
                io_timeout=self._timeout,
                connect_timeout=self._connect_timeout,
                no_delay=True,
                default_noreply=False,
                socket_module=self._socket_module,
            )
        return _PymemcacheClient(
            (server.host, server.port),
            connect_timeout=self._connect_timeout,
            timeout=self._timeout,
            no_delay=True,
            default_noreply=False,
            tls_context=self._tls,
            socket_module=self._socket_module,
        )

    def _sync_error(self, server: Server, client: Any, exc: BaseException) -> NoReturn:
        """Close the client of a failed call, count the failure, raise a memo error."""
        client.close()
        if not isinstance(exc, Exception):
            raise exc  # KeyboardInterrupt and friends: the socket is closed, pass it on
        error: BackendError
        if isinstance(exc, (TimeoutError, BlockingIOError)):  # socket.timeout; SO_RCVTIMEO expiring
            error = BackendTimeout(f"memcached {server.id} did not answer within {self._timeout}s: {exc}")
        elif isinstance(exc, MemcacheUnexpectedCloseError):
            error = BackendUnavailable(f"memcached {server.id} closed the connection")
        elif isinstance(exc, MemcacheServerError):
            raise ServerError(f"memcached {server.id} answered: {exc}") from exc
        elif isinstance(exc, MemcacheClientError):
            raise ServerError(f"memcached {server.id} refused the request: {exc}") from exc
        elif isinstance(exc, MemcacheUnknownError):
            error = BackendUnavailable(f"unexpected reply from memcached {server.id}: {exc}")
        elif isinstance(exc, OSError):
            error = BackendUnavailable(f"cannot reach memcached {server.id}: {exc}")
        else:
            error = BackendUnavailable(f"memcached {server.id} failed: {exc!r}")
        server.failed()
        # Idle connections to a server that just failed are likely dead too.
        server.drain()
        raise error from exc

    def _call(self, server: Server, method: Callable[..., Any], *args: Any) -> Any:
        """Run `method(client, *args)` on a pooled client of `server`."""
        if server.blocked_until:
            server.admit()
        free = server.free
        try:
            client = free.pop()
        except IndexError:
            client = self._new_client(server)
        try:
            result = method(client, *args)
        except BaseException as exc:
            self._sync_error(server, client, exc)
        if server.failures:
            server.succeeded()
        if len(free) < server.keep:
            free.append(client)
        else:
            client.close()
        return result

    def _attempt(self, server: Server, method: Callable[..., Any], *args: Any) -> Any:
        """`_call`, returning a `BackendError` instead of raising it (one batch group's outcome)."""
        try:
            return self._call(server, method, *args)
        except BackendError as exc:
            return exc

    def get(self, key: str) -> bytes | None:
        kb = key_bytes(key)
        server = self._topology.server_for(kb)
        # Inlined `_call`: this is the hit path.
        if server.blocked_until:
            server.admit()
        free = server.free
        try:
            client = free.pop()
        except IndexError:
            client = self._new_client(server)
        try:
            value = lean_get(client, kb)
        except BaseException as exc:
            self._sync_error(server, client, exc)
        if server.failures:
            server.succeeded()
        if len(free) < server.keep:
            free.append(client)
        else:
            client.close()
        return value

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        groups = group_keys(self._topology, keys)
        outcomes = [
            self._attempt(server, get_many_sync, [kb for _, kb in pairs]) for server, pairs in groups.items()
        ]
        found, errors = merge_found(groups, outcomes)
        finish("get_many", found, errors, len(groups))
        return found

    def set(self, key: str, value: bytes, ttl: float | None) -> bool:
        return self._store(_PymemcacheClient.set, key, value, ttl)

    def add(self, key: str, value: bytes, ttl: float | None) -> bool:
        return self._store(_PymemcacheClient.add, key, value, ttl)

    def _store(self, command: Callable[..., Any], key: str, value: bytes, ttl: float | None) -> bool:
        kb = key_bytes(key)
        if len(value) > self.max_value_size:
            return False
        if type(value) is not bytes:
            value = bytes(value)
        server = self._topology.server_for(kb)
        try:
            return bool(self._call(server, command, kb, value, expiry(ttl), False))
        except ServerError:
            return False  # e.g. "object too large for cache" from a server with a smaller -I

    def set_many(self, items: Iterable[SetItem]) -> list[str]:
        not_stored: list[str] = []
        groups = group_items(self._topology, items, self.max_value_size, not_stored)
        outcomes = [self._attempt(server, set_many_sync, entries) for server, entries in groups.items()]
        errors = merge_not_stored(groups, outcomes, not_stored)
        finish("set_many", not_stored, errors, len(groups))
        return not_stored

    def delete(self, key: str) -> bool:
        kb = key_bytes(key)
        return bool(self._call(self._topology.server_for(kb), _PymemcacheClient.delete, kb, False))

    def delete_many(self, keys: Sequence[str]) -> None:
        groups = group_keys(self._topology, keys)
        outcomes = [
            self._attempt(server, _PymemcacheClient.delete_many, [kb for _, kb in pairs], False)
            for server, pairs in groups.items()
        ]
        unconfirmed, errors = merge_deleted(groups, outcomes)
        finish("delete_many", unconfirmed, errors, len(groups))

    def gets(self, key: str) -> tuple[bytes, int] | None:
        kb = key_bytes(key)
        return self._call(self._topology.server_for(kb), gets_sync, kb)  # type: ignore[no-any-return]

    def cas(self, key: str, value: bytes, ttl: float | None, unique: int) -> bool:
        kb = key_bytes(key)
        if len(value) > self.max_value_size:
            return False
        if type(value) is not bytes:
            value = bytes(value)
        server = self._topology.server_for(kb)
        try:
            return self._call(server, _PymemcacheClient.cas, kb, value, unique, expiry(ttl), False) is True
        except ServerError:
            return False

    def touch(self, key: str, ttl: float | None) -> bool:
        kb = key_bytes(key)
        server = self._topology.server_for(kb)
        return bool(self._call(server, _PymemcacheClient.touch, kb, expiry(ttl), False))

    def lease(self, key: str, marker: bytes, ttl: float | None) -> tuple[bool, tuple[bytes, int] | None]:
        kb = key_bytes(key)
        server = self._topology.server_for(kb)
        return self._call(server, lease_sync, kb, marker, expiry(ttl))  # type: ignore[no-any-return]

    def get_all(self, key: str) -> dict[str, bytes | None]:
        kb = key_bytes(key)
        servers = self._every_server(kb)
        outcomes = [self._attempt(server, _PymemcacheClient.get, kb) for server in servers]
        return {self._store_id(server): value for server, value in all_outcome(servers, outcomes)}

    def get_all_many(self, keys: Sequence[str]) -> dict[str, dict[str, bytes]]:
        if self._proxy:  # one store behind the proxies: a plain batch
            return {self._topology.servers[0].id: self.get_many(keys)}
        kbs = {key_bytes(key): key for key in keys}
        servers = self._topology.servers
        outcomes = [self._attempt(server, get_many_sync, list(kbs)) for server in servers]
        return {
            server.id: {kbs[kb]: value for kb, value in got.items() if kb in kbs}
            for server, got in all_outcome(servers, outcomes)
        }

    def set_all(self, key: str, value: bytes, ttl: float | None) -> int:
        kb = key_bytes(key)
        servers = self._every_server(kb)
        exp = expiry(ttl)
        outcomes = [self._attempt(server, _PymemcacheClient.set, kb, value, exp, False) for server in servers]
        return sum(bool(stored) for _, stored in all_outcome(servers, outcomes))

    def append_all(self, key: str, value: bytes, ttl: float | None) -> int:
        kb = key_bytes(key)
        servers = self._every_server(kb)
        exp = expiry(ttl)
        outcomes = [self._attempt(server, add_or_append_sync, kb, value, exp) for server in servers]
        return sum(bool(stored) for _, stored in all_outcome(servers, outcomes))

    def close(self) -> None:
        """Close every idle sync connection; connections in use close when they come back."""
        for server in self._topology.servers:
            server.drain()
