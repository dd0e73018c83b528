"""The async side: memo's own small protocol client, with one pool per event loop.

Not aiomcache, although aiomcache is what a reader would expect here. Three reasons:

* aiomcache returns a connection to its pool when the call using it was
  cancelled between request and reply; the next call on that connection reads
  the stale reply and gets another key's value or None (aio-libs/aiomcache#489,
  also #43, #91). Timeouts are cancellations, so any timeout exposes it. Here a
  connection whose operation was cancelled or timed out is closed, always.
* aiomcache has no timeouts; `asyncio.wait_for` costs about 15.6 µs per call
  and `asyncio.timeout` (3.11+) about 7.8 µs. Here a request only records its
  deadline, and one lazily re-armed timer per connection enforces it (see
  `Connection`): about 0.2 µs per request, the same on Python 3.10.
* TLS and per-event-loop pools, which aiomcache does not offer.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any

from .._backend import SetItem
from .._codec import NATIVE_LEASE
from .._errors import BackendError, BackendTimeout, BackendUnavailable
from . import _ops as ops
from ._core import Core
from ._ops import meta_value, one_meta
from ._plan import all_outcome, finish, group_items, group_keys, merge_deleted, merge_found, merge_not_stored
from ._pools import LoopPools, Slots, current_loop, expire_waiter
from ._proto import MN, Fetch, Probe, mg
from ._protocol import Connection
from ._server import BREAKER_FAILURES, Server
from ._topology import Topology
from ._wire import ServerError, expiry, key_bytes

__all__ = ["FEW_KEYS", "FIRST_CHUNK", "MAX_BATCH_KEYS", "READ_RATE", "AsyncOps", "chunk_size", "run_groups"]

#: The most keys one multi-key get asks for.
MAX_BATCH_KEYS = 1000
#: Keys in the first chunk of a batch, while what a key costs on the server is not known.
FIRST_CHUNK = 4
#: The most keys an `aget_many` on one server may ask for and still go out as a lone `aget`
#: does: sent at once, or joined to the multi-key get gathered while another is on the wire
#: (a session and its user's generation, a value and its tags).
FEW_KEYS = FIRST_CHUNK
#: Bytes per second a reply is assumed to arrive at, at least, when batches are split to fit the
#: timeout (a conservative figure: loopback delivers 1-2 GB/s, a 1 Gbit/s link 125 MB/s).
READ_RATE = 20_000_000


def chunk_size(read_size: float, timeout: float) -> int:
    """Keys per multi-key get so that its reply can arrive within `timeout`."""
    if read_size < 0:
        return FIRST_CHUNK
    if not read_size:
        return MAX_BATCH_KEYS
    return max(1, min(MAX_BATCH_KEYS, int(timeout * READ_RATE / read_size)))


_get_running_loop = asyncio.get_running_loop
#: Clean-ups of leased reads that failed mid-way, kept referenced until they end.
_DROPPING: set[asyncio.Task[None]] = set()
_timeout_ctx: Any = getattr(asyncio, "timeout", None)  # Python 3.11+


class AsyncOps(Core):
    """The async operations of `MemcachedBackend`."""

    def _loop_pools(self, loop: asyncio.AbstractEventLoop) -> LoopPools:
        with self._apools_lock:
            pools = self._apools.get(loop)
            if pools is not None:
                return pools
            stale = [p for lp, p in self._apools.items() if lp.is_closed()]
            pools = LoopPools(loop, self._pool_size, self._apools, self._apools_lock, self._parking)
            self._apools[loop] = pools
        for old in stale:
            old.close_elsewhere()
        pools.start_watch()
        return pools

    def _pool_of(self, server: Server, loop: asyncio.AbstractEventLoop) -> tuple[LoopPools, Slots]:
        """The running loop's pools, and its pool of `server`, made on first use."""
        pools = self._apools.get(loop)
        if pools is None:
            pools = self._loop_pools(loop)
        slots = pools.slots.get(server.id)
        if slots is None:
            slots = pools.slots_for(server.id)
        return pools, slots

    async def _connect(self, server: Server, loop: asyncio.AbstractEventLoop) -> Connection:
        """A new connection; the first one to a server asks whether it speaks meta (see `_open_sync`)."""
        if self._discovery is not None:
            self._discovery.ensure_running()
        conn = await self._adial(server, loop)
        if server.meta is None:
            try:
                speaks = bool(await conn.request(MN, Probe(), timeout=self._timeout))
            except (ServerError, BackendUnavailable):  # ERROR, garbage, or the connection closed
                speaks = False
            except BaseException:
                conn.abort()
                raise
            if not speaks:
                conn.abort()
                self._settle(server, False)
                conn = await self._adial(server, loop)
            else:
                self._settle(server, True)
        conn.meta = bool(server.meta)
        return conn

    async def _adial(self, server: Server, loop: asyncio.AbstractEventLoop) -> Connection:
        tls = self._tls
        if tls is None:
            parked = self._parking.take(server.id)
            if parked is not None:
                try:
                    _, conn = await loop.create_connection(lambda: Connection(loop, server.id), sock=parked)
                    return conn
                except OSError:
                    parked.close()  # dial instead
        try:
            connecting = loop.create_connection(
                lambda: Connection(loop, server.id),
                server.host,
                server.port,
                ssl=tls,
                server_hostname=server.host if tls is not None else None,
                ssl_handshake_timeout=self._connect_timeout if tls is not None else None,
            )
            if _timeout_ctx is not None:
                async with _timeout_ctx(self._connect_timeout):
                    _, conn = await connecting
            else:  # pragma: no cover - Python 3.10
                _, conn = await asyncio.wait_for(connecting, self._connect_timeout)
        except (TimeoutError, asyncio.TimeoutError) as exc:
            server.failed()
            raise BackendTimeout(
                f"could not connect to memcached {server.id} within {self._connect_timeout}s"
            ) from exc
        except (OSError, ssl.SSLError) as exc:
            server.failed()
            raise BackendUnavailable(f"cannot reach memcached {server.id}: {exc}") from exc
        return conn

    async def _acquire(self, server: Server, slots: Slots) -> Connection:
        """Open a connection, or wait for one, when the pool had none idle."""
        loop = _get_running_loop()
        while True:
            conn = slots.take()
            if conn is not None:
                return conn
            if slots.open < slots.cap:
                slots.open += 1
                try:
                    return await self._connect(server, loop)
                except BaseException:
                    slots.open -= 1
                    slots.wake()
                    raise
            waiter: asyncio.Future[Connection | None] = loop.create_future()
            slots.waiters.append(waiter)
            timer = loop.call_later(self._timeout, expire_waiter, waiter, server.id, self._timeout)
            try:
                handed = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    # Handed a connection or a slot just as we were cancelled: pass it on.
                    got = waiter.result()
                    if got is None:
                        slots.wake()
                    else:
                        slots.release(got)
                raise
            finally:
                timer.cancel()
            if handed is not None:
                if not handed.broken:
                    return handed
                handed.abort()
                slots.open -= 1
            # While we waited the server may have been marked down.
            if server.blocked_until:
                server.admit()

    async def _request(self, server: Server, build: Callable[..., ops.Request], *args: Any) -> Any:
        """Run the request `build(*args, server id, meta)` on a pooled connection of `server`."""
        if server.blocked_until:
            server.admit()
        pools, slots = self._pool_of(server, _get_running_loop())
        conn = slots.take()
        if conn is None:
            conn = await self._acquire(server, slots)
        try:
            request = build(*args, server.id, conn.meta)
            reply = await conn.request(request.data, request.plan, timeout=self._timeout)
        except BaseException as exc:
            # Cancelled, timed out or failed between request and reply: the
            # reply may still arrive, so this connection is closed, never reused.
            slots.discard(conn)
            if type(exc) in BREAKER_FAILURES:
                server.failed()
            raise
        if pools._closed or conn.broken:
            slots.discard(conn)
        else:
            slots.release(conn)
        if server.failures:
            server.succeeded()
        return request.finish(reply, server.id)

    def aget(self, key: str) -> Coroutine[Any, Any, bytes | None]:
        return self.aget_or_lease(key, 0.0)  # its coroutine itself: no frame of its own on the hit path

    async def aget_or_lease(self, key: str, lease_ttl: float) -> bytes | None:
        """Get one key (`lease_ttl` > 0: `Backend.get_or_lease`); concurrent gets share a request.

        The DataLoader pattern, made free for a lone caller: when no get to the
        server is on the wire from this loop, the request goes out at once, as a
        plain `get`. While one is, later callers' keys are collected and sent
        together as one multi-key `get` on the next turn of the loop (each
        caller keeps its own future, so cancelling one never cancels another).
        Under load that turns N sends, N receives and N parser runs into one
        each.
        """
        kb = key_bytes(key)
        server = self._topology.server_for(kb)
        loop = _get_running_loop()
        pools, slots = self._pool_of(server, loop)
        if slots.gets_in_flight:  # leased reads too: a miss found there leases with `lease`
            return await self._aget_coalesced(server, slots, kb, loop)
        # `_request` inlined: this is the hit path.
        if server.blocked_until:
            server.admit()
        slots.gets_in_flight += 1
        try:
            conn = slots.take()
            if conn is None:
                conn = await self._acquire(server, slots)
            try:
                if conn.meta and lease_ttl:
                    value = await self._leased_read(conn, server, kb, lease_ttl)
                elif conn.meta:
                    value = meta_value(
                        await conn.request(mg(kb, b"v"), one_meta(server.id), timeout=self._timeout)
                    )
                else:
                    found: dict[bytes, bytes] = await conn.request(
                        b"get " + kb + b"\r\n", Fetch((kb,), server.id), timeout=self._timeout
                    )
                    value = found.get(kb)
            except BaseException as exc:
                slots.discard(conn)  # the reply may still come: never reuse this connection
                if type(exc) in BREAKER_FAILURES:
                    server.failed()
                if lease_ttl and conn.meta and server.start_drop():
                    # The server may have granted the lease in a reply nobody will read.
                    self._adrop_native_lease(server, [kb], loop)
                raise
        finally:
            slots.gets_in_flight -= 1
        _answered(pools, slots, conn, server)
        if value is not None:
            if len(value) > server.read_size:
                server.read_size = len(value)
        elif server.read_size < 0:
            server.read_size = 0.0
        return value  # type: ignore[no-any-return]

    async def _leased_read(self, conn: Connection, server: Server, kb: bytes, lease_ttl: float) -> Any:
        request = ops.get_or_lease(kb, lease_ttl, server.id, True)
        return request.finish(
            await conn.request(request.data, request.plan, timeout=self._timeout), server.id
        )

    def _adrop_native_lease(self, server: Server, kbs: list[bytes], loop: asyncio.AbstractEventLoop) -> None:
        """Delete the lease placeholders under `kbs` in the background, if there are (see the sync side)."""

        async def drop() -> None:
            with contextlib.suppress(Exception):
                for kb in kbs:
                    got = await self._request(server, ops.gets, kb)
                    if got is not None and got[0] == NATIVE_LEASE:
                        await self._request(server, ops.delete_if, kb, got[1])

        def done(task: asyncio.Task[None]) -> None:  # also for a task cancelled before it ran
            server.end_drop()
            _DROPPING.discard(task)

        task = loop.create_task(drop())
        _DROPPING.add(task)
        task.add_done_callback(done)

    def _aget_coalesced(
        self, server: Server, slots: Slots, kb: bytes, loop: asyncio.AbstractEventLoop
    ) -> asyncio.Future[bytes | None]:
        """Join the next multi-key get of this server and loop; return this caller's future."""
        fut: asyncio.Future[bytes | None] = loop.create_future()
        batch = slots.batch
        waiting = batch.get(kb)
        if waiting is None:
            batch[kb] = [fut]
            if len(batch) == 1:
                loop.call_soon(self._flush_gets, server, slots, loop)
        else:
            waiting.append(fut)
        return fut

    def _flush_gets(self, server: Server, slots: Slots, loop: asyncio.AbstractEventLoop) -> None:
        batch, slots.batch = slots.batch, {}
        task = loop.create_task(self._send_gets(server, slots, batch))
        slots.flushing.add(task)
        task.add_done_callback(slots.flushing.discard)

    async def _send_gets(
        self, server: Server, slots: Slots, batch: dict[bytes, list[asyncio.Future[bytes | None]]]
    ) -> None:
        """Send the coalesced keys in chunks whose replies fit the timeout; each answers its own callers."""
        slots.gets_in_flight += 1
        kbs = list(batch)
        try:
            async for chunk, got in self._chunks(server, kbs):
                for kb in chunk:
                    for fut in batch[kb]:
                        if fut.done():
                            continue
                        if isinstance(got, BaseException):
                            fut.set_exception(got)
                        else:
                            fut.set_result(got.get(kb))
        except BaseException:
            for waiting in batch.values():
                for fut in waiting:
                    fut.cancel()  # cancelled (or the loop is closing): so are the callers still waiting
            raise
        finally:
            slots.gets_in_flight -= 1

    async def _chunks(
        self, server: Server, kbs: list[bytes]
    ) -> AsyncIterator[tuple[list[bytes], dict[bytes, bytes] | BackendError]]:
        """Multi-key gets of `kbs`, one chunk at a time: each chunk and what it found, or its error.

        One reply must arrive within `timeout`, so a chunk holds as many keys
        as the server's recent bytes per key (`Server.read_size`) let arrive
        at `READ_RATE` within it, at most `MAX_BATCH_KEYS`; while that is not
        known yet, `FIRST_CHUNK` keys go first to learn it. A chunk that fails
        fails only its own keys.
        """
        start = 0
        while start < len(kbs):
            n = chunk_size(server.read_size, self._timeout)
            chunk = kbs[start : start + n]
            start += n
            try:
                got: dict[bytes, bytes] = await self._request(server, ops.get_many, chunk)
            except BackendError as exc:
                yield chunk, exc
                continue
            server.note_read(len(chunk), got)
            yield chunk, got

    async def _aget_group(self, server: Server, pairs: list[tuple[str, bytes]]) -> Any:
        """One server's part of a batch: `{key bytes: value}`, or `(found, errors)` when chunks failed."""
        found: dict[bytes, bytes] = {}
        errors: list[BackendError] = []
        chunks = 0
        async for _, got in self._chunks(server, [kb for _, kb in pairs]):
            chunks += 1
            if isinstance(got, BackendError):
                errors.append(got)
            else:
                found.update(got)
        if len(errors) == chunks:
            raise errors[0]  # every chunk failed: so did this server
        return (found, errors) if errors else found

    async def aget_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        if 0 < len(keys) <= FEW_KEYS:
            kbs = [key_bytes(key) for key in keys]
            server = _one_server(self._topology, kbs)
            if server is not None:
                return await self._aget_few(server, keys, kbs)
        groups = group_keys(self._topology, keys)
        if not groups:
            return {}
        outcomes = await run_groups([self._aget_group(server, pairs) for server, pairs in groups.items()])
        chunk_errors: list[BaseException] = []
        for i, outcome in enumerate(outcomes):
            if type(outcome) is tuple:  # some chunks of this server failed: what the others found counts
                outcomes[i], failed = outcome
                chunk_errors += failed
        found, errors = merge_found(groups, outcomes)
        errors += chunk_errors
        finish("get_many", found, errors, len(groups) + len(chunk_errors))
        return found

    async def aget_or_lease_many(self, keys: Sequence[str], lease_ttl: float) -> dict[str, bytes | None]:
        """Async `get_or_lease_many`: the servers' round trips run concurrently."""
        groups = group_keys(self._topology, keys)
        if not groups:
            return {}
        seconds = ops.lease_seconds(lease_ttl) if lease_ttl else 0
        outcomes = await run_groups(
            [
                self._aleased_reads(server, [kb for _, kb in pairs], seconds)
                for server, pairs in groups.items()
            ]
        )
        found: dict[str, bytes | None] = {}
        errors: list[BaseException] = []
        for pairs, outcome in zip(groups.values(), outcomes, strict=True):
            if isinstance(outcome, BaseException):
                errors.append(outcome)
                continue
            found.update(zip([key for key, _ in pairs], outcome, strict=True))
        finish("get_or_lease_many", found, errors, len(groups))
        return found

    async def _aleased_reads(self, server: Server, kbs: list[bytes], seconds: int) -> list[bytes | None]:
        leasing = ops.LeasedReads(kbs, seconds)
        try:
            got: list[bytes | None] = await self._request(server, leasing.request)
        except BaseException:
            if leasing.sent and server.start_drop():
                # The server may have granted leases in a reply nobody will read.
                self._adrop_native_lease(server, kbs, _get_running_loop())
            raise
        return got

    async def _aget_few(self, server: Server, keys: Sequence[str], kbs: list[bytes]) -> dict[str, bytes]:
        """`aget_many` of a few keys of one server: one multi-key get sent at once, or, while a
        get to the server is on the wire, each key joins the next coalesced one (as in `aget`)."""
        loop = _get_running_loop()
        pools, slots = self._pool_of(server, loop)
        if slots.gets_in_flight:
            futures = [self._aget_coalesced(server, slots, kb, loop) for kb in kbs]
            return await _joined(keys, kbs, futures)
        # `_request` inlined, as in `aget`: the hit path of sessions and tagged values.
        if server.blocked_until:
            server.admit()
        slots.gets_in_flight += 1
        try:
            conn = slots.take()
            if conn is None:
                conn = await self._acquire(server, slots)
            request = ops.get_many(kbs, server.id, conn.meta)
            try:
                got: dict[bytes, bytes] = await conn.request(
                    request.data, request.plan, timeout=self._timeout
                )
            except BaseException as exc:
                slots.discard(conn)  # the reply may still come: never reuse this connection
                if type(exc) in BREAKER_FAILURES:
                    server.failed()
                raise
        finally:
            slots.gets_in_flight -= 1
        _answered(pools, slots, conn, server)
        server.note_read(len(kbs), got)
        return {key: got[kb] for key, kb in zip(keys, kbs, strict=True) if kb in got}

    async def _astore(self, verb: bytes, key: str, value: bytes, ttl: float | None) -> bool:
        kb = key_bytes(key)
        if len(value) > self.max_value_size:
            return False
        server = self._topology.server_for(kb)
        server.note_size(len(value))
        try:
            return bool(await self._request(server, ops.store, verb, kb, bytes(value), expiry(ttl)))
        except ServerError:
            return False

    async def aset(self, key: str, value: bytes, ttl: float | None) -> bool:
        return await self._astore(b"set", key, value, ttl)

    async def aadd(self, key: str, value: bytes, ttl: float | None) -> bool:
        return await self._astore(b"add", key, value, ttl)

    async def aset_many(self, items: Iterable[SetItem]) -> list[str]:
        not_stored: list[str] = []
        groups = group_items(self._topology, items, self.max_value_size, not_stored)
        if not groups:
            return not_stored
        self._note_writes(groups)
        outcomes = await run_groups(
            [self._request(server, ops.set_many, entries) for server, entries in groups.items()]
        )
        errors = merge_not_stored(groups, outcomes, not_stored)
        finish("set_many", not_stored, errors, len(groups))
        return not_stored

    async def adelete(self, key: str) -> bool:
        kb = key_bytes(key)
        return bool(await self._request(self._topology.server_for(kb), ops.delete, kb))

    async def adelete_many(self, keys: Sequence[str]) -> None:
        groups = group_keys(self._topology, keys)
        if not groups:
            return
        outcomes = await run_groups(
            [
                self._request(server, ops.delete_many, [kb for _, kb in pairs])
                for server, pairs in groups.items()
            ]
        )
        unconfirmed, errors = merge_deleted(groups, outcomes)
        finish("delete_many", unconfirmed, errors, len(groups))

    async def agets(self, key: str) -> tuple[bytes, int] | None:
        kb = key_bytes(key)
        return await self._request(self._topology.server_for(kb), ops.gets, kb)  # type: ignore[no-any-return]

    async def acas(self, key: str, value: bytes, ttl: float | None, unique: int) -> bool | None:
        kb = key_bytes(key)
        if len(value) > self.max_value_size:
            return False
        server = self._topology.server_for(kb)
        try:
            stored: bool | None = await self._request(server, ops.cas, kb, bytes(value), expiry(ttl), unique)
        except ServerError:
            return None  # the server refused the value (see Backend.cas)
        return stored

    async def atouch(self, key: str, ttl: float | None) -> bool:
        kb = key_bytes(key)
        return bool(await self._request(self._topology.server_for(kb), ops.touch, kb, expiry(ttl)))

    async def alease(
        self, key: str, marker: bytes, ttl: float | None
    ) -> tuple[bool, tuple[bytes, int] | None]:
        kb = key_bytes(key)
        server = self._topology.server_for(kb)
        return await self._request(server, ops.lease, kb, marker, expiry(ttl))  # type: ignore[no-any-return]

    async def aget_all(self, key: str) -> dict[str, bytes | None]:
        kb = key_bytes(key)
        servers = self._every_server(kb)
        outcomes = await run_groups([self._request(server, ops.get_one, kb) for server in servers])
        return {self._store_id(server): value for server, value in all_outcome(servers, outcomes)}

    async def aget_all_many(self, keys: Sequence[str]) -> dict[str, dict[str, bytes]]:
        if self._proxy:  # one store behind the proxies: a plain batch
            return {self._topology.servers[0].id: await self.aget_many(keys)}
        kbs = {key_bytes(key): key for key in keys}
        servers = self._topology.servers
        outcomes = await run_groups([self._request(server, ops.get_many, list(kbs)) for server in servers])
        return {
            server.id: {kbs[kb]: value for kb, value in got.items()}
            for server, got in all_outcome(servers, outcomes)
        }

    async def aset_all(self, key: str, value: bytes, ttl: float | None) -> int:
        return await self._astore_everywhere(ops.set_one, key, value, ttl)

    async def aappend_all(self, key: str, value: bytes, ttl: float | None) -> int:
        return await self._astore_everywhere(ops.add_or_append, key, value, ttl)

    async def _astore_everywhere(
        self, build: Callable[..., ops.Request], key: str, value: bytes, ttl: float | None
    ) -> int:
        """Run one store per server concurrently; return how many stored. Raises if all failed."""
        kb = key_bytes(key)
        servers = self._every_server(kb)
        exp = expiry(ttl)
        outcomes = await run_groups(
            [self._request(server, build, kb, bytes(value), exp) for server in servers]
        )
        return sum(stored is True for _, stored in all_outcome(servers, outcomes))

    async def aclose(self) -> None:
        """Close the async connections of every event loop this backend has used.

        The current loop's connections are closed and waited for; other loops'
        are closed in their own loop (or here, if that loop is closed already).
        """
        current = current_loop()
        self._parking.close()
        with self._apools_lock:
            all_pools = list(self._apools.values())
            self._apools.clear()
        for pools in all_pools:
            if pools.loop is current:
                await pools.aclose()
            else:
                pools.close_elsewhere()


