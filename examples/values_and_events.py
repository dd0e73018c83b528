"""The value API and the event hook: a small rate-limited lookup service in one page.

Runs on the in-process memory:// backend by default; set MEMO_URL to run it on
memcached, e.g. MEMO_URL=memcached://127.0.0.1:11211 python examples/values_and_events.py
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter

import memo

kinds: Counter[tuple[str, str]] = Counter()


def count(event: memo.Event) -> None:
    """An on_event hook: count what the cache did, by kind and namespace."""
    kinds[(event.kind, event.ns)] += 1


cache = memo.Cache(os.environ.get("MEMO_URL", "memory://"), prefix="values-example:", on_event=count)
cache.clear()  # start this demo from empty entries (other keys on the server are untouched)


def fetch_exchange_rate(pair: str) -> float:
    time.sleep(0.05)  # stands in for a remote API
    return {"EUR/USD": 1.08, "EUR/GBP": 0.86}[pair]


async def afetch_profile(user: str) -> dict[str, str]:
    await asyncio.sleep(0.05)  # stands in for a database query
    return {"user": user, "plan": "pro"}


def main() -> None:
    print(f"memo {memo.__version__} on {cache.backend!r}\n")

    # Any string is a key; values come back with their types.
    cache.set("session token for ann@example.com", ("abc", 3600), ns="tokens", ttl=60)
    print("tokens:", cache.get("session token for ann@example.com", ns="tokens"))

    # get_or_set: computed once, then served from the cache.
    for _ in range(3):
        rate = cache.get_or_set("EUR/USD", lambda: fetch_exchange_rate("EUR/USD"), ns="rates", ttl=30)
    print("rate:", rate)

    # Batches: one round trip per server.
    cache.set_many({"EUR/GBP": 0.86, "EUR/JPY": 161.2}, ns="rates", ttl=30)
    print("batch:", cache.get_many(["EUR/USD", "EUR/GBP", "EUR/CHF"], ns="rates"))

    # Async twins; the function may be sync or async.
    async def profiles() -> list[dict[str, str]]:
        return await asyncio.gather(
            *(cache.aget_or_set("ann", lambda: afetch_profile("ann")) for _ in range(5))
        )

    print("profiles:", asyncio.run(profiles())[0])
    asyncio.run(cache.aclose())

    cache.delete("EUR/USD", ns="rates")
    print("after delete:", cache.get("EUR/USD", "gone", ns="rates"))

    print("\nevents by kind and namespace:")
    for (kind, ns), n in sorted(kinds.items()):
        print(f"  {ns:<8} {kind:<15} {n}")
    assert kinds[("hit", "rates")] >= 2 and kinds[("set", "rates")] >= 3
    cache.close()


if __name__ == "__main__":
    main()
