"""The sync side: memo's own blocking connections, one small free-list per server.

A connection is a socket and a `_proto.Reader`; it sends a request's bytes and
feeds what arrives to the request's reply plan until the reply is whole. The
protocol itself - encoding, framing, error replies - is `_proto` and `_ops`,
shared with the async side. pymemcache is not used: its `Client.get` costs
about 3 µs over a bare socket, and reading replies through its private
helpers tied memo to its internals.

An empty free-list just means a new connection, and at most `pool_size` idle
ones are kept. A connection whose call raised anything at all - a socket
error, but also a `KeyboardInterrupt` or a timeout raised into the thread from
outside - is closed and never pooled again: its socket may hold an unread
reply that the next call would take for its own.
"""

from __future__ import annotations

import socket
import ssl
import struct
import sys
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, NoReturn

from .._backend import SetItem
from .._codec import NATIVE_LEASE, Won
from .._errors import BackendError, BackendTimeout, BackendUnavailable, ConfigurationError
from . import _ops as ops
from ._core import Core
from ._plan import all_outcome, finish, group_items, group_keys, merge_deleted, merge_found, merge_not_stored
from ._proto import (
    MN,
    NEED_DATA,
    SHORT_MAX,
    Fetch,
    Probe,
    ProtocolViolation,
    Reader,
    lean_meta_hit,
    lean_meta_reply,
    lean_meta_won,
    lean_value,
    whole_get,
)
from ._proto import (
    get as encode_get,
)
from ._server import Server
from ._wire import ServerError, expiry, key_bytes, keys_bytes

__all__ = ["Closed", "SyncConnection", "SyncOps"]

KERNEL_TIMEOUTS = sys.platform.startswith("linux") and hasattr(socket, "SO_RCVTIMEO")
# recv(n) allocates n bytes before it shrinks them: above ~128 KiB that is an mmap per call.
_RECV_SIZE = 65536


class Closed(Exception):
    """The server closed the connection before its reply was whole."""


def open_socket(
    host: str,
    port: int,
    socket_module: Any,
    connect_timeout: float,
    timeout: float,
    tls: ssl.SSLContext | None,
) -> socket.socket:
    """Connect to the first address of `host` that answers, with TCP_NODELAY.

    Without TLS on Linux the socket stays blocking (no poll before each recv:
    about 1.5 µs per hit) and SO_RCVTIMEO/SO_SNDTIMEO bound each system call;
    an expired wait surfaces as BlockingIOError. With TLS an expired wait
    would leave the TLS layer mid-record, so the socket's own timeout is used.
    """
    infos = socket_module.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    error: BaseException = OSError(f"no address for {host}")
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname=host)
            sock.settimeout(connect_timeout)
            sock.connect(address)
        except Exception as exc:
            sock.close()
            error = exc
            continue
        if tls is None and KERNEL_TIMEOUTS:
            sock.settimeout(None)
            seconds = int(timeout)
            timeval = struct.pack("ll", seconds, int((timeout - seconds) * 1_000_000))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        else:
            sock.settimeout(timeout)
        return sock
    raise error


