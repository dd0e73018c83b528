"""One memcached server: its address, its circuit breaker, and its idle sync clients.

Every server has a circuit breaker shared by both flavours: after
`failure_threshold` consecutive failures (connection refused, reset, closed,
timed out) calls for keys on that server raise `BackendUnavailable` at once,
without touching the network; after `retry_after` seconds one call is let
through as a probe, and its success closes the breaker again.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any, NamedTuple

from .._errors import BackendTimeout, BackendUnavailable
from ._wire import format_server_id

__all__ = ["BREAKER_FAILURES", "MAX_DROPPING", "Server", "ServerState"]

#: The most clean-ups of failed leased reads running at once per server; beyond, the
#: placeholder is left to expire after its lease_ttl.
MAX_DROPPING = 2

_monotonic = time.monotonic

#: Errors that count against a server's breaker (an error line does not: the server is alive).
BREAKER_FAILURES = (BackendTimeout, BackendUnavailable)


class ServerState(NamedTuple):
    """The circuit breaker of one server, as `MemcachedBackend.server_states()` reports it."""

    #: "closed" (calls go through), "open" (calls fail at once) or "half-open"
    #: (the cooldown is over; the next call probes the server).
    state: str
    #: Consecutive failures counted so far; reset by any success.
    failures: int
    #: Seconds until the next probe is let through; 0 unless open.
    retry_in: float


class Server:
    """A memcached server: where it is, whether it may be called, and idle sync clients.

    Hashable by identity: batch plans group keys by `Server` object.
    """

    __slots__ = (
        "__weakref__",
        "blocked_until",
        "dropping",
        "failures",
        "free",
        "host",
        "id",
        "keep",
        "lock",
        "meta",
        "port",
        "read_size",
        "retry_after",
        "threshold",
    )

    def __init__(
        self, host: str, port: int, threshold: int, retry_after: float, *, server_id: str | None = None
    ) -> None:
        # Where to connect, and the id keys are routed by: the same unless
        # auto-discovery lists a node by name and connects to its address.
        self.host = host
        self.port = port
        self.id = server_id or format_server_id(host, port)
        self.threshold = threshold
        self.retry_after = retry_after
        # Breaker. Both fields are read without the lock on the hot path (a
        # stale read only lets one more call through or blocks one); every
        # write holds it. blocked_until == 0.0 means closed.
        self.failures = 0
        self.blocked_until = 0.0
        self.lock = threading.Lock()
        # Idle sync clients. list.pop()/append() are atomic, so the free-list
        # needs no lock of its own. At most `keep` are kept: pool_size, or 0
        # once the server has left the cluster (`retire`).
        self.free: list[Any] = []
        # Clean-ups of leased reads that failed mid-way, running now (at most MAX_DROPPING:
        # a hung server fails every read, and each clean-up would wait out a timeout too).
        self.dropping = 0
        # A backend dropped without `close()`, or used again after it (a background
        # refresh that outlived its Cache's close reopens a connection): its idle
        # clients are closed when the server object goes.
        weakref.finalize(self, _close_idle, self.free)
        self.keep = 0
        # Bytes a key read from this server has cost lately (-1: nothing read
        # yet): how async batches are split so each reply fits its timeout.
        self.read_size = -1.0
        # Speaks the meta protocol: None until the first connection asked (`mn`).
        self.meta: bool | None = None

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

    def start_drop(self) -> bool:
        """Count a clean-up of a failed leased read in; False when MAX_DROPPING already run."""
        with self.lock:
            if self.dropping >= MAX_DROPPING:
                return False
            self.dropping += 1
            return True

    def end_drop(self) -> None:
        with self.lock:
            self.dropping -= 1

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

    def note_size(self, size: float) -> None:
        """Learn what a key costs: rise at once to a larger size, halve the gap to a smaller one."""
        self.read_size = size if size >= self.read_size else (self.read_size + size) / 2

    def note_read(self, keys: int, found: dict[bytes, bytes]) -> None:
        """Learn from a multi-key get: the bytes of its reply per key asked."""
        self.note_size(sum(map(len, found.values())) / keys if keys else 0.0)

    def retire(self) -> None:
        """The server left the cluster: close idle clients now, and those in use when they return."""
        self.keep = 0
        self.drain()

    def drain(self) -> None:
        """Close every idle sync client."""
        free = self.free
        while True:
            try:
                client = free.pop()
            except IndexError:
                return
            client.close()


def _close_idle(free: list[Any]) -> None:
    while free:
        free.pop().close()
