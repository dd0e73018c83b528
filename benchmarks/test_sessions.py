"""Sessions: a read on a hit (SessionCache alone and through SessionMiddleware) beside Django's
cached_db store and a plain PostgreSQL select; requests per second through each middleware
with 16 requests in flight; p99 of a hit through the middleware; read latency with memcached
hung; hit rate of active sessions under a Zipf-distributed load.

Real PostgreSQL (a schema of its own, dropped after) and the suite's memcached.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime as dt
import itertools
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from bench_helpers import role
from memcached_fixtures import MemcachedProcess

import memo
from memo.sessions import SessionCache

pytestmark = [pytest.mark.memcached, pytest.mark.postgres]

TABLE = """
CREATE TABLE chat_sessions (
    id text PRIMARY KEY, user_id text NOT NULL, title text NOT NULL,
    expires_at timestamptz NOT NULL, version bigint NOT NULL DEFAULT 1,
    message_count integer NOT NULL DEFAULT 0, last_message text
)
"""
COLUMNS = "id, user_id, title, expires_at, version, message_count, last_message"


class Repo:
    """The app's SQL, sync psycopg, counting queries."""

    def __init__(self, pg_url: str, schema: str) -> None:
        import psycopg
        from psycopg.rows import dict_row

        self.conn = psycopg.connect(
            pg_url, autocommit=True, row_factory=dict_row, options=f"-c search_path={schema}"
        )
        self.conn.execute(TABLE)
        self.queries = 0

    def insert(self, sid: str, user_id: str) -> dict[str, Any]:
        self.queries += 1
        row = self.conn.execute(
            f"INSERT INTO chat_sessions (id, user_id, title, expires_at) "
            f"VALUES (%s, %s, 'a chat', now() + interval '1 hour') RETURNING {COLUMNS}",
            (sid, user_id),
        ).fetchone()
        assert row is not None
        return row

    def fetch(self, sid: str) -> dict[str, Any] | None:
        self.queries += 1
        return self.conn.execute(f"SELECT {COLUMNS} FROM chat_sessions WHERE id = %s", (sid,)).fetchone()

    def add_message(self, sid: str, text: str) -> dict[str, Any] | None:
        self.queries += 1
        return self.conn.execute(
            f"UPDATE chat_sessions SET version = version + 1, message_count = message_count + 1, "
            f"last_message = %s WHERE id = %s RETURNING {COLUMNS}",
            (text, sid),
        ).fetchone()


@pytest.fixture
def repo(pg_url: str, pg_schema: str) -> Iterator[Repo]:
    repo = Repo(pg_url, pg_schema)
    yield repo
    repo.conn.close()


def _sessions(url: str, **options: Any) -> SessionCache[dict[str, Any]]:
    cache = memo.Cache(url, prefix=f"bs{uuid.uuid4().hex[:8]}:", **options)
    return SessionCache(cache, ns="chat", ttl=1800)


# -- a read on a hit -------------------------------------------------------------------------------


def test_session_hit_postgres_select(benchmark: Any, repo: Repo) -> None:
    """The baseline: what every request costs without a cache (one indexed select)."""
    role(benchmark, "baseline", "PostgreSQL select (psycopg)")
    benchmark.group = "session-read-hit"
    sid = SessionCache.new_id()
    row = repo.insert(sid, "alice")
    assert benchmark(lambda: repo.fetch(sid)) == row


def test_session_hit_memo(benchmark: Any, repo: Repo, server: MemcachedProcess) -> None:
    role(benchmark, "subject", "memo SessionCache.get")
    benchmark.group = "session-read-hit"
    sessions = _sessions(server.url)
    sid = sessions.new_id()
    row = sessions.create(sid, insert=lambda: repo.insert(sid, "alice"))
    queries = repo.queries
    assert benchmark(lambda: sessions.get(sid, user_id="alice", load=repo.fetch)) == row
    assert repo.queries == queries  # every timed read was a hit, ownership checked
    assert sessions.stats()["hits"] >= 1 and sessions.stats()["misses"] == 0
    sessions.cache.close()


