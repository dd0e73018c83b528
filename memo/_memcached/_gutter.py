"""A gutter pool: where a dead server's keys go while it is marked down.

"Scaling Memcache at Facebook" (NSDI 2013, section 3.3): when one server of a
pool fails, rehashing its keys onto the survivors moves its whole load onto
them and can cascade. Instead, while a server's circuit breaker is open (see
`_server`), every key routed to it is sent to a small separate pool, the
gutter, and stored there only briefly (`gutter_ttl`, 10 s by default); the
other servers see no change. When the breaker closes again (a probe call
succeeded), the keys route back to their server.

What keeps it from serving a wrong value:

* Short-lived copies. Every write to the gutter has its TTL cut to
  `gutter_ttl`, lease markers included, so a copy outlives the outage by
  at most that long.
* Invalidations reach it. `delete` and `delete_many` go to the gutter as well
  as to the key's server, whether or not the server is down, and so does
  `set` (a write-through or a lock marker replaces what the key held): a copy
  the gutter took during an earlier outage cannot come back in the next one
  after the key was invalidated in between.
* Leases stay leases, but never across pools. The gutter speaks the same
  `add`/`gets`/`cas` commands, so an invalidate during a fill still voids the
  fill's store there. A cas unique the gutter handed out is returned with
  `GUTTER_UNIQUE` added; a `cas` is refused (lease lost: the value is returned
  but not stored) when its unique comes from the other pool than the one the
  key routes to now, because uniques of two servers are unrelated numbers and
  one could name a different version on the other.
* Generations are untouched. Generation tokens live on every server of the
  main pool (`get_all`, `set_all`, `append_all`) and are read from those that
  answer; the gutter never holds one.

Single-key operations try the key's server first: an open breaker raises at
once without touching the network, and only then is the key's server checked
(`is_down`), so the hit path of a healthy pool costs nothing extra. Batches are
split before they are sent when some server is down (`split_down`), and the
two parts' outcomes merged (`combine`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from .._backend import Backend, Capability, CasItem, LeaseResult, SetItem
from .._errors import BackendError, BackendUnavailable, ConfigurationError
from ._backend import MemcachedBackend
from ._plan import any_down, combine, is_down, split_down, split_items
from ._wire import key_bytes, parse_server

__all__ = ["GUTTER_UNIQUE", "GutterBackend", "parse_gutter"]

#: Added to the cas uniques the gutter hands out (memcached's are below 2**64).
GUTTER_UNIQUE = 1 << 64


def parse_gutter(gutter: str | Sequence[str | tuple[str, int]]) -> list[tuple[str, int]]:
    """Read the gutter servers: "g1:11211,g2:11211" or a list of "host:port" / (host, port)."""
    specs: Sequence[str | tuple[str, int]] = (
        [s for s in gutter.split(",") if s.strip()] if isinstance(gutter, str) else gutter
    )
    servers = [parse_server(s, str(gutter)) if isinstance(s, str) else (s[0], int(s[1])) for s in specs]
    if not servers:
        raise ConfigurationError("gutter needs at least one host:port")
    return servers


class GutterBackend(MemcachedBackend):
    """`MemcachedBackend` whose down servers' keys go to a gutter pool for `gutter_ttl` seconds.

    Args:
        servers: the main pool, as for `MemcachedBackend`.
        gutter: the gutter servers, "g1:11211,g2:11211" or a list; none may be
            a server of the main pool.
        gutter_ttl: the longest any entry lives in the gutter (seconds, at
            least 1, default 10).
        **options: as for `MemcachedBackend`; the gutter pool gets the same
            timeouts, pool size, TLS and breaker settings.
    """

    OPTIONS: ClassVar[dict[str, type]] = {**MemcachedBackend.OPTIONS, "gutter": str, "gutter_ttl": float}
    # A leased read would bypass the gutter's routing of a down server's keys: leases are
    # taken with `lease`, which the gutter routes.
    capabilities: ClassVar[frozenset[Capability]] = MemcachedBackend.capabilities - {Capability.LEASED_READS}

    def __init__(
        self,
        servers: Sequence[str | tuple[str, int]] = (),
        *,
        gutter: str | Sequence[str | tuple[str, int]],
        gutter_ttl: float = 10.0,
        **options: Any,
    ) -> None:
        if not (isinstance(gutter_ttl, (int, float)) and 1 <= gutter_ttl < math.inf):
            raise ConfigurationError(
                f"gutter_ttl must be a number of seconds, at least 1, got {gutter_ttl!r}"
            )
        addresses = parse_gutter(gutter)
        if isinstance(servers, str):
            servers = [servers]
        main = [parse_server(s, s) if isinstance(s, str) else (s[0], int(s[1])) for s in servers]
        shared = set(addresses) & set(main)
        if shared:
            raise ConfigurationError(f"gutter servers must not be in the main pool: {sorted(shared)!r}")
        gutter_options = {k: v for k, v in options.items() if k not in ("discovery", "discovery_interval")}
        self._gutter = MemcachedBackend(addresses, **gutter_options)
        self.gutter_ttl = float(gutter_ttl)
        try:
            super().__init__(servers, **options)
        except BaseException:
            self._gutter.close()
            raise

    def __repr__(self) -> str:
        main = super().__repr__().removeprefix("MemcachedBackend")[:-1]
        return f"GutterBackend{main}, gutter={list(self._gutter.servers)!r})"

    @property
    def gutter_servers(self) -> tuple[str, ...]:
        """The gutter pool's server ids."""
        return self._gutter.servers

    # -- routing -------------------------------------------------------------------

    def _down(self, key: str) -> bool:
        return is_down(self._topology.server_for(key_bytes(key)))

    def _ttl(self, ttl: float | None) -> float:
        return self.gutter_ttl if ttl is None or ttl > self.gutter_ttl else ttl

    def _split(self, keys: Sequence[str]) -> tuple[list[str], list[str]] | None:
        topology = self._topology
        return split_down(topology, keys) if any_down(topology) else None

    @staticmethod
    def _tagged(found: tuple[bytes, int] | None) -> tuple[bytes, int] | None:
        return None if found is None else (found[0], found[1] + GUTTER_UNIQUE)

    # -- sync ------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        try:
            return super().get(key)
        except BackendUnavailable:
            if not self._down(key):
                raise
        return self._gutter.get(key)

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        split = self._split(keys)
        if split is None:
            return super().get_many(keys)
        up, down = split
        outcomes = [_run(super().get_many, up, {}), _run(self._gutter.get_many, down, {})]
        found: dict[str, bytes] = combine("get_many", outcomes, {})
        return found

    def set(self, key: str, value: bytes, ttl: float | None) -> bool:
        try:
            stored = super().set(key, value, ttl)
        except BackendError as exc:
            if isinstance(exc, BackendUnavailable) and self._down(key):
                return self._gutter.set(key, value, self._ttl(ttl))
            _quietly(self._gutter.delete, key)  # the write failed; the old copy must not stay
            raise
        _quietly(self._gutter.delete, key)
        return stored

    def add(self, key: str, value: bytes, ttl: float | None) -> bool:
        try:
            return super().add(key, value, ttl)
        except BackendUnavailable:
            if not self._down(key):
                raise
        return self._gutter.add(key, value, self._ttl(ttl))

    def set_many(self, items: Iterable[SetItem]) -> list[str]:
        topology = self._topology
        if not any_down(topology):
            return super().set_many(items)
        up, down = split_items(topology, items)
        gutter = [(key, value, self._ttl(ttl)) for key, value, ttl in down]
        outcomes = [_run(super().set_many, up, []), _run(self._gutter.set_many, gutter, [])]
        not_stored: list[str] = combine("set_many", outcomes, [])
        return not_stored

    def delete(self, key: str) -> bool:
        try:
            deleted = super().delete(key)
        except BackendError as exc:
            if isinstance(exc, BackendUnavailable) and self._down(key):
                return self._gutter.delete(key)
            _quietly(self._gutter.delete, key)  # failing, not yet marked down: void the copy anyway
            raise
        _quietly(self._gutter.delete, key)
        return deleted

    def delete_many(self, keys: Sequence[str]) -> None:
        split = self._split(keys)
        if split is None:
            try:
                super().delete_many(keys)
            except BackendError:
                _quietly(self._gutter.delete_many, keys)
                raise
            _quietly(self._gutter.delete_many, keys)
            return
        up, down = split
        primary = _run(super().delete_many, up, None)
        _quietly(self._gutter.delete_many, up)
        combine("delete_many", [primary, _run(self._gutter.delete_many, down, None)], [])

    def gets(self, key: str) -> tuple[bytes, int] | None:
        try:
            return super().gets(key)
        except BackendUnavailable:
            if not self._down(key):
                raise
        return self._tagged(self._gutter.gets(key))

    def cas(self, key: str, value: bytes, ttl: float | None, unique: int) -> bool | None:
        if unique < GUTTER_UNIQUE:
            try:
                return super().cas(key, value, ttl, unique)
            except BackendUnavailable:
                if not self._down(key):
                    raise
                return False  # a lease of the key's server cannot be redeemed in the gutter
        if not self._down(key):
            return False  # the server is back: a gutter lease is void there
        return self._gutter.cas(key, value, self._ttl(ttl), unique - GUTTER_UNIQUE)

    def touch(self, key: str, ttl: float | None) -> bool:
        try:
            return super().touch(key, ttl)
        except BackendUnavailable:
            if not self._down(key):
                raise
        return self._gutter.touch(key, self._ttl(ttl))

    def lease(self, key: str, marker: bytes, ttl: float | None) -> tuple[bool, tuple[bytes, int] | None]:
        try:
            return super().lease(key, marker, ttl)
        except BackendUnavailable:
            if not self._down(key):
                raise
        added, found = self._gutter.lease(key, marker, self._ttl(ttl))
        return added, self._tagged(found)

    def lease_many(self, items: Sequence[SetItem]) -> dict[str, LeaseResult]:
        if any_down(self._topology):
            return Backend.lease_many(self, items)  # key by key, each routed like `lease`
        return super().lease_many(items)

    def cas_many(self, items: Sequence[CasItem]) -> list[str]:
        if any_down(self._topology) or any(item[3] >= GUTTER_UNIQUE for item in items):
            return Backend.cas_many(self, items)
        return super().cas_many(items)

    def close(self) -> None:
        super().close()
        self._gutter.close()

    # -- async -----------------------------------------------------------------------

    async def aget(self, key: str) -> bytes | None:
        try:
            return await super().aget(key)
        except BackendUnavailable:
            if not self._down(key):
                raise
        return await self._gutter.aget(key)

    async def aget_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        split = self._split(keys)
        if split is None:
            return await super().aget_many(keys)
        up, down = split
        outcomes = await _arun_both(super().aget_many, up, self._gutter.aget_many, down, {})
        return combine("get_many", outcomes, {})  # type: ignore[no-any-return]

    async def aset(self, key: str, value: bytes, ttl: float | None) -> bool:
        try:
            stored = await super().aset(key, value, ttl)
        except BackendError as exc:
            if isinstance(exc, BackendUnavailable) and self._down(key):
                return await self._gutter.aset(key, value, self._ttl(ttl))
            await _aquietly(self._gutter.adelete, key)
            raise
        await _aquietly(self._gutter.adelete, key)
        return stored

    async def aadd(self, key: str, value: bytes, ttl: float | None) -> bool:
        try:
            return await super().aadd(key, value, ttl)
        except BackendUnavailable:
            if not self._down(key):
                raise
        return await self._gutter.aadd(key, value, self._ttl(ttl))

    async def aset_many(self, items: Iterable[SetItem]) -> list[str]:
        topology = self._topology
        if not any_down(topology):
            return await super().aset_many(items)
        up, down = split_items(topology, items)
        gutter = [(key, value, self._ttl(ttl)) for key, value, ttl in down]
        outcomes = await _arun_both(super().aset_many, up, self._gutter.aset_many, gutter, [])
        return combine("set_many", outcomes, [])  # type: ignore[no-any-return]

    async def adelete(self, key: str) -> bool:
        try:
            deleted = await super().adelete(key)
        except BackendError as exc:
            if isinstance(exc, BackendUnavailable) and self._down(key):
                return await self._gutter.adelete(key)
            await _aquietly(self._gutter.adelete, key)
            raise
        await _aquietly(self._gutter.adelete, key)
        return deleted

    async def adelete_many(self, keys: Sequence[str]) -> None:
        split = self._split(keys)
        if split is None:
            try:
                await super().adelete_many(keys)
            except BackendError:
                await _aquietly(self._gutter.adelete_many, keys)
                raise
            await _aquietly(self._gutter.adelete_many, keys)
            return
        up, down = split
        outcomes = await _arun_both(super().adelete_many, up, self._gutter.adelete_many, down, None)
        await _aquietly(self._gutter.adelete_many, up)
        combine("delete_many", outcomes, [])

    async def agets(self, key: str) -> tuple[bytes, int] | None:
        try:
            return await super().agets(key)
        except BackendUnavailable:
            if not self._down(key):
                raise
        return self._tagged(await self._gutter.agets(key))

    async def acas(self, key: str, value: bytes, ttl: float | None, unique: int) -> bool | None:
        if unique < GUTTER_UNIQUE:
            try:
                return await super().acas(key, value, ttl, unique)
            except BackendUnavailable:
                if not self._down(key):
                    raise
                return False
        if not self._down(key):
            return False
        return await self._gutter.acas(key, value, self._ttl(ttl), unique - GUTTER_UNIQUE)

    async def atouch(self, key: str, ttl: float | None) -> bool:
        try:
            return await super().atouch(key, ttl)
        except BackendUnavailable:
            if not self._down(key):
                raise
        return await self._gutter.atouch(key, self._ttl(ttl))

    async def alease(
        self, key: str, marker: bytes, ttl: float | None
    ) -> tuple[bool, tuple[bytes, int] | None]:
        try:
            return await super().alease(key, marker, ttl)
        except BackendUnavailable:
            if not self._down(key):
                raise
        added, found = await self._gutter.alease(key, marker, self._ttl(ttl))
        return added, self._tagged(found)

    async def alease_many(self, items: Sequence[SetItem]) -> dict[str, LeaseResult]:
        if any_down(self._topology):
            return await Backend.alease_many(self, items)  # key by key, each routed like `alease`
        return await super().alease_many(items)

    async def acas_many(self, items: Sequence[CasItem]) -> list[str]:
        if any_down(self._topology) or any(item[3] >= GUTTER_UNIQUE for item in items):
            return await Backend.acas_many(self, items)
        return await super().acas_many(items)

    async def aclose(self) -> None:
        await super().aclose()
        await self._gutter.aclose()


def _run(method: Any, arg: Any, empty: Any) -> Any:
    """One part of a split batch: its result, or the `BackendError` it raised; nothing to send is `empty`."""
    if not arg:
        return empty
    try:
        return method(arg)
    except BackendError as exc:
        return exc


async def _arun(method: Any, arg: Any, empty: Any) -> Any:
    if not arg:
        return empty
    try:
        return await method(arg)
    except BackendError as exc:
        return exc


async def _arun_both(first: Any, first_arg: Any, second: Any, second_arg: Any, empty: Any) -> list[Any]:
    """Both parts of a split batch, concurrently."""
    return list(await asyncio.gather(_arun(first, first_arg, empty), _arun(second, second_arg, empty)))


def _quietly(method: Any, arg: Any) -> None:
    """Void the gutter's copy of a key whose server is up; the caller's write succeeded already.

    A gutter that does not answer is not retried: a copy it still holds lives
    at most `gutter_ttl`, and is read only if the key's server fails again.
    """
    with contextlib.suppress(BackendError):
        method(arg)


async def _aquietly(method: Any, arg: Any) -> None:
    with contextlib.suppress(BackendError):
        await method(arg)
