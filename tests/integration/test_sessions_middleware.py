"""SessionMiddleware's own rules: the change-recording session dict (pure), configuration
errors, and write-back through the ASGI interface on real PostgreSQL and memcached."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

import memo
from memo.sessions import KEEP, PostgresStore, Session, SessionCache, SessionMiddleware


def test_the_session_dict_records_what_changed() -> None:
    s = Session({"a": 1, "b": 2, "c": 3}, sid="x", user_id="u")
    assert s == {"a": 1, "b": 2, "c": 3} and s._delta() == ({}, [])
    s["a"] = 10
    s.setdefault("d", 4)
    s.setdefault("b", 99)  # present: unchanged, not written
    s.update({"e": 5}, f=6)
    s |= {"g": 7}
    assert s.pop("c") == 3 and s.pop("zz", None) is None
    del s["b"]
    assert s._delta() == ({"a": 10, "d": 4, "e": 5, "f": 6, "g": 7}, ["b", "c"])
    s["b"] = 20  # set again after a removal: written, not removed
    assert s._delta()[1] == ["c"]
    with pytest.raises(TypeError, match="str"):
        s[1] = "x"  # type: ignore[index]
    s.modified = True
    assert set(s._delta()[0]) == set(s)


def test_only_a_touched_session_is_written_back() -> None:
    """`_touched()` is what lets a read-only request skip the write-back altogether."""
    assert not Session({"a": 1}, sid="x", user_id="u")._touched()
    assert not Session()._touched()
    changes: list[Any] = [
        lambda s: s.__setitem__("b", 2),
        lambda s: s.__delitem__("a"),
        lambda s: s.pop("a"),
        lambda s: s.setdefault("c", 3),
        lambda s: s.update(a=1),  # the same value: still written (as before)
        lambda s: setattr(s, "modified", True),
        lambda s: s.rotate(),
        lambda s: s.login("bob"),
        lambda s: s.clear(),
        lambda s: s.logout(),
    ]
    for change in changes:
        session = Session({"a": 1}, sid="x", user_id="u")
        change(session)
        assert session._touched(), change
    read = Session({"a": 1}, sid="x", user_id="u")
    assert read["a"] == 1 and read.get("b") is None and "a" in read and read.setdefault("a", 9) == 1
    assert not read._touched()  # reading is not touching


def test_login_rotate_and_logout_mark_the_session() -> None:
    s = Session({"a": 1}, sid="x")
    s.rotate()
    assert s.rotating and s.new_user is KEEP
    s.login("alice")
    assert s.user_id == "alice" and s.new_user == "alice"
    with pytest.raises(ValueError, match="logout"):
        s.login(None)
    s.logout()
    assert s == {} and s.cleared and s.user_id is None and s.new_user is KEEP and not s.rotating


async def test_revoke_all_of_an_anonymous_session_is_refused() -> None:
    with pytest.raises(ValueError, match="no user"):
        await Session().revoke_all()


class _Store:
    """Only for the configuration checks below: nothing is called on it."""


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"samesite": "sideways"}, "samesite"),
        ({"max_age": 0}, "max_age"),
        ({"max_age": 1.5}, "max_age"),
        ({"cookie": "a b"}, "cookie"),
    ],
)
def test_bad_configuration_is_refused(options: dict[str, Any], match: str) -> None:
    sessions = SessionCache(memo.Cache("memory://"))
    with pytest.raises(memo.ConfigurationError, match=match):
        SessionMiddleware(_noop, sessions=sessions, store=_Store(), **options)


def test_a_session_cache_bound_to_another_store_is_refused() -> None:
    sessions = SessionCache(memo.Cache("memory://"), store=_Store())
    with pytest.raises(memo.ConfigurationError, match="another store"):
        SessionMiddleware(_noop, sessions=sessions, store=_Store())
    with pytest.raises(memo.ConfigurationError, match="SessionCache"):
        SessionMiddleware(_noop, sessions=object(), store=_Store())  # type: ignore[arg-type]


def test_renewal_reads_a_stores_naive_expiry_as_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    """A custom store may give naive datetimes: UTC, as SessionCache reads them (never local time)."""
    import datetime as dt
    import time

    from memo import _clock

    sessions = SessionCache(memo.Cache("memory://"))
    mw = SessionMiddleware(_noop, sessions=sessions, store=_Store(), max_age=1800)
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # local time nine hours from UTC
    time.tzset()
    try:
        with _clock.use(_clock.FakeClock(start=1_800_000_000.0)):
            now = dt.datetime.fromtimestamp(_clock.time(), dt.timezone.utc).replace(tzinfo=None)
            soon, later = now + dt.timedelta(seconds=600), now + dt.timedelta(seconds=1200)
            assert mw._renew_due(Session({}, "sid", "u", soon)) is True  # 600 s left of 1800: renew
            assert mw._renew_due(Session({}, "sid", "u", later)) is False
            aware = later.replace(tzinfo=dt.timezone.utc)
            assert mw._renew_due(Session({}, "sid", "u", aware)) is False
    finally:
        monkeypatch.undo()
        time.tzset()


async def _noop(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


# -- through the ASGI interface, real PostgreSQL and memcached ----------------------------------------


@pytest.fixture
async def store(pg_url: str, pg_schema: str) -> AsyncIterator[PostgresStore]:
    from psycopg_pool import AsyncConnectionPool

    async with AsyncConnectionPool(pg_url, min_size=1, max_size=4) as pool:
        s = PostgresStore(pool, f"{pg_schema}.sessions")
        await s.acreate_table()
        yield s


async def _call(
    mw: SessionMiddleware, sid: str | None, scope_type: str = "http"
) -> tuple[Session, list[bytes]]:
    headers = [(b"cookie", f"session={sid}".encode())] if sid else []
    scope: dict[str, Any] = {"type": scope_type, "headers": headers}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await mw(scope, receive, send)
    cookies = [
        v for m in sent if m["type"] == "http.response.start" for k, v in m["headers"] if k == b"set-cookie"
    ]
    return scope["session"], cookies


@pytest.mark.memcached
@pytest.mark.postgres
async def test_concurrent_requests_changing_different_keys_keep_both(
    store: PostgresStore, memcached_url: str
) -> None:
    cache = memo.Cache(memcached_url, prefix=f"mw{uuid.uuid4().hex[:8]}:")
    sessions = SessionCache(cache)
    gate = asyncio.Event()
    writers: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        session = scope["session"]
        if session.sid is None:
            session.login("alice")
        else:
            await gate.wait()  # both requests have read the session before either writes
            writers.append(f"k{len(writers)}")
            session[writers[-1]] = len(writers)
        await _noop(scope, receive, send)

    mw = SessionMiddleware(app, sessions=sessions, store=store)
    _, cookies = await _call(mw, None)
    sid = cookies[0].decode().split(";")[0].removeprefix("session=")
    tasks = [asyncio.ensure_future(_call(mw, sid)) for _ in range(2)]
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(*tasks)
    record = await store.aload(sid)
    assert record is not None and record["data"] == {"k0": 1, "k1": 2}  # neither write lost the other's
    got = await sessions.aget(sid, user_id="alice", load=store.aload)
    assert got is not None and got["data"] == record["data"]
    await cache.aclose()


@pytest.mark.memcached
@pytest.mark.postgres
async def test_a_read_writes_nothing_back_and_sends_no_cookie(
    store: PostgresStore, memcached_url: str
) -> None:
    cache = memo.Cache(memcached_url, prefix=f"mw{uuid.uuid4().hex[:8]}:")
    sessions = SessionCache(cache)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        session = scope["session"]
        if session.sid is None:
            session.login("alice")
            session["cart"] = ["book"]
        await _noop(scope, receive, send)

    mw = SessionMiddleware(app, sessions=sessions, store=store)
    _, cookies = await _call(mw, None)
    sid = cookies[0].decode().split(";")[0].removeprefix("session=")
    before = sessions.stats()
    for _ in range(3):
        session, cookies = await _call(mw, sid)
        assert session == {"cart": ["book"]} and session.sid == sid and session.user_id == "alice"
        assert cookies == []
    after = sessions.stats()
    assert after["hits"] == before["hits"] + 3 and after["misses"] == before["misses"]
    assert after["writes"] == before["writes"] and after["fills"] == before["fills"]
    await cache.aclose()


@pytest.mark.memcached
@pytest.mark.postgres
async def test_websockets_and_lifespan_pass_through(store: PostgresStore, memcached_url: str) -> None:
    cache = memo.Cache(memcached_url, prefix=f"mw{uuid.uuid4().hex[:8]}:")
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope.get("session"))

    mw = SessionMiddleware(app, sessions=SessionCache(cache), store=store)
    await mw({"type": "lifespan"}, _never, _never)
    session, cookies = await _call(mw, "unknown-id-" + "x" * 40, "websocket")
    assert seen == [None, session] and session == {} and session.sid is None and cookies == []
    await cache.aclose()


async def _never(*args: Any) -> Any:
    raise AssertionError("not called")
