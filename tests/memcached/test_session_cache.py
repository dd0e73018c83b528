"""SessionCache on every backend: read-through, write-through, ownership, expiry, leases, fail-open.

The "database" here is a dict with a version per session (PostgreSQL is in
test_sessions_service.py and test_sessions_concurrency.py); the cache is real.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from memcached_fixtures import MemcachedProcess
from pydantic import BaseModel

import memo
from memo import _clock
from memo.sessions import SessionCache


class FakeDB:
    """Sessions by id, each change an atomic bump of `version`; counts every call."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.loads = 0
        self.lock = threading.Lock()

    def insert(self, sid: str, user_id: Any, **extra: Any) -> dict[str, Any]:
        with self.lock:
            self.rows[sid] = {"id": sid, "user_id": user_id, "version": 1, "messages": [], **extra}
            return dict(self.rows[sid])

    def load(self, sid: str) -> dict[str, Any] | None:
        with self.lock:
            self.loads += 1
            row = self.rows.get(sid)
            return None if row is None else dict(row)

    def add_message(self, sid: str, text: str) -> dict[str, Any] | None:
        with self.lock:
            row = self.rows.get(sid)
            if row is None:
                return None
            row["version"] += 1
            row["messages"] = [*row["messages"], text]
            return dict(row)

    def delete(self, sid: str) -> bool:
        with self.lock:
            return self.rows.pop(sid, None) is not None


@pytest.fixture
def db() -> FakeDB:
    return FakeDB()


@pytest.fixture
def sessions(cache: memo.Cache) -> SessionCache[dict[str, Any]]:
    return SessionCache(cache, ttl=60)


def new(sessions: SessionCache[Any], db: FakeDB, user: Any = "alice", **extra: Any) -> str:
    sid = sessions.new_id()
    sessions.create(sid, insert=lambda: db.insert(sid, user, **extra))
    return sid


# -- ids and keys ------------------------------------------------------------------------------


def test_new_ids_are_long_url_safe_and_unique() -> None:
    ids = {SessionCache.new_id() for _ in range(1000)}
    assert len(ids) == 1000
    for sid in ids:
        assert len(sid) >= 22  # >= 128 bits in URL-safe base64
        assert set(sid) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@pytest.mark.parametrize("bad", ["", "abc", "x" * 21, "a b" * 10, "ü" * 30, 1234567890123456789012345])
def test_create_refuses_ids_a_client_could_have_made_up(
    sessions: SessionCache[Any], db: FakeDB, bad: Any
) -> None:
    with pytest.raises(ValueError, match="new_id"):
        sessions.create(bad, insert=lambda: db.insert("x", "alice"))
    assert db.rows == {}  # refused before the database was touched


def test_raw_ids_never_reach_the_backend(cache: memo.Cache, db: FakeDB) -> None:
    sessions = SessionCache(cache)
    sid = new(sessions, db)
    key = sessions.key_for(sid)
    assert sid not in key and len(key) <= 250
    assert cache.backend.get(key) is not None
    other = SessionCache(cache, secret="another secret")
    assert other.key_for(sid) != key  # a keyed digest: without the secret the key cannot be found
    spaced, underscored = SessionCache(cache, ns="a b", secret="s"), SessionCache(cache, ns="a_b", secret="s")
    assert spaced.key_for(sid) != underscored.key_for(sid)  # same readable segment, never the same key


# -- read-through, write-through -----------------------------------------------------------------


def test_create_caches_and_reads_are_served_from_the_cache(
    sessions: SessionCache[dict[str, Any]], db: FakeDB
) -> None:
    sid = new(sessions, db)
    for _ in range(5):
        assert sessions.get(sid, user_id="alice", load=db.load) == db.rows[sid]
    assert db.loads == 0
    assert sessions.stats()["hits"] == 5


def test_a_miss_loads_once_then_hits(sessions: SessionCache[dict[str, Any]], db: FakeDB) -> None:
    sid = sessions.new_id()
    db.insert(sid, "alice")  # in the database, not in the cache
    assert sessions.get(sid, user_id="alice", load=db.load) == db.rows[sid]
    assert sessions.get(sid, user_id="alice", load=db.load) == db.rows[sid]
    assert db.loads == 1
    assert sessions.stats()["fills"] == 1


