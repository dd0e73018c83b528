"""memo.testing: the pytest plugin's fixtures and helpers, run in pytester sessions."""

from __future__ import annotations

from pathlib import Path

import pytest

import memo
from memo.testing import EventLog, assert_hits, assert_misses, record_events

#: As a user's suite loads it: the plugin module itself (the entry point is named
#: "memo"; blocking that name keeps an installed copy from registering twice).
PLUGIN = ("-p", "no:memo", "-p", "memo.testing", "-p", "no:asyncio", "-p", "no:cacheprovider")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*PLUGIN, "-ra", *args)


def test_the_plugin_is_a_pytest_entry_point() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["pytest11"] == {"memo": "memo.testing"}


def test_memo_cache_is_fresh_per_test_and_the_default_cache(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import memo
        from memo.testing import assert_hits, assert_misses

        calls = []

        @memo.cached(ns="users")
        def get_user(user_id):
            calls.append(user_id)
            return {"id": user_id}

        def test_first(memo_cache):
            assert memo.default_cache() is memo_cache
            get_user(1); get_user(1)
            assert_misses(memo_cache, 1)
            assert_hits(memo_cache, 1, ns="users")
            memo_cache.set("k", 1)

        def test_second_starts_empty(memo_cache):
            assert memo_cache.get("k") is None
            get_user(1)
            assert calls == [1, 1]
            assert_hits(memo_cache, 0)

        def test_default_restored_after():
            assert memo.default_cache().get("k") is None
        """
    )
    run(pytester).assert_outcomes(passed=3)


def test_memo_events(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_events(memo_cache, memo_events):
            memo_cache.get_or_set("k", lambda: 1, ns="n")
            memo_cache.get("k", ns="n")
            assert memo_events.kinds == ["miss", "lease_acquired", "set", "hit"]
            assert memo_events.count("hit", ns="n") == 1 and memo_events.misses == 1
        """
    )
    run(pytester).assert_outcomes(passed=1)


def test_failed_assertions_say_what_happened(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from memo.testing import assert_hits

        def test_wrong(memo_cache):
            memo_cache.get("k")
            assert_hits(memo_cache, 1, ns="default")
        """
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*expected 1 cache hits in namespace 'default', got 0*"])


@pytest.mark.memcached
def test_memcached_url_is_a_real_memcached_for_the_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import memo

        seen = []

        def test_one(memcached_url):
            seen.append(memcached_url)
            cache = memo.Cache(memcached_url, on_error="raise")
            cache.set("k", (1, 2))
            assert cache.get("k") == (1, 2)

        def test_two(memcached_url):
            assert seen == [memcached_url]
            assert memo.Cache(memcached_url).get("k") == (1, 2)
        """
    )
    run(pytester).assert_outcomes(passed=2)


def test_memcached_url_skips_with_the_reason_where_there_is_no_memcached(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile("def test_needs_it(memcached_url): pass\n")
    monkeypatch.setenv("PATH", str(pytester.path))
    monkeypatch.delenv("MEMCACHED_BIN", raising=False)
    monkeypatch.delenv("MEMO_REQUIRE_MEMCACHED", raising=False)
    result = run(pytester)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*memcached is not installed*"])
    monkeypatch.setenv("MEMO_REQUIRE_MEMCACHED", "1")
    run(pytester).assert_outcomes(errors=1)


def test_memcached_url_skips_when_memcached_will_not_start(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = pytester.path / "memcached"
    fake.write_text("#!/bin/sh\necho 'cannot bind' >&2\nexit 71\n")
    fake.chmod(0o755)
    monkeypatch.setenv("MEMCACHED_BIN", str(fake))
    monkeypatch.delenv("MEMO_REQUIRE_MEMCACHED", raising=False)
    pytester.makepyfile("def test_needs_it(memcached_url): pass\n")
    result = run(pytester)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*could not be started*cannot bind*"])


def test_record_events_keeps_the_caches_own_hook() -> None:
    own: list[memo.Event] = []
    cache = memo.Cache(on_event=own.append)
    with record_events(cache) as events:
        cache.get("k")
    cache.get("k")
    assert isinstance(events, EventLog) and events.kinds == ["miss"]
    assert len(own) == 2
    assert cache.on_event == own.append


def test_events_match_by_function_name() -> None:
    log = EventLog([memo.Event("hit", "ns", "app.users.get_user"), memo.Event("hit", "ns", None)])
    assert log.count("hit", function="get_user") == 1
    assert log.count("hit", function="app.users.get_user") == 1
    assert log.count("hit", ns="other") == 0


def test_assert_helpers_on_stats() -> None:
    cache = memo.Cache()
    cache.get("a", ns="x")
    cache.set("a", 1, ns="x")
    cache.get("a", ns="x")
    assert_hits(cache, 1)
    assert_misses(cache, 1, ns="x")
    with pytest.raises(AssertionError, match="expected 2 cache misses"):
        assert_misses(cache, 2)
