"""The value API: cache.get/set/delete/get_or_set/get_many/set_many and async twins."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import memo
from memo._keys import safe_segment
from memo._values import value_key

MakeCache = Callable[..., memo.Cache]
MISSING = object()


@memo.register_type
@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


VALUES: list[Any] = [
    (1, 2),
    [1, (2, 3)],
    {"a": {1, 2}},
    {1: "int key"},
    dt.datetime(2024, 1, 2, 3, 4, tzinfo=dt.timezone.utc),
    b"\x00bytes",
    Point(1, 2),
    1.0,
    "x" * 50_000,  # compressed
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_values_come_back_with_their_types(cache: memo.Cache, value: Any) -> None:
    assert cache.set("k", value) is True
    got = cache.get("k")
    assert got == value and type(got) is type(value)


def test_a_miss_returns_the_default_and_a_stored_none_is_a_hit(cache: memo.Cache) -> None:
    assert cache.get("absent") is None
    assert cache.get("absent", MISSING) is MISSING
    cache.set("none", None)
    assert cache.get("none", MISSING) is None
    assert cache.stats("default")["hits"] == 1
    assert cache.stats("default")["misses"] == 2


def test_namespaces_keep_values_apart_and_clear_drops_them(cache: memo.Cache) -> None:
    cache.set("k", 1, ns="a")
    cache.set("k", 2, ns="b")
    assert (cache.get("k", ns="a"), cache.get("k", ns="b")) == (1, 2)
    cache.clear("a")
    assert cache.get("k", ns="a") is None
    assert cache.get("k", ns="b") == 2
    cache.clear()
    assert cache.get("k", ns="b") is None


def test_delete(cache: memo.Cache) -> None:
    cache.set("k", 1)
    assert cache.delete("k") is True
    assert cache.delete("k") is False
    assert cache.get("k") is None


@pytest.mark.parametrize(
    "key",
    ["with space", "new\nline", "tab\there", "ünïcødé ключ", "\x00\x01", "x" * 1000, "", ":=~", "a:b"],
    ids=repr,
)
def test_any_string_is_a_key(cache: memo.Cache, key: str) -> None:
    cache.set(key, key)
    assert cache.get(key) == key


def test_keys_that_sanitise_alike_stay_apart(cache: memo.Cache) -> None:
    cache.set("a b", 1)
    cache.set("a_b", 2)
    cache.set("a\tb", 3)
    assert [cache.get(k) for k in ("a b", "a_b", "a\tb")] == [1, 2, 3]


def test_the_namespace_and_key_are_hashed_apart() -> None:
    assert value_key("p:", "a:b", "g", "c") != value_key("p:", "a", "g", "b:c")


def test_value_keys_are_memcached_safe() -> None:
    longest_prefix = "p" * 64
    key = value_key(longest_prefix, "ns with space" * 10, "01234567.89abcdef", "k\x00\n" * 400)
    assert len(key) <= 250 and key.isascii() and key.isprintable() and " " not in key
    with pytest.raises(memo.ConfigurationError, match="namespace is a str"):
        value_key("p", 1, "g", "k")  # type: ignore[arg-type]
    with pytest.raises(memo.ConfigurationError, match="without NUL"):
        value_key("p", "a\x00b", "g", "k")


@given(st.text())
def test_no_function_key_part_starts_like_a_value_key(name: str) -> None:
    # Function keys are <prefix><ns>:<sanitised name>:...; value keys <prefix><ns>:=<key>:...
    assert not safe_segment(name, 64).startswith("=")


def test_a_value_never_reads_a_function_entry(cache: memo.Cache) -> None:
    @cache.cached(ns="default")
    def f() -> int:
        return 1

    f()
    readable_name = f.key_for().split(":")[-3]
    assert cache.get(readable_name) is None
    assert not any(cache.get(part) for part in f.key_for().split(":"))


def test_non_string_keys_are_refused(cache: memo.Cache) -> None:
    with pytest.raises(TypeError, match="strings"):
        cache.get(42)  # type: ignore[arg-type]


def test_ttl(elapse: Callable[[float], None], make_cache: MakeCache) -> None:
    cache = make_cache(ttl=0.3)
    cache.set("default-ttl", 1)
    cache.set("longer", 1, ttl=30)
    cache.set("forever", 1, ttl=None)
    elapse(0.4)
    assert cache.get("default-ttl") is None
    assert cache.get("longer") == 1
    assert cache.get("forever") == 1


def test_bad_ttl_is_refused(cache: memo.Cache) -> None:
    with pytest.raises(memo.ConfigurationError):
        cache.set("k", 1, ttl=0)


def test_undecodable_bytes_are_a_miss(cache: memo.Cache) -> None:
    events: list[memo.Event] = []
    cache.on_event = events.append
    gen = cache.generation("default")
    assert gen is not None
    cache.backend.set(value_key(cache.prefix, "default", gen, "k"), b"garbage", None)
    assert cache.get("k", MISSING) is MISSING
    assert cache.stats("default")["decode_errors"] == 1
    assert [e.kind for e in events] == ["decode_error", "miss"]
    assert cache.get_or_set("k", lambda: 5) == 5
    assert cache.get("k") == 5


def test_an_unencodable_value_is_not_stored_unless_strict(
    make_cache: MakeCache, caplog: pytest.LogCaptureFixture
) -> None:
    cache = make_cache()
    with caplog.at_level(logging.WARNING, "memo"):
        assert cache.set("k", object()) is False
    assert cache.stats("default")["encode_errors"] == 1
    assert "not cached" in caplog.text
    assert type(cache.get_or_set("k", object)) is object  # returned, uncached
    with pytest.raises(memo.SerializationError):
        make_cache(strict=True).set("k", object())


def test_get_many_and_set_many(cache: memo.Cache) -> None:
    assert cache.set_many({"a": 1, "b": (2,), "c d": None}, ns="n") == 3
    assert cache.get_many(["a", "b", "c d", "zz"], ns="n") == {"a": 1, "b": (2,), "c d": None}
    assert cache.get_many(["a"], ns="other") == {}
    assert cache.set_many({}) == 0


def test_get_or_set_computes_once_and_stores(cache: memo.Cache) -> None:
    calls = []
    assert cache.get_or_set("k", lambda: calls.append(1) or [1]) == [1]
    assert cache.get_or_set("k", lambda: calls.append(1) or [2]) == [1]
    assert len(calls) == 1


def test_get_or_set_runs_once_for_concurrent_threads(cache: memo.Cache) -> None:
    calls = []

    def slow() -> list[int]:
        calls.append(1)
        time.sleep(0.2)
        return [42]

    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_set("hot", slow))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert results == [[42]] * 8
    # every caller got its own object: mutating one cannot change another's
    assert len({id(r) for r in results}) == 8


async def test_aget_or_set_runs_once_for_concurrent_tasks_sync_or_async_fn(cache: memo.Cache) -> None:
    calls = []

    async def slow() -> int:
        calls.append(1)
        await asyncio.sleep(0.1)
        return 7

    assert await asyncio.gather(*(cache.aget_or_set("a", slow) for _ in range(10))) == [7] * 10
    assert await cache.aget_or_set("b", lambda: calls.append(1) or 8) == 8
    assert await cache.aget_or_set("b", lambda: 9) == 8
    assert len(calls) == 2


async def test_async_twins(cache: memo.Cache) -> None:
    assert await cache.aget("k", MISSING) is MISSING
    assert await cache.aset("k", (1,), ttl=60) is True
    assert await cache.aget("k") == (1,)
    assert cache.get("k") == (1,)  # sync and async share keys
    assert await cache.aset_many({"x": 1, "y": 2}) == 2
    assert await cache.aget_many(["x", "y", "k", "none"]) == {"x": 1, "y": 2, "k": (1,)}
    assert await cache.adelete("k") is True
    assert await cache.aget("k") is None


def test_events_of_the_value_api(make_cache: MakeCache) -> None:
    events: list[memo.Event] = []
    cache = make_cache(on_event=events.append)
    cache.get("k", ns="n")
    cache.set("k", 1, ns="n")
    cache.get("k", ns="n")
    assert [(e.kind, e.ns, e.source, e.function) for e in events] == [
        ("miss", "n", "values", None),
        ("set", "n", "values", None),
        ("hit", "n", "values", None),
    ]
    assert all(e.duration is not None and 0 <= e.duration < 5 for e in events)


def test_several_hooks(memory_cache: memo.Cache) -> None:
    a: list[memo.Event] = []
    b: list[memo.Event] = []
    cache = memo.Cache(on_event=[a.append, b.append])
    cache.get("k")
    assert len(a) == len(b) == 1
    with pytest.raises(memo.ConfigurationError):
        memo.Cache(on_event=[1])  # type: ignore[list-item]


def test_a_failing_hook_is_logged_once_and_never_breaks_a_call(caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: memo.Event) -> None:
        raise RuntimeError("exporter down")

    cache = memo.Cache(on_event=broken)
    with caplog.at_level(logging.ERROR, "memo"):
        for i in range(3):
            assert cache.get_or_set(f"k{i}", lambda: 1) == 1
    assert len(caplog.records) == 1 and "exporter down" in caplog.text


def test_events_are_frozen() -> None:
    from memo._events import make_event

    event = memo.Event("hit", "ns")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.kind = "miss"  # type: ignore[misc]
    assert (event.function, event.duration, event.error, event.source) == (None, None, None, "cached")
    error = ValueError("x")
    fast = make_event("error", "n", "m.f", 0.5, error, "values")
    assert fast == memo.Event("error", "n", "m.f", 0.5, error, "values")
    assert type(fast) is memo.Event and hash(fast) == hash(
        memo.Event("error", "n", "m.f", 0.5, error, "values")
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.ns = "other"  # type: ignore[misc]


# -- failing open -------------------------------------------------------------------


def dead_cache(**options: Any) -> memo.Cache:
    return memo.Cache("memcached://127.0.0.1:1", connect_timeout=0.2, timeout=0.2, **options)


def test_the_value_api_fails_open() -> None:
    events: list[memo.Event] = []
    cache = dead_cache(on_event=events.append)
    assert cache.get("k", MISSING) is MISSING
    assert cache.set("k", 1) is False
    assert cache.delete("k") is False
    assert cache.get_or_set("k", lambda: 3) == 3
    assert cache.get_many(["a"]) == {}
    assert cache.set_many({"a": 1}) == 0
    assert cache.stats("default")["errors"] >= 6


async def test_the_async_value_api_fails_open() -> None:
    cache = dead_cache()
    assert await cache.aget("k", MISSING) is MISSING
    assert await cache.aset("k", 1) is False
    assert await cache.aget_or_set("k", lambda: 3) == 3


def test_on_error_raise_raises() -> None:
    with pytest.raises(memo.BackendError):
        dead_cache(on_error="raise").get("k")


@pytest.mark.memcached
def test_a_read_failure_reaches_the_hook(memcached_servers: Any) -> None:
    (server,) = memcached_servers(1)
    events: list[memo.Event] = []
    cache = memo.Cache(server.url, on_event=events.append, timeout=0.2)
    cache.set("k", 1)
    server.kill()
    assert cache.get("k", MISSING) is MISSING
    errors = [e for e in events if e.kind == "error"]
    assert errors and isinstance(errors[-1].error, memo.BackendError) and errors[-1].source == "values"


# -- a backend given as an object --------------------------------------------------------


def test_cache_takes_a_backend_instance() -> None:
    from memo._memory import MemoryBackend

    backend = MemoryBackend(max_entries=10)
    cache = memo.Cache(backend=backend)
    assert cache.backend is backend
    cache.set("k", 1)
    assert len(backend) == 1  # the value: generation tokens live outside the entries
    assert "MemoryBackend" in repr(cache)


def test_backend_must_be_a_backend_and_comes_alone() -> None:
    from memo._memory import MemoryBackend

    with pytest.raises(memo.ConfigurationError, match="Backend instance"):
        memo.Cache(backend="memory://")  # type: ignore[arg-type]
    with pytest.raises(memo.ConfigurationError, match="not both"):
        memo.Cache("memcached://127.0.0.1:1", backend=MemoryBackend())
    with pytest.raises(memo.ConfigurationError, match="not both"):
        memo.Cache(backend=MemoryBackend(), max_entries=3)


# -- get_or_set under leases: two Caches on one store stand for two processes ----------------


@pytest.fixture
def two_caches(backend_url: str) -> Iterator[tuple[memo.Cache, memo.Cache]]:
    prefix = f"t{uuid.uuid4().hex[:10]}:"
    if backend_url == "memory://":
        from memo._memory import MemoryBackend

        shared = MemoryBackend()
        pair = tuple(memo.Cache(backend=shared, prefix=prefix, ns_refresh=0) for _ in range(2))
    else:
        pair = tuple(memo.Cache(backend_url, prefix=prefix, ns_refresh=0) for _ in range(2))
    # ns_refresh=0: each sees the other's clears at once, as if it re-read generations every call
    yield pair  # type: ignore[misc]
    for cache in pair:
        cache.close()


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    FILLING.clear()
    thread.start()
    return thread, out


#: Set by `slow` once a fill computes (its lease is held): the test acts then, not after a guess.
FILLING = threading.Event()


def slow(value: Any, calls: list[Any], seconds: float = 0.3) -> Callable[[], Any]:
    def compute() -> Any:
        calls.append(value)
        FILLING.set()
        time.sleep(seconds)
        return value

    return compute


def filling() -> None:
    """Wait until the fill started by `slow` in another thread computes."""
    assert FILLING.wait(10)


def test_one_process_computes_the_others_wait(two_caches: tuple[memo.Cache, memo.Cache]) -> None:
    a, b = two_caches
    events: list[memo.Event] = []
    b.on_event = events.append
    calls: list[Any] = []
    thread, out = in_thread(lambda: a.get_or_set("k", slow([1], calls)))
    filling()
    assert b.get_or_set("k", slow([2], calls)) == [1]
    thread.join()
    assert out == [[1]] and calls == [[1]]
    assert "lease_wait" in [e.kind for e in events]
    assert b.stats("default")["lease_waits"] == 1


def test_a_delete_during_a_fill_wins(two_caches: tuple[memo.Cache, memo.Cache]) -> None:
    a, b = two_caches
    events: list[memo.Event] = []
    a.on_event = events.append
    thread, out = in_thread(lambda: a.get_or_set("k", slow("old", [])))
    filling()
    b.delete("k")  # the source changed: whatever the fill read is stale
    thread.join()
    assert out == ["old"]  # the caller still gets what it computed...
    assert b.get("k") is None  # ...but it was not stored over the invalidation
    assert a.stats("default")["lease_lost"] == 1
    assert [e.kind for e in events][-1] == "lease_lost"


def test_a_write_during_a_fill_wins(two_caches: tuple[memo.Cache, memo.Cache]) -> None:
    a, b = two_caches
    thread, _ = in_thread(lambda: a.get_or_set("k", slow("old", [])))
    filling()
    b.set("k", "new")
    thread.join()
    assert a.get("k") == "new"


def test_a_clear_during_a_fill_stores_nothing(two_caches: tuple[memo.Cache, memo.Cache]) -> None:
    a, b = two_caches
    thread, _ = in_thread(lambda: a.get_or_set("k", slow("old", []), ns="n"))
    filling()
    b.clear("n")  # another process: the fill stores under the old generation, unreachable
    thread.join()
    assert a.get("k", ns="n") is None and b.get("k", ns="n") is None
    thread, _ = in_thread(lambda: a.get_or_set("k", slow("old", []), ns="n"))
    filling()
    a.clear("n")  # this process: the fill sees it and leaves nothing behind
    thread.join()
    assert a.get("k", ns="n") is None
    assert a.stats("n")["lease_lost"] == 1


def test_a_failing_fill_releases_its_lease(two_caches: tuple[memo.Cache, memo.Cache]) -> None:
    a, b = two_caches

    def broken() -> Any:
        time.sleep(0.2)
        raise ValueError("source down")

    def fill_and_fail() -> None:
        with pytest.raises(ValueError, match="source down"):
            a.get_or_set("k", broken)

    thread, _ = in_thread(fill_and_fail)
    time.sleep(0.05)
    started = time.monotonic()
    assert b.get_or_set("k", lambda: "fresh") == "fresh"  # not lease_wait (5 s) later
    assert time.monotonic() - started < 2
    thread.join()


def test_a_lease_marker_reads_as_a_miss_not_a_decode_error(cache: memo.Cache) -> None:
    from memo._codec import lease_marker

    gen = cache.generation("default")
    assert gen is not None
    cache.backend.add(value_key(cache.prefix, "default", gen, "k"), lease_marker("someone"), 10)
    assert cache.get("k", MISSING) is MISSING
    assert cache.get_many(["k"]) == {}
    assert cache.stats("default")["decode_errors"] == 0


def test_ttls_are_exact(elapse: Callable[[float], None], cache: memo.Cache) -> None:
    # memcached keeps an item for whole seconds; the header's expiry makes it a miss on time.
    cache.set("k", 1, ttl=0.3)
    cache.get_or_set("g", lambda: 2, ttl=0.3)
    cache.set_many({"m": 3}, ttl=0.3)
    assert cache.get_many(["k", "g", "m"]) == {"k": 1, "g": 2, "m": 3}
    elapse(0.4)
    assert cache.get_many(["k", "g", "m"]) == {}
    assert cache.get_or_set("g", lambda: 5) == 5


def test_without_leases(make_cache: MakeCache) -> None:
    cache = make_cache(leases=False)
    events: list[memo.Event] = []
    cache.on_event = events.append
    assert cache.get_or_set("k", lambda: 1) == 1
    assert cache.get_or_set("k", lambda: 2) == 1
    assert [e.kind for e in events] == ["miss", "set", "hit"]


async def test_async_fills_under_the_lease_too(two_caches: tuple[memo.Cache, memo.Cache]) -> None:
    a, b = two_caches
    calls: list[str] = []

    async def fill(name: str) -> str:
        calls.append(name)
        await asyncio.sleep(0.2)
        return name

    results = await asyncio.gather(
        a.aget_or_set("k", lambda: fill("a")), b.aget_or_set("k", lambda: fill("b"))
    )
    assert len(calls) == 1 and results == [calls[0]] * 2


def test_a_slow_holder_is_waited_for_lease_wait_then_computed_around(
    two_caches: tuple[memo.Cache, memo.Cache],
) -> None:
    a, b = two_caches
    b.lease_wait = 0.2
    thread, out = in_thread(lambda: a.get_or_set("k", slow("holder", [], seconds=1.0)))
    filling()
    started = time.monotonic()
    assert b.get_or_set("k", lambda: "impatient") == "impatient"
    assert 0.15 < time.monotonic() - started < 0.9
    thread.join()
    assert out == ["holder"]
    assert b.get("k") == "holder"  # the impatient value was not stored over the lease
