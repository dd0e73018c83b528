"""The async side's connection: one `asyncio.Protocol` per socket, its bytes fed to `_proto`."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

from .._errors import BackendTimeout, BackendUnavailable
from ._proto import NEED_DATA, ProtocolViolation, Reader
from ._wire import ServerError

__all__ = ["Connection", "ProtocolViolation"]


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
        self._plan: Any = None
        self.reader = Reader()
        #: The server speaks the meta protocol (negotiated when the connection opened).
        self.meta = False

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
        reader = self.reader
        reader.feed(data)
        try:
            result = self._plan.collect(reader)
        except ProtocolViolation as exc:
            self._fail_protocol(str(exc))
            return
        except ServerError as exc:
            self.abort()
            self._finish_error(exc)
            return
        if result is NEED_DATA:
            return
        if not getattr(self._plan, "in_step", True):
            self.broken = True  # ERROR / CLIENT_ERROR: what follows may be out of step
        self._waiter = None
        self._plan = None
        waiter.set_result(result)

    # -- requests

    def request(self, data: bytes, plan: Any, *, timeout: float) -> asyncio.Future[Any]:
        """Send `data` and return the future of what the reply plan `plan` (`_proto`) collects."""
        fut = self.loop.create_future()
        transport = self.transport
        if self.broken or transport is None or transport.is_closing():
            self.broken = True
            fut.set_exception(BackendUnavailable(f"memcached {self.server_id} closed the connection"))
            return fut
        self._waiter = fut
        self._plan = plan
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
        self._plan = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def _fail_protocol(self, what: str) -> None:
        self.abort()
        self._finish_error(BackendUnavailable(f"unexpected reply from memcached {self.server_id}: {what}"))
