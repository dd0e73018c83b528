"""What the fast batch path of `MemcachedCache` must keep exact, on memory:// and memcached.

Keys: LangGraph's 32-hex-digit keys are used as they are after a per-namespace
prefix, any other key is hashed; the two forms never meet, every key fits
memcached, and a clear changes the prefix. Values: the common envelope is read
inline, and a batch mixing serializer types or compressed entries decodes each
exactly.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import memo
from memo.langgraph import MemcachedCache


@pytest.fixture
def lg(cache: memo.Cache) -> MemcachedCache[Any]:
    return MemcachedCache(cache)


def hexkey() -> str:
    return uuid.uuid4().hex


def test_langgraph_keys_and_other_keys_never_share_an_entry(lg: MemcachedCache[Any]) -> None:
    ns = ("__pregel_ns_writes", "app.node", "node")
    digest = hexkey()
    pairs = {
        (ns, digest): ("hex", None),
        (ns, digest.upper()): ("upper", None),  # not LangGraph's form: hashed
        (ns, "h" + digest[:32]): ("h-prefixed", None),
        (ns, digest[:31]): ("short", None),
        (ns, "with space and ü"): ("odd", None),
        (ns, ""): ("empty", None),
        (("other",), digest): ("other namespace", None),
    }
    lg.set(pairs)
    assert lg.get(list(pairs)) == {key: value for key, (value, _) in pairs.items()}
    keys = {full: lg.key_for(*full) for full in pairs}
    assert len(set(keys.values())) == len(pairs)
    assert keys[(ns, digest)].endswith(digest)
    assert all(len(key) <= 250 and key.isascii() and " " not in key for key in keys.values())


def test_the_longest_names_still_fit_memcached() -> None:
    longest = memo.Cache("memory://", prefix="p" * 64)
    lg = MemcachedCache(longest, name="n" * 48)
    ns = ("__pregel_ns_writes", "m" * 300, "node name " * 30)
    for key in (hexkey(), "x" * 1000):
        made = lg.key_for(ns, key)
        assert len(made.encode()) <= 250 and " " not in made


def test_a_clear_changes_the_prefix_of_every_key(lg: MemcachedCache[Any]) -> None:
    ns = ("graph", "node")
    key = hexkey()
    before = lg.key_for(ns, key)
    lg.set({(ns, key): (1, None)})
    lg.clear([ns])
    assert lg.key_for(ns, key) != before and lg.get([(ns, key)]) == {}
    lg.set({(ns, key): (2, None)})
    lg.clear()
    assert lg.get([(ns, key)]) == {}


async def test_batches_of_mixed_serializer_types_decode_exactly(cache: memo.Cache) -> None:
    compressing = memo.Cache(cache.url, prefix=cache.prefix, compress_threshold=64)
    lg: MemcachedCache[Any] = MemcachedCache(compressing)
    ns = ("graph", "node")
    values = [
        {"a": 1},
        None,  # LangGraph's serializer: ("null", b"")
        b"\x93\x01\x02\x03",  # ("bytes", ...): valid msgpack bytes, must not be read as msgpack
        bytearray(b"ba"),
        "text",
        {"big": "z" * 500},  # compressed
        [1, [2, 3]],
        b"",
    ]
    pairs = {(ns, hexkey()): (value, None) for value in values}
    await lg.aset(pairs)
    order = list(pairs)
    for batch in (order, order[::-1], order[1::2] + order[::2]):
        assert lg.get(batch) == {key: pairs[key][0] for key in batch}
        assert await lg.aget(batch) == {key: pairs[key][0] for key in batch}
    found = lg.get(order)
    assert type(found[order[2]]) is bytes and type(found[order[3]]) is bytearray
    assert lg.cache.stats("langgraph")["decode_errors"] == 0
    compressing.close()
    await compressing.aclose()
