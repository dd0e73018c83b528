"""Hits with a tag and from the near-cache, each beside a plain @cached hit in the same group."""

from __future__ import annotations

from typing import Any

from bench_helpers import SMALL, role

import memo


def _plain(cache: memo.Cache) -> Any:
    @cache.cached(ns="bench", ttl=600)
    def get_user(user_id: int) -> dict[str, Any]:
        return SMALL

    get_user(42)
    return get_user


def test_hit_tags_baseline(benchmark: Any, memo_cache: memo.Cache) -> None:
    role(benchmark, "baseline", "memo, no tags")
    benchmark.group = "hit-tags"
    assert benchmark(_plain(memo_cache), 42) == SMALL


def test_hit_tags_one(benchmark: Any, memo_cache: memo.Cache) -> None:
    """A function tagged by its argument: the entry and its tag's version in one get_many."""
    role(benchmark, "subject", "memo, 1 tag")
    benchmark.group = "hit-tags"

    @memo_cache.cached(ns="bench", ttl=600, tags=("user_id",))
    def get_user(user_id: int) -> dict[str, Any]:
        return SMALL

    get_user(42)
    assert benchmark(get_user, 42) == SMALL
    assert get_user.cache_info()["hits"] >= 1 and get_user.cache_info()["misses"] == 1


def test_hit_near_baseline(benchmark: Any, memo_cache: memo.Cache) -> None:
    role(benchmark, "baseline", "memo")
    benchmark.group = "hit-near"
    assert benchmark(_plain(memo_cache), 42) == SMALL


def test_hit_near(benchmark: Any, memo_cache: memo.Cache) -> None:
    """The same hit served from the process (`local_ttl`): no round trip."""
    role(benchmark, "subject", "memo, local_ttl")
    benchmark.group = "hit-near"

    @memo_cache.cached(ns="bench", ttl=600, local_ttl=3600)
    def get_user(user_id: int) -> dict[str, Any]:
        return SMALL

    get_user(42)
    get_user(42)  # the hit read from memcached, kept
    assert benchmark(get_user, 42) == SMALL
    assert get_user.cache_info()["local_hits"] >= 1