def test_an_absent_session_is_none_and_not_cached(sessions: SessionCache[Any], db: FakeDB) -> None:
    sid = sessions.new_id()
    assert sessions.get(sid, user_id="alice", load=db.load) is None
    db.insert(sid, "alice")
    assert sessions.get(sid, user_id="alice", load=db.load) == db.rows[sid]
    assert db.loads == 2


def test_a_write_installs_the_state_it_returns(sessions: SessionCache[Any], db: FakeDB) -> None:
    sid = new(sessions, db)
    state = sessions.write(sid, write=lambda: db.add_message(sid, "hello"))
    assert state["messages"] == ["hello"] and state["version"] == 2
    assert sessions.get(sid, user_id="alice", load=db.load) == state
    assert db.loads == 0  # served from the cache: the write updated it


def test_a_write_returning_none_drops_the_session(sessions: SessionCache[Any], db: FakeDB) -> None:
    sid = new(sessions, db)
    db.delete(sid)
    assert sessions.write(sid, write=lambda: db.add_message(sid, "x")) is None
    assert sessions.get(sid, user_id="alice", load=db.load) is None
    assert db.loads == 1


def test_a_failed_write_drops_the_cached_state(sessions: SessionCache[Any], db: FakeDB) -> None:
    sid = new(sessions, db)

    def broken() -> Any:
        db.add_message(sid, "committed, then the connection broke")
        raise ConnectionError("lost")

    with pytest.raises(ConnectionError):
        sessions.write(sid, write=broken)
    assert sessions.get(sid, user_id="alice", load=db.load)["version"] == 2


def test_delete_invalidates(sessions: SessionCache[Any], db: FakeDB) -> None:
    sid = new(sessions, db)
    assert sessions.delete(sid, delete=lambda: db.delete(sid)) is True
    assert sessions.get(sid, user_id="alice", load=db.load) is None
    assert db.loads == 1


def test_revoke_drops_every_given_session(sessions: SessionCache[Any], db: FakeDB) -> None:
    ids = [new(sessions, db) for _ in range(5)]
    keep = new(sessions, db, user="bob")
    for sid in ids:
        db.delete(sid)  # "log out everywhere": the application deletes, then revokes
    sessions.revoke(ids)
    assert all(sessions.get(sid, user_id="alice", load=db.load) is None for sid in ids)
    assert sessions.get(keep, user_id="bob", load=db.load) == db.rows[keep]
    assert db.loads == 5


# -- ownership ---------------------------------------------------------------------------------------


def test_another_users_session_looks_exactly_like_a_missing_one(
    sessions: SessionCache[Any], db: FakeDB
) -> None:
    sid = new(sessions, db)
    missing = sessions.new_id()
    assert sessions.get(sid, user_id="mallory", load=db.load) is None
    assert sessions.get(missing, user_id="mallory", load=db.load) is None
    assert sessions.stats()["forbidden"] == 1
    # The owner still reads it from the cache: the refusal changed nothing.
    assert sessions.get(sid, user_id="alice", load=db.load) == db.rows[sid]
    assert db.loads == 1  # only the missing one was loaded


def test_ownership_is_checked_on_loads_too(sessions: SessionCache[Any], db: FakeDB) -> None:
    sid = sessions.new_id()
    db.insert(sid, "alice")
    assert sessions.get(sid, user_id="mallory", load=db.load) is None
    assert sessions.stats()["forbidden"] == 1
    assert sessions.get(sid, user_id="alice", load=db.load) == db.rows[sid]
    assert db.loads == 1  # the refused load still filled the cache for its owner


def test_owner_may_be_a_callable_or_none(cache: memo.Cache, db: FakeDB) -> None:
    by_tenant = SessionCache(cache, ns="t", owner=lambda s: (s["tenant"], s["user_id"]))
    sid = new(by_tenant, db, tenant="acme")
    assert by_tenant.get(sid, user_id=("acme", "alice"), load=db.load) == db.rows[sid]
    assert by_tenant.get(sid, user_id=("other", "alice"), load=db.load) is None
    with pytest.raises(TypeError, match="user_id is required"):
        by_tenant.get(sid, load=db.load)
    unchecked = SessionCache(cache, ns="u", owner=None)
    assert unchecked.get(sid, load=db.load) == db.rows[sid]
    with pytest.raises(TypeError, match="owner=None"):
        unchecked.get(sid, user_id="alice", load=db.load)


# -- values keep their types -------------------------------------------------------------------------


@dataclasses.dataclass
class DataSession:
    id: str
    user_id: int
    expires_at: dt.datetime
    tags: tuple[str, ...]


