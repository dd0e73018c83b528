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

A lookup fails only as an `OSError` (`socket.gaierror`), whatever the resolver
raised (a name the IDNA codec refuses raises `UnicodeError`), so the caller's
call fails open as any unreachable server does, and the lookup's thread always
finishes its bookkeeping. After `fork()` the child forgets the lookups under
way in the parent (their threads did not survive) and resolves afresh.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
import weakref
from typing import Any

__all__ = ["BoundedResolver", "ResolverSocketModule"]

#: Seconds a resolved address is reused before it is looked up again.
TTL = 30.0

_AddrInfo = list[tuple[Any, ...]]


def _getaddrinfo(*args: Any) -> _AddrInfo:
    """The name lookup itself (`socket.getaddrinfo`, looked up at each call); a seam for tests."""
    return socket.getaddrinfo(*args)


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
        _live.add(self)

    def after_fork(self) -> None:
        """In a forked child: the parent's lookup threads are gone, and their lock may be held."""
        self._lock = threading.Lock()
        self._pending = {}

    def getaddrinfo(self, timeout: float, host: str, port: int, *args: Any) -> _AddrInfo:
        """Resolve like `socket.getaddrinfo(host, port, *args)`, or raise TimeoutError."""
        if _is_ip(host):
            return _getaddrinfo(host, port, *args)
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
            lookup.result = _getaddrinfo(*request)
        except OSError as exc:
            lookup.error = exc
        except Exception as exc:  # UnicodeError, ValueError: the name cannot be looked up
            lookup.error = socket.gaierror(socket.EAI_NONAME, f"cannot look up {request[0]!r}: {exc}")
        finally:
            lock = self._lock  # after a fork in between, the child's lock: never a parent's held one
            with lock:
                if lookup.result is not None:
                    self._cache[request] = (lookup.result, time.monotonic() + TTL)
                if self._pending.get(request) is lookup:
                    self._pending.pop(request, None)
            lookup.done.set()


_live: weakref.WeakSet[BoundedResolver] = weakref.WeakSet()


def _forget_lookups_after_fork() -> None:
    for resolver in list(_live):
        resolver.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_lookups_after_fork)


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
