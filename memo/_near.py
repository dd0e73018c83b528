"""The near-cache: a bounded in-process copy of recent hits, for `local_ttl` seconds.

A function memoized with `local_ttl=` serves a hit it read from the backend less
than `local_ttl` seconds ago from this process's memory, without asking the
backend. What is kept is the stored bytes, decoded afresh on every hit, so a
caller can never mutate another caller's value.

One near-cache serves every `Cache` of the process that reaches the same servers
(`near_for`), so an `invalidate`, `refresh` or `set` through any of them drops
the copy at once: in this process the change is visible to the very next call.
Other processes see it within `local_ttl` (the copy they hold expires); clears
change the keys themselves, so they obey the `ns_refresh` bound as before.

Bounded by `local_max_entries` (least recently used first out); the clock is
`memo._clock`, so tests move time by hand.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit

from . import _clock

__all__ = ["NearCache", "near_for"]


class NearCache:
    """An LRU of `key -> (stored bytes, monotonic expiry)`, thread-safe."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        #: Bumped by every `discard`: a copy read before one is not kept (`put`).
        self.version = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> bytes | None:
        """The bytes kept for `key`, or None (absent or past its `local_ttl`)."""
        item = self._items.get(key)
        if item is None:
            return None
        if item[1] <= _clock.monotonic():
            with self._lock:
                if self._items.get(key) is item:
                    del self._items[key]
            return None
        return item[0]

    def put(self, key: str, raw: bytes, ttl: float, version: int) -> int:
        """Keep `raw` for `ttl` seconds; return how many entries were evicted to make room.

        `version`: `self.version` read before `raw` was read from the backend. If a
        `discard` came since, `raw` may be what it dropped, and it is not kept.
        """
        evicted = 0
        with self._lock:
            if version != self.version:
                return 0
            self._items[key] = (raw, _clock.monotonic() + ttl)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
                evicted += 1
        return evicted

    def discard(self, key: str) -> None:
        """Forget `key` (an invalidate, refresh or set in this process)."""
        with self._lock:
            self.version += 1
            self._items.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


#: One near-cache per set of servers in this process (memcached URLs name them) ...
_NEAR: dict[str, NearCache] = {}
#: ... and one per backend object for the others (memory://, a backend of your own).
_NEAR_OF: weakref.WeakKeyDictionary[Any, NearCache] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def servers_of(url: str) -> str:
    """What identifies the servers a URL reaches, whatever the order they are listed in."""
    parts = urlsplit(url)
    hosts = ",".join(sorted(parts.netloc.split(","))) if parts.netloc else url
    return f"{parts.scheme}://{hosts}"


def near_for(owner: Any, max_entries: int) -> NearCache:
    """The near-cache of `owner`: the servers a `servers_of` string names, or a backend object."""
    with _LOCK:
        table: Any = _NEAR if isinstance(owner, str) else _NEAR_OF
        near: NearCache | None = table.get(owner)
        if near is None:
            near = table[owner] = NearCache(max_entries)
        else:
            near.max_entries = max(near.max_entries, max_entries)
        return near


def _forget_all() -> None:
    # A forked child starts with fresh locks; the copies it inherited are dropped.
    global _LOCK
    _LOCK = threading.Lock()
    for near in [*_NEAR.values(), *_NEAR_OF.values()]:
        near._lock = threading.Lock()
        near._items.clear()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_forget_all)
