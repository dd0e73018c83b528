"""`cached_many`: one multi-get, the function called with only the missing items, a lease per item."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

import memo
from memo._batch import together
from memo._keys import KeyMaker
from memo.testing import record_events

MakeCache = Callable[..., memo.Cache]


@pytest.fixture(params=["sync", "async"])
def flavour(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Users:
    """A memoized `get_users` in either flavour, with a record of what it was asked."""

    def __init__(self, cache: memo.Cache, flavour: str, **options: Any) -> None:
        self.cache, self.flavour = cache, flavour
        self.calls: list[tuple[list[int], bool]] = []
        self.loop = asyncio.new_event_loop() if flavour == "async" else None
        self.missing: set[int] = {99}
        self.during: Callable[[], None] | None = None
        options.setdefault("each", "ids")
        calls, users = self.calls, self

        def answer(ids: list[int], full: bool) -> dict[int, dict[str, Any]]:
            calls.append((list(ids), full))
            if users.during is not None:
                users.during()
            return {i: {"id": i, "full": full} for i in ids if i not in users.missing}

        if flavour == "async":

            @cache.cached_many(ns="users", ttl=60, **options)
            async def get_users(ids: list[int], *, full: bool = False) -> dict[int, dict[str, Any]]:
                return answer(ids, full)

        else:

            @cache.cached_many(ns="users", ttl=60, **options)
            def get_users(ids: list[int], *, full: bool = False) -> dict[int, dict[str, Any]]:
                return answer(ids, full)

        self.fn: Any = get_users

    def __call__(self, ids: list[int], **kwargs: Any) -> Any:
        if self.loop is not None:
            return self.loop.run_until_complete(self.fn(ids, **kwargs))
        return self.fn(ids, **kwargs)

    def invalidate(self, **kwargs: Any) -> bool:
        if self.loop is not None:
            return bool(self.loop.run_until_complete(self.fn.ainvalidate(**kwargs)))
        return bool(self.fn.invalidate(**kwargs))

    def key_for(self, **kwargs: Any) -> list[str]:
        if self.loop is not None:
            return list(self.loop.run_until_complete(self.fn.akey_for(**kwargs)))
        return list(self.fn.key_for(**kwargs))

    def close(self) -> None:
        if self.loop is not None:
            self.loop.run_until_complete(self.cache.aclose())
            self.loop.close()


def user(i: int, full: bool = False) -> dict[str, Any]:
    return {"id": i, "full": full}


@pytest.fixture
def users(cache: memo.Cache, flavour: str) -> Any:
    made = Users(cache, flavour)
    yield made
    made.close()


def test_computes_only_the_missing_items_once_and_returns_them_in_the_order_asked(users: Users) -> None:
    assert users([1, 2, 3]) == {1: user(1), 2: user(2), 3: user(3)}
    result = users([3, 4, 1, 99, 4])
    assert result == {3: user(3), 4: user(4), 1: user(1)}
    assert list(result) == [3, 4, 1]
    # Only the missing ones, once each, with the other arguments as given.
    assert users.calls == [([1, 2, 3], False), ([4, 99], False)]
    # The other arguments are part of each item's key.
    assert users([1, 4], full=True) == {1: user(1, True), 4: user(4, True)}
    assert users.calls[-1] == ([1, 4], True)
    # An item the function does not return is not cached: asked again, computed again.
    assert users([99, 1]) == {1: user(1)}
    assert users.calls[-1] == ([99], False)
    assert users([]) == {}
    info = users.fn.cache_info()
    assert info["hits"] == 2 + 1 and info["misses"] == 3 + 2 + 2 + 1 and info["sets"] == 3 + 1 + 2


def test_cache_absent_caches_an_item_the_function_did_not_return(cache: memo.Cache, flavour: str) -> None:
    made = Users(cache, flavour, cache_absent=True)
    try:
        assert made([1, 99]) == {1: user(1)}
        assert made([99, 1]) == {1: user(1)}
        assert made.calls == [([1, 99], False)]
        made.missing = set()
        assert made.invalidate(ids=[99])
        assert made([99]) == {99: user(99)}
    finally:
        made.close()


def test_invalidate_and_key_for_name_exactly_the_items_given(users: Users) -> None:
    users([1, 2, 3])
    keys = users.key_for(ids=[1, 2, 3])
    assert len(set(keys)) == 3
    assert users.key_for(ids=[2]) == [keys[1]]
    assert users.key_for(ids=[2], full=True) != [keys[1]]
    assert users.cache.backend.get(keys[1]) is not None
    assert users.invalidate(ids=[2])
    assert users.cache.backend.get(keys[1]) is None
    assert [users.cache.backend.get(k) is not None for k in (keys[0], keys[2])] == [True, True]
    assert users([1, 2, 3]) == {1: user(1), 2: user(2), 3: user(3)}
    assert users.calls[-1] == ([2], False)


def test_item_keys_are_those_of_a_call_with_the_item_and_type_exact() -> None:
    def get(ids: Any, scale: float, *, tag: str = "x") -> dict[Any, Any]:
        return {}

    maker = KeyMaker.for_callable(get, "ns", None, scope=lambda tag: tag.upper())
    items: list[Any] = [1, "1", 1.0, True, None, (1, 2), 2**70, "\ud800", frozenset({3})]
    digests = maker.each_digests((["ignored"], 2.5), {"tag": "t"}, "ids", items)
    assert digests == [maker.digest((item, 2.5), {"tag": "t"}) for item in items]
    assert len(set(digests)) == len(items)
    # Remembered digests are the same, per exact type and per other arguments.
    known: dict[Any, str] = {}
    for _ in range(2):
        assert maker.each_digests(([], 2.5), {"tag": "t"}, "ids", items, known) == digests
    assert len(known) == 4  # 1, "1", 2**70 and "\\ud800": int and str items only
    other = maker.each_digests(([], 3.5), {"tag": "t"}, "ids", [1, True, "1"], known)
    assert other == [maker.digest((item, 3.5), {"tag": "t"}) for item in (1, True, "1")]
    with pytest.raises(memo.UnkeyableArgumentError, match="ids"):
        maker.each_digests(([], 2.5), {}, "ids", [object()])


def test_keys_never_meet_a_cached_function_of_the_same_name() -> None:
    cache = memo.Cache("memory://")

    def get_users(ids: list[int]) -> dict[int, int]:
        return {i: i for i in ids}

    many = cache.cached_many(ns="users", each="ids")(get_users)
    one = cache.cached(ns="users")(get_users)
    assert many.key_for(ids=[2]) != [one.key_for(2)]
    assert one([2]) == {2: 2} and many([2]) == {2: 2}


def test_an_invalidate_during_the_fill_voids_only_that_items_store(users: Users) -> None:
    def invalidate_one() -> None:
        users.during = None
        # What another process does meanwhile: change item 1 and invalidate it.
        assert users.fn.invalidate(ids=[1])

    users.during = invalidate_one
    assert users([1, 2]) == {1: user(1), 2: user(2)}
    assert users.fn.cache_info()["lease_lost"] == 1
    assert users([1, 2]) == {1: user(1), 2: user(2)}
    assert users.calls == [([1, 2], False), ([1], False)]


def test_a_clear_during_the_fill_stores_nothing(users: Users) -> None:
    def clear() -> None:
        users.during = None
        users.cache.clear("users")

    users.during = clear
    users([1, 2])
    users([1, 2])
    assert users.calls == [([1, 2], False), ([1, 2], False)]


def test_items_another_caller_is_computing_are_waited_for_not_computed_twice(cache: memo.Cache) -> None:
    calls: list[list[int]] = []
    entered, release = threading.Event(), threading.Event()

    @cache.cached_many(ns="w", ttl=60, each="ids")
    def slow(ids: list[int]) -> dict[int, int]:
        calls.append(list(ids))
        if 1 in ids:
            entered.set()
            assert release.wait(5)
        return {i: i * 10 for i in ids}

    results: list[Any] = []
    first = threading.Thread(target=lambda: results.append(slow([1, 2])))
    first.start()
    assert entered.wait(5)
    # 2 is being computed by the first caller: only 3 is computed here, then 2 is waited for.
    threading.Timer(0.2, release.set).start()
    assert slow([2, 3]) == {2: 20, 3: 30}
    first.join()
    assert results == [{1: 10, 2: 20}]
    assert sorted(map(sorted, calls)) == [[1, 2], [3]]
    assert slow.cache_info()["lease_waits"] == 1


def test_an_exception_releases_every_lease_and_propagates(users: Users) -> None:
    def fail() -> None:
        raise RuntimeError("source down")

    users.during = fail
    with pytest.raises(RuntimeError, match="source down"):
        users([1, 2])
    for key in users.key_for(ids=[1, 2]):
        assert users.cache.backend.get(key) is None  # no lease marker left behind
    users.during = None
    assert users([1, 2]) == {1: user(1), 2: user(2)}


def test_a_result_that_is_not_a_mapping_is_a_type_error_and_releases_the_leases(cache: memo.Cache) -> None:
    @cache.cached_many(ns="bad", each="ids")
    def wrong(ids: list[int]) -> Any:
        return [1, 2]

    with pytest.raises(TypeError, match="must return a mapping"):
        wrong([1])
    assert cache.backend.get(wrong.key_for(ids=[1])[0]) is None


def test_without_leases_items_are_set_plainly(make_cache: MakeCache, flavour: str) -> None:
    made = Users(make_cache(leases=False), flavour)
    try:
        assert made([1, 2]) == {1: user(1), 2: user(2)}
        assert made([2, 3]) == {2: user(2), 3: user(3)}
        assert made.calls == [([1, 2], False), ([3], False)]
    finally:
        made.close()


def test_a_cache_that_is_down_fails_open(flavour: str) -> None:
    made = Users(memo.Cache("memcached://127.0.0.1:1", connect_timeout=0.05), flavour)
    try:
        assert made([1, 2]) == {1: user(1), 2: user(2)}
        assert made([1, 2]) == {1: user(1), 2: user(2)}
        assert made.calls == [([1, 2], False), ([1, 2], False)]
    finally:
        made.close()


def test_bad_configuration_is_one_configuration_error() -> None:
    cache = memo.Cache("memory://")

    def f(ids: list[int], *rest: int, **extra: int) -> dict[int, int]:
        return {}

    for each in ("nope", "rest", "extra"):
        with pytest.raises(memo.ConfigurationError, match="each="):
            cache.cached_many(each=each)(f)
    with pytest.raises(memo.ConfigurationError, match="each="):
        cache.cached_many(each="ids", ignore=("ids",))(f)
    with pytest.raises(memo.ConfigurationError, match="needs each="):
        cache.cached_many(each=None)  # type: ignore[arg-type]
    with pytest.raises(memo.ConfigurationError, match="plain function"):
        cache.cached_many(each="ids")(len)
    with pytest.raises(memo.ConfigurationError, match="ttl"):
        cache.cached_many(ttl=-1, each="ids")
    with pytest.raises(TypeError, match="collection of items"):
        cache.cached_many(each="ids")(f)("abc")


def test_module_level_cached_many_uses_the_default_cache() -> None:
    calls: list[list[int]] = []

    @memo.cached_many(ns=f"m{uuid.uuid4().hex[:6]}", ttl=30, each="ids")
    def double(ids: list[int]) -> dict[int, int]:
        calls.append(list(ids))
        return {i: 2 * i for i in ids}

    memo.configure("memory://")
    assert double([1, 2]) == {1: 2, 2: 4}
    assert double([2, 3]) == {2: 4, 3: 6}
    assert calls == [[1, 2], [3]]


def test_together_batches_the_same_step_of_many_keys() -> None:
    def step(key: str) -> Any:
        got = yield ("get", (key,))
        yield ("sleep", (0.5 if key == "a" else 0.1,))
        stored = yield ("cas", (key, b"v", None, 7))
        return got, stored

    runner = together({"a": step("a"), "b": step("b")})
    assert next(runner) == ("get_many", (["a", "b"],))
    assert runner.send({"a": b"1"}) == ("sleep", (0.1,))
    assert runner.send(None) == ("cas_many", ([("a", b"v", None, 7), ("b", b"v", None, 7)],))
    with pytest.raises(StopIteration) as stop:
        runner.send(["b"])
    assert stop.value.value == {"a": (b"1", True), "b": (None, False)}
    # A backend error reaches the steps it concerns, and is their result when they let it out.
    runner = together({"a": step("a")})
    next(runner)
    with pytest.raises(StopIteration) as stop:
        runner.throw(memo.BackendUnavailable("down"))
    assert isinstance(stop.value.value["a"], memo.BackendUnavailable)
    # Leases of several servers, one of them failing: only its keys get the error.
    runner = together({k: (yield_lease(k)) for k in ("a", "b")})
    assert next(runner) == ("lease_many", ([("a", b"m", 1), ("b", b"m", 1)],))
    error = memo.BackendUnavailable("server of b down")
    with pytest.raises(StopIteration) as stop:
        runner.throw(memo.PartialFailure("lease_many", {"a": (True, (b"m", 5))}, [error]))
    assert stop.value.value == {"a": (True, (b"m", 5)), "b": error}


def yield_lease(key: str) -> Any:
    got = yield ("lease", (key, b"m", 1))
    return got


_WORKER = """
import json, sys, time, memo
url, prefix, ids, start = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
cache = memo.Cache(url, prefix=prefix)
computed = []

