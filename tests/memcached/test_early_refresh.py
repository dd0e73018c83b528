"""`early_refresh=`: a hit within that many seconds of its expiry is served and refreshed ahead.

The value never goes stale for callers of a key in steady use: one caller across
processes (the refresh lease) recomputes it in the background while everyone
keeps being served the fresh value; nobody waits, nobody misses.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import memo
from memo import _clock
from memo import _memo as memo_engine


def _wait_for(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


async def _await_value(compute: Callable[[str], Any], expected: str) -> None:
    """Call `compute("k")` until the background refresh's value comes (up to 5 s)."""
    for _ in range(500):
        if await compute("k") == expected:
            return
        await asyncio.sleep(0.01)
    assert await compute("k") == expected


def test_a_hit_near_its_expiry_is_served_and_refreshed_once(make_cache: Callable[..., memo.Cache]) -> None:
    cache = make_cache()
    version = {"n": 1}
    runs: list[int] = []
    release = threading.Event()

    @cache.cached(ns="early", ttl=60, early_refresh=10)
    def compute(arg: str) -> str:
        runs.append(version["n"])
        if version["n"] > 1:
            assert release.wait(10)  # the refresh is slow: callers must not wait for it
        return f"{arg}{version['n']}"

    with _clock.use(_clock.FakeClock()) as clock:
        assert compute("k") == "k1"
        clock.advance(45)  # 15 s left: fresh, not yet due
        assert compute("k") == "k1" and runs == [1]
        clock.advance(6)  # 9 s left: due
        version["n"] = 2
        served = [compute("k") for _ in range(20)]
        assert served == ["k1"] * 20  # fresh values, at once
        release.set()
        _wait_for(lambda: compute("k") == "k2")
    _wait_for(lambda: cache.stats("early")["sets"] == 2)  # counted just after the store is seen
    assert runs == [1, 2]  # one refresh for 20 callers
    stats = cache.stats("early")
    assert stats["stale"] == 0 and stats["misses"] == 1 and stats["sets"] == 2
    assert stats["hits"] >= 22


async def test_async_hits_near_expiry_refresh_in_a_task(make_cache: Callable[..., memo.Cache]) -> None:
    cache = make_cache()
    version = {"n": 1}
    runs: list[int] = []

    @cache.cached(ns="early", ttl=60, early_refresh=10)
    async def compute(arg: str) -> str:
        runs.append(version["n"])
        await asyncio.sleep(0.05)
        return f"{arg}{version['n']}"

    with _clock.use(_clock.FakeClock()) as clock:
        assert await compute("k") == "k1"
        clock.advance(55)
        version["n"] = 2
        assert await asyncio.gather(*[compute("k") for _ in range(5)]) == ["k1"] * 5
        await _await_value(compute, "k2")
    assert runs == [1, 2]


def test_a_near_cache_refreshes_ahead_when_it_reads_the_server(make_cache: Callable[..., memo.Cache]) -> None:
    """With `local_ttl`, the read of the server that finds an entry due refreshes it ahead."""
    cache = make_cache(local_ttl=5)
    version = {"n": 1}
    runs: list[int] = []

    @cache.cached(ns="early", ttl=60, early_refresh=10)
    def compute(arg: str) -> str:
        runs.append(version["n"])
        return f"{arg}{version['n']}"

    with _clock.use(_clock.FakeClock()) as clock:
        assert compute("k") == "k1"
        clock.advance(51)  # 9 s left: the process's copy is gone (local_ttl 5), the server's is due
        version["n"] = 2
        assert compute("k") == "k1"  # served fresh, refreshed in the background
        _wait_for(lambda: cache.stats("early")["sets"] == 2)
        clock.advance(5.01)  # past local_ttl: read from the server again
        assert compute("k") == "k2"
    assert runs == [1, 2]
    assert cache.stats("early")["misses"] == 1


def test_a_refresh_ahead_is_not_taken_when_the_value_changed_meanwhile(
    make_cache: Callable[..., memo.Cache],
) -> None:
    """The refresh recomputes only what is still due: a value set meanwhile is left alone."""
    cache = make_cache()
    runs: list[str] = []

    @cache.cached(ns="early", ttl=60, early_refresh=10)
    def compute(arg: str) -> str:
        runs.append(arg)
        return arg

    with _clock.use(_clock.FakeClock()) as clock:
        assert compute("k") == "k"
        clock.advance(55)
        compute.set("new", "k")  # a write-through lands first: fresh for 60 s
        assert compute("k") == "new"
    assert runs == ["k"]


def _f(x: int) -> int:
    return x


@pytest.mark.parametrize("bad", [0, -1, "soon", 60, 61])
def test_early_refresh_is_positive_and_shorter_than_the_ttl(bad: object) -> None:
    with pytest.raises(memo.ConfigurationError, match="early_refresh"):
        memo.cached(ns="early", ttl=60, early_refresh=bad)(_f)  # type: ignore[arg-type]


