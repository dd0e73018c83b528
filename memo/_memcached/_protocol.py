"""The async side's connection: one `asyncio.Protocol` per socket, its reply parsed as it arrives."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

from .._errors import BackendTimeout, BackendUnavailable
from ._wire import ERROR_PREFIXES, STATUS_LINES, ServerError, error_line, whole_reply

__all__ = ["FETCH", "GETS", "IDLE", "LINES", "LINE_GETS", "Connection", "ProtocolViolation"]

# -- async: one connection --------------------------------------------------------

IDLE, FETCH, LINES, GETS, LINE_GETS = 0, 1, 2, 3, 4


class ProtocolViolation(Exception):
    """The bytes on the wire are not a memcached reply to what was asked."""


class Connection(asyncio.Protocol):
    """One memcached connection; one request at a time, its reply parsed as it arrives.

    A request returns a future. The reply resolves it; a timer fails it with
    BackendTimeout once the request's deadline passes; losing the connection
    fails it with BackendUnavailable. Whoever sees the future fail, or is
    cancelled while waiting on it, must discard the connection
    (`Slots.discard`): its reply may still be on the way.

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
        self._mode = IDLE
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
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check.
        self.transport = cast(asyncio.Transport, transport)

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
            if mode in (FETCH, GETS):
                complete = self._parse_fetch(buf)
            elif mode == LINES:
                complete = self._parse_lines(buf)
            else:
                complete = self._parse_line_then_fetch(buf)
        except ProtocolViolation as exc:
            self._fail_protocol(str(exc))
            return
        except ServerError as exc:
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
        mode, self._mode = self._mode, IDLE
        if mode in (FETCH, GETS):
            waiter.set_result(self._values)
        elif mode == LINES:
            waiter.set_result(self._lines)
        else:
            waiter.set_result((self._lines[0], self._values))

    # -- requests

    def request(
        self, data: bytes, mode: int, *, wanted: Any = (), expect: int = 0, timeout: float
    ) -> asyncio.Future[Any]:
        """Send `data` and return the future of its reply.

        `mode` FETCH collects `VALUE` items up to `END` into a dict (keys must
        be in `wanted`); GETS does the same with `(value, cas unique)` items;
        LINES collects `expect` reply lines into a list; LINE_GETS reads one
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
        if mode != LINES:
            self._values = {}
            self._wanted = wanted
            self._cas = 0
        if mode in (LINES, LINE_GETS):
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
        self._mode = IDLE
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def _fail_protocol(self, what: str) -> None:
        self.abort()
        self._finish_error(BackendUnavailable(f"unexpected reply from memcached {self.server_id}: {what}"))

    # -- reply parsing. Positions index into the whole buffer of this reply.

    def _parse_fetch(self, buf: bytes | bytearray) -> bool:
        """Parse `VALUE <key> <flags> <bytes> [<cas>]\\r\\n<data>\\r\\n`... `END\\r\\n`."""
        if self._mode == FETCH and type(buf) is bytes and not self._pos and buf.endswith(b"END\r\n"):
            # A reply that arrived whole (the usual case): cut it at CRLF in one call.
            whole = whole_reply(buf, self._wanted)
            if whole is not None:
                self._values = whole
                return True
        pos = self._pos
        end = len(buf)
        values = self._values
        while True:
            need = self._need
            if need:
                if end < need:
                    break
                if buf[need - 2 : need] != b"\r\n":
                    raise ProtocolViolation("value not followed by CRLF")
                value = bytes(buf[pos : need - 2])
                values[self._key] = value if self._mode == FETCH else (value, self._cas)
                pos = need
                self._need = 0
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            if buf.startswith(b"VALUE ", pos):
                fields = buf[pos + 6 : eol].split(b" ")
                if len(fields) not in (3, 4):
                    raise ProtocolViolation(repr(bytes(buf[pos:eol])[:80]))
                key = bytes(fields[0])
                if key not in self._wanted:
                    raise ProtocolViolation(f"value for key {key[:80]!r} that was not asked for")
                try:
                    size = int(fields[2])
                except ValueError:
                    raise ProtocolViolation(repr(bytes(buf[pos:eol])[:80])) from None
                if size < 0:
                    raise ProtocolViolation(repr(bytes(buf[pos:eol])[:80]))
                if self._mode != FETCH:
                    if len(fields) != 4 or not fields[3].isdigit():
                        raise ProtocolViolation(repr(bytes(buf[pos:eol])[:80]))
                    self._cas = int(fields[3])
                self._key = key
                pos = eol + 2
                self._need = pos + size + 2
                continue
            if eol - pos == 3 and buf.startswith(b"END", pos):
                if eol + 2 != end:
                    raise ProtocolViolation("bytes after END")
                return True
            line = bytes(buf[pos:eol])
            if line.startswith(ERROR_PREFIXES):
                raise error_line(line, self.server_id)
            raise ProtocolViolation(repr(line[:80]))
        self._pos = pos
        return False

    def _parse_line_then_fetch(self, buf: bytes | bytearray) -> bool:
        """Parse one status line (e.g. the reply to `add`), then a `gets` reply."""
        if not self._lines:
            eol = buf.find(b"\r\n")
            if eol < 0:
                return False
            line = bytes(buf[:eol])
            if line not in STATUS_LINES:
                if line.startswith(ERROR_PREFIXES):
                    raise error_line(line, self.server_id)
                raise ProtocolViolation(repr(line[:80]))
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
            if line not in STATUS_LINES and not line.startswith(b"SERVER_ERROR"):
                # ERROR / CLIENT_ERROR (the server did not understand us) or
                # something stranger: what follows may be out of step, so the
                # connection is not reused.
                self.broken = True
            lines.append(line)
            pos = eol + 2
        if pos != len(buf):
            raise ProtocolViolation("more reply lines than requests")
        return True
