"""`@classmethod` above `@cached`: the controls bind the class on every Python (3.13 stopped chaining)."""

from __future__ import annotations

import sys
from typing import Any

import pytest

import memo

cache = memo.Cache("memory://")
calls: list[tuple[str, int]] = []


class Catalog:
    @classmethod
    @cache.cached(ns="cm")
    def count(cls, x: int, extra: int = 0) -> int:
        calls.append((cls.__name__, x))
        return x + extra

    @classmethod
    @cache.cached(ns="cm")
    async def acount(cls, x: int) -> int:
        calls.append((cls.__name__, x))
        return x


class Shared:
    @classmethod
    @cache.cached(ns="cm")
    def get(cls, x: int) -> str:
        return cls.__name__


class SharedChild(Shared):
    pass


@pytest.fixture(autouse=True)
def fresh() -> None:
    cache.clear()
    calls.clear()


def test_controls_of_a_classmethod_above_cached_bind_the_class() -> None:
    assert Catalog.count(1) == 1 and Catalog.count(1) == 1 and calls == [("Catalog", 1)]
    # The key a call reads: with a default argument, binding 1 as `cls` would be silently wrong.
    assert Catalog.count.key_for(1) == Catalog().count.key_for(1)
    assert Catalog.count.get(1) == 1
    assert Catalog.count.invalidate(1) is True
    assert Catalog.count(1) == 1 and len(calls) == 2
    assert Catalog.count.refresh(1) == 1 and len(calls) == 3
    assert Catalog.count.uncached(2) == 2 and len(calls) == 4


async def test_async_controls_of_a_classmethod_above_cached() -> None:
    assert await Catalog.acount(1) == 1
    assert await Catalog.acount.akey_for(1) == Catalog.acount.key_for(1)
    assert await Catalog.acount.ainvalidate(1) is True
    assert await Catalog.acount.arefresh(1) == 1
    assert await Catalog.acount(1) == 1 and len(calls) == 2


def test_a_subclass_sharing_it_is_bound_or_refused_never_guessed() -> None:
    assert SharedChild.get(1) == "SharedChild"
    if sys.version_info < (3, 13):  # classmethod still binds what it wraps
        assert SharedChild.get.key_for(1) != Shared.get.key_for(1)
        assert SharedChild.get.invalidate(1)
    else:  # the class is lost before memo sees the call: refuse, naming the fix
        with pytest.raises(TypeError, match="put @cached above @classmethod"):
            SharedChild.get.key_for(1)


def test_a_local_class_is_bound_or_refused() -> None:
    local = memo.Cache("memory://")

    class Local:
        @classmethod
        @local.cached(ns="cm")
        def get(cls, x: int, y: int = 0) -> int:
            return x

    assert Local.get(1) == 1
    check: Any = Local.get.invalidate
    if sys.version_info < (3, 13):
        assert check(1) is True
    else:
        with pytest.raises(TypeError, match="put @cached above @classmethod"):
            check(1)