class ModelSession(BaseModel):
    id: str
    user_id: int
    expires_at: dt.datetime
    scopes: set[str]


@pytest.mark.parametrize("kind", [DataSession, ModelSession])
def test_dataclass_and_pydantic_sessions_come_back_as_themselves(cache: memo.Cache, kind: type) -> None:
    sessions: SessionCache[Any] = SessionCache(cache, types=[kind])
    sid = sessions.new_id()
    expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    extra = {"tags": ("a", "b")} if kind is DataSession else {"scopes": {"read", "write"}}
    value = kind(id=sid, user_id=7, expires_at=expires, **extra)
    sessions.create(sid, insert=lambda: value)
    reader: SessionCache[Any] = SessionCache(cache, types=[kind])  # another process, in effect
    got = reader.get(sid, user_id=7, load=lambda _: pytest.fail("not served from the cache"))
    assert type(got) is kind and got == value
    assert got.expires_at.tzinfo is not None


# -- expiry --------------------------------------------------------------------------------------------


def test_cached_sessions_expire_after_ttl(
    elapse: Callable[[float], None], cache: memo.Cache, db: FakeDB
) -> None:
    sessions: SessionCache[Any] = SessionCache(cache, ttl=0.3)
    sid = new(sessions, db)
    assert sessions.get(sid, user_id="alice", load=db.load) == db.rows[sid]
    assert db.loads == 0
    elapse(0.35)
    assert sessions.get(sid, user_id="alice", load=db.load) == db.rows[sid]
    assert db.loads == 1  # the exact lifetime in the value's header, not memcached's whole seconds


def test_the_cache_never_outlives_the_sessions_own_expiry(
    elapse: Callable[[float], None], cache: memo.Cache, db: FakeDB
) -> None:
    sessions: SessionCache[Any] = SessionCache(cache, ttl=3600)
    sid = sessions.new_id()
    soon = _clock.time() + 0.3
    sessions.create(sid, insert=lambda: db.insert(sid, "alice", expires_at=soon))
    assert sessions.get(sid, user_id="alice", load=db.load) == db.rows[sid]
    elapse(0.35)
    assert sessions.get(sid, user_id="alice", load=db.load) is None  # expired: absent
    assert sessions.stats()["expired"] == 1


def test_an_expired_session_is_never_cached(cache: memo.Cache, db: FakeDB) -> None:
    sessions: SessionCache[Any] = SessionCache(cache)
    sid = sessions.new_id()
    past = dt.datetime(2020, 1, 1)  # naive: read as UTC
    sessions.create(sid, insert=lambda: db.insert(sid, "alice", expires_at=past))
    assert cache.backend.get(sessions.key_for(sid)) is None
    assert sessions.get(sid, user_id="alice", load=db.load) is None


def test_touch_gives_a_fresh_ttl_but_never_past_the_expiry(
    elapse: Callable[[float], None], cache: memo.Cache, db: FakeDB
) -> None:
    # Whole seconds: memcached's clock ticks once a second (an exptime of 3 lives 2 to 3 s).
    sessions: SessionCache[Any] = SessionCache(cache, ttl=3)
    sid = new(sessions, db)
    capped = new(sessions, db, expires_at=_clock.time() + 1.3)
    for _ in range(4):
        elapse(0.9)
        assert sessions.touch(sid) is True
    assert sessions.get(sid, user_id="alice", load=db.load) == db.rows[sid]
    assert db.loads == 0  # 3.6 s after creation, kept by the touches
    assert sessions.touch(capped) is False  # its own expiry passed: never prolonged
    assert sessions.get(capped, user_id="alice", load=db.load) is None
    assert sessions.touch(sessions.new_id()) is False


def test_touch_never_prolongs_a_lease(cache: memo.Cache, db: FakeDB) -> None:
    sessions: SessionCache[Any] = SessionCache(cache)
    sid = new(sessions, db)
    key = sessions.key_for(sid)
    marker = memo._codec.lease_marker("someone")
    cache.backend.set(key, marker, 5)
    assert sessions.touch(sid) is False
    assert cache.backend.get(key) == marker


# -- leases: no stale state after a write ---------------------------------------------------------------


