"""What the engine needs from a Cache, declared: the `Context` a fill runs in.

`Cache` (the public door) builds and is this context; the engine (`memo._memo`,
`memo._values`) and the integrations type against this protocol and never import
`Cache`, so the layers import in one direction only (see docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ._policy import OnError, Stats

__all__ = ["Context", "Store"]


class Store(Protocol):
    """What the engine calls on a backend directly (the rest goes through the drivers by name).

    `memo.Backend` (the I/O edge) satisfies it; the engine names only this, so it
    imports nothing from the layer above it.
    """

    @property
    def max_value_size(self) -> int: ...
    @property
    def capabilities(self) -> frozenset[Any]: ...
    def get(self, key: str) -> bytes | None: ...
    async def aget(self, key: str) -> bytes | None: ...
    def get_or_lease(self, key: str, lease_ttl: float) -> bytes | None: ...
    async def aget_or_lease(self, key: str, lease_ttl: float) -> bytes | None: ...
    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]: ...
    async def aget_many(self, keys: Sequence[str]) -> dict[str, bytes]: ...
    def delete(self, key: str) -> bool: ...
    def delete_many(self, keys: Sequence[str]) -> None: ...
    async def adelete_many(self, keys: Sequence[str]) -> None: ...


class Context(Protocol):
    """A backend with one key prefix, its settings, generations, counters and event hook."""

    @property
    def backend(self) -> Store:
        """A `memo.Backend`; what the engine does not call directly it reaches through the drivers."""

    #: Prepended to every key.
    prefix: str
    #: Defaults of the functions and values stored through it.
    ttl: float | None
    strict: bool
    on_error: OnError
    compress_threshold: int | None
    leases: bool
    #: Misses take their lease in the read that found them (`Backend.get_or_lease`).
    leased_reads: bool
    lease_ttl: float
    lease_wait: float
    #: The near-cache: default seconds a hit is kept in this process (None: off), its bound,
    #: and whose it is (a memcached server list, or the backend object itself).
    local_ttl: float | None
    local_max_entries: int
    near_owner: object
    #: scope -> (generation, monotonic time it is trusted until); read by the hit paths.
    known_generations: dict[str, tuple[str, float]]

    @property
    def event_hook(self) -> Any:
        """The `on_event` hook, or None: then no event is built at all."""

    def emit(
        self,
        kind: str,
        ns: str,
        function: str | None,
        duration: float | None,
        error: BaseException | None,
        source: str,
    ) -> None:
        """Deliver one event to the hook (nothing when there is none)."""

    def generation(self, ns: str, on_error: OnError | None = None) -> str | None:
        """The generation of keys in `ns` (or a function's scope); None: unknown, bypass."""

    async def ageneration(self, ns: str, on_error: OnError | None = None) -> str | None:
        """Async `generation`."""

    def clear_scope(self, name: str | None) -> None:
        """Renew the generation of a namespace or of one function's scope."""

    async def aclear_scope(self, name: str | None) -> None:
        """Async `clear_scope`."""

    def ns_stats(self, ns: str) -> Stats:
        """The live counters of namespace `ns`."""

    def function_stats(self, ns: str, owner: object = None) -> Stats:
        """New live counters for one function of namespace `ns` (counted in `ns` too).

        `owner`: the function's engine; its counters are folded into the namespace's
        when it is collected (a method decorated per instance leaves nothing behind).
        """

    def record_error(
        self, ns: str, what: str, exc: Any, on_error: OnError | None = None, stats: Stats | None = None
    ) -> None:
        """Count and log a backend failure, or raise it under `on_error="raise"`."""
