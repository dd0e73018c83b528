"""`cached_many`: 100 ids of which 10 are missing, against the raw round trips it cannot avoid.

Group `batch-100-10-missing`: each round first invalidates 10 of the 100 items
(untimed), then times one call. The baseline is what any cache must do for that
call: one pymemcache `get_many` of 100 keys plus one `set_many` of 10 values, on
the same server, nothing decoded or encoded. The memo cases add the keys, the
decoding of 90 values, one call of the function, the encoding of 10, and with
leases (the default) one round trip that takes the 10 leases (`get_or_lease_many`:
`mg <key> v c N<ttl>` on a meta server) and stores with `cas` against them; leases
off stores with a plain `set_many`. Every case checks its returned values in an
untimed call first.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from bench_helpers import SMALL, role
from memcached_fixtures import MemcachedProcess

import memo

GROUP, GROUP_ASYNC = "batch-100-10-missing", "batch-100-10-missing-async"
IDS = list(range(100))
MISSING = IDS[::10]
EXPECTED = {i: dict(SMALL, id=i) for i in IDS}


def _cache(server: MemcachedProcess, **options: Any) -> memo.Cache:
    return memo.Cache(server.url, prefix=f"b{uuid.uuid4().hex[:8]}:", **options)


def test_batch_baseline_raw_get_many_and_set_many(benchmark: Any, server: MemcachedProcess) -> None:
    from pymemcache.client.base import Client

    role(benchmark, "baseline", "pymemcache get_many 100 + set_many 10")
    benchmark.group = GROUP
    client = Client(("127.0.0.1", server.port), default_noreply=False)
    cache = _cache(server)

    @cache.cached_many(ns="bench", ttl=600, each="ids")
    def get_users(ids: list[int]) -> dict[int, dict[str, Any]]:
        return {i: EXPECTED[i] for i in ids}

    get_users(IDS)
    keys = get_users.key_for(ids=IDS)
    stored = client.get_many(keys)
    writes = {keys[i]: stored[keys[i]] for i in MISSING}

    def raw() -> int:
        found = client.get_many(keys)
        failed = client.set_many(writes, expire=600)
        return len(found) - len(failed)

    assert raw() == 100
    assert benchmark(raw) == 100
    client.close()
    cache.close()


@pytest.mark.parametrize(
    ("leases", "label"),
    [(True, "memo cached_many, leases on"), (False, "memo cached_many, leases off")],
    ids=["leases", "no-leases"],
)
def test_batch_cached_many(benchmark: Any, server: MemcachedProcess, leases: bool, label: str) -> None:
    role(benchmark, "subject", label)
    benchmark.group = GROUP
    cache = _cache(server, leases=leases)
    calls: list[int] = []

    @cache.cached_many(ns="bench", ttl=600, each="ids")
    def get_users(ids: list[int]) -> dict[int, dict[str, Any]]:
        calls.append(len(ids))
        return {i: EXPECTED[i] for i in ids}

    assert get_users(IDS) == EXPECTED
    missing_keys = get_users.key_for(ids=MISSING)

    def forget() -> tuple[tuple[Any, ...], dict[str, Any]]:
        cache.backend.delete_many(missing_keys)
        return (IDS,), {}

    # The untimed check: exactly the 10 are computed, and every value comes back right.
    forget()
    calls.clear()
    result = get_users(IDS)
    assert result == EXPECTED and list(result) == IDS and calls == [10]
    assert benchmark.pedantic(get_users, setup=forget, rounds=300, warmup_rounds=20) == EXPECTED
    cache.close()


def test_batch_cached_many_async(benchmark: Any, server: MemcachedProcess) -> None:
    role(benchmark, "subject", "memo cached_many async, leases on")
    benchmark.group = GROUP_ASYNC
    cache = _cache(server)
    loop = asyncio.new_event_loop()

    @cache.cached_many(ns="bench", ttl=600, each="ids")
    async def get_users(ids: list[int]) -> dict[int, dict[str, Any]]:
        return {i: EXPECTED[i] for i in ids}

    assert loop.run_until_complete(get_users(IDS)) == EXPECTED
    missing_keys = get_users.key_for(ids=MISSING)

    def forget() -> tuple[tuple[Any, ...], dict[str, Any]]:
        cache.backend.delete_many(missing_keys)
        return (), {}

    def call() -> Any:
        return loop.run_until_complete(get_users(IDS))

    forget()
    assert call() == EXPECTED
    assert benchmark.pedantic(call, setup=forget, rounds=200, warmup_rounds=20) == EXPECTED
    cache.close()
    loop.run_until_complete(cache.aclose())
    loop.close()
