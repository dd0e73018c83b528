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

from .._backend import CasItem, LeaseResult, SetItem
from .._errors import BackendError
from . import _proto as p
from ._core import Core
from ._ops import Request
from ._plan import finish, group_items, merge_not_stored
from ._wire import expiry, key_bytes

__all__ = ["ManyLeases", "cas_many_request", "lease_many_request"]


class LinesThenFetch:
    """`count` status lines (the `add`s), then one multi-key `gets` reply: `(lines, {key: (data, cas)})`."""

    __slots__ = ("count", "fetch", "lines", "server_id")
    short = p.NO_SHORT

    def __init__(self, count: int, wanted: list[bytes], server_id: str) -> None:
        self.count = count
        self.server_id = server_id
        self.lines: list[bytes] = []
        self.fetch = p.Fetch(wanted, server_id, cas=True)

    def collect(self, reader: p.Reader) -> Any:
        while len(self.lines) < self.count:
            event = reader.next_event()
            if event is p.NEED_DATA:
                return p.NEED_DATA
            if type(event) is not p.Status or event.line not in (b"STORED", b"NOT_STORED"):
                raise p.ProtocolViolation(repr(event)[:120])
            self.lines.append(event.line)
        found = self.fetch.collect(reader)
        return p.NEED_DATA if found is p.NEED_DATA else (self.lines, found)


def lease_many_request(entries: list[tuple[str, bytes, bytes, int]], server_id: str, meta: bool) -> Request:
    """`add` each (key, key bytes, marker, exptime), then one `gets` of all the keys, in one send.

    One multi-key `gets` after the adds, not an `add` + `gets` pair per key:
    memcached flushes its reply after each `get`-family command of a pipeline,
    so pairs cost a reply packet (and on a shared CPU a context switch) each;
    this layout measured 2.5x faster for ten keys. Classic commands: every
    memcached speaks them, meta servers included.
    """
    adds = [p.store(b"add", kb, marker, exp) for _, kb, marker, exp in entries]
    kbs = [kb for _, kb, _, _ in entries]
    data = b"".join(adds) + b"gets " + b" ".join(kbs) + b"\r\n"

    def done(reply: Any, server_id: str) -> dict[str, LeaseResult]:
        lines, found = reply
        return {
            key: (line == b"STORED", found.get(kb))
            for (key, kb, _, _), line in zip(entries, lines, strict=True)
        }

    return Request(data, LinesThenFetch(len(entries), kbs, server_id), done)


def cas_many_request(
    entries: list[tuple[str, bytes, bytes, int, int]], server_id: str, meta: bool
) -> Request:
    """Pipeline a `cas` for each (key, key bytes, value, exptime, unique); the keys not stored."""
    data = b"".join(p.cas(kb, value, exp, unique) for _, kb, value, exp, unique in entries)

    def done(lines: list[bytes], server_id: str) -> list[str]:
        return [key for (key, _, _, _, _), line in zip(entries, lines, strict=True) if line != b"STORED"]

    return Request(data, p.Lines(len(entries)), done)


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
            outcome = self._attempt(server, lease_many_request, entries)
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
            self._attempt(
                server, cas_many_request, [(k, kb, v, exp, uniques[k]) for k, kb, v, exp in entries]
            )
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
