"""LangGraph on memo: a node cache for `compile(cache=...)`, a node key, and `@cached` nodes.

    import memo
    from langgraph.types import CachePolicy
    from memo.langgraph import MemcachedCache, node_key

    cache = memo.Cache("memcached://127.0.0.1:11211")
    builder.add_node("summarize", summarize, cache_policy=CachePolicy(key_func=node_key, ttl=300))
    graph = builder.compile(cache=MemcachedCache(cache))

`MemcachedCache` also takes a pymemcache client, and `from_conn_string`,
`from_pool`, `from_server`, `from_servers` and `from_url` build one (see the
class). `node_key` keys a node by the exact value of its input where
LangGraph's default key does not. `node` marks a function `@cached` wraps as a
LangGraph node or task, so its keys leave out what LangGraph injects by name;
`by_configurable` and `by_context` scope such a node by who is asking.

This package is the only part of memo that imports LangGraph; `import memo`
does not. One module per job:

- `_cache`: `MemcachedCache`, LangGraph's `BaseCache` on a memo Cache;
- `_constructors`: the `from_*` class methods;
- `_adopt`: a pymemcache client's servers and settings, for a memo Cache;
- `_storage`: LangGraph's `(namespace, key)` to a memcached key, under generations;
- `_entries`: the value envelope, encoded and decoded;
- `_clearing`: clears that fail open and are retried;
- `_injection`, `_scopes`, `_node_key`: `@cached` nodes and node keys.

Namespaces and clearing. LangGraph files every cached task under a namespace
tuple (for a node: the writes marker, the node function's `module.qualname`
and the node name) and a 32-hex-digit key. A `MemcachedCache` owns the memo
namespace `name` ("langgraph" by default), and maps each LangGraph namespace
to its own memo namespace, `<name>/<the tuple as JSON>`. An entry's digest
covers the generation tokens of `name` and of each leading part of its
namespace tuple, so `clear(namespaces)` (a fresh token per namespace) drops
those namespaces and the ones nested in them (clearing `("a",)` drops
`("a", "b")`; `()` drops only itself), `clear()` (a fresh token for `name`)
drops everything this cache owns, and neither scans, sends `flush_all`, or
touches entries of functions decorated on the same `memo.Cache`. Other
processes see a clear within the Cache's `ns_refresh` seconds.

Values: the serializer's `(type, bytes)` in a small envelope (`_entries`).
Anything that does not decode is a miss, counted in `decode_errors`.
LangGraph's default serializer rebuilds whatever importable class the bytes
name (it logs unregistered ones) unless `LANGGRAPH_STRICT_MSGPACK=true` or
its `allowed_msgpack_modules=` narrows it: narrow it when others can write to
the memcached servers.

Failures never fail a graph run: when memcached cannot be reached `get`
returns `{}`, `set` drops the write and `clear` is retried before later reads
(which bypass the cleared namespaces until it succeeds); each failure is
counted in `Cache.stats()[name]`, reported to `on_event` and logged. A value
the serializer cannot encode is not cached (`encode_errors`).

Graphs sharing one `MemcachedCache`: LangGraph names a node's namespace after
the node function's qualname, except for async node functions and compiled
subgraphs used as nodes, which all get `"__dynamic__"`. Two graphs with such
nodes of the same name and equal input would read each other's entries, so give
those graphs their own cache name: `MemcachedCache(cache, name="billing")`.
Sync nodes and `@task` functions (sync or async) are told apart by qualname.
A subgraph caches its nodes with the cache it was compiled with (LangGraph
1.2 does not hand it the parent's): `subgraph_builder.compile(cache=...)`.
"""

from ._cache import MemcachedCache
from ._injection import injected_parameters as injected_parameters
from ._injection import node
from ._node_key import node_key
from ._scopes import by_configurable, by_context

__all__ = ["MemcachedCache", "by_configurable", "by_context", "node", "node_key"]

# `injected_parameters` is what memo's binder asks this package (memo._binding.INJECTION_RULES).
