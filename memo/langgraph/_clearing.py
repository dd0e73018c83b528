"""Clearing the graph cache: fail open, and never serve what a failed clear meant to drop.

A clear renews memo generations (no scan, no `flush_all`). When memcached
cannot store the new generation, the clear does not raise (a graph's
`clear_cache()` fails open like every other call): the failure is counted in
`Cache.stats()[name]["errors"]`, reported to `on_event`, and the clear is
remembered. Until a retry succeeds (at most one attempt per second, before a
read or write), this process reads and writes nothing in the namespaces it
meant to clear, so entries that survived on a server that was only
unreachable are never served again here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from .. import _clock
from .._cache import Cache
from .._errors import BackendError

__all__ = ["Clears"]

#: Seconds between attempts to write a clear that failed.
RETRY_EVERY = 1.0


class Clears:
    """Clears of one graph cache's memo namespaces, with the ones still to be written."""

    def __init__(self, cache: Cache, owner: str) -> None:
        self.cache = cache
        self.owner = owner
        #: Memo namespaces whose clear failed, in order (the owner's: everything).
        self.pending: dict[str, None] = {}
        self._retry_at = 0.0
        self._lock = threading.Lock()

    def due(self) -> list[str]:
        """The pending clears to try now (none if tried less than `RETRY_EVERY` ago)."""
        if not self.pending:
            return []
        with self._lock:
            now = _clock.monotonic()
            if now < self._retry_at:
                return []
            self._retry_at = now + RETRY_EVERY
            return list(self.pending)

    def clear(self, names: Iterable[str]) -> None:
        """Renew the generations of `names`; remember (and report) the ones that failed."""
        for name in names:
            try:
                self.cache.clear(name)
            except BackendError as exc:
                self._failed(name, exc)
            else:
                self.pending.pop(name, None)

    async def aclear(self, names: Iterable[str]) -> None:
        """Async `clear`."""
        for name in names:
            try:
                await self.cache.aclear(name)
            except BackendError as exc:
                self._failed(name, exc)
            else:
                self.pending.pop(name, None)

    def _failed(self, name: str, exc: BackendError) -> None:
        with self._lock:
            self.pending[name] = None
            self._retry_at = _clock.monotonic() + RETRY_EVERY
        self.cache.emit("error", self.owner, None, None, exc, "langgraph")
        self.cache.record_error(
            self.owner, "clearing the graph cache (retried before the next read)", exc, "ignore"
        )

    def blocked(self, chain: tuple[str, ...]) -> bool:
        """Whether a namespace read under the generations of `chain` waits for a pending clear."""
        pending = self.pending
        return self.owner in pending or any(name in pending for name in chain)