def test_session_hit_memo_async(benchmark: Any, repo: Repo, server: MemcachedProcess, loop: Any) -> None:
    from bench_helpers import bench_async

    role(benchmark, "subject", "memo SessionCache.aget")
    benchmark.group = "session-read-hit"
    sessions = _sessions(server.url)
    sid = sessions.new_id()
    row = sessions.create(sid, insert=lambda: repo.insert(sid, "alice"))

    async def load(key: str) -> Any:
        return repo.fetch(key)

    assert bench_async(benchmark, loop, lambda: sessions.aget(sid, user_id="alice", load=load)) == row
    assert repo.queries == 1 and sessions.stats()["misses"] == 0
    sessions.cache.close()
    loop.run_until_complete(sessions.cache.aclose())


@pytest.fixture(scope="module")
def django_store(pg_url: str, server: MemcachedProcess) -> Iterator[Any]:
    """Django's `cached_db` SessionStore, configured in this process on the same memcached and PostgreSQL."""
    import django
    import psycopg
    from django.conf import settings

    schema = f"memo_dj{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = urlsplit(pg_url)
    if not settings.configured:
        settings.configure(
            SECRET_KEY="benchmark",
            USE_TZ=True,
            INSTALLED_APPS=["django.contrib.sessions"],
            SESSION_ENGINE="django.contrib.sessions.backends.cached_db",
            DATABASES={
                "default": {
                    "ENGINE": "django.db.backends.postgresql",
                    "NAME": url.path.lstrip("/"),
                    "USER": url.username or "",
                    "HOST": url.hostname,
                    "PORT": str(url.port or 5432),
                    "OPTIONS": {"options": f"-c search_path={schema}"},
                }
            },
            CACHES={
                "default": {
                    "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
                    "LOCATION": server.address,
                    "KEY_PREFIX": f"dj{uuid.uuid4().hex[:8]}",
                }
            },
        )
        django.setup()
    from django.contrib.sessions.backends.cached_db import SessionStore
    from django.contrib.sessions.models import Session
    from django.db import connection

    with connection.schema_editor() as editor:
        editor.create_model(Session)
    yield SessionStore
    connection.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_session_hit_django_cached_db(benchmark: Any, django_store: Any) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    role(benchmark, "peer", "Django cached_db (PyMemcacheCache)")
    benchmark.group = "session-read-hit"
    store = django_store()
    store.update({"user_id": "alice", "title": "a chat", "version": 1})
    store.save()
    key = store.session_key

    def read() -> dict[str, Any]:
        return dict(django_store(session_key=key).load())

    with CaptureQueriesContext(connection) as queries:
        assert benchmark(read) == {"user_id": "alice", "title": "a chat", "version": 1}
    assert len(queries) == 0  # served by memcached (and no ownership check: Django has none)


def test_session_hit_django_middleware(benchmark: Any, django_store: Any) -> None:
    """Django's SessionMiddleware (cached_db) reading a session for a request: the peer of
    `test_session_hit_middleware` (a request in, the session read, a response out)."""
    from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
    from django.db import connection
    from django.http import HttpRequest, HttpResponse
    from django.test.utils import CaptureQueriesContext

    role(benchmark, "peer", "Django SessionMiddleware (cached_db)")
    benchmark.group = "session-read-hit"
    store = django_store()
    store.update({"user_id": "alice", "cart": ["book"]})
    store.save()

    def view(request: Any) -> HttpResponse:
        return HttpResponse(status=200 if request.session.get("user_id") else 401)

    middleware = DjangoSessionMiddleware(view)

    def request() -> Any:
        req = HttpRequest()
        req.method = "GET"
        req.COOKIES["sessionid"] = store.session_key
        return middleware(req)

    with CaptureQueriesContext(connection) as queries:
        response = benchmark(request)
    assert response.status_code == 200 and not response.cookies  # a read sends no cookie
    assert len(queries) == 0


# -- memcached hung --------------------------------------------------------------------------------


