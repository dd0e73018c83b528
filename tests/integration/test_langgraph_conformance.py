"""`MemcachedCache` against the contract of LangGraph's `BaseCache`, on memory:// and memcached.

The cases LangGraph's own caches are tested with (basic and batch get/set, TTL,
namespace isolation, clearing, empty and missing keys, async variants, an
unavailable server, corrupted data, odd namespaces, large values), plus what
memo promises beyond them: `clear(namespaces)` by prefix (as RedisCache) except
for `()`, clears that fail open and still win, no effect on decorated
functions, one batch read per call, and bytes that do not decode being misses.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import pydantic
import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.cache.base import BaseCache, FullKey
from langgraph.cache.memory import InMemoryCache
from ports import refused_url

import memo
from memo.langgraph import MemcachedCache

pytest.importorskip("langgraph")


# `backend_url`, `make_cache` and `cache` come from conftest.py: every case runs on each backend.


@pytest.fixture
def lg(cache: memo.Cache) -> MemcachedCache[Any]:
    return MemcachedCache(cache)


K1: FullKey = (("graph", "node"), "key1")


# -- the shape of the class ------------------------------------------------------------


def test_signatures_match_base_cache() -> None:
    for method in ("get", "aget", "set", "aset", "clear", "aclear"):
        ours = list(inspect.signature(getattr(MemcachedCache, method)).parameters)
        theirs = list(inspect.signature(getattr(BaseCache, method)).parameters)
        assert ours == theirs, method
    assert inspect.iscoroutinefunction(MemcachedCache.aget)
    assert inspect.iscoroutinefunction(MemcachedCache.aset)
    assert inspect.iscoroutinefunction(MemcachedCache.aclear)


def test_default_serde_is_langgraphs_own(lg: MemcachedCache[Any]) -> None:
    assert lg.serde is BaseCache.serde
    assert type(lg.serde) is type(InMemoryCache().serde)


def test_name_is_checked(cache: memo.Cache) -> None:
    for bad in ("", "a/b", "has space", "x" * 49):
        with pytest.raises(memo.ConfigurationError):
            MemcachedCache(cache, name=bad)
    with pytest.raises(memo.ConfigurationError, match="from_conn_string"):
        MemcachedCache("memcached://127.0.0.1:11211")  # type: ignore[arg-type]


# -- the cases LangGraph's caches pass ---------------------------------------------------


def test_basic_set_and_get(lg: MemcachedCache[Any]) -> None:
    lg.set({K1: ({"result": 42}, None)})
    assert lg.get([K1]) == {K1: {"result": 42}}


def test_keyword_arguments(lg: MemcachedCache[Any]) -> None:
    lg.set(pairs={K1: ({"data": 123}, 60)})
    assert lg.get(keys=[K1]) == {K1: {"data": 123}}
    lg.clear(namespaces=[K1[0]])
    assert lg.get(keys=[K1]) == {}


def test_batch_operations(lg: MemcachedCache[Any]) -> None:
    keys: list[FullKey] = [
        (("graph", "node1"), "key1"),
        (("graph", "node2"), "key2"),
        (("other", "node"), "key3"),
    ]
    lg.set({keys[0]: ({"result": 1}, None), keys[1]: ({"result": 2}, 60), keys[2]: ({"result": 3}, None)})
    assert lg.get(keys) == {keys[0]: {"result": 1}, keys[1]: {"result": 2}, keys[2]: {"result": 3}}
    assert lg.get([*keys, (("graph", "node1"), "absent")]) == lg.get(keys)


def test_ttl(elapse: Callable[[float], None], lg: MemcachedCache[Any]) -> None:
    expiring: FullKey = (("graph", "node"), "expires")
    lasting: FullKey = (("graph", "node"), "lasts")
    lg.set({expiring: ("soon", 1), lasting: ("later", None)})
    assert lg.get([expiring, lasting]) == {expiring: "soon", lasting: "later"}
    elapse(2.1)  # memcached's clock ticks in whole seconds
    assert lg.get([expiring, lasting]) == {lasting: "later"}


def test_a_ttl_of_zero_or_less_stores_nothing(lg: MemcachedCache[Any]) -> None:
    # memcached would read an expiry of 0 as "never": LangGraph means "already expired".
    lg.set({K1: ("gone", 0), (("graph", "node"), "neg"): ("gone", -5)})
    assert lg.get([K1, (("graph", "node"), "neg")]) == {}


def test_namespace_isolation(lg: MemcachedCache[Any]) -> None:
    key1: FullKey = (("graph1", "node"), "same_key")
    key2: FullKey = (("graph2", "node"), "same_key")
    lg.set({key1: ({"graph": 1}, None), key2: ({"graph": 2}, None)})
    assert lg.get([key1, key2]) == {key1: {"graph": 1}, key2: {"graph": 2}}


def test_clear_all(lg: MemcachedCache[Any]) -> None:
    keys: list[FullKey] = [(("graph", "node1"), "key1"), (("graph", "node2"), "key2"), ((), "key3")]
    lg.set({key: (i, None) for i, key in enumerate(keys)})
    assert len(lg.get(keys)) == 3
    lg.clear()
    assert lg.get(keys) == {}
    lg.set({keys[0]: ("again", None)})  # still usable after a clear
    assert lg.get(keys) == {keys[0]: "again"}


def test_clear_by_namespace_clears_it_and_the_namespaces_nested_in_it(lg: MemcachedCache[Any]) -> None:
    keys: list[FullKey] = [
        (("graph1", "node"), "key1"),
        (("graph2", "node"), "key2"),
        (("graph1", "other"), "key3"),
        (("graph1",), "key4"),  # a prefix of the cleared namespaces: not cleared
        (("graph1", "node", "deeper"), "key5"),  # nested in a cleared one: cleared
        ((), "key6"),
        (("graph1", "nodes"), "key7"),  # a longer name, not nested: not cleared
    ]
    lg.set({key: (i, None) for i, key in enumerate(keys)})
    lg.clear([("graph1", "node"), ("graph1", "other")])
    assert lg.get(keys) == {keys[1]: 1, keys[3]: 3, keys[5]: 5, keys[6]: 6}
    lg.clear([("graph1",)])  # as LangGraph's RedisCache does: a namespace and everything under it
    assert lg.get(keys) == {keys[1]: 1, keys[5]: 5}
    lg.set({keys[4]: ("again", None)})  # still usable after a clear
    assert lg.get([keys[4]]) == {keys[4]: "again"}


async def test_aclear_clears_nested_namespaces(lg: MemcachedCache[Any]) -> None:
    keys: list[FullKey] = [(("a",), "k"), (("a", "b"), "k"), (("a", "b", "c"), "k"), (("ab",), "k")]
    await lg.aset({key: (i, None) for i, key in enumerate(keys)})
    await lg.aclear([("a", "b")])
    assert await lg.aget(keys) == {keys[0]: 0, keys[3]: 3}
    await lg.aclear([("a",)])
    assert await lg.aget(keys) == {keys[3]: 3}


def test_clearing_the_empty_namespace_clears_only_it(lg: MemcachedCache[Any]) -> None:
    """`()` is no prefix of the others: `clear()` is how LangGraph says "everything"."""
    keys: list[FullKey] = [((), "root"), (("graph",), "key")]
    lg.set({keys[0]: ("root", None), keys[1]: ("kept", None)})
    lg.clear([()])
    assert lg.get(keys) == {keys[1]: "kept"}
    lg.clear([])  # no namespaces: nothing
    assert lg.get(keys) == {keys[1]: "kept"}


def test_empty_operations(lg: MemcachedCache[Any]) -> None:
    assert lg.get([]) == {}
    lg.set({})


def test_nonexistent_keys(lg: MemcachedCache[Any]) -> None:
    assert lg.get([(("graph", "node"), "nonexistent")]) == {}


async def test_async_operations(lg: MemcachedCache[Any]) -> None:
    keys: list[FullKey] = [(("graph", "node"), "async_key"), (("graph", "other"), "k")]
    await lg.aset({keys[0]: ({"async": True}, None), keys[1]: ("x", 60)})
    assert await lg.aget(keys) == {keys[0]: {"async": True}, keys[1]: "x"}
    assert lg.get(keys) == await lg.aget(keys)  # one store, both flavours
    await lg.aclear([keys[1][0]])
    assert await lg.aget(keys) == {keys[0]: {"async": True}}
    await lg.aclear()
    assert await lg.aget(keys) == {}
    assert await lg.aget([]) == {}
    await lg.aset({})


@pytest.mark.memcached
async def test_async_methods_use_only_the_async_backend(memcached_url: str) -> None:
    """The async flavour never makes a blocking call on the event loop (memory:// has no I/O)."""
    lg = MemcachedCache.from_url(memcached_url, prefix=f"lg{uuid.uuid4().hex[:8]}:")
    backend = lg.cache.backend

    def blocking(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a sync backend method was called from an async method")

    with pytest.MonkeyPatch.context() as patch:
        for method in ("get", "get_many", "set", "set_many", "add", "delete", "delete_many"):
            patch.setattr(backend, method, blocking)
        await lg.aset({K1: ("v", 60)})
        assert await lg.aget([K1]) == {K1: "v"}
        await lg.aclear([K1[0]])
        await lg.aclear()
        assert await lg.aget([K1]) == {}
    await lg.aclose()


async def test_concurrent_async_calls(lg: MemcachedCache[Any]) -> None:
    keys: list[FullKey] = [(("graph", f"n{i % 5}"), f"k{i}") for i in range(50)]
    await asyncio.gather(*(lg.aset({key: (i, 60)}) for i, key in enumerate(keys)))
    results = await asyncio.gather(*(lg.aget([key]) for key in keys))
    assert [r[key] for r, key in zip(results, keys, strict=True)] == list(range(50))


def test_corrupted_data_is_a_miss(lg: MemcachedCache[Any]) -> None:
    lg.set({K1: ({"data": "valid"}, None)})
    backend = lg.cache.backend
    good = backend.get(lg.key_for(*K1))
    assert good is not None
    corrupt = {
        "garbage": b"invalid:data:format:too:many:colons",
        "empty": b"",
        "header only": good[:5],
        "truncated type": good[:8],
        "truncated body": good[:-3],
        "unknown version": good[:3] + b"\x09" + good[4:],
        "unknown flag": good[:4] + b"\x80" + good[5:],
        "bad zlib": good[:4] + b"\x01" + good[5:],
        "unknown serde type": b"mlg\x01\x00\x05other" + b"\x00",
        "bad msgpack": b"mlg\x01\x00\x07msgpack\xc1\xc1\xc1",
        "pickle": b"mlg\x01\x00\x06pickle\x80\x04K\x01.",
    }
    for i, raw in enumerate(corrupt.values()):
        key: FullKey = (("graph", "node"), f"corrupt{i}")
        backend.set(lg.key_for(*key), raw, None)
    found = lg.get([K1, *((("graph", "node"), f"corrupt{i}") for i in range(len(corrupt)))])
    assert found == {K1: {"data": "valid"}}
    assert lg.cache.stats("langgraph")["decode_errors"] == len(corrupt)


def test_an_entry_written_with_another_serializer_is_a_miss(cache: memo.Cache) -> None:
    MemcachedCache(cache, serde=memo.Codec()).set({K1: ("codec", None)})
    assert MemcachedCache(cache).get([K1]) == {}
    MemcachedCache(cache).set({K1: ("jsonplus", None)})
    assert MemcachedCache(cache, serde=memo.Codec()).get([K1]) == {}


def test_memo_codec_as_serializer(cache: memo.Cache) -> None:
    lg = MemcachedCache(cache, serde=memo.Codec())
    value = deque([("answer", (1, 2)), ("when", None)])
    lg.set({K1: (value, None)})
    assert lg.get([K1]) == {K1: value}


ODD_NAMESPACES = [
    (),
    ("",),
    ("", ""),
    ("graph:with:colons", "node-with-dashes"),
    ("a:b",),
    ("a", "b"),
    ("a/b",),
    ('["a", "b"]',),
    ("node with spaces", "tab\there", "new\nline"),
    ("\x00\x01control",),
    ("ünïcödé", "日本語", "emoji 🎉"),
    ("lone \udc80 surrogate",),
    ("x" * 1000, "y" * 300),
    ("__pregel_ns_writes", "tests.module.Outer.<locals>.fn", "node name"),
]


def test_odd_namespaces_and_keys_stay_apart(lg: MemcachedCache[Any]) -> None:
    keys: list[FullKey] = [(ns, key) for ns in ODD_NAMESPACES for key in ("k", "k k", "", "z" * 2000)]
    lg.set({key: (i, None) for i, key in enumerate(keys)})
    assert lg.get(keys) == {key: i for i, key in enumerate(keys)}
    for ns, key in keys:
        storage = lg.key_for(ns, key)
        assert len(storage.encode()) <= 250 and storage.isascii()
        assert not any(ch.isspace() or ord(ch) < 33 for ch in storage)
    lg.clear([("a", "b"), ("",)])  # and the namespaces nested in them: ("", "") too
    cleared = {("a", "b"), ("",), ("", "")}
    assert lg.get(keys) == {key: i for i, key in enumerate(keys) if key[0] not in cleared}


def test_large_values(lg: MemcachedCache[Any], cache: memo.Cache) -> None:
    large = {"large_list": list(range(1000)), "nested": {"data": "x" * 1000}}
    big_text = "word " * 100_000  # 500 KB, compressed far below the item size
    lg.set({K1: (large, None), (("g", "n"), "big"): (big_text, None)})
    assert lg.get([K1, (("g", "n"), "big")]) == {K1: large, (("g", "n"), "big"): big_text}
    assert len(cache.backend.get(lg.key_for(("g", "n"), "big")) or b"") < 100_000
    huge = os.urandom(3_000_000)  # does not compress, beyond the item size: refused, a miss
    lg.set({(("g", "n"), "huge"): (huge, None)})
    assert lg.get([(("g", "n"), "huge")]) == {}
    assert cache.stats("langgraph")["not_stored"] == 1


class Answer(pydantic.BaseModel):
    text: str
    score: float


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_langgraph_values_round_trip(lg: MemcachedCache[Any]) -> None:
    """What a graph stores: a deque of (channel, value) writes holding messages and models."""
    writes = deque(
        [
            ("messages", [HumanMessage("hi", id="1"), AIMessage("hello", id="2")]),
            ("answer", Answer(text="t", score=0.5)),
            ("point", Point(1, 2)),
            ("raw", b"\x00\xff"),
            ("nothing", None),
        ]
    )
    values = {K1: writes, (("g", "n"), "none"): None, (("g", "n"), "bytes"): b"abc"}
    lg.set({key: (value, None) for key, value in values.items()})
    found = lg.get(list(values))
    assert set(found) == set(values)
    reference = InMemoryCache()  # what LangGraph's own cache gives back for the same values
    reference.set({key: (value, None) for key, value in values.items()})
    assert found == reference.get(list(values))
    messages = dict(found[K1])["messages"]
    assert isinstance(messages[1], AIMessage) and messages[1].content == "hello"
    assert dict(found[K1])["answer"] == Answer(text="t", score=0.5)


def test_a_value_that_cannot_be_encoded_is_skipped(lg: MemcachedCache[Any]) -> None:
    class Opaque:
        pass

    lg.set({K1: (Opaque(), None), (("g", "n"), "ok"): ("fine", None)})
    assert lg.get([K1, (("g", "n"), "ok")]) == {(("g", "n"), "ok"): "fine"}
    assert lg.cache.stats("langgraph")["encode_errors"] == 1


# -- clearing is exact, and owns only this cache's entries --------------------------------


def test_clear_leaves_decorated_functions_and_other_caches_alone(cache: memo.Cache) -> None:
    calls: list[int] = []

    @cache.cached(ns="functions")
    def square(x: int) -> int:
        calls.append(x)
        return x * x

    graphs, other = MemcachedCache(cache), MemcachedCache(cache, name="other")
    square(3)
    graphs.set({K1: ("mine", None)})
    other.set({K1: ("theirs", None)})
    graphs.clear()
    assert graphs.get([K1]) == {}
    assert other.get([K1]) == {K1: "theirs"}
    assert square(3) == 9 and calls == [3]
    cache.clear(ns="functions")
    assert other.get([K1]) == {K1: "theirs"}
    cache.clear()  # the whole memo Cache: every owner's entries go
    assert other.get([K1]) == {}


@pytest.mark.memcached
def test_a_clear_is_seen_by_other_processes_within_ns_refresh(memcached_url: str) -> None:
    prefix = f"lg{uuid.uuid4().hex[:8]}:"
    with (
        MemcachedCache.from_url(memcached_url, prefix=prefix, ns_refresh=0.2) as here,
        MemcachedCache.from_url(memcached_url, prefix=prefix, ns_refresh=0.2) as there,
    ):
        here.set({K1: ("v", None), (("other",), "k"): ("kept", None)})
        assert there.get([K1]) == {K1: "v"}
        here.clear([K1[0]])
        assert here.get([K1]) == {}
        time.sleep(0.3)
        assert there.get([K1, (("other",), "k")]) == {(("other",), "k"): "kept"}
        there.clear()
        time.sleep(0.3)
        assert here.get([(("other",), "k")]) == {}


def test_stats_count_hits_misses_and_sets(lg: MemcachedCache[Any]) -> None:
    lg.set({K1: (1, None), (("g",), "k"): (2, None)})
    lg.get([K1, (("g",), "k"), (("g",), "absent")])
    stats = lg.cache.stats("langgraph")
    assert (stats["hits"], stats["misses"], stats["sets"], stats["errors"]) == (2, 1, 2, 0)


def test_one_batch_read_and_write_per_call(make_cache: Callable[..., memo.Cache]) -> None:
    lg = MemcachedCache(make_cache(ns_refresh=60))
    backend = lg.cache.backend
    calls: list[str] = []
    keys: list[FullKey] = [(("g", f"node{i % 7}"), f"k{i}") for i in range(100)]
    lg.get(keys)  # reads the generations, which are then trusted for ns_refresh seconds
    with pytest.MonkeyPatch.context() as patch:
        for method in ("get_many", "set_many", "add", "delete"):
            patch.setattr(backend, method, _recording(getattr(backend, method), method, calls))
        lg.set({key: (i, 60) for i, key in enumerate(keys)})
        assert len(lg.get(keys)) == 100
    assert calls == ["set_many", "get_many"]


def _recording(method: Callable[..., Any], name: str, calls: list[str]) -> Callable[..., Any]:
    def record(*args: Any) -> Any:
        calls.append(name)
        return method(*args)

    return record


# -- from_url, from_servers, context managers --------------------------------------------


def test_from_url_owns_and_closes_its_cache(backend_url: str) -> None:
    with MemcachedCache.from_url(backend_url, prefix=f"lg{uuid.uuid4().hex[:8]}:", name="built") as lg:
        lg.set({K1: ("v", None)})
        assert lg.get([K1]) == {K1: "v"}
        assert lg.cache.prefix.startswith("lg") and "built" in repr(lg)


async def test_from_url_async_context_manager(backend_url: str) -> None:
    async with MemcachedCache.from_url(backend_url, prefix=f"lg{uuid.uuid4().hex[:8]}:") as lg:
        await lg.aset({K1: ("v", None)})
        assert await lg.aget([K1]) == {K1: "v"}


def test_a_passed_cache_is_not_closed(cache: memo.Cache) -> None:
    closed: list[bool] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cache, "close", lambda: closed.append(True))
        with MemcachedCache(cache) as lg:
            lg.set({K1: ("v", None)})
    assert closed == []


@pytest.mark.memcached
def test_from_servers(memcached_servers: Callable[..., list[Any]]) -> None:
    first, second = memcached_servers(2)
    servers = [first.address, (second.host, second.port)]
    with MemcachedCache.from_servers(servers, prefix=f"lg{uuid.uuid4().hex[:8]}:") as lg:
        keys: list[FullKey] = [(("g", "n"), f"k{i}") for i in range(40)]
        lg.set({key: (i, None) for i, key in enumerate(keys)})
        assert lg.get(keys) == {key: i for i, key in enumerate(keys)}
    with pytest.raises(memo.ConfigurationError):
        MemcachedCache.from_servers([])


@pytest.mark.memcached
def test_a_batch_is_one_request_per_server(memcached_servers: Callable[..., list[Any]]) -> None:
    servers = memcached_servers(2, verbose=True)
    # Classic, so that a batch is one `get` line in each server's log (the meta form, quiet `mg`
    # lines ended by `mn`, is shown in tests/memcached/test_proto_wire.py).
    url = "memcached://" + ",".join(server.address for server in servers) + "?protocol=classic"
    with MemcachedCache.from_url(url) as lg:
        keys: list[FullKey] = [(("g", f"node {i % 3}"), f"k{i}") for i in range(100)]
        lg.set({key: (i, None) for i, key in enumerate(keys)})
        before = [len(server.commands("get")) for server in servers]
        assert len(lg.get(keys)) == 100
        after = [len(server.commands("get")) for server in servers]
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1]


