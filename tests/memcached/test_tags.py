"""Tags: `invalidate_tags` / `invalidate_where` make every entry carrying a tag a miss, in every process."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import memo
from memo._tags import tag_key


def _posts(cache: memo.Cache, runs: list[tuple[int, int]], **options: Any) -> Any:
    options.setdefault("tags", ("author_id",))

    @cache.cached(ns="posts", ttl=300, ignore=("runs",), **options)
    def posts(author_id: int, page: int = 1) -> list[str]:
        runs.append((author_id, page))
        return [f"post {author_id}/{page}/{len(runs)}"]

    return posts


def test_invalidate_where_drops_exactly_the_entries_of_that_value(cache: memo.Cache) -> None:
    runs: list[tuple[int, int]] = []
    posts = _posts(cache, runs)
    first = [posts(42), posts(42, page=2), posts(7)]
    assert [posts(42), posts(42, page=2), posts(7)] == first  # hits
    assert len(runs) == 3
    assert posts.invalidate_where(author_id=42) == 1
    assert posts(7) == first[2]  # another author's entry stays
    assert posts(42) != first[0] and posts(42, page=2) != first[1]
    assert runs[3:] == [(42, 1), (42, 2)]
    assert posts.cache_info()["hits"] == 4


def test_tags_are_exact_about_types(cache: memo.Cache) -> None:
    runs: list[tuple[int, int]] = []
    posts = _posts(cache, runs)
    posts(42)
    posts.invalidate_where(author_id="42")  # the string, not the int
    posts(42)
    assert runs == [(42, 1)]


def test_a_callable_names_the_tags(cache: memo.Cache) -> None:
    runs: list[tuple[int, int]] = []
    posts = _posts(cache, runs, tags=lambda author_id, **_: [f"author:{author_id}", "posts"])
    posts(1)
    posts(2)
    cache.invalidate_tags("author:1")
    posts(1)
    posts(2)
    assert runs == [(1, 1), (2, 1), (1, 1)]
    cache.invalidate_tags("posts")
    posts(1)
    posts(2)
    assert runs[3:] == [(1, 1), (2, 1)]
    with pytest.raises(TypeError, match="callable"):
        posts.invalidate_where(author_id=1)


def test_a_lost_tag_version_makes_its_entries_misses_never_stale(cache: memo.Cache) -> None:
    runs: list[tuple[int, int]] = []
    posts = _posts(cache, runs, tags=lambda author_id, **_: [f"a:{author_id}"])
    posts(5)
    cache.backend.delete(tag_key(cache.prefix, "a:5"))  # evicted, or the server restarted
    posts(5)
    posts(5)
    assert runs == [(5, 1), (5, 1)]  # a miss, then a hit under the new version


def test_a_tag_invalidated_while_computing_voids_the_fill(cache: memo.Cache) -> None:
    runs: list[int] = []

    @cache.cached(ns="posts", ttl=300, tags=("author_id",), ignore=("runs",))
    def posts(author_id: int) -> int:
        runs.append(author_id)
        if len(runs) == 1:
            posts.invalidate_where(author_id=author_id)  # the source changed meanwhile
        return len(runs)

    assert posts(3) == 1  # the caller gets its own result
    assert posts(3) == 2  # but it was not served to the next caller
    assert posts(3) == 2


def test_refresh_and_set_store_tagged_entries(cache: memo.Cache) -> None:
    runs: list[tuple[int, int]] = []
    posts = _posts(cache, runs)
    posts.set(["primed"], 9)
    assert posts(9) == ["primed"] and runs == []
    assert posts.get(9) == ["primed"]
    fresh = posts.refresh(9)
    assert posts(9) == fresh and len(runs) == 1
    posts.invalidate_where(author_id=9)
    assert posts.get(9) is memo.MISS


async def test_async(cache: memo.Cache) -> None:
    runs: list[int] = []

    @cache.cached(ns="posts", ttl=300, tags=("author_id",), ignore=("runs",))
    async def posts(author_id: int) -> int:
        runs.append(author_id)
        return len(runs)

    assert await posts(1) == 1
    assert await posts(1) == 1
    await posts.ainvalidate_where(author_id=1)
    assert await posts(1) == 2
    await cache.ainvalidate_tags("author_id=1")  # the parameter form's tag, written out
    assert await posts(1) == 3
    await cache.ainvalidate_tags('author_id="1"')  # the str "1": another tag
    assert await posts(1) == 3


@pytest.mark.memcached
def test_another_process_sees_the_invalidation_at_once(memcached_url: str) -> None:
    prefix = f"tg{uuid.uuid4().hex[:8]}:"
    here, there = memo.Cache(memcached_url, prefix=prefix), memo.Cache(memcached_url, prefix=prefix)
    runs_here: list[tuple[int, int]] = []
    runs_there: list[tuple[int, int]] = []
    posts_here, posts_there = _posts(here, runs_here), _posts(there, runs_there)
    value = posts_here(4)
    assert posts_there(4) == value and runs_there == []  # the same entry
    posts_here.invalidate_where(author_id=4)
    posts_there(4)
    assert runs_there == [(4, 1)]  # a miss there, at once (no ns_refresh delay)
    here.close()
    there.close()


def test_bad_tags_are_refused_when_decorating(memory_cache: memo.Cache) -> None:
    with pytest.raises(memo.ConfigurationError, match="tags="):
        memory_cache.cached(ns="x", ttl=5, tags=("nope",))(lambda author_id: author_id)
    with pytest.raises(memo.ConfigurationError, match="does not combine"):
        memory_cache.cached(ns="x", ttl=5, tags=("a",), stale_ttl=5)(lambda a: a)

    @memory_cache.cached(ns="x", ttl=5)
    def untagged(a: int) -> int:
        return a

    with pytest.raises(TypeError, match="no tags"):
        untagged.invalidate_where(a=1)