def test_a_fill_that_loaded_before_a_write_never_installs_its_older_state(
    cache: memo.Cache, db: FakeDB
) -> None:
    reader: SessionCache[Any] = SessionCache(cache)
    writer: SessionCache[Any] = SessionCache(cache)
    sid = sessions_id = reader.new_id()
    db.insert(sid, "alice")  # not cached yet

    def load_then_a_write_happens(key: str) -> Any:
        old = db.load(key)
        writer.write(sessions_id, write=lambda: db.add_message(sessions_id, "newer"))
        return old  # the reader now tries to install version 1

    assert reader.get(sid, user_id="alice", load=load_then_a_write_happens)["version"] == 1
    assert reader.stats()["lease_lost"] == 1
    loads = db.loads
    got = reader.get(sid, user_id="alice", load=db.load)
    assert got["version"] == 2 and db.loads == loads  # the write's state, from the cache


def test_a_fill_that_loaded_before_a_delete_never_installs_it(cache: memo.Cache, db: FakeDB) -> None:
    reader: SessionCache[Any] = SessionCache(cache)
    sid = reader.new_id()
    db.insert(sid, "alice")

    def load_then_deleted(key: str) -> Any:
        old = db.load(key)
        reader.delete(sid, delete=lambda: db.delete(sid))
        return old

    row = {"id": sid, "user_id": "alice", "version": 1, "messages": []}
    assert reader.get(sid, user_id="alice", load=load_then_deleted) == row  # what it loaded
    assert reader.get(sid, user_id="alice", load=db.load) is None