def test_early_refresh_needs_a_ttl_and_no_tags() -> None:
    with pytest.raises(memo.ConfigurationError, match="early_refresh"):
        memo.cached(ns="early", ttl=None, early_refresh=5)(_f)
    with pytest.raises(memo.ConfigurationError, match="early_refresh"):
        memo.cached(ns="early", ttl=60, early_refresh=5, tags=["x"])(_f)


# -- early_refresh="xfetch": the XFetch rule -------------------------------------------------------


class _Draws:
    """`memo._memo._random` replaced: a fixed draw U, whose -ln(1 - U) is `factor`; counts calls."""

    def __init__(self, factor: float) -> None:
        self.value = 1.0 - math.exp(-factor)
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.value


def test_xfetch_refreshes_ahead_by_the_draw_and_the_compute_time(
    make_cache: Callable[..., memo.Cache], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = make_cache()
    draws = _Draws(1.5)  # each draw: refresh ahead when under 1.5 compute times are left
    monkeypatch.setattr(memo_engine, "_random", draws)
    runs: list[int] = []

    with _clock.use(_clock.FakeClock()) as clock:

        @cache.cached(ns="xfetch", ttl=100, early_refresh="xfetch")
        def compute(arg: str) -> str:
            runs.append(len(runs) + 1)
            clock.advance(2)  # the function takes 2 s: the window is 3 s before the expiry
            return f"{arg}{len(runs)}"

        assert compute("k") == "k1"  # stored at t=2, expires at t=102
        clock.advance(50)  # 50 s left: beyond 9.2 compute times, a plain hit without a draw
        assert compute("k") == "k1" and draws.calls == 0
        clock.advance(46)  # 4 s left: drawn, not due (4 > 2 × 1.5)
        assert compute("k") == "k1" and draws.calls == 1 and runs == [1]
        clock.advance(1.5)  # 2.5 s left: drawn, due: served, refreshed in the background
        assert compute("k") == "k1"
        _wait_for(lambda: compute("k") == "k2")
    _wait_for(lambda: cache.stats("xfetch")["sets"] == 2)  # counted just after the store is seen
    assert runs == [1, 2]
    stats = cache.stats("xfetch")
    assert stats["misses"] == 1 and stats["sets"] == 2 and stats["stale"] == 0


async def test_xfetch_async_refreshes_in_a_task(
    make_cache: Callable[..., memo.Cache], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = make_cache()
    monkeypatch.setattr(memo_engine, "_random", _Draws(1.0))
    runs: list[int] = []

    with _clock.use(_clock.FakeClock()) as clock:

        @cache.cached(ns="xfetch", ttl=100, early_refresh="xfetch")
        async def compute(arg: str) -> str:
            runs.append(len(runs) + 1)
            clock.advance(4)
            return f"{arg}{len(runs)}"

        assert await compute("k") == "k1"  # expires at t=104; the window: 4 s before it
        clock.advance(95)  # 5 s left: not due
        assert await compute("k") == "k1" and runs == [1]
        clock.advance(2)  # 3 s left: due
        assert await compute("k") == "k1"
        await _await_value(compute, "k2")
    assert runs == [1, 2]


def test_xfetch_refreshes_at_the_expiry_until_this_process_has_timed_a_computation(
    make_cache: Callable[..., memo.Cache], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A value another process stored (here: `set`) gives this one no compute time: no early refresh."""
    cache = make_cache()
    draws = _Draws(1000.0)
    monkeypatch.setattr(memo_engine, "_random", draws)
    runs: list[str] = []

    @cache.cached(ns="xfetch", ttl=100, early_refresh="xfetch")
    def compute(arg: str) -> str:
        runs.append(arg)
        return "computed"

    with _clock.use(_clock.FakeClock()) as clock:
        compute.set("primed", "k")
        clock.advance(99.5)
        assert compute("k") == "primed" and runs == [] and draws.calls == 0
        clock.advance(1)  # expired: the miss computes, and is timed from now on
        assert compute("k") == "computed" and runs == ["k"]


def test_xfetch_is_the_only_word_early_refresh_takes() -> None:
    with pytest.raises(memo.ConfigurationError, match='early_refresh is seconds or "xfetch"'):
        memo.cached(ns="early", ttl=60, early_refresh="XFetch")(_f)  # type: ignore[arg-type]
    with pytest.raises(memo.ConfigurationError, match="early_refresh needs a ttl"):
        memo.cached(ns="early", ttl=None, early_refresh="xfetch")(_f)
    with pytest.raises(memo.ConfigurationError, match="early_refresh"):
        memo.cached(ns="early", ttl=60, early_refresh="xfetch", tags=["x"])(_f)
    assert memo.cached(ns="early", ttl=60, early_refresh="xfetch")(_f)  # accepted
