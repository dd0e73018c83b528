"""`memory://`: an in-process, bounded LRU store with TTLs, speaking bytes like memcached.

It stores the same encoded bytes a remote backend would, so a cached value can
never be mutated through a reference the caller kept, and the whole engine runs
the same code over it as over memcached.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import ClassVar

from ._backend import Backend, Capability, SetItem
from ._codec import NATIVE_LEASE, Won
from ._errors import ConfigurationError
from ._policy import check_size

__all__ = ["MemoryBackend"]

_monotonic = time.monotonic


class MemoryBackend(Backend):
    """A thread-safe LRU dict of `key -> (value, expires_at, cas unique)`.

    Compare-and-set, touch and leases behave as memcached's do. Control records
    written with `set_all`/`append_all` (generation tokens) live outside the LRU,
    bounded on their own (`max_records`): filling the cache can never evict them,
    which would clear a whole namespace, nor do they take a slot from values.
    Evicting a record (past `max_records`) is safe: a namespace whose record is
    gone gets a new generation, which only turns its old entries into misses.

    Args:
        max_entries: entries kept before the least recently used is evicted.
        max_bytes: bytes of keys and values kept before the least recently used
            entries are evicted (default 64 MiB, memcached's default memory).
        max_value_size: values larger than this are refused, as memcached refuses
            items above its `-I` limit (default 1 MiB, memcached's default).
        max_records: generation records kept (outside the entries and bytes above).

    `evictions` counts the entries evicted to respect `max_entries` and `max_bytes`.
    """

    OPTIONS: ClassVar[dict[str, type]] = {
        "max_entries": int,
        "max_bytes": int,
        "max_value_size": int,
        "max_records": int,
    }
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)

    def __init__(
        self,
        max_entries: int = 10_000,
        max_value_size: int = 1024 * 1024 - 512,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        max_records: int = 100_000,
    ) -> None:
        bounds = {"max_entries": max_entries, "max_bytes": max_bytes, "max_records": max_records}
        for name, value in bounds.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be an int of at least 1, got {value!r}")
        check_size(max_value_size, "max_value_size")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_value_size = max_value_size
        self.max_records = max_records
        #: Entries evicted (least recently used first) to stay within max_entries and max_bytes.
        self.evictions = 0
        self._data: OrderedDict[str, tuple[bytes, float | None, int]] = OrderedDict()
        self._bytes = 0
        self._pinned: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()
        self._lock = threading.Lock()
        self._version = 0

    def __repr__(self) -> str:
        return (
            f"MemoryBackend(max_entries={self.max_entries}, max_bytes={self.max_bytes}, "
            f"entries={len(self._data)}, bytes={self._bytes}, evictions={self.evictions})"
        )

    def __len__(self) -> int:
        return len(self._data)

    @property
    def nbytes(self) -> int:
        """Bytes of keys and values held now (what `max_bytes` bounds)."""
        return self._bytes

    # -- sync -------------------------------------------------------------

    def _live(self, key: str) -> tuple[bytes, float | None, int] | None:
        # Caller holds the lock.
        item = self._data.get(key)
        if item is None:
            return None
        expires = item[1]
        if expires is not None and expires <= _monotonic():
            self._drop(key)
            return None
        self._data.move_to_end(key)
        return item

    def _drop(self, key: str) -> bool:
        # Caller holds the lock.
        item = self._data.pop(key, None)
        if item is None:
            return False
        self._bytes -= len(key) + len(item[0])
        return True

    def _record(self, key: str) -> bytes | None:
        # Caller holds the lock. A control record, if one lives under `key`.
        item = self._pinned.get(key)
        if item is None:
            return None
        if item[1] is not None and item[1] <= _monotonic():
            del self._pinned[key]
            return None
        self._pinned.move_to_end(key)
        return item[0]

    def _pin(self, key: str, item: tuple[bytes, float | None]) -> None:
        # Caller holds the lock. A record made by `add` before it was known to be one
        # (a generation created where none existed) leaves the LRU for good.
        self._drop(key)
        self._pinned[key] = item
        self._pinned.move_to_end(key)
        while len(self._pinned) > self.max_records:
            self._pinned.popitem(last=False)

    def get(self, key: str) -> bytes | None:
        with self._lock:
            item = self._live(key)
            return self._record(key) if item is None else item[0]

    def get_or_lease(self, key: str, lease_ttl: float) -> bytes | None:
        """`get`; on a miss, a lease placeholder for `lease_ttl` seconds, as memcached's `mg … N`."""
        with self._lock:
            item = self._live(key)
            if item is not None:
                return item[0]
            record = self._record(key)
            if record is not None or not self._store(key, NATIVE_LEASE, lease_ttl):
                return record
            return Won(self._version)

    def gets(self, key: str) -> tuple[bytes, int] | None:
        with self._lock:
            item = self._live(key)
            return None if item is None else (item[0], item[2])

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        found = {}
        for key in keys:
            value = self.get(key)
            if value is not None:
                found[key] = value
        return found

    def _store(self, key: str, value: bytes, ttl: float | None) -> bool:
        # Caller holds the lock.
        size = len(key) + len(value)
        if len(value) > self.max_value_size or size > self.max_bytes:
            return False
        self._drop(key)
        self._version += 1
        self._data[key] = (value, None if ttl is None else _monotonic() + ttl, self._version)
        self._bytes += size
        data = self._data
        while len(data) > self.max_entries or self._bytes > self.max_bytes:
            old, item = data.popitem(last=False)
            self._bytes -= len(old) + len(item[0])
            self.evictions += 1
        return True

    def set(self, key: str, value: bytes, ttl: float | None) -> bool:
        with self._lock:
            return self._store(key, value, ttl)

    def set_many(self, items: Iterable[SetItem]) -> list[str]:
        with self._lock:
            return [key for key, value, ttl in items if not self._store(key, value, ttl)]

    def add(self, key: str, value: bytes, ttl: float | None) -> bool:
        with self._lock:
            return self._live(key) is None and self._record(key) is None and self._store(key, value, ttl)

    def cas(self, key: str, value: bytes, ttl: float | None, unique: int) -> bool:
        with self._lock:
            item = self._live(key)
            return item is not None and item[2] == unique and self._store(key, value, ttl)

    def touch(self, key: str, ttl: float | None) -> bool:
        with self._lock:
            item = self._live(key)
            if item is None:
                return False
            self._data[key] = (item[0], None if ttl is None else _monotonic() + ttl, item[2])
            return True

    def lease(self, key: str, marker: bytes, ttl: float | None) -> tuple[bool, tuple[bytes, int] | None]:
        with self._lock:
            added = self._live(key) is None and self._store(key, marker, ttl)
            item = self._live(key)
            return added, None if item is None else (item[0], item[2])

    def get_all(self, key: str) -> dict[str, bytes | None]:
        with self._lock:
            return {"memory": self._record(key)}

    def set_all(self, key: str, value: bytes, ttl: float | None) -> int:
        with self._lock:
            self._pin(key, (value, None if ttl is None else _monotonic() + ttl))
            return 1

    def append_all(self, key: str, value: bytes, ttl: float | None) -> int:
        with self._lock:
            if self._record(key) is None:
                self._pin(key, (value, None if ttl is None else _monotonic() + ttl))
            else:
                old, expires = self._pinned[key]
                self._pin(key, (old + value, expires))  # append keeps the expiry, as memcached's
            return 1

    def delete(self, key: str) -> bool:
        with self._lock:
            return self._live(key) is not None and self._drop(key)

    def delete_many(self, keys: Sequence[str]) -> None:
        with self._lock:
            for key in keys:
                self._drop(key)

    def close(self) -> None:
        """Nothing to release; the entries stay until the backend is dropped."""

    # -- async: nothing here blocks, so the async side calls the sync side ----

    async def aget(self, key: str) -> bytes | None:
        return self.get(key)

    async def aget_or_lease(self, key: str, lease_ttl: float) -> bytes | None:
        return self.get_or_lease(key, lease_ttl)

    async def aget_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        return self.get_many(keys)

    async def aset(self, key: str, value: bytes, ttl: float | None) -> bool:
        return self.set(key, value, ttl)

    async def aset_many(self, items: Iterable[SetItem]) -> list[str]:
        return self.set_many(items)

    async def aadd(self, key: str, value: bytes, ttl: float | None) -> bool:
        return self.add(key, value, ttl)

    async def agets(self, key: str) -> tuple[bytes, int] | None:
        return self.gets(key)

    async def acas(self, key: str, value: bytes, ttl: float | None, unique: int) -> bool:
        return self.cas(key, value, ttl, unique)

    async def atouch(self, key: str, ttl: float | None) -> bool:
        return self.touch(key, ttl)

    async def alease(
        self, key: str, marker: bytes, ttl: float | None
    ) -> tuple[bool, tuple[bytes, int] | None]:
        return self.lease(key, marker, ttl)

    async def aget_all(self, key: str) -> dict[str, bytes | None]:
        return self.get_all(key)

    async def aset_all(self, key: str, value: bytes, ttl: float | None) -> int:
        return self.set_all(key, value, ttl)

    async def aappend_all(self, key: str, value: bytes, ttl: float | None) -> int:
        return self.append_all(key, value, ttl)

    async def adelete(self, key: str) -> bool:
        return self.delete(key)

    async def adelete_many(self, keys: Sequence[str]) -> None:
        self.delete_many(keys)

    async def aclose(self) -> None:
        self.close()
