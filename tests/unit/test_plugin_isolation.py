"""Each test under memo's pytest plugin starts from zero, `cache_info()` included."""

from __future__ import annotations

import pytest

import memo

PLUGIN = ("-p", "no:memo", "-p", "memo.testing", "-p", "no:asyncio", "-p", "no:cacheprovider")

ZERO = {
    "hits": 0,
    "misses": 0,
    "sets": 0,
    "errors": 0,
    "decode_errors": 0,
    "encode_errors": 0,
    "not_stored": 0,
    "stale": 0,
    "lease_lost": 0,
    "lease_waits": 0,
    "stale_on_error": 0,
    "local_hits": 0,
    "local_evictions": 0,
}


def test_cache_info_starts_at_zero_in_each_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import memo

        @memo.cached(ns="users")
        def get_user(user_id):
            return {"id": user_id}

        def test_first(memo_cache):
            assert get_user.cache_info()["hits"] == 0
            get_user(1); get_user(1)
            assert get_user.cache_info()["hits"] == 1

        def test_second(memo_cache):
            assert get_user.cache_info()["hits"] == 0
            assert get_user.cache_info()["misses"] == 0
        """
    )
    result = pytester.runpytest_subprocess(*PLUGIN, "-ra")
    result.assert_outcomes(passed=2)


def test_cache_info_follows_configure() -> None:
    previous = memo.default_cache()

    @memo.cached(ns="configured")
    def double(x: int) -> int:
        return 2 * x

    try:
        memo.configure("memory://")
        assert double.cache_info() == ZERO  # never called: zeros, not an AttributeError
        double(1)
        double(1)
        assert double.cache_info()["hits"] == 1
        memo.configure("memory://")
        assert double.cache_info() == ZERO
    finally:
        memo._defaults._default = previous
