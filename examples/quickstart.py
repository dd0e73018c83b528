"""memo in one page: sync and async hits, misses, an invalidation, stats.

Runs on the in-process memory:// backend by default; set MEMO_URL to run it on
memcached, e.g. MEMO_URL=memcached://127.0.0.1:11211 python examples/quickstart.py
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time

import memo

cache = memo.Cache(os.environ.get("MEMO_URL", "memory://"), prefix="quickstart:")
cache.clear()  # start this demo from empty entries (other keys on the server are untouched)


@dataclasses.dataclass
class User:
    id: int
    name: str
    roles: tuple[str, ...]


@cache.cached(ns="users", ttl=60)
def get_user(user_id: int, *, full: bool = False) -> User:
    time.sleep(0.05)  # stands in for a database query
    return User(user_id, f"user-{user_id}", ("admin",) if full else ())


@cache.cached(ns="scores", ttl=30)
async def aget_score(user_id: int) -> float:
    await asyncio.sleep(0.05)  # stands in for a remote call
    return user_id * 1.5


def timed(label: str, fn: object, *args: object, repeat: int = 1, **kwargs: object) -> object:
    """Call `fn` `repeat` times; print the time per call (hits are too quick to time once)."""
    start = time.perf_counter()
    for _ in range(repeat):
        result = fn(*args, **kwargs)  # type: ignore[operator]
    print(f"{label:<38} {(time.perf_counter() - start) / repeat * 1e6:9.1f} µs  -> {result!r}")
    return result


async def atimed(label: str, coro_fn: object, *args: object, repeat: int = 1) -> object:
    start = time.perf_counter()
    for _ in range(repeat):
        result = await coro_fn(*args)  # type: ignore[operator]
    print(f"{label:<38} {(time.perf_counter() - start) / repeat * 1e6:9.1f} µs  -> {result!r}")
    return result


def main() -> None:
    print(f"memo {memo.__version__} on {cache.backend!r}\n")
    timed("get_user(42)            (miss)", get_user, 42)
    timed("get_user(42)            (hit, x1000)", get_user, 42, repeat=1000)
    timed("get_user(user_id=42)    (same key)", get_user, user_id=42)
    timed("get_user(42, full=True) (miss)", get_user, 42, full=True)
    print(f"{'key of get_user(42)':<38} {get_user.key_for(42)}")
    timed("get_user.invalidate(42)", get_user.invalidate, 42)
    timed("get_user(42)            (miss again)", get_user, 42)

    async def run_async() -> None:
        await atimed("await aget_score(7)     (miss)", aget_score, 7)
        await atimed("await aget_score(7)     (hit, x1000)", aget_score, 7, repeat=1000)
        results = await asyncio.gather(*(aget_score(8) for _ in range(100)))
        print(f"{'100 concurrent aget_score(8)':<38} computed once -> {results[0]!r}")
        await cache.aclose()

    asyncio.run(run_async())
    cache.clear(ns="users")
    timed("get_user(42) after clear(ns='users')", get_user, 42)

    print("\nstats:")
    for ns, counters in cache.stats().items():
        print(f"  {ns:<8} " + "  ".join(f"{k}={v}" for k, v in counters.items()))
    users = cache.stats("users")
    assert users["hits"] == 1001 and users["misses"] == 4, users
    assert cache.stats("scores")["hits"] >= 1
    cache.close()


if __name__ == "__main__":
    main()
