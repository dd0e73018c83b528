"""A memoized function is an object people pass around: pickle, copy, process pools.

It pickles by reference (module and qualified name), as `functools.lru_cache`'s
wrappers do: unpickled in a worker process it is that process's own decorated
function, talking to memcached over the worker's own connections. The workers
here store into a real memcached and the parent then reads their entries.
"""

from __future__ import annotations

import concurrent.futures
import copy
import multiprocessing
import os
import pickle
from collections.abc import Iterator
from typing import Any

import pickled_functions
import pytest
from pickled_functions import acube, fill, run_async, square

import memo


@pytest.fixture
def shared_default(memcached_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[memo.Cache]:
    """The default Cache on a real memcached, in this process and (through $MEMO_URL) in children."""
    monkeypatch.setenv("MEMO_URL", memcached_url)
    cache = memo.configure(memcached_url)
    square.clear()
    acube.clear()
    yield cache
    cache.close()
    memo.configure("memory://")


def _computed_elsewhere(results: list[list[int]], powers: int) -> None:
    assert [value for value, _ in results] == [x**powers for x in range(1, 5)]
    assert os.getpid() not in {pid for _, pid in results}


@pytest.mark.parametrize("fn", [square, acube], ids=["sync", "async"])
def test_pickles_by_reference(fn: Any) -> None:
    assert pickle.loads(pickle.dumps(fn)) is fn
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        assert pickle.loads(pickle.dumps(fn, protocol)) is fn
    assert pickle.dumps(fn) == pickle.dumps(pickled_functions.square if fn is square else acube)


@pytest.mark.parametrize("fn", [square, acube], ids=["sync", "async"])
def test_copies_are_the_function_itself(fn: Any) -> None:
    assert copy.copy(fn) is fn
    assert copy.deepcopy(fn) is fn
    holder = {"handlers": [fn, (fn, 1)]}
    copied = copy.deepcopy(holder)
    assert copied is not holder
    assert copied["handlers"][0] is fn
    assert copied["handlers"][1][0] is fn


@pytest.mark.memcached
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pool_map(shared_default: memo.Cache, method: str) -> None:
    with multiprocessing.get_context(method).Pool(2) as pool:
        results = pool.map(square, range(1, 5))
    _computed_elsewhere(results, 2)
    # The workers stored their results in memcached: the parent hits them.
    assert [square(x) for x in range(1, 5)] == results
    assert square.cache_info()["hits"] == 4


@pytest.mark.memcached
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_process_pool_executor(shared_default: memo.Cache, method: str) -> None:
    context = multiprocessing.get_context(method)
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
        results = list(pool.map(square, range(1, 5)))
        async_results = list(pool.map(run_async, [acube] * 4, range(1, 5)))
    _computed_elsewhere(results, 2)
    _computed_elsewhere(async_results, 3)
    assert [square(x) for x in range(1, 5)] == results
    assert square.cache_info()["hits"] == 4


@pytest.mark.memcached
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_process_target(shared_default: memo.Cache, method: str) -> None:
    process = multiprocessing.get_context(method).Process(target=fill, args=(square, [7, 8]))
    process.start()
    process.join(60)
    assert process.exitcode == 0
    assert square.get(7) == [49, process.pid]
    assert square.get(8) == [64, process.pid]


def test_a_local_function_fails_as_a_plain_local_function_does() -> None:
    cache = memo.Cache("memory://")

    @cache.cached()
    def local(x: int) -> int:
        return x

    with pytest.raises((pickle.PicklingError, AttributeError)):
        pickle.dumps(local)


class Holder:
    """Methods of every binding, reached again by attribute when unpickled."""

    @memo.cached(ns="pickled")
    @classmethod
    def create(cls, x: int) -> int:
        return x

    @memo.cached(ns="pickled")
    @staticmethod
    def double(x: int) -> int:
        return 2 * x


def test_methods_pickle_as_bound_methods_do() -> None:
    assert pickle.loads(pickle.dumps(Holder.create))(3) == 3
    assert pickle.loads(pickle.dumps(Holder.double))(3) == 6
    assert pickle.loads(pickle.dumps(Holder().double))(4) == 8
    bound = Holder.create
    assert copy.deepcopy(bound) is bound


def test_bare_decorator_is_refused_at_decoration_time() -> None:
    cache = memo.Cache("memory://")

    def load(x: int) -> int:
        return x

    with pytest.raises(memo.ConfigurationError) as refused:
        memo.cached(load)  # type: ignore[arg-type]
    assert str(refused.value) == (
        "@memo.cached needs parentheses (above test_bare_decorator_is_refused_at_decoration_time."
        '<locals>.load): write @memo.cached() for the defaults (namespace "default", the Cache\'s '
        'ttl), or @memo.cached(ns="...", ttl=60)'
    )
    with pytest.raises(memo.ConfigurationError, match=r"@cache\.cached needs parentheses"):
        cache.cached(load)  # type: ignore[arg-type]


#: Every exception class memo exports, built as memo builds it.
EXCEPTIONS: dict[type[BaseException], tuple[Any, ...]] = {
    memo.MemoError: ("something went wrong",),
    memo.ConfigurationError: ("ttl must be > 0, got 0",),
    memo.UnkeyableArgumentError: ("cannot build a cache key from parameter 'conn'",),
    memo.SerializationError: ("cannot encode Foo",),
    memo.DecodeError: ("truncated value",),
    memo.BackendError: ("the backend failed",),
    memo.BackendUnavailable: ("connection refused",),
    memo.BackendTimeout: ("timed out after 0.5s",),
    memo.BackendProtocolError: ("SERVER_ERROR out of memory",),
    memo.PartialFailure: (
        "2 of 3 servers answered",
        {"memo:a": b"1", "memo:b": b"2"},
        [memo.BackendTimeout("timed out"), ConnectionRefusedError(111, "refused")],
    ),
}


def test_the_exception_table_covers_every_exported_exception() -> None:
    exported = {
        obj
        for obj in (getattr(memo, name) for name in memo.__all__)
        if isinstance(obj, type) and issubclass(obj, BaseException)
    }
    assert exported == set(EXCEPTIONS)


@pytest.mark.parametrize("cls", list(EXCEPTIONS), ids=lambda cls: cls.__name__)
def test_every_exception_pickles_with_its_fields(cls: type[BaseException]) -> None:
    error = cls(*EXCEPTIONS[cls])
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(error, protocol))
        assert type(back) is cls
        assert back.args == error.args
        assert str(back) == str(error)
        assert repr(vars(back)) == repr(vars(error))  # the fields (exceptions compare by identity)
    if cls is memo.PartialFailure:
        assert back.result == {"memo:a": b"1", "memo:b": b"2"}  # type: ignore[attr-defined]
        assert [type(e) for e in back.errors] == [memo.BackendTimeout, ConnectionRefusedError]  # type: ignore[attr-defined]


def _raise_partial_failure(_: int) -> None:
    raise memo.PartialFailure("1 of 2 servers answered", {"k": b"v"}, [memo.BackendTimeout("slow")])


def test_an_error_raised_in_a_pool_worker_reaches_the_caller() -> None:
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        future = pool.submit(_raise_partial_failure, 1)
        with pytest.raises(memo.PartialFailure) as raised:
            future.result(60)
    assert raised.value.result == {"k": b"v"}
    assert str(raised.value.errors[0]) == "slow"
