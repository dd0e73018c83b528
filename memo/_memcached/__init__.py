"""`memcached://`, `memcached+tls://` and `memcached+discovery[+tls]://`: memcached, sync and async.

Both flavours speak the classic text protocol (`get`, `gets`, `set`, `add`,
`cas`, `touch`, `delete`), or the meta protocol (`mg`, `ms`, `md`) where a
server answers `mn` with `MN` (`protocol=auto`, the default), through one
reader and encoder (`_proto`), route every key with the same consistent hash
(`memo._routing`), write flags 0 and accept any flags on read, so an entry
written by one flavour or protocol is read byte-for-byte by the other.

The modules, one job each:

* `_wire`: keys, expiries, server addresses (pure).
* `_proto`: the protocol without I/O: a reply reader (bytes in, events out),
  reply plans and request encoders, for the classic and the meta protocol.
* `_ops`: every operation as a request (bytes, reply plan, meaning), written
  once for both flavours and both protocols.
* `_server`: one server's address, circuit breaker and idle sync clients.
* `_topology`: the servers and their router, swapped as one object.
* `_plan`: the batch plan shared by both flavours (group, combine, partial failure).
* `_sync`: the sync side: blocking connections that move bytes, free-lists.
* `_resolve`: name resolution with a bounded wait, for the sync side.
* `_protocol`: the async side's connection (an `asyncio.Protocol` that moves bytes).
* `_pools`: the async side's per-server, per-event-loop pools.
* `_parking`: idle async sockets kept from one event loop to the next.
* `_async`: the async side's operations.
* `_discovery`: ElastiCache auto-discovery (configuration endpoint, background thread).
* `_fork`: forgetting inherited connections in a forked child.
* `_backend`: `MemcachedBackend`, the façade over all of them.
* `_gutter`: `GutterBackend`, a main pool whose down servers' keys go to a gutter pool.
"""

from ._backend import PROXIES, MemcachedBackend
from ._gutter import GutterBackend
from ._server import ServerState

__all__ = ["PROXIES", "GutterBackend", "MemcachedBackend", "ServerState"]
