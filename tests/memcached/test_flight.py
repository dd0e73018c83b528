"""Single-flight: re-entry, cancellation, fork, and followers' own copies (memo/_flight.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import warnings
from typing import Any

import pytest

import memo


class Counter:
    def __init__(self) -> None:
        self.calls: list[Any] = []
        self._lock = threading.Lock()

    def __call__(self, *args: Any) -> int:
        with self._lock:
            self.calls.append(args)
            return len(self.calls)


def finishes(target: Any, timeout: float = 5.0) -> list[Any]:
    """Run `target` in a daemon thread; return its result in a list, or [] if it hung."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(target()), daemon=True)
    thread.start()
    thread.join(timeout)
    return out


class TestReentry:
    @pytest.mark.parametrize("how", ["key", "ignore"])
    def test_a_function_calling_itself_on_its_own_key_computes(self, cache: memo.Cache, how: str) -> None:
        options: dict[str, Any] = {"key": lambda n, depth: n} if how == "key" else {"ignore": ("depth",)}

        @cache.cached(ns="re", **options)
        def f(n: int, depth: int) -> int:
            return 0 if depth == 0 else f(n, depth - 1) + 1

        assert finishes(lambda: f(1, 2)) == [2]

    @pytest.mark.parametrize("how", ["key", "ignore"])
    async def test_a_coroutine_awaiting_itself_on_its_key_computes(self, cache: memo.Cache, how: str) -> None:
        options: dict[str, Any] = {"key": lambda n, depth: n} if how == "key" else {"ignore": ("depth",)}

        @cache.cached(ns="re", **options)
        async def f(n: int, depth: int) -> int:
            if depth == 0:
                return 0
            (below,) = await asyncio.gather(f(n, depth - 1))  # in a task it starts, too
            return below + 1

        assert await asyncio.wait_for(f(1, 2), 5) == 2

    def test_other_threads_still_wait_for_the_leader(self, cache: memo.Cache) -> None:
        seen = Counter()

        @cache.cached(ns="re")
        def slow(x: int) -> int:
            seen(x)
            time.sleep(0.2)
            return x

        threads = [threading.Thread(target=slow, args=(1,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(seen.calls) == 1


class TestCancellation:
    async def test_a_caller_never_cancelled_never_receives_cancelled_error(self) -> None:
        cache = memo.Cache("memory://")  # no I/O: the second call joins within one loop step
        seen = Counter()
        started = asyncio.Event()

        @cache.cached(ns="c")
        async def slow(x: int) -> int:
            seen(x)
            started.set()
            await asyncio.sleep(0.1)
            return x

        first = asyncio.create_task(slow(1))
        await started.wait()
        first.cancel()
        await asyncio.sleep(0)  # the only waiter leaves: the shared computation is being cancelled
        try:
            result = await slow(1)  # awaited here, not in a task: it joins within this loop step
        except asyncio.CancelledError:
            pytest.fail("a caller that was never cancelled received CancelledError")
        assert result == 1
        assert first.cancelled()
        assert len(seen.calls) == 2  # the abandoned computation, and a new one


def test_a_forked_child_does_not_wait_for_the_parents_computation() -> None:
    cache = memo.Cache("memory://")
    parent = os.getpid()
    inside = threading.Event()
    release = threading.Event()

    @cache.cached(ns="fork")
    def slow(x: int) -> int:
        if os.getpid() == parent:
            inside.set()
            release.wait(10)
        return x

    leader = threading.Thread(target=slow, args=(1,))
    leader.start()
    assert inside.wait(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() with threads running
        pid = os.fork()
    if pid == 0:  # the child: the leader thread does not exist here
        os._exit(0 if slow(1) == 1 else 1)
    try:
        deadline = time.monotonic() + 10
        status = None
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.02)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung on a key the parent was computing")
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        release.set()
        leader.join()


class Box:
    """A result the codec cannot encode (not registered, no annotation naming it)."""

    def __init__(self) -> None:
        self.items: list[int] = []


class Locked(Box):
    """Neither encodable nor deep-copyable."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()


class TestFollowersOwnTheirResult:
    @pytest.mark.parametrize("kind", [Box, Locked])
    def test_followers_never_share_an_unencodable_result(self, cache: memo.Cache, kind: type[Box]) -> None:
        seen = Counter()
        barrier = threading.Barrier(8)

        @cache.cached(ns="own")
        def make(x: int) -> Any:
            seen(x)
            time.sleep(0.2)
            return kind()

        results: list[Any] = []

        def worker() -> None:
            barrier.wait()
            results.append(make(1))

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 8 and all(type(r) is kind for r in results)
        assert len({id(r) for r in results}) == 8
        if kind is Box:
            assert len(seen.calls) == 1  # deep copies
        else:
            assert len(seen.calls) > 1  # no copy possible: followers compute for themselves

    async def test_async_followers_never_share_an_unencodable_result(self, cache: memo.Cache) -> None:
        @cache.cached(ns="own")
        async def make(x: int) -> Any:
            await asyncio.sleep(0.05)
            return Box()

        results = await asyncio.gather(*(make(1) for _ in range(8)))
        assert len({id(r) for r in results}) == 8


def test_a_reentrant_call_gives_back_what_it_took_before_running_alone() -> None:
    """A call re-entering its own key's computation runs `alone`; what it took for a computation
    of its own (a lease its read was granted) is given back first, as a follower's is."""
    from memo._flight import Flight

    flight: Flight[str] = Flight()
    given_back: list[str] = []

    def outer() -> str:
        inner, led = flight.run("k", lambda: "never", lambda: "alone", lambda: given_back.append("inner"))
        return f"outer+{inner}+{led}"

    assert flight.run("k", outer, None, lambda: given_back.append("outer")) == ("outer+alone+True", True)
    assert given_back == ["inner"]  # the leader keeps its own; the re-entrant call gives its back


def test_an_async_reentrant_call_gives_back_what_it_took_before_running_alone() -> None:
    from memo._flight import AsyncFlight

    flight: AsyncFlight[str] = AsyncFlight()
    given_back: list[str] = []

    async def give_back(who: str) -> None:
        given_back.append(who)

    async def alone() -> str:
        return "alone"

    async def never() -> str:
        raise AssertionError("re-entry must not wait for itself")

    async def outer() -> str:
        inner, led = await flight.run("k", never, alone, lambda: give_back("inner"))
        return f"outer+{inner}+{led}"

    got = asyncio.run(flight.run("k", outer, None, lambda: give_back("outer")))
    assert got == ("outer+alone+True", True) and given_back == ["inner"]