class SyncConnection:
    """One blocking memcached connection: bytes out, bytes into the reply plan."""

    __slots__ = ("meta", "reader", "sock")

    def __init__(self, sock: Any, *, meta: bool = False) -> None:
        self.sock = sock
        #: The server speaks the meta protocol (negotiated when the connection opened).
        self.meta = meta
        self.reader = Reader()

    def close(self) -> None:
        self.sock.close()

    def run(self, data: bytes, plan: Any) -> Any:
        """Send a request and return what its reply plan collects.

        The reader holds nothing between requests: every plan refuses bytes after its reply.
        """
        sock = self.sock
        reader = self.reader
        sock.sendall(data)
        chunk = sock.recv(_RECV_SIZE)
        if len(chunk) <= SHORT_MAX:  # a one-line reply, whole: no reader needed
            result = plan.short.get(chunk)
            if result is not None:
                return result
        while True:
            if not chunk:
                raise Closed()
            reader.feed(chunk)
            result = plan.collect(reader)
            if result is not NEED_DATA:
                return result
            chunk = sock.recv(_RECV_SIZE)

    def read(self, plan: Any) -> Any:
        """Collect the reply from what the reader holds, receiving more while the plan needs it."""
        reader = self.reader
        while True:
            result = plan.collect(reader) if reader.pending else NEED_DATA
            if result is not NEED_DATA:
                return result
            chunk = self.sock.recv(_RECV_SIZE)
            if not chunk:
                raise Closed()
            reader.feed(chunk)

    def get(self, kb: bytes, server_id: str, lease_ttl: float = 0.0) -> bytes | None:
        """`get` one key; the usual reply, whole in one read, is cut in place.

        `lease_ttl`: on a meta server, take the key's lease if it misses (`ops.get_or_lease`).
        """
        sock = self.sock
        if self.meta:
            flags = (ops.LEASE_FLAGS.get(lease_ttl) or ops.lease_flags(lease_ttl)) if lease_ttl else b" v\r\n"
            sock.sendall(b"mg " + kb + flags)
            # A read size of 64 KiB: a small reply whole; a larger buffer costs an allocation per hit.
            buf = sock.recv(_RECV_SIZE)
            value = lean_meta_hit(buf)
            if value is NEED_DATA:
                return self._meta_reply(buf, kb, server_id, lease_ttl)
            return value  # type: ignore[return-value]
        sock.sendall(b"get " + kb + b"\r\n")
        buf = sock.recv(_RECV_SIZE)
        got = lean_value(buf, kb)
        if got is not NEED_DATA:
            return got  # type: ignore[return-value]
        if not buf:
            raise Closed()
        self.reader.feed(buf)
        found: dict[bytes, bytes] = self.read(Fetch((kb,), server_id))
        return found.get(kb)

    def _meta_reply(self, buf: bytes, kb: bytes, server_id: str, lease_ttl: float) -> bytes | None:
        """The rest of `get` on a meta server, for replies other than a plain hit whole in `buf`."""
        if lease_ttl:
            unique = lean_meta_won(buf)  # the usual miss: the lease granted
            if unique is not None:
                return Won(unique)
            reply = lean_meta_reply(buf)  # a stale value, or the lease held by another (`Z`)
            if reply is not NEED_DATA:
                return ops.leased_value(*reply)  # type: ignore[misc]
            request = ops.get_or_lease(kb, lease_ttl, server_id, True)
        else:
            if buf == b"EN\r\n":
                return None
            request = ops.get_one(kb, server_id, True)
        if not buf:
            raise Closed()
        self.reader.feed(buf)
        return request.finish(self.read(request.plan), server_id)  # type: ignore[no-any-return]

    def meta_cas(self, kb: bytes, value: bytes, exp: int, unique: int, server_id: str) -> bool | None:
        """`ops.cas` on a meta server; its usual replies, whole in one read, are read in place."""
        sock = self.sock
        sock.sendall(ops.meta_cas(kb, value, exp, unique))
        buf = sock.recv(_RECV_SIZE)
        stored = ops.META_CAS_REPLIES.get(buf)
        if stored is not None:
            return stored
        if not buf:
            raise Closed()
        request = ops.cas(kb, value, exp, unique, server_id, True)  # its reply plan: the rest of the reply
        self.reader.feed(buf)
        # An error reply that leaves the connection out of step raises (`ops.cas`): it is closed then.
        return request.finish(self.read(request.plan), server_id)  # type: ignore[no-any-return]

    def get_many(self, kbs: list[bytes], wanted: Collection[bytes], server_id: str) -> dict[bytes, bytes]:
        """One classic multi-key `get` of `kbs` (`wanted`: the same, to look up in); the usual
        reply, whole in one read, is cut in place."""
        self.sock.sendall(encode_get(kbs))
        buf = self.sock.recv(_RECV_SIZE)
        found = whole_get(buf, wanted) if buf.endswith(b"END\r\n") else None
        if found is None:
            if not buf:
                raise Closed()
            self.reader.feed(buf)
            found = self.read(Fetch(wanted, server_id))
        return found


def _run(client: SyncConnection, server: Server, request: ops.Request) -> Any:
    return request.finish(client.run(request.data, request.plan), server.id)