def _one_server(topology: Topology, kbs: list[bytes]) -> Server | None:
    """The server all of `kbs` route to, or None when they span several (or there is none)."""
    servers = topology.servers
    if len(servers) == 1:
        return servers[0]
    if not servers:
        return None
    index = topology.index
    first = index(kbs[0])
    return servers[first] if all(index(kb) == first for kb in kbs[1:]) else None


async def _joined(
    keys: Sequence[str], kbs: list[bytes], futures: list[asyncio.Future[bytes | None]]
) -> dict[str, bytes]:
    """What the coalesced gets found for a few keys; their errors are raised as `aget_many` raises them."""
    found: dict[str, bytes] = {}
    errors: list[BackendError] = []
    try:
        for key, fut in zip(keys, futures, strict=True):
            try:
                value = await fut
            except BackendError as exc:  # its chunk failed (keys of one batch may go in several)
                errors.append(exc)
                continue
            if value is not None:
                found[key] = value
    except BaseException:
        for fut in futures:
            fut.cancel()  # the ones still waiting: nobody will read them
        raise
    finish("get_many", found, errors, len(kbs))
    return found


async def run_groups(coros: list[Awaitable[Any]]) -> list[Any]:
    """Await one coroutine per server, concurrently; errors are returned, not raised."""
    if len(coros) == 1:
        try:
            return [await coros[0]]
        except BackendError as exc:
            return [exc]
    outcomes = await asyncio.gather(*coros, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, BackendError):
            raise outcome
    return outcomes


def _answered(pools: LoopPools, slots: Slots, conn: Connection, server: Server) -> None:
    """A connection whose reply was read whole goes back to its pool (closed with the pool if
    that closed meanwhile), and its server is answering again."""
    if pools._closed:
        slots.discard(conn)
    else:
        slots.release(conn)
    if server.failures:
        server.succeeded()
