"""The identity of a decorated function: what it computes, not only its name."""

from __future__ import annotations

import asyncio
import functools
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import memo
from memo._canonical import function_identity

ROOT = Path(__file__).resolve().parents[2]


class Client:
    """An object memo cannot key: its only identity is its address."""


def add(a: int, b: int) -> list[int]:
    return [a, b, a + b]


class Repo:
    def __init__(self, tenant: str) -> None:
        self.tenant = tenant

    def __cache_key__(self) -> str:
        return self.tenant

    def get(self, x: int) -> str:
        return f"{self.tenant}:{x}"


class Multiplier:
    def __init__(self, n: int) -> None:
        self.n = n

    def __cache_key__(self) -> int:
        return self.n

    def __call__(self, x: int) -> int:
        return self.n * x


class AsyncMultiplier(Multiplier):
    async def __call__(self, x: int) -> int:  # type: ignore[override]
        return self.n * x


class TestLambdasAndClosures:
    def test_two_lambdas_in_one_namespace_do_not_share_entries(self) -> None:
        cache = memo.Cache("memory://")
        inc = cache.cached(ns="n")(lambda x: x + 1)
        dbl = cache.cached(ns="n")(lambda x: x * 2)
        assert (inc(3), dbl(3), inc(3), dbl(3)) == (4, 6, 4, 6)
        assert inc.key_for(3) != dbl.key_for(3)

    def test_closures_from_one_factory_do_not_share_entries(self) -> None:
        cache = memo.Cache("memory://")

        def make(n: int) -> Any:
            @cache.cached(ns="n")
            def add_n(x: int) -> int:
                return x + n

            return add_n

        one, two, one_again = make(1), make(2), make(1)
        assert (one(1), two(1), one_again(1)) == (2, 3, 2)
        assert one.key_for(1) == one_again.key_for(1) != two.key_for(1)

    def test_a_captured_local_function_is_part_of_the_identity(self) -> None:
        cache = memo.Cache("memory://")

        def make(k: int) -> Any:
            def helper(x: int) -> int:
                return x * k

            @cache.cached(ns="n")
            def use(x: int) -> int:
                return helper(x)

            return use

        assert (make(2)(5), make(3)(5)) == (10, 15)

    def test_unkeyable_captured_values_keep_closures_apart_and_ignore_shares_them(self) -> None:
        cache = memo.Cache("memory://")

        def make(client: Client, shared: bool) -> Any:
            @cache.cached(ns="n", ignore=("client",) if shared else ())
            def fetch(x: int) -> tuple[int, int]:
                return (id(client), x)

            return fetch

        a, b = Client(), Client()
        assert make(a, False).key_for(1) != make(b, False).key_for(1)
        assert make(a, False).key_for(1) == make(a, False).key_for(1)
        assert make(a, True).key_for(1) == make(b, True).key_for(1)

    def test_a_recursive_closure_can_be_memoized(self) -> None:
        cache = memo.Cache("memory://")

        def make() -> Any:
            @cache.cached(ns="n")
            def fib(n: int) -> int:
                return n if n < 2 else fib(n - 1) + fib(n - 2)

            return fib

        assert make()(20) == 6765

    def test_module_level_functions_are_identified_by_name_alone(self) -> None:
        assert function_identity(add) == f"{__name__}.add"
        assert function_identity(Repo.get) == f"{__name__}.Repo.get"


@settings(max_examples=50, deadline=None)
@given(
    a=st.integers() | st.text(max_size=4) | st.tuples(st.integers()), b=st.integers() | st.text(max_size=4)
)
def test_closures_share_an_identity_exactly_when_their_captured_values_are_the_same(a: Any, b: Any) -> None:
    def make(captured: Any) -> Any:
        def fn() -> Any:
            return captured

        return fn

    same = type(a) is type(b) and a == b
    assert (function_identity(make(a)) == function_identity(make(b))) == same


class TestBoundCallables:
    def test_a_partial_is_keyed_as_its_function_with_its_arguments(self) -> None:
        cache = memo.Cache("memory://")
        plus1 = cache.cached(ns="p")(functools.partial(add, 1))
        plus2 = cache.cached(ns="p")(functools.partial(add, b=2))
        plain = cache.cached(ns="p")(add)
        assert (plus1(5), plus2(5), plus1(5)) == ([1, 5, 6], [5, 2, 7], [1, 5, 6])
        assert plus1.key_for(5) == plain.key_for(1, 5) and plus2.key_for(5) == plain.key_for(5, 2)

    def test_bound_methods_are_keyed_with_their_instance(self) -> None:
        cache = memo.Cache("memory://")
        a, b = cache.cached(ns="m")(Repo("a").get), cache.cached(ns="m")(Repo("b").get)
        assert (a(1), b(1), a(1)) == ("a:1", "b:1", "a:1")
        assert a.key_for(1) != b.key_for(1)

    def test_callable_instances_are_keyed_with_themselves(self) -> None:
        cache = memo.Cache("memory://")
        double, triple = cache.cached(ns="c")(Multiplier(2)), cache.cached(ns="c")(Multiplier(3))
        assert (double(5), triple(5), double(5)) == (10, 15, 10)

    def test_async_callable_instances_are_async(self) -> None:
        cache = memo.Cache("memory://")
        double = cache.cached(ns="c")(AsyncMultiplier(2))
        assert asyncio.run(double(5)) == 10

    def test_bound_state_that_cannot_be_keyed_is_refused_when_decorating(self) -> None:
        cache = memo.Cache("memory://")
        with pytest.raises(memo.UnkeyableArgumentError, match="'a'"):
            cache.cached()(functools.partial(add, Client()))
        cache.cached(ignore=("a",))(functools.partial(add, Client()))  # unless left out


def test_key_keeps_the_scope() -> None:
    cache = memo.Cache("memory://")

    @cache.cached(ns="s", key=lambda user, tenant: user["id"], scope=lambda tenant: tenant)
    def who(user: dict[str, Any], tenant: str) -> str:
        return f"{tenant}:{user['id']}"

    assert (who({"id": 1}, "a"), who({"id": 1}, "b")) == ("a:1", "b:1")
    assert who.key_for({"id": 1}, "a") != who.key_for({"id": 1}, "b")


SPAWN_SCRIPT = """
import multiprocessing
import os
import sys

import memo

cache = memo.Cache(sys.argv[1], prefix=sys.argv[2])


@cache.cached(ns="spawn")
def whoami(x):
    return [os.getpid(), x]


square = cache.cached(ns="spawn")(lambda x: [os.getpid(), x * x])


def child(queue):
    queue.put((whoami(1), square(3), whoami.key_for(1), square.key_for(3)))


if __name__ == "__main__":
    mine = (whoami(1), square(3), whoami.key_for(1), square.key_for(3))
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=child, args=(queue,))
    process.start()
    theirs = queue.get(timeout=60)
    process.join(60)
    print(mine == theirs, mine, theirs)
"""


@pytest.mark.memcached
def test_a_spawn_child_shares_entries_with_its_scripts_main(memcached_url: str, tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SPAWN_SCRIPT))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    prefix = f"spawn{uuid.uuid4().hex[:8]}:"
    out = subprocess.run(
        [sys.executable, str(script), memcached_url, prefix],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    ).stdout
    assert out.startswith("True "), out


def test_callables_memo_cannot_tell_apart_are_refused_when_decorating() -> None:
    import operator

    cache = memo.Cache("memory://")
    with pytest.raises(memo.UnkeyableArgumentError, match="itemgetter"):
        cache.cached()(operator.itemgetter("a"))
    assert cache.cached()(len)("abc") == 3