@cache.cached_many(ns="x", ttl=60, each="ids", ignore=())
def slow(ids):
    computed.extend(ids)
    time.sleep(0.5)
    return {i: i * 3 for i in ids}

time.sleep(max(0.0, start - time.time()))
print(json.dumps({"values": {str(k): v for k, v in slow(ids).items()}, "computed": computed}))
"""


@pytest.mark.memcached
def test_across_processes_each_item_is_computed_once(memcached_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    start = time.time() + 1.5
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, memcached_url, prefix, json.dumps(ids), str(start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for ids in ([1, 2, 3, 4], [3, 4, 5, 6], [1, 6, 7])
    ]
    outputs = [json.loads(w.communicate(timeout=30)[0]) for w in workers]
    assert [o["values"] for o in outputs] == [
        {"1": 3, "2": 6, "3": 9, "4": 12},
        {"3": 9, "4": 12, "5": 15, "6": 18},
        {"1": 3, "6": 18, "7": 21},
    ]
    computed = sorted(i for o in outputs for i in o["computed"])
    assert computed == [1, 2, 3, 4, 5, 6, 7]


def test_undecodable_or_foreign_entries_are_misses(users: Users) -> None:
    users([1, 2, 3])
    keys = users.key_for(ids=[1, 2, 3])
    expiry = int((time.time() + 60) * 1000).to_bytes(8, "big")
    backend = users.cache.backend
    backend.set(keys[0], b"m\x02\x05" + expiry + b"[1],[2\n", 60)  # plain header, body not one value
    backend.set(keys[1], b"m\x02\x05" + expiry + b'[{"id": 2}, 3]\n', 60)  # a list of two
    backend.set(keys[2], b"not memo's", 60)
    assert users([1, 2, 3]) == {1: user(1), 2: user(2), 3: user(3)}
    assert users.calls[-1] == ([1, 2, 3], False)
    assert users.fn.cache_info()["decode_errors"] == 3
    assert users([1, 2, 3]) == {1: user(1), 2: user(2), 3: user(3)}
    assert len(users.calls) == 2


def test_a_cancelled_async_call_releases_its_leases(cache: memo.Cache) -> None:
    started = asyncio.Event()

    @cache.cached_many(ns="cancel", ttl=60, each="ids")
    async def forever(ids: list[int]) -> dict[int, int]:
        started.set()
        await asyncio.sleep(3600)
        return {}

    async def scenario() -> list[bytes | None]:
        task = asyncio.ensure_future(forever([1, 2]))
        await started.wait()
        keys = await forever.akey_for(ids=[1, 2])
        assert all([await cache.backend.aget(key) is not None for key in keys])  # the leases, held
        task.cancel()
        await asyncio.wait([task])
        assert task.cancelled()
        found = [await cache.backend.aget(key) for key in keys]
        await cache.aclose()
        return found

    assert asyncio.run(scenario()) == [None, None]


@pytest.mark.memcached
@pytest.mark.parametrize("protocol", ["meta", "classic"])
def test_items_of_a_server_that_fails_are_computed_and_not_stored(
    memcached_servers: Callable[..., list[Any]], flavour: str, protocol: str
) -> None:
    """A leased read that reaches one server of two: the other's items are computed, not stored."""
    up, down = memcached_servers(2)
    url = f"memcached://{up.address},{down.address}?protocol={protocol}&failure_threshold=100"
    made = Users(memo.Cache(url, prefix=f"p{uuid.uuid4().hex[:8]}:", lease_wait=5.0), flavour)
    try:
        made.missing = set()
        ids = list(range(12))
        keys = made.key_for(ids=ids)
        backend = made.cache.backend
        on_down = [i for i, key in zip(ids, keys, strict=True) if backend.server_for(key) == down.address]
        assert 0 < len(on_down) < len(ids)
        down.kill()
        assert made(ids) == {i: user(i) for i in ids}
        assert made(ids) == {i: user(i) for i in ids}
        assert made.calls == [(ids, False), (on_down, False)]  # the up server's items: stored once
        info = made.fn.cache_info()
        assert info["sets"] == len(ids) - len(on_down) and info["lease_waits"] == 0
        assert info["errors"] >= 1
    finally:
        made.close()


