"""Leases of many keys at once: `lease_many` and `cas_many`, one round trip per server (sync).

A batch of leases (`add` + `gets` per key) or of stores under them (`cas` per
key) is grouped by server like every batch (`_plan`); each group is one
pipeline on one pooled connection, its replies read in order. The async side
sends the keys' requests concurrently instead: each on its own pooled
connection, so the batch costs about one round trip too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

from pymemcache.client.base import _readline, _readvalue
from pymemcache.exceptions import MemcacheUnknownError

from .._backend import CasItem, LeaseResult, SetItem
from .._errors import BackendError
from ._core import Core
from ._plan import finish, group_items, merge_not_stored
from ._sync import _socket
from ._wire import expiry, key_bytes

__all__ = ["ManyLeases", "cas_many_sync", "lease_many_sync"]


def lease_many_sync(client: Any, entries: list[tuple[str, bytes, bytes, int]]) -> dict[str, LeaseResult]:
    """`add` each (key, key bytes, marker, exptime), then one `gets` of all the keys, in one send.

    One multi-key `gets` after the adds, not an `add` + `gets` pair per key:
    memcached flushes its reply after each `get`-family command of a pipeline,
    so pairs cost a reply packet (and on a shared CPU a context switch) each;
    this layout measured 2.5x faster for ten keys.
    """
    sock = _socket(client)
    adds = [b"add %b 0 %d %d\r\n%b\r\n" % (kb, exp, len(marker), marker) for _, kb, marker, exp in entries]
    sock.sendall(b"".join(adds) + b"gets " + b" ".join([kb for _, kb, _, _ in entries]) + b"\r\n")
    buf = b""
    added: list[bool] = []
    for _ in entries:
        buf, line = _readline(sock, buf)
        if line not in (b"STORED", b"NOT_STORED"):
            raise MemcacheUnknownError(line[:80])
        added.append(line == b"STORED")
    wanted = {kb: key for key, kb, _, _ in entries}
    found: dict[str, tuple[bytes, int]] = {}
    while True:
        buf, line = _readline(sock, buf)
        if line == b"END":
            break
        fields = line.split()
        if len(fields) != 5 or fields[0] != b"VALUE" or fields[1] not in wanted:
            raise MemcacheUnknownError(line[:80])
        buf, value = _readvalue(sock, buf, int(fields[3]))
        found[wanted[fields[1]]] = (value, int(fields[4]))
    if buf:
        raise MemcacheUnknownError(b"more reply lines than requests")
    return {
        key: (was_added, found.get(key)) for (key, _, _, _), was_added in zip(entries, added, strict=True)
    }


def cas_many_sync(client: Any, entries: list[tuple[str, bytes, bytes, int, int]]) -> list[str]:
    """Pipeline a `cas` for each (key, key bytes, value, exptime, unique); return the keys not stored."""
    sock = _socket(client)
    sock.sendall(
        b"".join(
            [
                b"cas %b 0 %d %d %d\r\n%b\r\n" % (kb, exp, len(value), unique, value)
                for _, kb, value, exp, unique in entries
            ]
        )
    )
    buf = b""
    refused: list[str] = []
    for key, _, _, _, _ in entries:
        buf, line = _readline(sock, buf)
        if line == b"STORED":
            continue
        if line in (b"EXISTS", b"NOT_FOUND") or line.startswith(b"SERVER_ERROR"):
            refused.append(key)
            continue
        raise MemcacheUnknownError(line[:80])  # out of step: the connection is closed
    if buf:
        raise MemcacheUnknownError(b"more reply lines than requests")
    return refused


class ManyLeases(Core):
    """`lease_many` and `cas_many` of `MemcachedBackend`, sync and async."""

    def _attempt(self, server: Any, method: Any, *args: Any) -> Any:
        raise NotImplementedError  # `SyncOps._attempt`, after this class in the backend's bases

    def lease_many(self, items: Sequence[SetItem]) -> dict[str, LeaseResult]:
        groups: dict[Any, list[tuple[str, bytes, bytes, int]]] = {}
        topology = self._topology
        for key, marker, ttl in items:
            kb = key_bytes(key)
            groups.setdefault(topology.server_for(kb), []).append((key, kb, marker, expiry(ttl)))
        found: dict[str, LeaseResult] = {}
        errors: list[BaseException] = []
        for server, entries in groups.items():
            outcome = self._attempt(server, lease_many_sync, entries)
            if isinstance(outcome, BaseException):
                errors.append(outcome)
            else:
                found.update(outcome)
        finish("lease_many", found, errors, len(groups))
        return found

    def cas_many(self, items: Sequence[CasItem]) -> list[str]:
        not_stored: list[str] = []
        # Grouped like writes (oversize values are refused here); the unique rides along by key.
        uniques = {key: unique for key, _, _, unique in items}
        groups = group_items(
            self._topology, [(k, v, t) for k, v, t, _ in items], self.max_value_size, not_stored
        )
        outcomes = [
            self._attempt(server, cas_many_sync, [(k, kb, v, exp, uniques[k]) for k, kb, v, exp in entries])
            for server, entries in groups.items()
        ]
        errors = merge_not_stored(groups, outcomes, not_stored)
        finish("cas_many", not_stored, errors, len(groups))
        return not_stored

    async def alease_many(self, items: Sequence[SetItem]) -> dict[str, LeaseResult]:
        outcomes = await asyncio.gather(
            *[cast(Any, self).alease(key, marker, ttl) for key, marker, ttl in items], return_exceptions=True
        )
        found: dict[str, LeaseResult] = {}
        errors: list[BaseException] = []
        for (key, _, _), outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, BackendError):
                errors.append(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                found[key] = outcome
        finish("lease_many", found, errors, len(items))
        return found

    async def acas_many(self, items: Sequence[CasItem]) -> list[str]:
        outcomes = await asyncio.gather(
            *[cast(Any, self).acas(key, value, ttl, unique) for key, value, ttl, unique in items],
            return_exceptions=True,
        )
        not_stored: list[str] = []
        errors: list[BaseException] = []
        for (key, _, _, _), outcome in zip(items, outcomes, strict=True):
            if outcome is True:
                continue
            not_stored.append(key)
            if isinstance(outcome, BackendError):
                errors.append(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
        finish("cas_many", not_stored, errors, len(items))
        return not_stored
