"""`null://`: a backend that stores nothing, for a cache switched off by configuration.

A disabled cache keeps every code path of an enabled one (keys are built,
values encoded, leases taken) but makes no server call: it behaves like a store
of size zero: writes store nothing and say so (`set` returns False), reads
miss, `cas` and `touch` find nothing. So switching the cache off in production
exercises the same code as switching it on, and nothing can be served stale.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar

from ._backend import Backend, Capability, SetItem

__all__ = ["NullBackend"]


class NullBackend(Backend):
    """A store of size zero: writes store nothing (and say so); every read misses."""

    OPTIONS: ClassVar[dict[str, type]] = {}
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.LEASES, Capability.TOUCH})
    max_value_size = 1024 * 1024 - 512

    def __repr__(self) -> str:
        return "NullBackend()"

    # -- sync -------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        return None

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        return {}

    def set(self, key: str, value: bytes, ttl: float | None) -> bool:
        return False

    def set_many(self, items: Iterable[SetItem]) -> list[str]:
        return [key for key, _, _ in items]

    def add(self, key: str, value: bytes, ttl: float | None) -> bool:
        return True

    def delete(self, key: str) -> bool:
        return False

    def delete_many(self, keys: Sequence[str]) -> None:
        return None

    def gets(self, key: str) -> tuple[bytes, int] | None:
        return None

    def cas(self, key: str, value: bytes, ttl: float | None, unique: int) -> bool:
        return False

    def touch(self, key: str, ttl: float | None) -> bool:
        return False

    def lease(self, key: str, marker: bytes, ttl: float | None) -> tuple[bool, tuple[bytes, int] | None]:
        # Granted, and evicted right after: the caller computes at once (nobody else can
        # hold a lease here) and its `cas` finds nothing, so nothing is stored.
        return True, (marker, 1)

    def get_all(self, key: str) -> dict[str, bytes | None]:
        return {}

    # Control records (namespace generations) are accepted, so that a clear of a
    # disabled cache succeeds: there is nothing stored it could fail to hide.
    def set_all(self, key: str, value: bytes, ttl: float | None) -> int:
        return 1

    def append_all(self, key: str, value: bytes, ttl: float | None) -> int:
        return 1

    def close(self) -> None:
        return None

    # -- async --------------------------------------------------------------

    async def aget(self, key: str) -> bytes | None:
        return None

    async def aget_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        return {}

    async def aset(self, key: str, value: bytes, ttl: float | None) -> bool:
        return False

    async def aset_many(self, items: Iterable[SetItem]) -> list[str]:
        return [key for key, _, _ in items]

    async def aadd(self, key: str, value: bytes, ttl: float | None) -> bool:
        return True

    async def adelete(self, key: str) -> bool:
        return False

    async def adelete_many(self, keys: Sequence[str]) -> None:
        return None

    async def agets(self, key: str) -> tuple[bytes, int] | None:
        return None

    async def acas(self, key: str, value: bytes, ttl: float | None, unique: int) -> bool:
        return False

    async def atouch(self, key: str, ttl: float | None) -> bool:
        return False

    async def alease(
        self, key: str, marker: bytes, ttl: float | None
    ) -> tuple[bool, tuple[bytes, int] | None]:
        return self.lease(key, marker, ttl)

    async def aget_all(self, key: str) -> dict[str, bytes | None]:
        return {}

    async def aset_all(self, key: str, value: bytes, ttl: float | None) -> int:
        return 1

    async def aappend_all(self, key: str, value: bytes, ttl: float | None) -> int:
        return 1

    async def aclose(self) -> None:
        return None