# -- an unavailable server -----------------------------------------------------------------


def test_unavailable_server_get_set_and_clear_fail_open() -> None:
    events: list[memo.Event] = []
    with MemcachedCache.from_url(
        refused_url(), connect_timeout=0.2, timeout=0.2, on_event=events.append
    ) as lg:
        assert lg.get([K1]) == {}
        lg.set({K1: ("dropped", None)})
        assert lg.get([K1]) == {}
        stats = lg.cache.stats()["total"]
        assert stats["errors"] >= 3 and stats["hits"] == 0
        before = lg.cache.stats(lg.name)["errors"]
        assert lg.clear() is None  # fails open: counted and reported, never raised
        assert lg.clear([K1[0]]) is None
        assert lg.cache.stats(lg.name)["errors"] == before + 2
        failed = [e for e in events if e.kind == "error" and e.source == "langgraph" and e.ns == lg.name]
        assert len(failed) >= 2 and all(isinstance(e.error, memo.BackendError) for e in failed)
        assert lg.memcached_available is False  # every server's breaker is open
        with pytest.raises(memo.BackendUnavailable):
            lg.key_for(*K1)


async def test_unavailable_server_async() -> None:
    async with MemcachedCache.from_url(refused_url(), connect_timeout=0.2, timeout=0.2) as lg:
        assert await lg.aget([K1]) == {}
        await lg.aset({K1: ("dropped", None)})
        assert await lg.aget([K1]) == {}
        before = lg.cache.stats(lg.name)["errors"]
        assert await lg.aclear([K1[0]]) is None
        assert await lg.aclear() is None
        assert lg.cache.stats(lg.name)["errors"] == before + 2


