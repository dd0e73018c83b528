"""Name resolution with a bounded wait, for the sync side.

`socket.getaddrinfo` has no timeout: a stalled resolver holds a sync call for
as long as it takes (seconds), whatever `connect_timeout` says. Here each
lookup runs in a short-lived daemon thread and the caller waits for it at most
`timeout` seconds; a lookup that takes longer fails the call with a timeout
(the engine then fails open) while the thread carries on, and its answer, when
it comes, serves the next calls. Answers are cached for `TTL` seconds; an
expired answer is still used while a fresh lookup is slow. IP literals skip
all of this. The async side needs none of it: the event loop resolves in its
executor and the connect timeout bounds the wait.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from typing import Any

__all__ = ["BoundedResolver", "ResolverSocketModule"]

#: Seconds a resolved address is reused before it is looked up again.
TTL = 30.0

_AddrInfo = list[tuple[Any, ...]]


class _Lookup:
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: _AddrInfo | None = None
        self.error: OSError | None = None


class BoundedResolver:
    """`getaddrinfo` that waits at most `timeout` seconds, with a small cache."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[tuple[Any, ...], tuple[_AddrInfo, float]] = {}
        self._pending: dict[tuple[Any, ...], _Lookup] = {}

    def getaddrinfo(self, timeout: float, host: str, port: int, *args: Any) -> _AddrInfo:
        """Resolve like `socket.getaddrinfo(host, port, *args)`, or raise TimeoutError."""
        if _is_ip(host):
            return socket.getaddrinfo(host, port, *args)
        request = (host, port, *args)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(request)
            if cached is not None and cached[1] > now:
                return cached[0]
            lookup = self._pending.get(request)
            if lookup is None:
                lookup = self._pending[request] = _Lookup()
                threading.Thread(
                    target=self._resolve, args=(request, lookup), name="memo-resolve", daemon=True
                ).start()
        if lookup.done.wait(timeout):
            if lookup.error is not None:
                raise lookup.error
            assert lookup.result is not None
            return lookup.result
        if cached is not None:
            return cached[0]  # stale, but better than waiting on a stalled resolver
        raise TimeoutError(f"resolving {host!r} took longer than {timeout}s")

    def _resolve(self, request: tuple[Any, ...], lookup: _Lookup) -> None:
        try:
            lookup.result = socket.getaddrinfo(*request)
        except OSError as exc:
            lookup.error = exc
        with self._lock:
            if lookup.result is not None:
                self._cache[request] = (lookup.result, time.monotonic() + TTL)
            self._pending.pop(request, None)
        lookup.done.set()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class ResolverSocketModule:
    """The `socket` module as pymemcache sees it (`socket_module=`), with a bounded `getaddrinfo`."""

    def __init__(self, resolver: BoundedResolver, timeout: float) -> None:
        self._resolver = resolver
        self._timeout = timeout

    def __getattr__(self, name: str) -> Any:
        return getattr(socket, name)

    def getaddrinfo(self, host: str, port: int, *args: Any) -> _AddrInfo:
        return self._resolver.getaddrinfo(self._timeout, host, port, *args)
