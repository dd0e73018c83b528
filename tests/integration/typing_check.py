"""Checked by mypy --strict (see test_typing.py), not run: what type checkers see of memo."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from typing_extensions import assert_type

import memo

cache = memo.Cache("memory://")


@cache.cached(ns="users", ttl=60)
def get_user(user_id: int, *, full: bool = False) -> dict[str, int]:
    return {"id": user_id}


@memo.cached(ns="users")
async def aget_user(user_id: int) -> list[str]:
    return [str(user_id)]


class Repo:
    @cache.cached(ns="repo")
    def get(self, x: int) -> str:
        return str(x)

    @cache.cached(ns="repo")
    async def aget(self, x: int) -> bytes:
        return b""


async def check() -> None:
    repo = Repo()
    assert_type(repo.get(1), str)
    assert_type(repo.get.invalidate(1), bool)
    assert_type(Repo.get(repo, 1), str)
    assert_type(await repo.aget(1), bytes)
    assert_type(await repo.aget.arefresh(1), bytes)
    repo.get("x")  # type: ignore[arg-type]
    assert_type(get_user(1), dict[str, int])
    assert_type(get_user(1, full=True), dict[str, int])
    assert_type(get_user.invalidate(1), bool)
    assert_type(await get_user.ainvalidate(1), bool)
    assert_type(get_user.refresh(1), dict[str, int])
    assert_type(get_user.key_for(1), str)
    assert_type(get_user.uncached(1), dict[str, int])
    assert_type(await aget_user(1), list[str])
    assert_type(await aget_user.arefresh(1), list[str])
    assert_type(await aget_user.ainvalidate(1), bool)
    assert_type(aget_user.key_for(1), str)
    assert_type(cache.stats(), dict[str, Any])
    get_user("1")  # type: ignore[arg-type]
    get_user(1, fully=True)  # type: ignore[call-arg]
    aget_user.invalidate("x")  # type: ignore[arg-type]
    get_user.refresh()  # type: ignore[call-arg]
    assert_type(get_user.cache_info(), dict[str, int])
    get_user.set({"a": 1}, 1)
    get_user.get("1")  # type: ignore[arg-type]
    get_user.clear()
    await aget_user.aset(["x"], 1)
    await aget_user.aclear()


async def check_values() -> None:
    async def load() -> list[int]:
        return [1]

    assert_type(cache.get_or_set("k", lambda: 1.5), float)
    assert_type(await cache.aget_or_set("k", load), list[int])
    assert_type(await cache.aget_or_set("k", lambda: "s"), str)
    assert_type(cache.set("k", 1), bool)
    assert_type(cache.get_many(["k"]), dict[str, Any])
    cache.get(1)  # type: ignore[arg-type]
    cache.set("k", 1, ttl="1")  # type: ignore[arg-type]


def check_decorated_callables_and_key_types() -> None:
    import functools

    def add(a: int, b: int) -> int:
        return a + b

    plus1 = cache.cached(ns="p")(functools.partial(add, 1))
    assert_type(plus1(2), int)
    bound = cache.cached(ns="m")(Repo().get)
    assert_type(bound(1), str)
    assert_type(memo.register_key_type(Repo, lambda r: 1), None)


class Shop:
    """Classmethods under @cached (the form the README recommends) and a property over one."""

    @cache.cached(ns="shop")
    @classmethod
    def create(cls, name: str) -> str:
        return name

    @cache.cached(ns="shop")
    @classmethod
    async def acreate(cls, name: str) -> int:
        return 1

    @property
    @cache.cached(ns="shop")
    def total(self) -> int:
        return 1

    def __cache_key__(self) -> int:
        return 1


async def check_method_forms() -> None:
    assert_type(Shop.create("a"), str)
    assert_type(Shop().create("a"), str)
    assert_type(Shop.create.invalidate("a"), bool)
    assert_type(Shop.create.key_for("a"), str)
    assert_type(await Shop.acreate("a"), int)
    assert_type(await Shop().acreate.arefresh("a"), int)
    Shop.create(1)  # type: ignore[arg-type]
    Shop.create("a", "b")  # type: ignore[call-arg]
    assert_type(Shop().total, int)
    Shop().total = 2  # type: ignore[misc]


def check_function_attributes() -> None:
    assert_type(get_user.__name__, str)
    assert_type(get_user.__qualname__, str)
    assert_type(aget_user.__qualname__, str)
    plain: Callable[[int], dict[str, int]] = get_user.__wrapped__
    coroutine: Callable[[int], Coroutine[Any, Any, list[str]]] = aget_user.__wrapped__
    assert_type(plain(1), dict[str, int])
    del coroutine


@cache.cached_many(ns="users", ttl=60, each="ids")
def get_users(ids: list[int], *, full: bool = False) -> dict[int, str]:
    return {i: str(i) for i in ids}


@memo.cached_many(ns="users", each="ids")
async def aget_users(ids: list[int]) -> dict[int, bytes]:
    return {}


async def check_batches() -> None:
    assert_type(get_users([1, 2]), dict[int, str])
    assert_type(get_users([1], full=True), dict[int, str])
    assert_type(get_users.invalidate(ids=[2]), bool)
    assert_type(get_users.key_for(ids=[2]), list[str])
    assert_type(await aget_users([1]), dict[int, bytes])
    assert_type(await aget_users.ainvalidate([1]), bool)
    assert_type(aget_users.cache_info(), dict[str, int])
    get_users(["x"])  # type: ignore[list-item]
    get_users([1], fully=True)  # type: ignore[call-arg]


T = TypeVar("T")


@cache.cached(ns="generic")
def same(x: T) -> T:
    return x


@cache.cached(ns="generic")
def second(x: int, y: T) -> T:
    return y


@cache.cached(ns="generic")
async def asame(x: T) -> T:
    return x


class Tools:
    """Every method form: staticmethods under @cached, a classmethod and methods, sync and async."""

    @cache.cached(ns="tools")
    @staticmethod
    def add(a: int, b: int) -> int:
        return a + b

    @cache.cached(ns="tools")
    @staticmethod
    async def aadd(a: int, b: int) -> int:
        return a + b

    @cache.cached(ns="tools")
    @staticmethod
    def first(items: list[T]) -> T:
        return items[0]

    @cache.cached(ns="tools")
    @classmethod
    def named(cls, name: str) -> Tools:
        return cls()

    @cache.cached(ns="tools")
    def scale(self, x: float) -> float:
        return x


async def check_generic_and_static_forms() -> None:
    assert_type(same(3), int)
    assert_type(same("a"), str)
    assert_type(second(1, b"x"), bytes)
    assert_type(same.refresh(2.5), float)
    assert_type(await asame(3), int)
    assert_type(await asame.arefresh("a"), str)
    assert_type(Tools.add(1, 2), int)
    assert_type(Tools().add(1, 2), int)
    assert_type(Tools().add.invalidate(1, 2), bool)
    assert_type(await Tools.aadd(1, 2), int)
    assert_type(await Tools().aadd(1, 2), int)
    assert_type(Tools.first([1]), int)
    assert_type(Tools().first(["a"]), str)
    assert_type(Tools.named("a"), Tools)
    assert_type(Tools().named("a"), Tools)
    assert_type(Tools().scale(1.0), float)
    assert_type(Tools.scale(Tools(), 1.0), float)
    Tools().add(1)  # type: ignore[call-arg]
    Tools().add(1, 2, 3)  # type: ignore[call-arg]
    Tools.named(1)  # type: ignore[arg-type]
    Tools.scale(1.0)  # type: ignore[arg-type,call-arg]
    same.arefresh(1)  # type: ignore[misc,unused-coroutine]  # a sync function has no arefresh


async def check_async_spellings() -> None:
    # `AsyncCached[P, R]` names what `@cached` returns for an `async def`: both spellings agree.
    spelled: memo.AsyncCached[[int], list[str]] = aget_user
    plain: memo.Cached[[int], Coroutine[Any, Any, list[str]]] = spelled
    assert_type(await plain(1), list[str])
    assert_type(await aget_user.refresh(1), list[str])  # an async function's refresh is awaited