def test_session_read_p99_with_memcached_hung(
    benchmark: Any, repo: Repo, memcached_servers: Callable[..., list[MemcachedProcess]]
) -> None:
    """Every read while memcached is SIGSTOPped: p99 of the per-call latency (target: far under 200 ms)."""
    role(benchmark, "subject", "memo SessionCache.get, memcached SIGSTOPped")
    benchmark.group = "session-read-hung"
    hung = memcached_servers(1)[0]
    # The settings the README recommends for a session cache on a LAN: 50 ms timeouts.
    sessions = _sessions(hung.url, timeout=0.05, connect_timeout=0.05)
    ids = [sessions.new_id() for _ in range(20)]
    rows = {sid: sessions.create(sid, insert=lambda sid=sid: repo.insert(sid, "alice")) for sid in ids}  # type: ignore[misc]
    hung.pause()
    durations: list[float] = []
    picks = itertools.cycle(ids)

    def reads() -> int:
        correct = 0
        for _ in range(100):
            sid = next(picks)
            start = time.perf_counter()
            got = sessions.get(sid, user_id="alice", load=repo.fetch)
            durations.append(time.perf_counter() - start)
            correct += got == rows[sid]
        return correct

    try:
        assert benchmark(reads) == 100
        for _ in range(4):  # enough calls for a p99 in quick mode too
            assert reads() == 100
    finally:
        hung.resume()
        sessions.cache.close()
    durations.sort()
    p99 = durations[int(len(durations) * 0.99) - 1]
    benchmark.extra_info.update(
        calls=len(durations),
        p50_ms=round(durations[len(durations) // 2] * 1000, 3),
        p99_ms=round(p99 * 1000, 3),
        max_ms=round(durations[-1] * 1000, 3),
    )
    assert p99 < 0.2, benchmark.extra_info
    assert durations[-1] < 0.2, benchmark.extra_info  # even the calls that paid a timeout


# -- hit rate under a Zipf-distributed load --------------------------------------------------------


def _zipf_sampler(n: int, s: float, rng: random.Random) -> Callable[[], int]:
    cumulative = list(itertools.accumulate(1 / (k**s) for k in range(1, n + 1)))
    total = cumulative[-1]
    return lambda: bisect.bisect_left(cumulative, rng.random() * total)


def test_session_hit_rate_zipf(benchmark: Any, repo: Repo, server: MemcachedProcess) -> None:
    """1000 active sessions in PostgreSQL, a cold cache, 20,000 requests (Zipf s=1.1), 10% writes."""
    role(benchmark, "subject", "memo SessionCache, Zipf load")
    benchmark.group = "session-hit-rate"
    sessions = _sessions(server.url)
    ids = [SessionCache.new_id() for _ in range(1000)]
    expected = {sid: repo.insert(sid, f"user{i % 50}") for i, sid in enumerate(ids)}  # in the DB only
    rng = random.Random(7)
    pick = _zipf_sampler(len(ids), 1.1, rng)
    wrong: list[str] = []

    def load() -> dict[str, int]:
        for n in range(20_000):
            sid = ids[pick()]
            if n % 10 == 0:
                state = sessions.write(sid, write=lambda sid=sid: repo.add_message(sid, "hi"))  # type: ignore[misc]
                assert state is not None
                expected[sid] = state
            else:
                got = sessions.get(sid, user_id=expected[sid]["user_id"], load=repo.fetch)
                if got != expected[sid]:
                    wrong.append(sid)
        return sessions.stats()

    stats = benchmark.pedantic(load, rounds=1, iterations=1)
    hit_rate = stats["hits"] / (stats["hits"] + stats["misses"])
    benchmark.extra_info.update(hit_rate=round(hit_rate, 4), **{k: stats[k] for k in ("hits", "misses")})
    assert wrong == []
    assert hit_rate >= 0.95, benchmark.extra_info  # seeded: 0.9524 (the cold misses of 856 sessions)
    assert isinstance(expected[ids[0]]["expires_at"], dt.datetime)
    sessions.cache.close()


# -- through SessionMiddleware (ASGI, PostgresStore behind it) -------------------------------------


class _Request:
    """One ASGI request carrying a session cookie, sent straight to the middleware (no socket)."""

    def __init__(self, middleware: Any, sid: str) -> None:
        self.middleware = middleware
        self.scope = {
            "type": "http",
            "method": "GET",
            "path": "/",
            "headers": [(b"cookie", f"session={sid}".encode())],
        }
        self.sent: list[dict[str, Any]] = []

    async def __call__(self) -> Any:
        self.sent.clear()

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: dict[str, Any]) -> None:
            self.sent.append(message)

        scope = dict(self.scope)
        await self.middleware(scope, receive, send)
        return scope["session"]


async def _read_app(scope: Any, receive: Any, send: Any) -> None:
    user = scope["session"].user_id  # what an endpoint reads: the session's user and data
    await send({"type": "http.response.start", "status": 200 if user else 401, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def middleware(pg_url: str, pg_schema: str, server: MemcachedProcess, loop: Any) -> Iterator[Any]:
    """SessionMiddleware on the shared memcached and an AsyncConnectionPool; one logged-in session."""
    with _middleware(pg_url, pg_schema, server, loop) as made:
        yield made


@contextlib.contextmanager
def _middleware(pg_url: str, pg_schema: str, server: MemcachedProcess, loop: Any) -> Iterator[Any]:
    from psycopg_pool import AsyncConnectionPool

    from memo.sessions import PostgresStore, SessionMiddleware

    pool = AsyncConnectionPool(pg_url, min_size=1, max_size=2, open=False)
    loop.run_until_complete(pool.open())
    store = PostgresStore(pool, f"{pg_schema}.sessions")
    loop.run_until_complete(store.acreate_table())
    sessions = _sessions(server.url)
    mw = SessionMiddleware(_read_app, sessions=sessions, store=store)
    sid = sessions.new_id_for("alice")
    loop.run_until_complete(
        sessions.acreate(
            sid, insert=lambda: store.ainsert(sid, {"cart": ["book"]}, user_id="alice", max_age=1800)
        )
    )
    try:
        yield mw, sid
    finally:
        loop.run_until_complete(sessions.cache.aclose())
        loop.run_until_complete(pool.close())


def test_session_hit_middleware(benchmark: Any, middleware: Any, loop: Any) -> None:
    from bench_helpers import bench_async

    role(benchmark, "subject", "memo SessionMiddleware (ASGI, hit)")
    benchmark.group = "session-read-hit"
    mw, sid = middleware
    request = _Request(mw, sid)
    session = bench_async(benchmark, loop, request)
    assert session == {"cart": ["book"]} and session.user_id == "alice"
    assert request.sent[0]["status"] == 200 and request.sent[0]["headers"] == []  # no Set-Cookie
    stats = mw.sessions.stats()
    assert stats["misses"] == 0 and stats["hits"] >= 1


def test_session_hit_middleware_p99(benchmark: Any, middleware: Any, loop: Any) -> None:
    """Per-request latency of a hit through the middleware (target: p99 < 2 ms on an idle loopback)."""
    role(benchmark, "subject", "memo SessionMiddleware hit, p99")
    benchmark.group = "session-hit-p99"
    mw, sid = middleware
    request = _Request(mw, sid)
    durations: list[float] = []

    async def many() -> int:
        for _ in range(2000):
            start = time.perf_counter()
            await request()
            durations.append(time.perf_counter() - start)
        return len(durations)

    assert benchmark.pedantic(lambda: loop.run_until_complete(many()), rounds=1, iterations=1) == 2000
    durations.sort()
    p99 = durations[int(len(durations) * 0.99) - 1]
    benchmark.extra_info.update(p50_ms=round(durations[1000] * 1000, 3), p99_ms=round(p99 * 1000, 3))
    assert mw.sessions.stats()["misses"] == 0
    # The target is 2 ms on an idle loopback (benchmarks/run.py reports the figure); the
    # assertion is the session design's 20 ms, which a shared, loaded machine still meets.
    benchmark.extra_info["target_p99_ms"] = 2
    assert p99 < 0.02, benchmark.extra_info


def test_session_middleware_p99_with_memcached_hung(
    benchmark: Any,
    pg_url: str,
    pg_schema: str,
    memcached_servers: Callable[..., list[MemcachedProcess]],
    loop: Any,
) -> None:
    """Every request while memcached is SIGSTOPped reads PostgreSQL: p99 target < 200 ms."""
    from psycopg_pool import AsyncConnectionPool

    from memo.sessions import PostgresStore, SessionMiddleware

    role(benchmark, "subject", "memo SessionMiddleware, memcached SIGSTOPped")
    benchmark.group = "session-read-hung"
    hung = memcached_servers(1)[0]
    pool = AsyncConnectionPool(pg_url, min_size=1, max_size=2, open=False)
    loop.run_until_complete(pool.open())
    store = PostgresStore(pool, f"{pg_schema}.hung")
    loop.run_until_complete(store.acreate_table())
    sessions = _sessions(hung.url, timeout=0.05, connect_timeout=0.05)
    mw = SessionMiddleware(_read_app, sessions=sessions, store=store)
    sid = sessions.new_id_for("alice")
    loop.run_until_complete(
        sessions.acreate(sid, insert=lambda: store.ainsert(sid, {}, user_id="alice", max_age=1800))
    )
    request = _Request(mw, sid)
    durations: list[float] = []

    async def many() -> int:
        ok = 0
        for _ in range(200):
            start = time.perf_counter()
            session = await request()
            durations.append(time.perf_counter() - start)
            ok += session.user_id == "alice"
        return ok

    hung.pause()
    try:
        assert benchmark.pedantic(lambda: loop.run_until_complete(many()), rounds=1, iterations=1) == 200
    finally:
        hung.resume()
        loop.run_until_complete(sessions.cache.aclose())
        loop.run_until_complete(pool.close())
    durations.sort()
    p99 = durations[int(len(durations) * 0.99) - 1]
    benchmark.extra_info.update(p99_ms=round(p99 * 1000, 3), max_ms=round(durations[-1] * 1000, 3))
    assert p99 < 0.2, benchmark.extra_info


# -- requests per second: 16 requests at once ------------------------------------------------------
#
# Requests per second is what a server delivers with many requests in flight, each side served
# the way it is deployed: memo's ASGI middleware by one event loop (uvicorn, one worker
# process), Django's WSGI middleware by the threads of one process (gunicorn's gthread worker),
# as its request cycle runs them, and each thread keeping its memcached connection (Django's best
# case, not its default: see `test_session_hit_django_middleware_threads`).
# CONCURRENCY workers (tasks, threads), each sending PER_WORKER requests one after another as a
# keep-alive connection does, each with a logged-in session of its own (one user each, the same
# data on both sides) on the same memcached; the figure is each side's wall time for all of
# them. Every response is checked: status 200, its own session's data, and no Set-Cookie.
#
# 16, not 32: a gthread worker is typically given a handful to a few dozen threads, and 16 is
# the more conservative of the two for memo (fewer requests in flight, less for its async client
# to batch into one multi-key get), while more threads only add GIL contention on Django's side.

CONCURRENCY, PER_WORKER = 16, 25


def _concurrent(benchmark: Any) -> None:
    benchmark.extra_info.update(
        ops_per_round=CONCURRENCY * PER_WORKER, throughput=True, concurrency=CONCURRENCY
    )


def _cart(worker: int) -> dict[str, Any]:
    return {"cart": [f"book {worker}"]}


class _Threads:
    """CONCURRENCY threads kept for the whole benchmark, as a threaded server keeps its workers.

    Calling it is one round: thread i runs `job(i)` once; it returns the sum of their results.
    """

    def __init__(self, job: Callable[[int], int], cleanup: Callable[[], None]) -> None:
        self.job, self.cleanup = job, cleanup
        # A minute at most per round: a thread that hangs fails the benchmark, never the suite.
        self.start = threading.Barrier(CONCURRENCY + 1, timeout=60)
        self.done = threading.Barrier(CONCURRENCY + 1, timeout=60)
        self.results = [0] * CONCURRENCY
        self.errors: list[BaseException] = []
        self.stopping = False
        self.threads = [threading.Thread(target=self._serve, args=(i,)) for i in range(CONCURRENCY)]
        for thread in self.threads:
            thread.start()

    def _serve(self, i: int) -> None:
        while True:
            self.start.wait()
            if self.stopping:
                self.cleanup()
                return
            try:
                self.results[i] = self.job(i)
            except BaseException as exc:
                self.results[i] = 0
                self.errors.append(exc)
            self.done.wait()

    def __call__(self) -> int:
        self.start.wait()
        self.done.wait()
        if self.errors:
            raise self.errors[0]
        return sum(self.results)

    def close(self) -> None:
        self.stopping = True
        self.start.wait()
        for thread in self.threads:
            thread.join()


@pytest.fixture(params=["asyncio", "uvloop"])
def served(
    request: pytest.FixtureRequest, pg_url: str, pg_schema: str, server: MemcachedProcess
) -> Iterator[tuple[Any, Any, str]]:
    """(middleware, its event loop, the loop's name): the standard loop, and uvloop, which
    uvicorn runs on when it is installed (`uvicorn[standard]`, FastAPI's `standard` extra)."""
    if request.param == "uvloop":
        loop = pytest.importorskip("uvloop").new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        with _middleware(pg_url, pg_schema, server, loop) as (mw, _):
            yield mw, loop, request.param
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def test_session_hit_middleware_concurrent(benchmark: Any, served: tuple[Any, Any, str]) -> None:
    mw, loop, kind = served
    on = "one event loop" if kind == "asyncio" else "one uvloop event loop"
    role(benchmark, "subject", f"memo SessionMiddleware, 16 tasks on {on}")
    benchmark.group = "session-read-hit-concurrent"
    _concurrent(benchmark)
    sessions, store = mw.sessions, mw.store
    requests = []
    for i in range(CONCURRENCY):
        sid = sessions.new_id_for(f"user{i}")
        insert = lambda sid=sid, i=i: store.ainsert(sid, _cart(i), user_id=f"user{i}", max_age=1800)  # noqa: E731
        loop.run_until_complete(sessions.acreate(sid, insert=insert))
        requests.append(_Request(mw, sid))

    async def worker(i: int) -> int:
        request, served = requests[i], 0
        for _ in range(PER_WORKER):
            session = await request()
            start = request.sent[0]
            served += (
                start["status"] == 200
                and start["headers"] == []  # no Set-Cookie
                and session == _cart(i)
                and session.user_id == f"user{i}"
            )
        return served

    async def one_round() -> int:
        return sum(await asyncio.gather(*(worker(i) for i in range(CONCURRENCY))))

    assert loop.run_until_complete(one_round()) == CONCURRENCY * PER_WORKER  # warm: connections open
    assert benchmark(lambda: loop.run_until_complete(one_round())) == CONCURRENCY * PER_WORKER
    stats = sessions.stats()
    assert stats["misses"] == 0 and stats["hits"] >= 2 * CONCURRENCY * PER_WORKER


@pytest.mark.parametrize("finished", [False, True], ids=["kept", "request_finished"])
def test_session_hit_django_middleware_threads(benchmark: Any, django_store: Any, finished: bool) -> None:
    """Django's middleware as the peer. As deployed, Django's WSGI handler ends each request
    with `request_finished` (the server closes the response), and `close_caches` then closes
    PyMemcacheCache's connection (Django's own rule: only PyLibMCCache keeps its connections):
    `request_finished` times that, the ≥ 3× target's peer. `kept`: each thread keeps its
    memcached connection, Django's best case (not its default), the ≥ 2× target's peer."""
    from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
    from django.core.cache import caches
    from django.db.backends.signals import connection_created
    from django.http import HttpRequest, HttpResponse

    label = "Django SessionMiddleware (cached_db), 16 threads"
    role(benchmark, "peer", f"{label}, request_finished after each" if finished else label)
    benchmark.group = "session-read-hit-concurrent"
    _concurrent(benchmark)
    keys, expected = [], []
    for i in range(CONCURRENCY):
        store = django_store()
        store.update({"user_id": f"user{i}", **_cart(i)})
        store.save()
        keys.append(store.session_key)
        expected.append({"user_id": f"user{i}", **_cart(i)})

    def view(request: Any) -> HttpResponse:
        return HttpResponse(status=200 if request.session.get("user_id") else 401)

    middleware = DjangoSessionMiddleware(view)

    def worker(i: int) -> int:
        served = 0
        for _ in range(PER_WORKER):
            request = HttpRequest()
            request.method = "GET"
            request.COOKIES["sessionid"] = keys[i]
            response = middleware(request)
            if finished:
                response.close()  # what the WSGI server does: Django sends request_finished
            served += (
                response.status_code == 200
                and not response.cookies  # no Set-Cookie
                and dict(request.session.items()) == expected[i]
            )
        return served

    connections: list[Any] = []  # a thread that opens a database connection read past the cache

    def opened(sender: Any, connection: Any, **kwargs: Any) -> None:
        connections.append(connection)

    connection_created.connect(opened)
    threads = _Threads(worker, caches.close_all)  # each thread closes its own cache client
    try:
        assert threads() == CONCURRENCY * PER_WORKER  # warm: each thread's cache client connects
        assert benchmark(threads) == CONCURRENCY * PER_WORKER
    finally:
        threads.close()
        connection_created.disconnect(opened)
    assert connections == []  # every read was served by memcached