class SyncOps(Core):
    """The sync operations of `MemcachedBackend`."""

    def _new_client(self, server: Server) -> SyncConnection:
        if self._discovery is not None:
            self._discovery.ensure_running()
        return self._open_sync(server)

    def _dial(self, server: Server) -> SyncConnection:
        sock = open_socket(
            server.host, server.port, self._socket_module, self._connect_timeout, self._timeout, self._tls
        )
        return SyncConnection(sock)

    def _open_sync(self, server: Server) -> SyncConnection:
        """A new connection; the first one to a server asks whether it speaks meta (`mn`).

        `MN` means meta. `ERROR`, any other reply, or the connection closing
        (twemproxy drops it) means classic, on a fresh connection: the first
        may be out of step, or gone.
        """
        conn = self._dial(server)
        if server.meta is None:
            try:
                speaks = bool(conn.run(MN, Probe()))
            except (Closed, ConnectionResetError, ProtocolViolation):
                speaks = False
            except BaseException:
                conn.close()
                raise
            if not speaks:
                conn.close()
                self._settle(server, False)
                conn = self._dial(server)
            else:
                self._settle(server, True)
        conn.meta = bool(server.meta)
        return conn

    def _sync_error(self, server: Server, client: SyncConnection | None, exc: BaseException) -> NoReturn:
        """Close the connection of a failed call, count the failure, raise a memo error."""
        if client is not None:
            client.close()
        if not isinstance(exc, Exception) or isinstance(exc, ConfigurationError):
            raise exc  # KeyboardInterrupt and friends: the socket is closed, pass it on
        if isinstance(exc, BackendError) and not isinstance(exc, (BackendTimeout, BackendUnavailable)):
            raise exc  # an error reply: the server is alive
        error: BackendError
        if isinstance(exc, BackendError):
            error = exc
        elif isinstance(exc, (TimeoutError, BlockingIOError)):  # socket.timeout; SO_RCVTIMEO expiring
            error = BackendTimeout(f"memcached {server.id} did not answer within {self._timeout}s: {exc}")
        elif isinstance(exc, Closed):
            error = BackendUnavailable(f"memcached {server.id} closed the connection")
        elif isinstance(exc, ProtocolViolation):
            error = BackendUnavailable(f"unexpected reply from memcached {server.id}: {exc}")
        elif isinstance(exc, OSError):
            error = BackendUnavailable(f"cannot reach memcached {server.id}: {exc}")
        else:
            error = BackendUnavailable(f"memcached {server.id} failed: {exc!r}")
        server.failed()
        # Idle connections to a server that just failed are likely dead too.
        server.drain()
        raise error from exc

    def _drop_native_lease(self, server: Server, *kbs: bytes) -> None:
        """Delete the lease placeholders under `kbs`, if there are (a leased read failed mid-way).

        Whose it is cannot be told: at worst another caller's lease is voided, and its
        store is refused (a lost lease, never a wrong value) instead of every reader
        waiting for a lease nobody holds.
        """
        client = None
        try:  # on a connection of its own: the backend may be closed meanwhile
            client = self._new_client(server)
            for kb in kbs:
                got = _run(client, server, ops.gets(kb, server.id, True))
                if got is not None and got[0] == NATIVE_LEASE:
                    _run(client, server, ops.delete_if(kb, got[1], server.id, True))
        except Exception:
            pass  # best effort: the placeholder expires after lease_ttl anyway
        finally:
            server.end_drop()
            if client is not None:
                client.close()

    def _call(self, server: Server, build: Callable[..., ops.Request], *args: Any) -> Any:
        """Run the request `build(*args, server id, meta)` on a pooled connection of `server`."""
        if server.blocked_until:
            server.admit()
        free = server.free
        client = None
        try:
            client = free.pop() if free else self._new_client(server)
            request = build(*args, server.id, client.meta)
            result = request.finish(client.run(request.data, request.plan), server.id)
        except BaseException as exc:
            self._sync_error(server, client, exc)
        if server.failures:
            server.succeeded()
        if len(free) < server.keep and getattr(request.plan, "in_step", True):
            free.append(client)
        else:
            client.close()
        return result

    def _attempt(self, server: Server, build: Callable[..., ops.Request], *args: Any) -> Any:
        """`_call`, returning a `BackendError` instead of raising it (one batch group's outcome)."""
        try:
            return self._call(server, build, *args)
        except BackendError as exc:
            return exc

    def get(self, key: str) -> bytes | None:
        return self.get_or_lease(key, 0.0)

    def get_or_lease(self, key: str, lease_ttl: float) -> bytes | None:
        """`Backend.get_or_lease` on meta servers (`lease_ttl` > 0); on the others, and with 0, `get`."""
        kb = key_bytes(key)
        server = self._topology.server_for(kb)
        # `_call` inlined, and the reply cut in place: this is the hit path.
        if server.blocked_until:
            server.admit()
        free = server.free
        client = None
        try:
            client = free.pop() if free else self._new_client(server)
            value = client.get(kb, server.id, lease_ttl)
        except BaseException as exc:
            if lease_ttl and client is not None and client.meta and server.start_drop():
                # The server may have granted the lease in a reply nobody will read.
                threading.Thread(
                    target=self._drop_native_lease, args=(server, kb), name="memo-drop-lease", daemon=True
                ).start()
            self._sync_error(server, client, exc)
        if server.failures:
            server.succeeded()
        if len(free) < server.keep:
            free.append(client)
        else:
            client.close()
        return value

    def get_or_lease_many(self, keys: Sequence[str], lease_ttl: float) -> dict[str, bytes | None]:
        """`Backend.get_or_lease_many`: one round trip per server (`ops.get_or_lease_many`)."""
        groups = group_keys(self._topology, keys)
        seconds = ops.lease_seconds(lease_ttl) if lease_ttl else 0
        found: dict[str, bytes | None] = {}
        errors: list[BaseException] = []
        for server, pairs in groups.items():
            kbs = [kb for _, kb in pairs]
            leasing = ops.LeasedReads(kbs, seconds)
            try:
                got = self._call(server, leasing.request)
            except BaseException as exc:
                if leasing.sent and server.start_drop():
                    # The server may have granted leases in a reply nobody will read.
                    threading.Thread(
                        target=self._drop_native_lease,
                        args=(server, *kbs),
                        name="memo-drop-lease",
                        daemon=True,
                    ).start()
                if not isinstance(exc, BackendError):
                    raise
                errors.append(exc)
                continue
            found.update(zip([key for key, _ in pairs], got, strict=True))
        finish("get_or_lease_many", found, errors, len(groups))
        return found

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        servers = self._topology.servers
        if len(servers) == 1 and keys:
            # One server (the usual batch of a tagged hit, a session and its generation):
            # run on a pooled connection directly, as `get` does.
            kbs = keys_bytes(keys)
            key_of = dict(zip(kbs, keys, strict=True))
            got = self._get_many_on(servers[0], kbs, key_of)
            return dict(zip(map(key_of.__getitem__, got), got.values(), strict=True))
        groups = group_keys(self._topology, keys)
        outcomes = [
            self._attempt(server, ops.get_many, [kb for _, kb in pairs]) for server, pairs in groups.items()
        ]
        found, errors = merge_found(groups, outcomes)
        finish("get_many", found, errors, len(groups))
        return found

    def _get_many_on(self, server: Server, kbs: list[bytes], wanted: Collection[bytes]) -> dict[bytes, bytes]:
        if server.blocked_until:
            server.admit()
        free = server.free
        client = None
        try:
            client = free.pop() if free else self._new_client(server)
            found = client.get_many(kbs, wanted, server.id)
        except BaseException as exc:
            self._sync_error(server, client, exc)
        if server.failures:
            server.succeeded()
        if len(free) < server.keep:
            free.append(client)
        else:
            client.close()
        return found

    def set(self, key: str, value: bytes, ttl: float | None) -> bool:
        return self._store(b"set", key, value, ttl)

    def add(self, key: str, value: bytes, ttl: float | None) -> bool:
        return self._store(b"add", key, value, ttl)

    def _store(self, verb: bytes, key: str, value: bytes, ttl: float | None) -> bool:
        kb = key_bytes(key)
        if len(value) > self.max_value_size:
            return False
        server = self._topology.server_for(kb)
        server.note_size(len(value))
        try:
            return bool(self._call(server, ops.store, verb, kb, bytes(value), expiry(ttl)))
        except ServerError:
            return False  # e.g. "object too large for cache" from a server with a smaller -I

    def set_many(self, items: Iterable[SetItem]) -> list[str]:
        not_stored: list[str] = []
        groups = group_items(self._topology, items, self.max_value_size, not_stored)
        self._note_writes(groups)
        outcomes = [self._attempt(server, ops.set_many, entries) for server, entries in groups.items()]
        errors = merge_not_stored(groups, outcomes, not_stored)
        finish("set_many", not_stored, errors, len(groups))
        return not_stored

    def delete(self, key: str) -> bool:
        kb = key_bytes(key)
        return bool(self._call(self._topology.server_for(kb), ops.delete, kb))

    def delete_many(self, keys: Sequence[str]) -> None:
        groups = group_keys(self._topology, keys)
        outcomes = [
            self._attempt(server, ops.delete_many, [kb for _, kb in pairs])
            for server, pairs in groups.items()
        ]
        unconfirmed, errors = merge_deleted(groups, outcomes)
        finish("delete_many", unconfirmed, errors, len(groups))

    def gets(self, key: str) -> tuple[bytes, int] | None:
        kb = key_bytes(key)
        return self._call(self._topology.server_for(kb), ops.gets, kb)  # type: ignore[no-any-return]

    def cas(self, key: str, value: bytes, ttl: float | None, unique: int) -> bool | None:
        kb = key_bytes(key)
        if len(value) > self.max_value_size:
            return False
        server = self._topology.server_for(kb)
        try:
            return self._cas_on(server, kb, bytes(value), expiry(ttl), unique)
        except ServerError:
            return None  # the server refused the value (see Backend.cas)

    def _cas_on(self, server: Server, kb: bytes, value: bytes, exp: int, unique: int) -> bool | None:
        """`_call` of `ops.cas`, inlined, with a meta server's usual replies read in place: every
        fill under a lease ends with this store."""
        if server.blocked_until:
            server.admit()
        free = server.free
        client = None
        in_step = True
        try:
            client = free.pop() if free else self._new_client(server)
            if client.meta:
                stored = client.meta_cas(kb, value, exp, unique, server.id)
            else:
                request = ops.cas(kb, value, exp, unique, server.id, False)
                stored = request.finish(client.run(request.data, request.plan), server.id)
                in_step = request.plan.in_step
        except BaseException as exc:
            self._sync_error(server, client, exc)
        if server.failures:
            server.succeeded()
        if len(free) < server.keep and in_step:
            free.append(client)
        else:
            client.close()
        return stored

    def touch(self, key: str, ttl: float | None) -> bool:
        kb = key_bytes(key)
        return bool(self._call(self._topology.server_for(kb), ops.touch, kb, expiry(ttl)))

    def lease(self, key: str, marker: bytes, ttl: float | None) -> tuple[bool, tuple[bytes, int] | None]:
        kb = key_bytes(key)
        server = self._topology.server_for(kb)
        return self._call(server, ops.lease, kb, marker, expiry(ttl))  # type: ignore[no-any-return]

    def get_all(self, key: str) -> dict[str, bytes | None]:
        kb = key_bytes(key)
        servers = self._every_server(kb)
        outcomes = [self._attempt(server, ops.get_one, kb) for server in servers]
        return {self._store_id(server): value for server, value in all_outcome(servers, outcomes)}

    def get_all_many(self, keys: Sequence[str]) -> dict[str, dict[str, bytes]]:
        if self._proxy:  # one store behind the proxies: a plain batch
            return {self._topology.servers[0].id: self.get_many(keys)}
        kbs = {key_bytes(key): key for key in keys}
        servers = self._topology.servers
        outcomes = [self._attempt(server, ops.get_many, list(kbs)) for server in servers]
        return {
            server.id: {kbs[kb]: value for kb, value in got.items() if kb in kbs}
            for server, got in all_outcome(servers, outcomes)
        }

    def set_all(self, key: str, value: bytes, ttl: float | None) -> int:
        return self._store_everywhere(ops.set_one, key, value, ttl)

    def append_all(self, key: str, value: bytes, ttl: float | None) -> int:
        return self._store_everywhere(ops.add_or_append, key, value, ttl)

    def _store_everywhere(
        self, build: Callable[..., ops.Request], key: str, value: bytes, ttl: float | None
    ) -> int:
        """Run one store per server, in turn; return how many stored. Raises if all failed."""
        kb = key_bytes(key)
        servers = self._every_server(kb)
        exp = expiry(ttl)
        outcomes = [self._attempt(server, build, kb, bytes(value), exp) for server in servers]
        return sum(stored is True for _, stored in all_outcome(servers, outcomes))

    def _server_stats(self, server: Server) -> dict[str, str]:
        got = self._attempt(server, ops.stats)
        return {} if isinstance(got, BaseException) else got

    def close(self) -> None:
        """Close every idle sync connection; connections in use close when they come back."""
        for server in self._topology.servers:
            server.drain()