def test_remembered_item_keys_are_the_keys_of_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys remembered per other arguments, item type and generation are exactly those computed
    afresh, type-exact; the memory is bounded."""

    backend = memo.Cache("memory://").backend  # one store: the same generation for every Cache

    def make() -> Any:
        cache = memo.Cache(backend=backend, prefix="r:")

        @cache.cached_many(ns="r", each="ids")
        def get(ids: list[Any], scale: float = 1.0) -> dict[Any, Any]:
            return {}

        return cache, get

    warm_cache, warm = make()
    monkeypatch.setattr("memo._batch._KNOWN_MAX", 50)
    calls: list[tuple[list[Any], dict[str, Any]]] = [
        ([1, 2, 3], {}),
        ([3, 4, 1], {}),  # some remembered, some not
        ([1, 2], {"scale": 2.0}),  # other arguments: other keys
        (["1", "2"], {}),
        ([1, "1", 2.5], {}),  # mixed types: each keyed by its exact type
        ([True, False], {}),
        ([1.0, 2.0], {}),
        (list(range(40)), {}),
        (list(range(30, 80)), {}),  # more than the memory holds: forgotten, then remembered again
        ([1, 2, 3], {}),
    ]
    seen: dict[str, Any] = {}
    for ids, kwargs in calls * 2:
        fresh = make()[1].key_for(ids, **kwargs)
        assert warm.key_for(ids, **kwargs) == fresh
        for item, key in zip(ids, fresh, strict=True):
            assert seen.setdefault(key, (type(item), item, kwargs)) == (type(item), item, kwargs)
    batch = warm._self_batch
    assert 0 < batch._known_count <= 50 + 50 and len(batch._known) > 0
    warm_cache.clear("r")  # a new generation: new keys
    assert set(warm.key_for([1, 2, 3])).isdisjoint(seen)


@pytest.mark.parametrize(
    "values",
    [
        {1: {"a": [1, 2.5]}, 2: None, 3: "x"},  # all plain JSON: encoded all at once
        {1: {"a": [1, 2.5]}, 2: (1, 2), 3: {1, 2}, 4: 2.5},  # some not: each on its own
    ],
    ids=["plain", "mixed"],
)
def test_stored_items_come_back_with_their_exact_types(cache: memo.Cache, values: dict[int, Any]) -> None:
    calls: list[list[int]] = []

    @cache.cached_many(ns="t", ttl=60, each="ids")
    def get(ids: list[int]) -> dict[int, Any]:
        calls.append(list(ids))
        return {i: values[i] for i in ids}

    assert get(list(values)) == values
    again = get(list(values))
    assert again == values and calls == [list(values)]
    assert [type(v) for v in again.values()] == [type(v) for v in values.values()]
    assert get.cache_info()["sets"] == len(values)


class _Interrupted(BaseException):
    """Stands for Ctrl-C, or a cancellation, arriving while the values are being stored."""


def test_an_interrupted_store_gives_back_the_leases_of_values_not_stored(cache: memo.Cache) -> None:
    @cache.cached_many(ns="cut", ttl=60, each="ids")
    def only_odd(ids: list[int]) -> dict[int, int]:
        return {i: i for i in ids if i % 2}  # 2 and 4 are absent: their leases are only given back

    def interrupted(items: Any) -> Any:
        raise _Interrupted()

    cache.backend.cas_many = interrupted  # type: ignore[method-assign]
    with pytest.raises(_Interrupted):
        only_odd([1, 2, 3, 4])
    absent = only_odd.key_for(ids=[2, 4])
    assert [cache.backend.get(key) for key in absent] == [None, None]  # no lease left to wait for


def test_a_server_failing_during_the_stores_is_reported(cache: memo.Cache) -> None:
    @cache.cached_many(ns="cut", ttl=60, each="ids")
    def double(ids: list[int]) -> dict[int, int]:
        return {i: 2 * i for i in ids}

    failure = memo.BackendError("memcached 10.0.0.9:11211 did not answer")

    def half_failed(items: Any) -> Any:
        raise memo.PartialFailure("1 of 2 servers failed", [items[0][0]], [failure])

    cache.backend.cas_many = half_failed  # type: ignore[method-assign]
    with record_events(cache) as events:
        assert double([1, 2]) == {1: 2, 2: 4}
    assert [e.error for e in events if e.kind == "error"] == [failure]
    info = double.cache_info()
    assert info["errors"] == 1 and info["lease_lost"] == 1 and info["sets"] == 1