class LateBackend:
    """A backend whose next write command "reaches the server late": the caller gets a
    timeout at once, and the command runs when the test says (as memcached runs a request
    still in its socket buffer after the client gave up on it)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.late: list[tuple[str, tuple[Any, ...]]] = []
        self.delay_next = False

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.backend, name)
        if name not in ("set", "add", "cas"):
            return method

        def maybe_late(*args: Any) -> Any:
            if self.delay_next:
                self.delay_next = False
                self.late.append((name, args))
                raise memo.BackendTimeout("no reply in time")
            return method(*args)

        return maybe_late

    def arrive(self) -> None:
        for name, args in self.late:
            getattr(self.backend, name)(*args)


def test_a_create_command_arriving_late_never_installs_an_older_state(db: FakeDB) -> None:
    cache = memo.Cache("memory://")
    late = LateBackend(cache.backend)
    cache.backend = late  # type: ignore[assignment]
    sessions: SessionCache[Any] = SessionCache(cache)
    sid = sessions.new_id()
    late.delay_next = True
    sessions.create(sid, insert=lambda: db.insert(sid, "alice"))  # its cache command times out
    assert sessions.write(sid, write=lambda: db.add_message(sid, "newer"))["version"] == 2
    late.backend.delete(sessions.key_for(sid))  # evicted, say
    late.arrive()  # the create's command runs only now
    got = sessions.get(sid, user_id="alice", load=db.load)
    assert got is not None and got["version"] == 2


def test_concurrent_writes_leave_the_last_committed_state(cache: memo.Cache, db: FakeDB) -> None:
    sessions: SessionCache[Any] = SessionCache(cache)
    sid = new(sessions, db)

    def writer(n: int) -> None:
        for i in range(20):
            sessions.write(sid, write=lambda i=i: db.add_message(sid, f"{n}:{i}"))  # type: ignore[misc]

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = sessions.get(sid, user_id="alice", load=db.load)
    assert got == db.rows[sid] and got["version"] == 81 and len(got["messages"]) == 80


async def test_concurrent_misses_wait_for_one_fill(cache: memo.Cache, db: FakeDB) -> None:
    sessions: SessionCache[Any] = SessionCache(cache, wait=1.0)
    sid = sessions.new_id()
    db.insert(sid, "alice")

    async def slow_load(key: str) -> Any:
        await asyncio.sleep(0.05)
        return db.load(key)

    got = await asyncio.gather(*(sessions.aget(sid, user_id="alice", load=slow_load) for _ in range(20)))
    assert all(g == db.rows[sid] for g in got)
    assert db.loads == 1
    assert sessions.stats()["lease_waits"] >= 1


# -- async twins -------------------------------------------------------------------------------------------


async def test_async_twins(cache: memo.Cache, db: FakeDB) -> None:
    sessions: SessionCache[Any] = SessionCache(cache)
    sid = sessions.new_id()

    async def insert() -> Any:
        return db.insert(sid, "alice")

    async def add() -> Any:
        return db.add_message(sid, "hi")

    async def load(key: str) -> Any:
        return db.load(key)

    assert (await sessions.acreate(sid, insert=insert))["version"] == 1
    assert (await sessions.awrite(sid, write=add))["version"] == 2
    assert (await sessions.aget(sid, user_id="alice", load=load))["messages"] == ["hi"]
    assert await sessions.aget(sid, user_id="bob", load=load) is None
    assert await sessions.atouch(sid) is True
    assert db.loads == 0
    await sessions.adelete(sid, delete=lambda: db.delete(sid))
    assert await sessions.aget(sid, user_id="alice", load=load) is None
    await sessions.arevoke([sid])


def test_sync_methods_refuse_async_database_functions(sessions: SessionCache[Any], db: FakeDB) -> None:
    sid = sessions.new_id()

    async def insert() -> Any:
        return db.insert(sid, "alice")

    with pytest.raises(TypeError, match="async methods"):
        sessions.create(sid, insert=insert)


# -- settings of a disabled cache -------------------------------------------------------------------------


def test_a_disabled_cache_passes_every_call_to_the_database(db: FakeDB) -> None:
    sessions: SessionCache[Any] = SessionCache(memo.Cache("null://"))
    sid = new(sessions, db)
    for _ in range(3):
        assert sessions.get(sid, user_id="alice", load=db.load) == db.rows[sid]
    assert sessions.write(sid, write=lambda: db.add_message(sid, "x"))["version"] == 2
    assert sessions.get(sid, user_id="alice", load=db.load)["version"] == 2
    assert db.loads == 4


# -- fail-open on a real, misbehaving memcached ----------------------------------------------------------


@pytest.fixture
def own_server(memcached_servers: Callable[..., list[MemcachedProcess]]) -> MemcachedProcess:
    return memcached_servers(1)[0]


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


@pytest.mark.memcached
@pytest.mark.parametrize("trouble", ["stopped", "hung"])
def test_memcached_down_or_hung_every_call_goes_to_the_database(
    own_server: MemcachedProcess, db: FakeDB, trouble: str
) -> None:
    cache = memo.Cache(own_server.url, timeout=0.05, connect_timeout=0.05, retry_after=5)
    sessions: SessionCache[Any] = SessionCache(cache)
    sid = new(sessions, db)
    if trouble == "stopped":
        own_server.kill()
    else:
        own_server.pause()
    try:
        durations = []
        for i in range(30):
            got, took = _timed(lambda: sessions.get(sid, user_id="alice", load=db.load))
            assert got is not None and got["version"] == i + 1
            durations.append(took)
            _, took = _timed(lambda: sessions.write(sid, write=lambda: db.add_message(sid, "m")))
            durations.append(took)
        other = sessions.new_id()
        assert sessions.create(other, insert=lambda: db.insert(other, "bob"))["user_id"] == "bob"
        assert sessions.get(other, user_id="alice", load=db.load) is None  # ownership still checked
        assert sessions.delete(other, delete=lambda: db.delete(other)) is True
        # Each call gives up after one short timeout at most; once the breaker is open, at once.
        assert max(durations) < 0.2, max(durations)
        assert sorted(durations)[-5] < 0.04  # no timeout paid once the breaker is open
        assert sessions.stats()["bypassed"] >= 30
        assert cache.stats()["total"]["errors"] >= 1
    finally:
        if trouble == "hung":
            own_server.resume()
        cache.close()


@pytest.mark.memcached
def test_each_call_pays_one_timeout_at_most_while_memcached_hangs(
    own_server: MemcachedProcess, db: FakeDB
) -> None:
    # The breaker never opens here, so every call meets the hung server: a failed cache
    # step must skip the call's other cache steps, whatever the call is.
    cache = memo.Cache(own_server.url, timeout=0.1, connect_timeout=0.1, failure_threshold=10_000)
    sessions: SessionCache[Any] = SessionCache(cache)
    sid = new(sessions, db)
    own_server.pause()
    try:
        calls: list[Callable[[], Any]] = [
            lambda: sessions.get(sid, user_id="alice", load=db.load),
            lambda: sessions.write(sid, write=lambda: db.add_message(sid, "m")),
            lambda: sessions.touch(sid),
            lambda: sessions.delete(sid, delete=lambda: None),
            lambda: sessions.revoke([sid]),
        ]
        for call in calls * 3:
            _, took = _timed(call)
            assert took < 0.18, (call, took)  # one 100 ms timeout, not two
        assert sessions.get(sid, user_id="alice", load=db.load)["version"] == 4
    finally:
        own_server.resume()
        cache.close()


@pytest.mark.memcached
def test_on_error_raise_surfaces_backend_errors(own_server: MemcachedProcess, db: FakeDB) -> None:
    cache = memo.Cache(own_server.url, timeout=0.05, connect_timeout=0.05)
    sessions: SessionCache[Any] = SessionCache(cache, on_error="raise")
    sid = new(sessions, db)
    own_server.kill()
    with pytest.raises(memo.BackendError):
        sessions.get(sid, user_id="alice", load=db.load)
    cache.close()


@pytest.mark.memcached
def test_a_write_memcached_missed_is_invalidated_at_the_first_contact(
    own_server: MemcachedProcess, db: FakeDB
) -> None:
    # The breaker is open (memcached answered nothing for a while) when the write
    # runs: neither the lock nor the update reaches memcached, which still holds
    # version 1 when it answers again. The process remembers the key, bypasses it,
    # and deletes it before its next read.
    cache = memo.Cache(
        own_server.url, timeout=0.05, connect_timeout=0.05, failure_threshold=1, retry_after=0.3
    )
    sessions: SessionCache[Any] = SessionCache(cache)
    sid = new(sessions, db)
    own_server.pause()
    assert sessions.get(sid, user_id="alice", load=db.load)["version"] == 1  # opens the breaker
    own_server.resume()
    assert sessions.write(sid, write=lambda: db.add_message(sid, "while unreachable"))["version"] == 2
    assert sessions.stats()["pending"] == 1
    assert sessions.get(sid, user_id="alice", load=db.load)["version"] == 2  # bypassed: breaker open
    time.sleep(0.35)
    assert sessions.get(sid, user_id="alice", load=db.load)["version"] == 2
    assert sessions.stats()["pending"] == 0
    loads = db.loads
    assert sessions.get(sid, user_id="alice", load=db.load)["version"] == 2
    assert db.loads == loads  # cached again
    cache.close()


@pytest.mark.memcached
async def test_async_calls_never_block_the_loop_while_memcached_hangs(
    own_server: MemcachedProcess, db: FakeDB
) -> None:
    cache = memo.Cache(own_server.url, timeout=0.2, connect_timeout=0.2, failure_threshold=100)
    sessions: SessionCache[Any] = SessionCache(cache)
    sid = new(sessions, db)
    own_server.pause()
    lags: list[float] = []

    async def ticker() -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - start - 0.005)

    tick = asyncio.create_task(ticker())
    try:
        got = await asyncio.gather(*(sessions.aget(sid, user_id="alice", load=db.load) for _ in range(5)))
        assert got == [db.rows[sid]] * 5
    finally:
        tick.cancel()
        own_server.resume()
        await cache.aclose()
    assert len(lags) > 10 and max(lags) < 0.15, max(lags)  # a blocking call would stall it 0.2 s


def test_events_reach_the_caches_hook(db: FakeDB) -> None:
    cache = memo.Cache("memory://")
    seen: list[tuple[Any, ...]] = []
    cache.emit = lambda *event: seen.append(event)
    sessions: SessionCache[Any] = SessionCache(cache, ns="web")
    sid = new(sessions, db)
    sessions.get(sid, user_id="alice", load=db.load)
    sessions.get(sid, user_id="mallory", load=db.load)
    assert [(e[0], e[1], e[5]) for e in seen] == [
        ("set", "web", "sessions"),
        ("hit", "web", "sessions"),
        ("hit", "web", "sessions"),
        ("forbidden", "web", "sessions"),
    ]


def test_a_failure_during_a_flush_is_not_forgotten(db: FakeDB) -> None:
    cache = memo.Cache("memory://")
    sessions: SessionCache[Any] = SessionCache(cache)
    sid = new(sessions, db)
    key = sessions.key_for(sid)
    sessions._remember(key)  # a write could not reach memcached
    real = cache.backend.delete_many

    def delete_many(keys: Any) -> None:
        real(keys)
        sessions._remember(key)  # meanwhile, another thread's write could not either

    cache.backend.delete_many = delete_many  # type: ignore[method-assign]
    sessions.get(sid, user_id="alice", load=db.load)
    assert sessions.stats()["pending"] == 1  # still to be deleted: the later failure counts
    cache.backend.delete_many = real  # type: ignore[method-assign]
    sessions.get(sid, user_id="alice", load=db.load)
    assert sessions.stats()["pending"] == 0
