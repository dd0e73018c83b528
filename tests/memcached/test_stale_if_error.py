"""stale_if_error: a copy expired less than that long ago is returned when recomputing raises."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import memo
from memo.testing import record_events

Elapse = Callable[[float], None]
AElapse = Callable[[float], Awaitable[None]]


class SourceDown(Exception):
    pass


def _flaky(cache: memo.Cache, **options: Any) -> tuple[Any, list[bool]]:
    down = [False]
    runs: list[int] = []

    @cache.cached(ns="sie", ttl=0.1, ignore=("down", "runs"), **options)
    def price(sku: int) -> dict[str, int]:
        runs.append(sku)
        if down[0]:
            raise SourceDown(f"no price for {sku}")
        return {"sku": sku, "price": 10 * len(runs)}

    return price, down


def test_a_failing_fill_returns_the_expired_copy_and_keeps_it(elapse: Elapse, cache: memo.Cache) -> None:
    price, down = _flaky(cache, stale_if_error=60)
    assert price(7) == {"sku": 7, "price": 10}
    elapse(0.15)  # expired
    down[0] = True
    with record_events(cache) as events:
        assert price(7) == {"sku": 7, "price": 10}
        assert price(7) == {"sku": 7, "price": 10}  # the copy is still stored
    assert price.cache_info()["stale_on_error"] == 2
    served = [e for e in events if e.kind == "stale_on_error"]
    assert len(served) == 2 and isinstance(served[0].error, SourceDown)
    down[0] = False
    assert price(7) == {"sku": 7, "price": 40}  # the source is back: recomputed and stored
    assert price(7) == {"sku": 7, "price": 40}


def test_without_a_copy_the_exception_reaches_the_caller(cache: memo.Cache) -> None:
    price, down = _flaky(cache, stale_if_error=60)
    down[0] = True
    with pytest.raises(SourceDown):
        price(1)
    down[0] = False
    assert price(1) == {"sku": 1, "price": 20}  # exceptions are never cached


def test_a_copy_older_than_the_window_is_not_returned(elapse: Elapse, cache: memo.Cache) -> None:
    price, down = _flaky(cache, stale_if_error=0.1)
    assert price(2) == {"sku": 2, "price": 10}
    elapse(0.25)  # past ttl + stale_if_error
    down[0] = True
    with pytest.raises(SourceDown):
        price(2)


def test_with_stale_while_revalidate_past_its_window(elapse: Elapse, cache: memo.Cache) -> None:
    price, down = _flaky(cache, stale_ttl=0.05, stale_if_error=60)
    assert price(3) == {"sku": 3, "price": 10}
    elapse(0.2)  # past ttl + stale_ttl: a miss, but within stale_if_error
    down[0] = True
    assert price(3) == {"sku": 3, "price": 10}
    assert price.cache_info()["stale_on_error"] == 1


async def test_async(aelapse: AElapse, cache: memo.Cache) -> None:
    down = [False]

    @cache.cached(ns="sie", ttl=0.1, stale_if_error=60, ignore=("down",))
    async def rate(pair: str) -> float:
        if down[0]:
            raise SourceDown(pair)
        return 1.25

    assert await rate("EURUSD") == 1.25
    await aelapse(0.15)
    down[0] = True
    assert await rate("EURUSD") == 1.25
    assert rate.cache_info()["stale_on_error"] == 1


@pytest.mark.memcached
def test_another_process_gets_the_kept_copy(memcached_url: str) -> None:
    """The failing fill puts the copy back, so a process arriving later gets it too."""
    prefix = f"sie{uuid.uuid4().hex[:8]}:"
    first, second = memo.Cache(memcached_url, prefix=prefix), memo.Cache(memcached_url, prefix=prefix)
    prices = [_flaky(cache, stale_if_error=60) for cache in (first, second)]
    assert prices[0][0](9) == {"sku": 9, "price": 10}
    time.sleep(0.15)
    for _, down in prices:
        down[0] = True
    assert prices[0][0](9) == {"sku": 9, "price": 10}
    assert prices[1][0](9) == {"sku": 9, "price": 10}
    assert prices[1][0].cache_info()["stale_on_error"] == 1
    first.close()
    second.close()


def test_needs_a_ttl(memory_cache: memo.Cache) -> None:
    with pytest.raises(memo.ConfigurationError, match="stale_if_error needs a ttl"):
        memory_cache.cached(ns="x", ttl=None, stale_if_error=5)(lambda x: x)
