"""PostgresStore on real PostgreSQL (sync and async pools), and SessionCache's rotate,
revoke_all, touch and id checks on real memcached with the store behind them."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from memcached_fixtures import MemcachedProcess

import memo
from memo._cli import main as cli
from memo.sessions import PostgresStore, SessionCache, ddl

pytestmark = [pytest.mark.memcached, pytest.mark.postgres]


@pytest.fixture
def store(pg_url: str, pg_schema: str) -> Iterator[PostgresStore]:
    from psycopg_pool import ConnectionPool

    with ConnectionPool(pg_url, min_size=1, max_size=4) as pool:
        s = PostgresStore(pool, f"{pg_schema}.sessions")
        s.create_table()
        s.create_table()  # idempotent
        yield s


_OPEN: list[memo.Cache] = []


@pytest.fixture(autouse=True)
def _close_caches() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def _cache(url: str, prefix: str | None = None, **options: Any) -> memo.Cache:
    _OPEN.append(memo.Cache(url, prefix=prefix or f"st{uuid.uuid4().hex[:8]}:", **options))
    return _OPEN[-1]


def _sessions(url: str, store: PostgresStore, **options: Any) -> SessionCache[Any]:
    return SessionCache(_cache(url, **options), store=store)


def test_values_keep_their_types_and_ids_never_reach_the_table(store: PostgresStore, pg_url: str) -> None:
    data = {
        "when": dt.datetime(2024, 5, 1, 12, tzinfo=dt.timezone.utc),
        "pair": (1, 2),
        "tags": {"a"},
        "price": Decimal("9.90"),
        "id": uuid.UUID(int=7),
        "odd~key": "nul\x00~inside",
        "n": None,
    }
    record = store.insert("a-session-id-12345678", data, user_id=42, max_age=60)
    assert record["data"] == data and record["user_id"] == "42"
    assert store.load("a-session-id-12345678") == record
    import psycopg

    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(f"SELECT id, user_id FROM {store.table}").fetchall()
    assert rows == [(store.digest("a-session-id-12345678"), "42")]
    assert "a-session-id" not in rows[0][0]


def test_update_merges_atomically_and_rename_moves(store: PostgresStore) -> None:
    store.insert("s1", {"a": 1, "b": 2}, max_age=60)
    writers = [threading.Thread(target=store.update, args=("s1", {f"k{i}": i})) for i in range(20)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    record = store.update("s1", {"a": 10}, remove=["b"])
    assert record is not None
    assert record["data"] == {"a": 10, **{f"k{i}": i for i in range(20)}}  # no update lost
    moved = store.rename("s1", "s2", {"c": 3}, user_id="bob", max_age=120)
    assert moved is not None and moved["user_id"] == "bob" and moved["data"]["c"] == 3
    assert store.load("s1") is None and store.update("s1", {"x": 1}) is None
    assert moved["expires_at"] - moved["created"] > dt.timedelta(seconds=110)


def test_delete_delete_user_and_purge(store: PostgresStore) -> None:
    for sid, user in [("a1", "alice"), ("a2", "alice"), ("b1", "bob")]:
        store.insert(sid, {}, user_id=user, max_age=60)
    store.insert("old", {}, max_age=-1)  # expired already
    assert store.load("old") is None  # expired: absent
    assert store.delete_user("alice") == 2 and store.load("a1") is None
    assert store.delete("b1") is True and store.delete("b1") is False
    assert store.purge_expired() == 1


async def test_the_async_pool(pg_url: str, pg_schema: str) -> None:
    from psycopg_pool import AsyncConnectionPool

    async with AsyncConnectionPool(pg_url, min_size=1, max_size=2) as pool:
        store = PostgresStore(pool, f"{pg_schema}.asessions")
        await store.acreate_table()
        await store.ainsert("s", {"a": 1}, user_id="u", max_age=60)
        assert (await store.aupdate("s", {"b": (2,)}))["data"] == {"a": 1, "b": (2,)}  # type: ignore[index]
        assert (await store.arename("s", "t"))["user_id"] == "u"  # type: ignore[index]
        assert await store.aload("s") is None
        assert (await store.aload("t"))["data"] == {"a": 1, "b": (2,)}  # type: ignore[index]
        assert await store.adelete_user("u") == 1 and await store.apurge_expired() == 0
        with pytest.raises(TypeError, match="aload"):
            store.load("t")


def test_bad_table_names_and_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(memo.ConfigurationError, match="table"):
        ddl("x; DROP TABLE y")
    assert cli(["sessions", "sql", "--table", "app.sess"]) == 0
    assert capsys.readouterr().out == ddl("app.sess")
    assert "CREATE TABLE IF NOT EXISTS app.sess (" in ddl("app.sess")
    assert cli(["sessions", "sql", "--table", "a-b"]) == 2


# -- SessionCache with the store: rotate, revoke_all, touch ---------------------------------------


def test_rotate_invalidates_the_old_id_at_once_in_every_process(
    store: PostgresStore, memcached_url: str
) -> None:
    one = _sessions(memcached_url, store)
    two = SessionCache(_cache(memcached_url, one.cache.prefix), store=store)
    sid = one.new_id()
    one.create(sid, insert=lambda: store.insert(sid, {"cart": ["a"]}, max_age=60))
    assert two.get(sid, user_id=None, load=store.load)["data"] == {"cart": ["a"]}  # type: ignore[index]
    new = one.rotate(sid, user_id="alice")
    assert new is not None and new != sid and new.endswith("." + one._user_tag("alice"))
    assert two.get(sid, user_id=None, load=store.load) is None
    got = two.get(new, user_id="alice", load=store.load)
    assert got is not None and got["data"] == {"cart": ["a"]}
    kept = one.rotate(new)  # KEEP: the same user, the same tag
    assert kept is not None and kept[-12:] == new[-12:]
    assert one.rotate("no-such-session-at-all") is None
    assert one.stats()["rotations"] == 2


def test_revoke_all_voids_cached_copies_and_rows(store: PostgresStore, memcached_url: str) -> None:
    one = _sessions(memcached_url, store)
    two = SessionCache(_cache(memcached_url, one.cache.prefix), store=store)
    mine = [one.new_id_for("alice") for _ in range(3)]
    bobs = one.new_id_for("bob")
    for sid in mine:
        one.create(sid, insert=lambda sid=sid: store.insert(sid, {}, user_id="alice", max_age=60))  # type: ignore[misc]
    one.create(bobs, insert=lambda: store.insert(bobs, {}, user_id="bob", max_age=60))
    assert [two.get(s, user_id="alice", load=store.load)["user_id"] for s in mine] == ["alice"] * 3  # type: ignore[index]
    hits = two.stats()["hits"]
    assert one.revoke_all("alice") == 3
    assert [two.get(s, user_id="alice", load=store.load) for s in mine] == [None] * 3
    assert two.stats()["hits"] == hits and two.stats()["revoked"] == 3  # each refused copy once
    assert two.get(bobs, user_id="bob", load=store.load)["user_id"] == "bob"  # type: ignore[index]


def test_revoke_all_without_a_store_says_so(memcached_url: str) -> None:
    sessions = SessionCache(_cache(memcached_url))
    with pytest.raises(TypeError, match="store"):
        sessions.revoke_all("alice")


def test_a_revoke_all_that_cannot_reach_memcached_voids_the_copies_at_the_next_contact(
    store: PostgresStore, memcached_servers: Any
) -> None:
    server: MemcachedProcess = memcached_servers(1)[0]
    sessions = _sessions(server.url, store, timeout=0.05, connect_timeout=0.05, retry_after=0.2)
    sid = sessions.new_id_for("alice")
    sessions.create(sid, insert=lambda: store.insert(sid, {}, user_id="alice", max_age=60))
    server.pause()
    try:
        assert sessions.revoke_all("alice") == 1
    finally:
        server.resume()
    assert sessions.stats()["pending"] == 1
    store.insert(sid, {}, user_id="alice", max_age=60)  # what a copy still held
    import time

    time.sleep(0.3)
    # The pending delete of the generation runs first: the old copy is never served.
    assert sessions.get(sid, user_id="alice", load=lambda s: None) is None
    assert sessions.stats()["pending"] == 0


def test_touch_extends_a_live_copy_on_memcached_but_not_one_whose_delete_is_pending(
    store: PostgresStore, memcached_url: str
) -> None:
    sessions = _sessions(memcached_url, store)
    sid = sessions.new_id_for("alice")
    sessions.create(sid, insert=lambda: store.insert(sid, {}, user_id="alice", max_age=60))
    assert sessions.touch(sid) is True
    sessions._remember(sessions.key_for(sid))  # a write that could not reach memcached
    sessions.cache.backend.delete_many = lambda keys: (_ for _ in ()).throw(  # type: ignore[method-assign]
        memo.BackendError("down")
    )
    assert sessions.touch(sid) is False  # the stale copy is not prolonged
    sessions.revoke_all("alice")
    del sessions.cache.backend.delete_many
    sessions._pending.clear()
    assert sessions.touch(sid) is False  # a revoked copy is not prolonged either


@pytest.mark.parametrize("sid", ["0123456789abcdef", "Ab3-_x9QpZ1", "550e8400-e29b-41d4-a716-446655440000"])
def test_ids_an_application_brings_pass_the_entropy_floor(sid: str) -> None:
    sessions = SessionCache(memo.Cache("memory://"), owner=None)
    assert sessions.create(sid, insert=lambda: {"ok": 1}) == {"ok": 1}
    assert sessions.get(sid, load=lambda s: None) == {"ok": 1}


@pytest.mark.parametrize(
    "sid", ["0123456789abcde", "1234567890123456789", "Ab3-_x9QpZ", "aaaaaaaaaaaaaaaaaaaaaaaa"]
)
def test_ids_below_the_entropy_floor_are_refused(sid: str) -> None:
    sessions = SessionCache(memo.Cache("memory://"), owner=None)
    with pytest.raises(ValueError, match="64 bits"):
        sessions.create(sid, insert=lambda: {"ok": 1})


def test_memcached_ttl_reaches_the_session_ttl(memcached_url: str) -> None:
    env = {
        "MEMCACHED_ENABLED": "true",
        "MEMCACHED_HOSTS": memcached_url.removeprefix("memcached://"),
        "MEMCACHED_TTL": "120",
    }
    for options, ttl in (({}, 120), ({"ttl": 30}, 30)):
        sessions = SessionCache.from_env("MEMCACHED_", environ=env, **options)
        _OPEN.append(sessions.cache)
        assert sessions.ttl == ttl
    assert SessionCache(memo.Cache("memory://")).ttl == 1800