@pytest.mark.memcached
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_clear_that_failed_still_wins(memcached_servers: Callable[..., list[Any]], flavour: str) -> None:
    """A clear while memcached hangs fails open; the entries it meant to drop are never served again.

    The server is paused, not killed, so the entries are still there when it answers again.
    """
    (server,) = memcached_servers(1)
    other: FullKey = (("elsewhere",), "k")
    with MemcachedCache.from_url(server.url, connect_timeout=0.2, timeout=0.2, retry_after=0.1) as lg:

        def run(step: Any) -> Any:
            return asyncio.run(step) if flavour == "async" else step

        def get(keys: list[FullKey]) -> dict[FullKey, Any]:
            return run(lg.aget(keys)) if flavour == "async" else lg.get(keys)  # type: ignore[no-any-return]

        lg.set({K1: ("old", None), other: ("kept", None)})
        assert get([K1, other]) == {K1: "old", other: "kept"}
        server.pause()
        try:
            if flavour == "async":
                assert asyncio.run(lg.aclear([K1[0]])) is None
            else:
                assert lg.clear([K1[0]]) is None
            assert lg.cache.stats(lg.name)["errors"] >= 1
        finally:
            server.resume()
        assert get([K1, other]) == {other: "kept"}  # the clear is not written yet: K1's namespace bypassed
        lg.set({K1: ("while pending", None)})  # not written either
        time.sleep(1.1)  # the clear is retried before the next read
        assert get([K1, other]) == {other: "kept"}
        lg.set({K1: ("new", None)})
        assert get([K1, other]) == {K1: "new", other: "kept"}


def test_a_raising_cache_still_fails_open_for_graphs() -> None:
    """`on_error="raise"` on the Cache is for decorated functions; a graph run never fails."""
    with MemcachedCache.from_url(refused_url(), on_error="raise", connect_timeout=0.2) as lg:
        assert lg.get([K1]) == {}
        lg.set({K1: ("dropped", None)})


@pytest.mark.memcached
def test_a_server_that_goes_away_and_comes_back(memcached_servers: Callable[..., list[Any]]) -> None:
    (server,) = memcached_servers(1)
    with MemcachedCache.from_url(server.url, connect_timeout=0.2, timeout=0.5, retry_after=0.1) as lg:
        lg.set({K1: ("before", None)})
        assert lg.get([K1]) == {K1: "before"}
        server.kill()
        assert lg.get([K1]) == {}
        lg.set({K1: ("while down", None)})
        server.start()  # an empty server: old entries are gone, new ones work
        time.sleep(1.2)  # past ns_refresh and the breaker's retry_after
        assert lg.get([K1]) == {}
        lg.set({K1: ("after", None)})
        assert lg.get([K1]) == {K1: "after"}
