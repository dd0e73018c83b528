"""`memcached://` and `memcached+tls://`: one or more memcached servers, sync and async.

Both flavours speak the classic text protocol (`get`, `set`, `add`, `delete`),
route every key with the same rendezvous hash (`memo._routing`), write flags 0
and accept any flags on read, so an entry written by one flavour is read
byte-for-byte by the other, and by any other memcached client that routes the
same way.

Sync side: pooled `pymemcache.Client` objects, one small free-list per server.
`PooledClient` is not used: it raises `RuntimeError("Too many objects")` when
its pool runs dry and costs 2-25 µs per call. Here an empty free-list just
means a new connection, and at most `pool_size` idle ones are kept. A client
whose call raised anything at all - a socket error, but also a
`KeyboardInterrupt` or a timeout raised into the thread from outside - is
closed and never pooled again: its socket may hold an unread reply that the
next call would take for its own.

Async side: a small client of our own on `asyncio.Protocol`, not aiomcache,
although aiomcache is what a reader would expect here. Three reasons:

* aiomcache returns a connection to its pool when the call using it was
  cancelled between request and reply; the next call on that connection reads
  the stale reply and gets another key's value or None (aio-libs/aiomcache#489,
  also #43, #91). Timeouts are cancellations, so any timeout exposes it. Here a
  connection whose operation was cancelled or timed out is closed, always.
* aiomcache has no timeouts; `asyncio.wait_for` costs about 15.6 µs per call
  and `asyncio.timeout` (3.11+) about 7.8 µs. Here a request only records its
  deadline, and one lazily re-armed timer per connection enforces it (see
  `_Connection`): about 0.2 µs per request, the same on Python 3.10. Measured
  on one local memcached, a hit costs about 24 µs against aiomcache's 29 µs.
* TLS and per-event-loop pools, which aiomcache does not offer.

Async connections belong to one event loop, so pools are kept per running loop
and opened lazily. When the loop shuts down through `asyncio.run` (or anything
else that calls `loop.shutdown_asyncgens()`), the loop's connections are closed
inside that loop, by a tiny async generator registered with it; a pool whose
loop was closed some other way is dropped the next time a new loop is seen.

Every server has a circuit breaker shared by both flavours: after
`failure_threshold` consecutive failures (connection refused, reset, closed,
timed out) calls for keys on that server raise `BackendUnavailable` at once,
without touching the network; after `retry_after` seconds one call is let
through as a probe, and its success closes the breaker again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import os
import socket
import ssl
import struct
import sys
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from typing import Any, ClassVar, NamedTuple, NoReturn
from urllib.parse import SplitResult

from pymemcache.client.base import Client as _PymemcacheClient
from pymemcache.client.base import _readline, _readvalue
from pymemcache.exceptions import (
    MemcacheClientError,
    MemcacheServerError,
    MemcacheUnexpectedCloseError,
    MemcacheUnknownError,
)

from ._backend import Backend, PartialFailure, SetItem
from ._errors import BackendError, BackendTimeout, BackendUnavailable, ConfigurationError
from ._routing import Router

__all__ = ["MemcachedBackend", "ServerState"]

DEFAULT_PORT = 11211
#: Memcached reads an expiry above 30 days as an absolute Unix time.
_MAX_RELATIVE_EXPIRY = 2_592_000
#: Memcached parses expiries as a signed 32-bit integer.
_MAX_EXPIRY = 2**31 - 1

_monotonic = time.monotonic
_get_running_loop = asyncio.get_running_loop
_timeout_ctx: Any = getattr(asyncio, "timeout", None)  # Python 3.11+


class ServerState(NamedTuple):
    """The circuit breaker of one server, as `MemcachedBackend.server_states()` reports it."""

    #: "closed" (calls go through), "open" (calls fail at once) or "half-open"
    #: (the cooldown is over; the next call probes the server).
    state: str
    #: Consecutive failures counted so far; reset by any success.
    failures: int
    #: Seconds until the next probe is let through; 0 unless open.
    retry_in: float


class _ServerError(BackendError):
    """Memcached answered with an error line (`SERVER_ERROR ...`, `CLIENT_ERROR ...`, `ERROR`).

    The server is alive, so this does not count against its circuit breaker;
    for writes it means "not stored".
    """


_KERNEL_TIMEOUTS = sys.platform.startswith("linux") and hasattr(socket, "SO_RCVTIMEO")


class _KernelTimeoutClient(_PymemcacheClient):  # type: ignore[misc]
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


def _key_bytes(key: str) -> bytes:
    """Encode a key once; refuse what memcached's text protocol cannot carry.

    Printable ASCII without spaces, 1-250 characters. str methods check this
    in about 0.15 µs; a compiled regular expression takes twice as long.
    """
    if 0 < len(key) <= 250 and key.isascii() and key.isprintable() and " " not in key:
        return key.encode("ascii")
    raise ValueError(f"invalid memcached key {key!r}: 1-250 printable ASCII characters without spaces")


def _expiry(ttl: float | None) -> int:
    """Convert a relative ttl in seconds (or None) to memcached's exptime field.

    None is 0 (never expires). A ttl is rounded up to whole seconds, at least 1.
    Beyond 30 days memcached reads the field as an absolute Unix time, so that
    is what is sent; one beyond 2038 (the field is 32-bit) becomes 0.
    """
    if ttl is None:
        return 0
    if not math.isfinite(ttl):
        raise ValueError(f"ttl must be a finite number of seconds or None, got {ttl!r}")
    seconds = max(1, math.ceil(ttl))
    if seconds <= _MAX_RELATIVE_EXPIRY:
        return seconds
    absolute = int(time.time()) + seconds
    return absolute if absolute <= _MAX_EXPIRY else 0


def _parse_server(spec: str, url: str) -> tuple[str, int]:
    """Split "host", "host:port" or "[v6]:port" into (host, port)."""
    spec = spec.strip()
    if spec.startswith("["):
        host, bracket, rest = spec[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ConfigurationError(f"malformed server {spec!r} in {url!r}")
        port_text = rest[1:]
    elif spec.count(":") > 1:
        raise ConfigurationError(f"IPv6 server {spec!r} in {url!r} must be written as [address]:port")
    else:
        host, _, port_text = spec.partition(":")
    if not host:
        raise ConfigurationError(f"missing host in {url!r}")
    if not port_text:
        return host, DEFAULT_PORT
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigurationError(f"port {port_text!r} of {spec!r} in {url!r} is not a number") from None
    if not 0 < port < 65536:
        raise ConfigurationError(f"port {port} of {spec!r} in {url!r} is out of range")
    return host, port


def _server_id(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- one server: address, circuit breaker, sync pool ----------------------------


class _Server:
    """A memcached server: where it is, whether it may be called, and idle sync clients."""

    __slots__ = (
        "blocked_until",
        "failures",
        "free",
        "host",
        "id",
        "index",
        "lock",
        "port",
        "retry_after",
        "threshold",
    )

    def __init__(self, index: int, host: str, port: int, threshold: int, retry_after: float) -> None:
        self.index = index
        self.host = host
        self.port = port
        self.id = _server_id(host, port)
        self.threshold = threshold
        self.retry_after = retry_after
        # Breaker. Both fields are read without the lock on the hot path (a
        # stale read only lets one more call through or blocks one); every
        # write holds it. blocked_until == 0.0 means closed.
        self.failures = 0
        self.blocked_until = 0.0
        self.lock = threading.Lock()
        # Idle sync clients. list.pop()/append() are atomic, so the free-list
        # needs no lock of its own.
        self.free: list[Any] = []

    def admit(self) -> None:
        """Let a call through a breaker that was open, or raise BackendUnavailable.

        Called only when `blocked_until` was seen non-zero. Once the cooldown
        is over, the first caller becomes the probe and pushes the next probe
        a full `retry_after` away, so a probe that never reports back (its
        task was cancelled) cannot wedge the breaker.
        """
        now = _monotonic()
        with self.lock:
            until = self.blocked_until
            if not until:
                return
            if now >= until:
                self.blocked_until = now + self.retry_after
                return
        raise BackendUnavailable(
            f"memcached {self.id} is marked down after {self.failures} consecutive failures "
            f"(circuit breaker open; next probe in {until - now:.2f}s)"
        )

    def failed(self) -> None:
        with self.lock:
            self.failures += 1
            if self.failures >= self.threshold:
                self.blocked_until = _monotonic() + self.retry_after

    def succeeded(self) -> None:
        with self.lock:
            self.failures = 0
            self.blocked_until = 0.0

    def state(self) -> ServerState:
        with self.lock:
            until, failures = self.blocked_until, self.failures
        if not until:
            return ServerState("closed", failures, 0.0)
        left = until - _monotonic()
        return ServerState("open", failures, left) if left > 0 else ServerState("half-open", failures, 0.0)

    def drain(self) -> None:
        """Close every idle sync client."""
        free = self.free
        while True:
            try:
                client = free.pop()
            except IndexError:
                return
            client.close()


# -- async: one connection --------------------------------------------------------

_IDLE, _FETCH, _LINES, _GETS, _LINE_GETS = 0, 1, 2, 3, 4


class _ProtocolViolation(Exception):
    """The bytes on the wire are not a memcached reply to what was asked."""


class _Connection(asyncio.Protocol):
    """One memcached connection; one request at a time, its reply parsed as it arrives.

    A request returns a future. The reply resolves it; a timer fails it with
    BackendTimeout once the request's deadline passes; losing the connection
    fails it with BackendUnavailable. Whoever sees the future fail, or is
    cancelled while waiting on it, must discard the connection
    (`_Slots.discard`): its reply may still be on the way.

    Deadlines cost one float per request. Each connection has at most one
    timer, armed by a request when none is pending and never cancelled by a
    reply; when it fires it re-arms itself for the deadline of the request in
    flight, if that is later. With steady traffic a connection's timer fires
    about once per `timeout`, instead of a `call_later` + `cancel` pair per
    request (about 2 µs on a 2-core VM; `asyncio.timeout` costs about 7.8 µs
    and `asyncio.wait_for` about 15.6 µs).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, server_id: str) -> None:
        self.loop = loop
        self.server_id = server_id
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = loop.create_future()
        self.broken = False
        self._waiter: asyncio.Future[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timeout = 0.0
        self._deadline = 0.0
        self._mode = _IDLE
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._need = 0
        self._key = b""
        self._wanted: Any = ()
        self._values: dict[bytes, Any] = {}
        self._lines: list[bytes] = []
        self._expect = 0
        self._cas = 0

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.broken = True
        if not self.lost.done():
            self.lost.set_result(None)
        error = BackendUnavailable(f"memcached {self.server_id} closed the connection")
        error.__cause__ = exc
        self._finish_error(error)

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost follows

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            # A reply nobody waits for any more (its request was cancelled or
            # timed out), or bytes nobody asked for: this connection is out of step.
            self.abort()
            return
        buf = self._buf
        if buf:
            assert isinstance(buf, bytearray)
            buf += data
        else:
            buf = data
        try:
            mode = self._mode
            if mode in (_FETCH, _GETS):
                complete = self._parse_fetch(buf)
            elif mode == _LINES:
                complete = self._parse_lines(buf)
            else:
                complete = self._parse_line_then_fetch(buf)
        except _ProtocolViolation as exc:
            self._fail_protocol(str(exc))
            return
        except _ServerError as exc:
            self.abort()
            self._finish_error(exc)
            return
        if not complete:
            if buf is data:
                self._buf = bytearray(data)
            return
        self._buf = b""
        self._pos = self._need = 0
        self._waiter = None
        mode, self._mode = self._mode, _IDLE
        if mode in (_FETCH, _GETS):
            waiter.set_result(self._values)
        elif mode == _LINES:
            waiter.set_result(self._lines)
        else:
            waiter.set_result((self._lines[0], self._values))

    # -- requests

    def request(
        self, data: bytes, mode: int, *, wanted: Any = (), expect: int = 0, timeout: float
    ) -> asyncio.Future[Any]:
        """Send `data` and return the future of its reply.

        `mode` _FETCH collects `VALUE` items up to `END` into a dict (keys must
        be in `wanted`); _GETS does the same with `(value, cas unique)` items;
        _LINES collects `expect` reply lines into a list; _LINE_GETS reads one
        reply line, then a `gets` reply: `(line, {key: (value, cas)})`.
        """
        fut = self.loop.create_future()
        transport = self.transport
        if self.broken or transport is None or transport.is_closing():
            self.broken = True
            fut.set_exception(BackendUnavailable(f"memcached {self.server_id} closed the connection"))
            return fut
        self._waiter = fut
        self._mode = mode
        if mode != _LINES:
            self._values = {}
            self._wanted = wanted
            self._cas = 0
        if mode in (_LINES, _LINE_GETS):
            self._lines = []
            self._expect = expect or 1
        self._timeout = timeout
        loop = self.loop
        self._deadline = deadline = loop.time() + timeout
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._on_timer)
        transport.write(data)
        return fut

    def abort(self) -> None:
        """Close at once, dropping whatever is buffered either way."""
        self.broken = True
        timer = self._timer
        if timer is not None:
            timer.cancel()
            self._timer = None
        if self.transport is not None:
            # RuntimeError: its event loop is closed, so nothing will ever run
            # the close; the transport closes its socket when collected.
            with contextlib.suppress(RuntimeError):
                self.transport.abort()

    def _on_timer(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # idle, or its caller is already discarding the connection
        if self.loop.time() < self._deadline:
            self._timer = self.loop.call_at(self._deadline, self._on_timer)
            return
        self.broken = True
        self._finish_error(
            BackendTimeout(f"memcached {self.server_id} did not answer within {self._timeout}s")
        )

    def _finish_error(self, error: BaseException) -> None:
        timer = self._timer
        if timer is not None:
            timer.cancel()
            self._timer = None
        waiter = self._waiter
        self._waiter = None
        self._mode = _IDLE
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def _fail_protocol(self, what: str) -> None:
        self.abort()
        self._finish_error(BackendUnavailable(f"unexpected reply from memcached {self.server_id}: {what}"))

    # -- reply parsing. Positions index into the whole buffer of this reply.

    def _parse_fetch(self, buf: bytes | bytearray) -> bool:
        """Parse `VALUE <key> <flags> <bytes> [<cas>]\\r\\n<data>\\r\\n`... `END\\r\\n`."""
        pos = self._pos
        end = len(buf)
        values = self._values
        while True:
            need = self._need
            if need:
                if end < need:
                    break
                if buf[need - 2 : need] != b"\r\n":
                    raise _ProtocolViolation("value not followed by CRLF")
                value = bytes(buf[pos : need - 2])
                values[self._key] = value if self._mode == _FETCH else (value, self._cas)
                pos = need
                self._need = 0
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            if buf.startswith(b"VALUE ", pos):
                fields = buf[pos + 6 : eol].split(b" ")
                if len(fields) not in (3, 4):
                    raise _ProtocolViolation(repr(bytes(buf[pos:eol])[:80]))
                key = bytes(fields[0])
                if key not in self._wanted:
                    raise _ProtocolViolation(f"value for key {key[:80]!r} that was not asked for")
                try:
                    size = int(fields[2])
                except ValueError:
                    raise _ProtocolViolation(repr(bytes(buf[pos:eol])[:80])) from None
                if size < 0:
                    raise _ProtocolViolation(repr(bytes(buf[pos:eol])[:80]))
                if self._mode != _FETCH:
                    if len(fields) != 4 or not fields[3].isdigit():
                        raise _ProtocolViolation(repr(bytes(buf[pos:eol])[:80]))
                    self._cas = int(fields[3])
                self._key = key
                pos = eol + 2
                self._need = pos + size + 2
                continue
            if eol - pos == 3 and buf.startswith(b"END", pos):
                if eol + 2 != end:
                    raise _ProtocolViolation("bytes after END")
                return True
            line = bytes(buf[pos:eol])
            if line.startswith(_ERROR_PREFIXES):
                raise _error_line(line, self.server_id)
            raise _ProtocolViolation(repr(line[:80]))
        self._pos = pos
        return False

    def _parse_line_then_fetch(self, buf: bytes | bytearray) -> bool:
        """Parse one status line (e.g. the reply to `add`), then a `gets` reply."""
        if not self._lines:
            eol = buf.find(b"\r\n")
            if eol < 0:
                return False
            line = bytes(buf[:eol])
            if line not in _STATUS_LINES:
                if line.startswith(_ERROR_PREFIXES):
                    raise _error_line(line, self.server_id)
                raise _ProtocolViolation(repr(line[:80]))
            self._lines.append(line)
            self._pos = eol + 2
        return self._parse_fetch(buf)

    def _parse_lines(self, buf: bytes | bytearray) -> bool:
        pos = self._pos
        lines = self._lines
        expect = self._expect
        while len(lines) < expect:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                self._pos = pos
                return False
            line = bytes(buf[pos:eol])
            if line not in _STATUS_LINES and not line.startswith(b"SERVER_ERROR"):
                # ERROR / CLIENT_ERROR (the server did not understand us) or
                # something stranger: what follows may be out of step, so the
                # connection is not reused.
                self.broken = True
            lines.append(line)
            pos = eol + 2
        if pos != len(buf):
            raise _ProtocolViolation("more reply lines than requests")
        return True


_ERROR_PREFIXES = (b"SERVER_ERROR", b"CLIENT_ERROR", b"ERROR")
# One-line replies to set/add/delete that leave the connection in step.
# SERVER_ERROR does too: memcached reads (and drops) the refused value first.
_STATUS_LINES = frozenset([b"STORED", b"NOT_STORED", b"EXISTS", b"NOT_FOUND", b"DELETED", b"TOUCHED"])


def _error_line(line: bytes, server_id: str) -> BackendError:
    """The error for a reply line that is not the expected answer."""
    text = line[:200].decode("ascii", "replace")
    if line.startswith(_ERROR_PREFIXES):
        return _ServerError(f"memcached {server_id} answered {text!r}")
    return BackendUnavailable(f"unexpected reply from memcached {server_id}: {text!r}")


# -- async: the connections of one server in one event loop ------------------------


class _Slots:
    """At most `cap` connections to one server from one event loop; idle ones kept.

    Operations beyond `cap` wait, each at most the operation timeout, for a
    connection to be handed over (a `_Connection`) or for a slot to open up
    (None: the waiter opens a connection itself).
    """

    __slots__ = ("cap", "free", "open", "waiters")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.free: list[_Connection] = []
        self.open = 0
        self.waiters: collections.deque[asyncio.Future[_Connection | None]] = collections.deque()

    def take(self) -> _Connection | None:
        """Return an idle, live connection, or None."""
        free = self.free
        while free:
            conn = free.pop()
            if not conn.broken:
                return conn
            self.open -= 1
        return None

    def release(self, conn: _Connection) -> None:
        """Give a connection whose reply was read in full back to the pool."""
        if conn.broken:
            self.discard(conn)
            return
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self.free.append(conn)

    def discard(self, conn: _Connection) -> None:
        """Close a connection that may hold an unread reply, and free its slot."""
        conn.abort()
        self.open -= 1
        self.wake()

    def wake(self) -> None:
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def abort_all(self) -> list[_Connection]:
        conns, self.free = self.free, []
        for conn in conns:
            conn.abort()
        self.open -= len(conns)
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_exception(BackendUnavailable("the memcached backend was closed"))
        self.waiters.clear()
        return conns


class _LoopPools:
    """The async connections of one event loop: one `_Slots` per server."""

    def __init__(self, owner: MemcachedBackend, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.slots = [_Slots(owner._pool_size) for _ in owner._servers]
        self._registry = owner._apools
        self._registry_lock = owner._apools_lock
        self._watch: AsyncGenerator[None, None] | None = None
        self._closed = False

    def start_watch(self) -> None:
        """Hook this loop's shutdown: `loop.shutdown_asyncgens()` closes the generator."""
        watch = _watch_loop(self)
        # asend() registers the generator with the running loop's asyncgen
        # hooks; running it to its first yield never suspends.
        with contextlib.suppress(StopIteration):
            watch.asend(None).send(None)
        self._watch = watch

    def abort_all(self) -> list[_Connection]:
        """Close every idle connection; connections in use are closed when released."""
        self._closed = True
        with self._registry_lock:
            if self._registry.get(self.loop) is self:
                del self._registry[self.loop]
        conns: list[_Connection] = []
        for slots in self.slots:
            conns += slots.abort_all()
        return conns

    async def aclose(self) -> None:
        """Close from inside the pool's own loop, waiting for the sockets to close."""
        watch, self._watch = self._watch, None
        if watch is not None:
            await watch.aclose()
        else:
            await _wait_lost(self.abort_all())

    def close_elsewhere(self) -> None:
        """Close from outside the pool's loop (another thread, or after it stopped)."""
        watch, self._watch = self._watch, None
        loop = self.loop
        if loop.is_closed():
            # Nothing can run in that loop any more; finish the generator here.
            # Its cleanup does not await outside its own loop, so one step ends it.
            if watch is not None:
                try:
                    watch.aclose().send(None)
                except StopIteration:
                    pass
                except RuntimeError:  # pragma: no cover - the generator is already running
                    pass
            else:
                self.abort_all()
            return
        try:
            if watch is not None:
                aclose = watch.aclose
                loop.call_soon_threadsafe(lambda: loop.create_task(aclose()))
            else:
                loop.call_soon_threadsafe(self.abort_all)
        except RuntimeError:  # the loop closed meanwhile
            self.abort_all()


async def _watch_loop(pools: _LoopPools) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        conns = pools.abort_all()
        if _current_loop() is pools.loop:
            await _wait_lost(conns)


def _current_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return _get_running_loop()
    except RuntimeError:
        return None


async def _wait_lost(conns: list[_Connection]) -> None:
    """Wait (briefly) until aborted connections report their sockets closed."""
    pending = [conn.lost for conn in conns if not conn.lost.done()]
    if pending:
        await asyncio.wait(pending, timeout=1.0)


# -- the backend -----------------------------------------------------------------

_BREAKER_FAILURES = (BackendTimeout, BackendUnavailable)


class MemcachedBackend(Backend):
    """Memcached servers for sync and async callers, failing fast when one is down.

    Args:
        servers: "host:port" strings (port defaults to 11211; IPv6 as
            "[addr]:port") or (host, port) pairs. Keys are spread over them by
            rendezvous hashing of the server ids, so "localhost:11211" and
            "127.0.0.1:11211" are different servers to the router: name servers
            the same way everywhere.
        connect_timeout: seconds to open a connection, TLS handshake included
            (default 0.25). Kept short on purpose: a cache that cannot be reached
            quickly is worth less than recomputing.
        timeout: seconds to wait for a reply (default 0.25). Sync: per socket
            send/receive. Async: per request, and also the longest an operation
            waits for a free connection when `pool_size` are busy.
        pool_size: connections per server (default 16). The sync side keeps at
            most this many idle and opens more when all are busy; the async side
            opens at most this many per server and event loop and queues the rest,
            so thousands of concurrent tasks cannot open thousands of sockets.
        max_value_size: values longer than this are never sent (default 1 MiB
            minus 512 bytes, what a default memcached `-I 1m` stores with any
            key); `set`/`add` return False and `set_many` reports them.
        tls_context: an `ssl.SSLContext` to speak TLS with. `memcached+tls://`
            URLs without one get `ssl.create_default_context()` (system CAs,
            hostname checked).
        failure_threshold: consecutive failures that open a server's circuit
            breaker (default 3).
        retry_after: seconds an open breaker waits before letting one probe
            call through (default 2.0).

    Batches (`get_many`, `set_many`, `delete_many`) cost one round trip per
    server involved: one multi-key `get`, or pipelined `set`/`delete` commands.
    The async flavour runs the servers' round trips concurrently; the sync one
    asks them in turn, and sends one pipeline per distinct ttl. When some
    servers answer and others fail, `PartialFailure` carries what arrived; when
    all fail, the first server's error is raised.

    Raises (from every operation): `BackendUnavailable` (refused, reset, closed,
    breaker open), `BackendTimeout`, `PartialFailure`, or `BackendError` for an
    error line from the server. No socket, ssl, asyncio or pymemcache exception
    escapes, except cancellation and exceptions raised into a call from outside
    (`KeyboardInterrupt`), which propagate unchanged after the connection they
    interrupted is closed. A key memcached cannot carry (not 1-250 printable
    ASCII characters without spaces) or a non-finite ttl is a `ValueError`,
    raised before anything is sent: the engine never builds one, so it is a bug.
    """

    OPTIONS: ClassVar[dict[str, type]] = {
        "connect_timeout": float,
        "timeout": float,
        "pool_size": int,
        "max_value_size": int,
        "tls_context": object,
        "failure_threshold": int,
        "retry_after": float,
    }

    def __init__(
        self,
        servers: Sequence[str | tuple[str, int]],
        *,
        connect_timeout: float = 0.25,
        timeout: float = 0.25,
        pool_size: int = 16,
        max_value_size: int = 1024 * 1024 - 512,
        tls_context: ssl.SSLContext | None = None,
        failure_threshold: int = 3,
        retry_after: float = 2.0,
    ) -> None:
        if isinstance(servers, str):
            servers = [servers]
        addresses = [_parse_server(s, s) if isinstance(s, str) else (s[0], int(s[1])) for s in servers]
        if not addresses:
            raise ConfigurationError("MemcachedBackend needs at least one server")
        for name, seconds in (("connect_timeout", connect_timeout), ("timeout", timeout)):
            if not (isinstance(seconds, (int, float)) and 0 < seconds < math.inf):
                raise ConfigurationError(f"{name} must be a positive number of seconds, got {seconds!r}")
        if not (isinstance(retry_after, (int, float)) and 0 <= retry_after < math.inf):
            raise ConfigurationError(f"retry_after must be a non-negative number, got {retry_after!r}")
        if pool_size < 1:
            raise ConfigurationError(f"pool_size must be at least 1, got {pool_size}")
        if failure_threshold < 1:
            raise ConfigurationError(f"failure_threshold must be at least 1, got {failure_threshold}")
        if max_value_size < 0:
            raise ConfigurationError(f"max_value_size must not be negative, got {max_value_size}")
        if tls_context is not None and not isinstance(tls_context, ssl.SSLContext):
            raise ConfigurationError(
                f"tls_context must be an ssl.SSLContext, got {type(tls_context).__name__}"
            )

        self._servers = [
            _Server(i, host, port, failure_threshold, float(retry_after))
            for i, (host, port) in enumerate(addresses)
        ]
        try:
            self._router = Router([s.id for s in self._servers])
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        self._index = self._router.index
        self._connect_timeout = float(connect_timeout)
        self._timeout = float(timeout)
        self._pool_size = pool_size
        self.max_value_size = max_value_size
        self._tls = tls_context
        self._failure_threshold = failure_threshold
        self._retry_after = float(retry_after)
        self._apools: dict[asyncio.AbstractEventLoop, _LoopPools] = {}
        self._apools_lock = threading.RLock()
        _live_backends.add(self)

    @classmethod
    def from_url(cls, parts: SplitResult, options: dict[str, Any]) -> MemcachedBackend:
        """Build from `memcached://h1[:port],h2[:port]` or `memcached+tls://...`.

        `options` have been checked against `OPTIONS` already. A TLS URL without
        `tls_context` uses `ssl.create_default_context()`; a plain URL with one
        is refused, as it is ambiguous.
        """
        url = parts.geturl()
        scheme = parts.scheme.lower()
        if scheme not in ("memcached", "memcached+tls"):
            raise ConfigurationError(f"not a memcached URL: {url!r}")
        if parts.path not in ("", "/"):
            raise ConfigurationError(f"memcached URLs take no path, got {parts.path!r} in {url!r}")
        if "@" in parts.netloc:
            raise ConfigurationError(f"memcached URLs take no user or password: {url!r}")
        if not parts.netloc:
            raise ConfigurationError(f"no server in {url!r}; use memcached://host:port[,host:port...]")
        servers = [_parse_server(spec, url) for spec in parts.netloc.split(",")]
        options = dict(options)
        tls_context = options.pop("tls_context", None)
        if scheme == "memcached+tls":
            if tls_context is None:
                tls_context = ssl.create_default_context()
        elif tls_context is not None:
            raise ConfigurationError(f"tls_context given for {url!r}; use a memcached+tls:// URL for TLS")
        return cls(servers, tls_context=tls_context, **options)

    def __repr__(self) -> str:
        tls = ", tls" if self._tls is not None else ""
        return f"MemcachedBackend({list(self.servers)!r}{tls})"

    # -- introspection ---------------------------------------------------------

    @property
    def servers(self) -> tuple[str, ...]:
        """The server ids ("host:port"), in the order given."""
        return self._router.servers

    def server_for(self, key: str) -> str:
        """Return the id of the server that holds `key`."""
        return self._servers[self._index(_key_bytes(key))].id

    def server_states(self) -> dict[str, ServerState]:
        """Return each server's circuit-breaker state, by server id."""
        return {s.id: s.state() for s in self._servers}

    def _options(self) -> dict[str, Any]:
        return {
            "connect_timeout": self._connect_timeout,
            "timeout": self._timeout,
            "pool_size": self._pool_size,
            "max_value_size": self.max_value_size,
            "tls_context": self._tls,
            "failure_threshold": self._failure_threshold,
            "retry_after": self._retry_after,
        }

    # -- shared helpers ----------------------------------------------------------

    def _group(self, keys: Iterable[str]) -> dict[int, list[tuple[str, bytes]]]:
        groups: dict[int, list[tuple[str, bytes]]] = {}
        if len(self._servers) == 1:
            pairs = [(k, _key_bytes(k)) for k in keys]
            return {0: pairs} if pairs else groups
        index = self._index
        for key in keys:
            kb = _key_bytes(key)
            i = index(kb)
            group = groups.get(i)
            if group is None:
                groups[i] = [(key, kb)]
            else:
                group.append((key, kb))
        return groups

    def _group_items(
        self, items: Iterable[SetItem], not_stored: list[str]
    ) -> dict[int, list[tuple[str, bytes, bytes, int]]]:
        """Group writes by server as (key, key bytes, value, exptime); refuse oversize ones."""
        groups: dict[int, list[tuple[str, bytes, bytes, int]]] = {}
        single = len(self._servers) == 1
        index = self._index
        limit = self.max_value_size
        for key, value, ttl in items:
            kb = _key_bytes(key)
            if len(value) > limit:
                not_stored.append(key)
                continue
            if type(value) is not bytes:
                value = bytes(value)
            i = 0 if single else index(kb)
            group = groups.get(i)
            entry = (key, kb, value, _expiry(ttl))
            if group is None:
                groups[i] = [entry]
            else:
                group.append(entry)
        return groups

    @staticmethod
    def _batch_outcome(operation: str, result: Any, errors: list[BaseException], groups: int) -> None:
        if not errors:
            return
        if len(errors) == groups:
            raise errors[0]
        raise PartialFailure(
            f"{operation}: {len(errors)} of {groups} memcached servers failed; first error: {errors[0]}",
            result,
            errors,
        )

    # -- sync ---------------------------------------------------------------------

    def _new_client(self, server: _Server) -> Any:
        if self._tls is None and _KERNEL_TIMEOUTS:
            return _KernelTimeoutClient(
                (server.host, server.port),
                io_timeout=self._timeout,
                connect_timeout=self._connect_timeout,
                no_delay=True,
                default_noreply=False,
            )
        return _PymemcacheClient(
            (server.host, server.port),
            connect_timeout=self._connect_timeout,
            timeout=self._timeout,
            no_delay=True,
            default_noreply=False,
            tls_context=self._tls,
        )

    def _sync_error(self, server: _Server, client: Any, exc: BaseException) -> NoReturn:
        """Close the client of a failed call, count the failure, raise a memo error."""
        client.close()
        if not isinstance(exc, Exception):
            raise exc  # KeyboardInterrupt and friends: the socket is closed, pass it on
        error: BackendError
        if isinstance(exc, (TimeoutError, BlockingIOError)):  # socket.timeout; SO_RCVTIMEO expiring
            error = BackendTimeout(f"memcached {server.id} did not answer within {self._timeout}s")
        elif isinstance(exc, MemcacheUnexpectedCloseError):
            error = BackendUnavailable(f"memcached {server.id} closed the connection")
        elif isinstance(exc, MemcacheServerError):
            raise _ServerError(f"memcached {server.id} answered: {exc}") from exc
        elif isinstance(exc, MemcacheClientError):
            raise _ServerError(f"memcached {server.id} refused the request: {exc}") from exc
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

    def _call(self, server: _Server, method: Callable[..., Any], *args: Any) -> Any:
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
        if len(free) < self._pool_size:
            free.append(client)
        else:
            client.close()
        return result

    def get(self, key: str) -> bytes | None:
        kb = _key_bytes(key)
        server = self._servers[self._index(kb)]
        # Inlined `_call`: this is the hit path.
        if server.blocked_until:
            server.admit()
        free = server.free
        try:
            client = free.pop()
        except IndexError:
            client = self._new_client(server)
        try:
            value: bytes | None = client.get(kb)
        except BaseException as exc:
            self._sync_error(server, client, exc)
        if server.failures:
            server.succeeded()
        if len(free) < self._pool_size:
            free.append(client)
        else:
            client.close()
        return value

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        groups = self._group(keys)
        found: dict[str, bytes] = {}
        errors: list[BaseException] = []
        for i, pairs in groups.items():
            try:
                got = self._call(self._servers[i], _PymemcacheClient.get_many, [kb for _, kb in pairs])
            except BackendError as exc:
                errors.append(exc)
                continue
            for key, kb in pairs:
                value = got.get(kb)
                if value is not None:
                    found[key] = value
        self._batch_outcome("get_many", found, errors, len(groups))
        return found

    def set(self, key: str, value: bytes, ttl: float | None) -> bool:
        return self._store(_PymemcacheClient.set, key, value, ttl)

    def add(self, key: str, value: bytes, ttl: float | None) -> bool:
        return self._store(_PymemcacheClient.add, key, value, ttl)

    def _store(self, command: Callable[..., Any], key: str, value: bytes, ttl: float | None) -> bool:
        kb = _key_bytes(key)
        if len(value) > self.max_value_size:
            return False
        if type(value) is not bytes:
            value = bytes(value)
        server = self._servers[self._index(kb)]
        try:
            return bool(self._call(server, command, kb, value, _expiry(ttl), False))
        except _ServerError:
            return False  # e.g. "object too large for cache" from a server with a smaller -I

    def set_many(self, items: Iterable[SetItem]) -> list[str]:
        not_stored: list[str] = []
        groups = self._group_items(items, not_stored)
        errors: list[BaseException] = []
        for i, entries in groups.items():
            try:
                not_stored += self._call(self._servers[i], _set_many_sync, entries)
            except BackendError as exc:
                not_stored += [key for key, _, _, _ in entries]
                if not isinstance(exc, _ServerError):
                    errors.append(exc)
        self._batch_outcome("set_many", not_stored, errors, len(groups))
        return not_stored

    def delete(self, key: str) -> bool:
        kb = _key_bytes(key)
        return bool(self._call(self._servers[self._index(kb)], _PymemcacheClient.delete, kb, False))

    def delete_many(self, keys: Sequence[str]) -> None:
        groups = self._group(keys)
        unconfirmed: list[str] = []
        errors: list[BaseException] = []
        for i, pairs in groups.items():
            try:
                self._call(self._servers[i], _PymemcacheClient.delete_many, [kb for _, kb in pairs], False)
            except BackendError as exc:
                unconfirmed += [key for key, _ in pairs]
                errors.append(exc)
        self._batch_outcome("delete_many", unconfirmed, errors, len(groups))

    def gets(self, key: str) -> tuple[bytes, int] | None:
        kb = _key_bytes(key)
        return self._call(self._servers[self._index(kb)], _gets_sync, kb)  # type: ignore[no-any-return]

    def cas(self, key: str, value: bytes, ttl: float | None, unique: int) -> bool:
        kb = _key_bytes(key)
        if len(value) > self.max_value_size:
            return False
        if type(value) is not bytes:
            value = bytes(value)
        server = self._servers[self._index(kb)]
        try:
            return self._call(server, _PymemcacheClient.cas, kb, value, unique, _expiry(ttl), False) is True
        except _ServerError:
            return False

    def touch(self, key: str, ttl: float | None) -> bool:
        kb = _key_bytes(key)
        server = self._servers[self._index(kb)]
        return bool(self._call(server, _PymemcacheClient.touch, kb, _expiry(ttl), False))

    def lease(self, key: str, marker: bytes, ttl: float | None) -> tuple[bool, tuple[bytes, int] | None]:
        kb = _key_bytes(key)
        server = self._servers[self._index(kb)]
        return self._call(server, _lease_sync, kb, marker, _expiry(ttl))  # type: ignore[no-any-return]

    def get_all(self, key: str) -> dict[str, bytes | None]:
        kb = _key_bytes(key)
        found: dict[str, bytes | None] = {}
        errors: list[BaseException] = []
        for server in self._servers:
            try:
                found[server.id] = self._call(server, _PymemcacheClient.get, kb)
            except BackendError as exc:
                errors.append(exc)
        if len(errors) == len(self._servers):
            raise errors[0]
        return found

    def set_all(self, key: str, value: bytes, ttl: float | None) -> int:
        kb = _key_bytes(key)
        stored = 0
        errors: list[BaseException] = []
        for server in self._servers:
            try:
                stored += bool(self._call(server, _PymemcacheClient.set, kb, value, _expiry(ttl), False))
            except BackendError as exc:
                errors.append(exc)
        if len(errors) == len(self._servers):
            raise errors[0]
        return stored

    def close(self) -> None:
        """Close every idle sync connection; connections in use close when they come back."""
        for server in self._servers:
            server.drain()

    # -- async --------------------------------------------------------------------

    def _loop_pools(self, loop: asyncio.AbstractEventLoop) -> _LoopPools:
        with self._apools_lock:
            pools = self._apools.get(loop)
            if pools is not None:
                return pools
            stale = [p for lp, p in self._apools.items() if lp.is_closed()]
            pools = _LoopPools(self, loop)
            self._apools[loop] = pools
        for old in stale:
            old.close_elsewhere()
        pools.start_watch()
        return pools

    async def _connect(self, server: _Server, loop: asyncio.AbstractEventLoop) -> _Connection:
        tls = self._tls
        try:
            connecting = loop.create_connection(
                lambda: _Connection(loop, server.id),
                server.host,
                server.port,
                ssl=tls,
                server_hostname=server.host if tls is not None else None,
                ssl_handshake_timeout=self._connect_timeout if tls is not None else None,
            )
            if _timeout_ctx is not None:
                async with _timeout_ctx(self._connect_timeout):
                    _, conn = await connecting
            else:  # pragma: no cover - Python 3.10
                _, conn = await asyncio.wait_for(connecting, self._connect_timeout)
        except (TimeoutError, asyncio.TimeoutError) as exc:
            server.failed()
            raise BackendTimeout(
                f"could not connect to memcached {server.id} within {self._connect_timeout}s"
            ) from exc
        except (OSError, ssl.SSLError) as exc:
            server.failed()
            raise BackendUnavailable(f"cannot reach memcached {server.id}: {exc}") from exc
        return conn

    async def _acquire(self, server: _Server, slots: _Slots) -> _Connection:
        """Open a connection, or wait for one, when the pool had none idle."""
        loop = _get_running_loop()
        while True:
            conn = slots.take()
            if conn is not None:
                return conn
            if slots.open < slots.cap:
                slots.open += 1
                try:
                    return await self._connect(server, loop)
                except BaseException:
                    slots.open -= 1
                    slots.wake()
                    raise
            waiter: asyncio.Future[_Connection | None] = loop.create_future()
            slots.waiters.append(waiter)
            timer = loop.call_later(self._timeout, _expire_waiter, waiter, server.id, self._timeout)
            try:
                handed = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    # Handed a connection or a slot just as we were cancelled: pass it on.
                    got = waiter.result()
                    if got is None:
                        slots.wake()
                    else:
                        slots.release(got)
                raise
            finally:
                timer.cancel()
            if handed is not None:
                if not handed.broken:
                    return handed
                handed.abort()
                slots.open -= 1
            # While we waited the server may have been marked down.
            if server.blocked_until:
                server.admit()

    async def _request(
        self, server: _Server, data: bytes, mode: int, *, wanted: Any = (), expect: int = 0
    ) -> Any:
        """Send one request to `server` on a pooled connection and return its parsed reply."""
        if server.blocked_until:
            server.admit()
        loop = _get_running_loop()
        pools = self._apools.get(loop)
        if pools is None:
            pools = self._loop_pools(loop)
        slots = pools.slots[server.index]
        conn = slots.take()
        if conn is None:
            conn = await self._acquire(server, slots)
        try:
            reply = await conn.request(data, mode, wanted=wanted, expect=expect, timeout=self._timeout)
        except BaseException as exc:
            # Cancelled, timed out or failed between request and reply: the
            # reply may still arrive, so this connection is closed, never reused.
            slots.discard(conn)
            if type(exc) in _BREAKER_FAILURES:
                server.failed()
            raise
        if pools._closed:
            slots.discard(conn)
        else:
            slots.release(conn)
        if server.failures:
            server.succeeded()
        return reply

    async def aget(self, key: str) -> bytes | None:
        kb = _key_bytes(key)
        found: dict[bytes, bytes] = await self._request(
            self._servers[self._index(kb)], b"get " + kb + b"\r\n", _FETCH, wanted=(kb,)
        )
        return found.get(kb)

    async def _aget_group(self, i: int, pairs: list[tuple[str, bytes]]) -> dict[bytes, bytes]:
        kbs = [kb for _, kb in pairs]
        found: dict[bytes, bytes] = await self._request(
            self._servers[i], b"get " + b" ".join(kbs) + b"\r\n", _FETCH, wanted=frozenset(kbs)
        )
        return found

    async def aget_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        groups = self._group(keys)
        found: dict[str, bytes] = {}
        if not groups:
            return found
        outcomes = await _run_groups([self._aget_group(i, pairs) for i, pairs in groups.items()])
        errors: list[BaseException] = []
        for pairs, outcome in zip(groups.values(), outcomes, strict=True):
            if isinstance(outcome, BaseException):
                errors.append(outcome)
                continue
            for key, kb in pairs:
                value = outcome.get(kb)
                if value is not None:
                    found[key] = value
        self._batch_outcome("get_many", found, errors, len(groups))
        return found

    async def _astore(self, verb: bytes, key: str, value: bytes, ttl: float | None) -> bool:
        kb = _key_bytes(key)
        if len(value) > self.max_value_size:
            return False
        data = b"%b %b 0 %d %d\r\n%b\r\n" % (verb, kb, _expiry(ttl), len(value), value)
        try:
            lines: list[bytes] = await self._request(self._servers[self._index(kb)], data, _LINES, expect=1)
        except _ServerError:
            return False
        return lines[0] == b"STORED"

    async def aset(self, key: str, value: bytes, ttl: float | None) -> bool:
        return await self._astore(b"set", key, value, ttl)

    async def aadd(self, key: str, value: bytes, ttl: float | None) -> bool:
        return await self._astore(b"add", key, value, ttl)

    async def _aset_group(self, i: int, entries: list[tuple[str, bytes, bytes, int]]) -> list[str]:
        data = b"".join(
            [b"set %b 0 %d %d\r\n%b\r\n" % (kb, exp, len(value), value) for _, kb, value, exp in entries]
        )
        lines: list[bytes] = await self._request(self._servers[i], data, _LINES, expect=len(entries))
        return [entry[0] for entry, line in zip(entries, lines, strict=True) if line != b"STORED"]

    async def aset_many(self, items: Iterable[SetItem]) -> list[str]:
        not_stored: list[str] = []
        groups = self._group_items(items, not_stored)
        if not groups:
            return not_stored
        outcomes = await _run_groups([self._aset_group(i, entries) for i, entries in groups.items()])
        errors: list[BaseException] = []
        for entries, outcome in zip(groups.values(), outcomes, strict=True):
            if isinstance(outcome, BaseException):
                not_stored += [key for key, _, _, _ in entries]
                if not isinstance(outcome, _ServerError):
                    errors.append(outcome)
            else:
                not_stored += outcome
        self._batch_outcome("set_many", not_stored, errors, len(groups))
        return not_stored

    async def adelete(self, key: str) -> bool:
        kb = _key_bytes(key)
        lines: list[bytes] = await self._request(
            self._servers[self._index(kb)], b"delete " + kb + b"\r\n", _LINES, expect=1
        )
        return _deleted(lines[0], self._servers[self._index(kb)].id)

    async def _adelete_group(self, i: int, pairs: list[tuple[str, bytes]]) -> None:
        data = b"".join([b"delete " + kb + b"\r\n" for _, kb in pairs])
        lines: list[bytes] = await self._request(self._servers[i], data, _LINES, expect=len(pairs))
        server_id = self._servers[i].id
        for line in lines:
            _deleted(line, server_id)

    async def adelete_many(self, keys: Sequence[str]) -> None:
        groups = self._group(keys)
        if not groups:
            return
        outcomes = await _run_groups([self._adelete_group(i, pairs) for i, pairs in groups.items()])
        unconfirmed: list[str] = []
        errors: list[BaseException] = []
        for pairs, outcome in zip(groups.values(), outcomes, strict=True):
            if isinstance(outcome, BaseException):
                unconfirmed += [key for key, _ in pairs]
                errors.append(outcome)
        self._batch_outcome("delete_many", unconfirmed, errors, len(groups))

    async def agets(self, key: str) -> tuple[bytes, int] | None:
        kb = _key_bytes(key)
        found: dict[bytes, tuple[bytes, int]] = await self._request(
            self._servers[self._index(kb)], b"gets " + kb + b"\r\n", _GETS, wanted=(kb,)
        )
        return found.get(kb)

    async def acas(self, key: str, value: bytes, ttl: float | None, unique: int) -> bool:
        kb = _key_bytes(key)
        if len(value) > self.max_value_size:
            return False
        data = b"cas %b 0 %d %d %d\r\n%b\r\n" % (kb, _expiry(ttl), len(value), unique, value)
        try:
            lines: list[bytes] = await self._request(self._servers[self._index(kb)], data, _LINES, expect=1)
        except _ServerError:
            return False
        return lines[0] == b"STORED"

    async def atouch(self, key: str, ttl: float | None) -> bool:
        kb = _key_bytes(key)
        server = self._servers[self._index(kb)]
        data = b"touch %b %d\r\n" % (kb, _expiry(ttl))
        lines: list[bytes] = await self._request(server, data, _LINES, expect=1)
        if lines[0] == b"TOUCHED":
            return True
        if lines[0] == b"NOT_FOUND":
            return False
        raise _error_line(lines[0], server.id)

    async def alease(
        self, key: str, marker: bytes, ttl: float | None
    ) -> tuple[bool, tuple[bytes, int] | None]:
        kb = _key_bytes(key)
        data = b"add %b 0 %d %d\r\n%b\r\ngets %b\r\n" % (kb, _expiry(ttl), len(marker), marker, kb)
        line, found = await self._request(self._servers[self._index(kb)], data, _LINE_GETS, wanted=(kb,))
        return line == b"STORED", found.get(kb)

    async def _aget_one(self, server: _Server, kb: bytes) -> bytes | None:
        found: dict[bytes, bytes] = await self._request(server, b"get " + kb + b"\r\n", _FETCH, wanted=(kb,))
        return found.get(kb)

    async def _aset_one(self, server: _Server, kb: bytes, value: bytes, exp: int) -> bool:
        data = b"set %b 0 %d %d\r\n%b\r\n" % (kb, exp, len(value), value)
        lines: list[bytes] = await self._request(server, data, _LINES, expect=1)
        return lines[0] == b"STORED"

    async def aget_all(self, key: str) -> dict[str, bytes | None]:
        kb = _key_bytes(key)
        outcomes = await _run_groups([self._aget_one(server, kb) for server in self._servers])
        found = {
            s.id: got
            for s, got in zip(self._servers, outcomes, strict=True)
            if not isinstance(got, BaseException)
        }
        if not found:
            raise outcomes[0]
        return found

    async def aset_all(self, key: str, value: bytes, ttl: float | None) -> int:
        kb = _key_bytes(key)
        exp = _expiry(ttl)
        outcomes = await _run_groups([self._aset_one(server, kb, value, exp) for server in self._servers])
        if all(isinstance(o, BaseException) for o in outcomes):
            raise outcomes[0]
        return sum(o is True for o in outcomes)

    async def aclose(self) -> None:
        """Close the async connections of every event loop this backend has used.

        The current loop's connections are closed and waited for; other loops'
        are closed in their own loop (or here, if that loop is closed already).
        """
        current = _current_loop()
        with self._apools_lock:
            all_pools = list(self._apools.values())
            self._apools.clear()
        for pools in all_pools:
            if pools.loop is current:
                await pools.aclose()
            else:
                pools.close_elsewhere()


def _gets_sync(client: Any, kb: bytes) -> tuple[bytes, int] | None:
    value, unique = client.gets(kb)
    return None if value is None else (value, int(unique))


def _lease_sync(client: Any, kb: bytes, marker: bytes, exp: int) -> tuple[bool, tuple[bytes, int] | None]:
    """`add` the marker and `gets` the key in one round trip on a pymemcache client's socket."""
    if client.sock is None:
        client._connect()
    sock = client.sock
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


def _set_many_sync(client: Any, entries: list[tuple[str, bytes, bytes, int]]) -> list[str]:
    """Pipeline sets on one pymemcache client: one round trip per distinct exptime."""
    by_expiry: dict[int, dict[bytes, bytes]] = {}
    names: dict[bytes, str] = {}
    for key, kb, value, exp in entries:
        by_expiry.setdefault(exp, {})[kb] = value
        names[kb] = key
    failed: list[str] = []
    for exp, values in by_expiry.items():
        failed += [names[kb] for kb in client.set_many(values, exp, False)]
    return failed


def _deleted(line: bytes, server_id: str) -> bool:
    if line == b"DELETED":
        return True
    if line == b"NOT_FOUND":
        return False
    raise _error_line(line, server_id)


def _expire_waiter(waiter: asyncio.Future[Any], server_id: str, timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(BackendTimeout(f"no free connection to memcached {server_id} within {timeout}s"))


async def _run_groups(coros: list[Awaitable[Any]]) -> list[Any]:
    """Await one coroutine per server, concurrently; errors are returned, not raised."""
    if len(coros) == 1:
        try:
            return [await coros[0]]
        except BackendError as exc:
            return [exc]
    outcomes = await asyncio.gather(*coros, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, BackendError):
            raise outcome
    return outcomes


# After fork() the child must not share the parent's sockets: two processes
# reading replies from one connection get each other's values.
_live_backends: weakref.WeakSet[MemcachedBackend] = weakref.WeakSet()


def _forget_connections_after_fork() -> None:
    for backend in list(_live_backends):
        for server in backend._servers:
            # Closing the child's copy of a socket leaves the parent's connection open.
            server.drain()
        backend._apools = {}
        backend._apools_lock = threading.RLock()
        for server in backend._servers:
            server.lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_connections_after_fork)
