"""SessionMiddleware and PostgresStore through the example service: real uvicorn processes
started from examples/sessions_service (as its README runs it), httpx, real PostgreSQL and
real memcached processes.

Cookies are kept by hand (not by a cookie jar) so that each test sees exactly which
responses carry `Set-Cookie` and what they say.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from memcached_fixtures import MemcachedProcess
from ports import free_port

pytestmark = [pytest.mark.memcached, pytest.mark.postgres]
FOLDER = Path(__file__).resolve().parents[2] / "examples" / "sessions_service"


class Service:
    """One uvicorn process serving the example app from its own folder."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "uvicorn", "app:create_app", "--factory", "--loop", "asyncio"]
        self.proc = subprocess.Popen(
            [*command, "--port", str(self.port), "--log-level", "warning"],
            cwd=FOLDER,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.http.get("/health")
                return
            except httpx.TransportError:
                if self.proc.poll() is not None:
                    raise AssertionError(self.proc.communicate()[0].decode()) from None
                assert time.monotonic() < deadline, "the service did not start"
                time.sleep(0.05)

    def call(self, method: str, path: str, sid: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"cookie": f"session={sid}"} if sid else {}
        self.http.cookies.clear()  # only the cookie this call names
        return self.http.request(method, path, headers=headers, **kwargs)

    def reconnect(self) -> None:
        """A new connection: uvicorn closes one whose request raised in the app."""
        self.http.close()
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def metrics(self) -> dict[str, Any]:
        return self.http.get("/metrics").json()["sessions"]  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.communicate(timeout=20)


def set_cookie(response: httpx.Response) -> str | None:
    """The raw Set-Cookie header (at most one is sent)."""
    values = response.headers.get_list("set-cookie")
    assert len(values) <= 1, values
    return values[0] if values else None


def sid_of(response: httpx.Response) -> str:
    header = set_cookie(response)
    assert header is not None and header.startswith("session=")
    sid = header.split(";")[0].removeprefix("session=")
    assert sid, header
    return sid


@pytest.fixture
def start(pg_url: str, pg_schema: str, memcached_url: str) -> Iterator[Callable[..., Service]]:
    started: list[Service] = []
    prefix = f"svc{uuid.uuid4().hex[:8]}:"

    def start(memcached: str = memcached_url, **env: str) -> Service:
        settings = {
            "DATABASE_URL": pg_url,
            "SESSION_TABLE": f"{pg_schema}.sessions",
            "SESSION_COOKIE_SECURE": "false",
            "MEMCACHED_ENABLED": "true",
            "MEMCACHED_HOSTS": memcached.removeprefix("memcached://"),
            "MEMCACHED_KEY_PREFIX": prefix,
            "MEMCACHED_TIMEOUT": "50ms",
            **env,
        }
        started.append(Service(settings))
        return started[-1]

    yield start
    for service in started:
        service.stop()


def _login(svc: Service, user: str, sid: str | None = None) -> str:
    response = svc.call("POST", "/login", sid, json={"user": user})
    assert response.status_code == 200
    return sid_of(response)


def test_login_read_write_logout(start: Callable[..., Service], pg_url: str, pg_schema: str) -> None:
    svc = start()
    # An anonymous visitor who stores nothing: no cookie, no row.
    anonymous = svc.call("GET", "/me")
    assert anonymous.status_code == 401 and set_cookie(anonymous) is None
    # Storing something makes a session; logging in rotates its id and keeps its data.
    first = sid_of(svc.call("POST", "/cart", json={"name": "book"}))
    sid = _login(svc, "alice", first)
    assert sid != first and len(sid) == 43 + 13
    assert svc.call("GET", "/me", first).status_code == 401  # the old id died at once
    me = svc.call("GET", "/me", sid)
    assert me.json() == {"user": "alice", "cart": ["book"]} and set_cookie(me) is None
    # A write sends no cookie (same id, more than half the lifetime left) and is merged in.
    added = svc.call("POST", "/cart", sid, json={"name": "pen"})
    assert added.json() == {"cart": ["book", "pen"]} and set_cookie(added) is None
    before, cache_before = svc.metrics(), svc.http.get("/metrics").json()["cache"]
    for _ in range(3):
        assert svc.call("GET", "/me", sid).json()["cart"] == ["book", "pen"]
    after, cache_after = svc.metrics(), svc.http.get("/metrics").json()["cache"]
    assert after["hits"] - before["hits"] == 3 and after["misses"] == before["misses"]
    assert cache_after["hits"] - cache_before["hits"] == 3  # in the cache's totals too
    assert after["rotations"] == 1 and after["writes"] >= 3
    # The row holds a digest of the id, never the id.
    import psycopg

    with psycopg.connect(pg_url) as conn:
        ids = [row[0] for row in conn.execute(f"SELECT id FROM {pg_schema}.sessions")]
    assert len(ids) == 1 and sid not in ids and first not in ids
    # Logout: the session is deleted and the cookie cleared.
    out = svc.call("POST", "/logout", sid)
    assert out.status_code == 200
    assert (
        set_cookie(out)
        == "session=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/; HttpOnly; SameSite=lax"
    )
    assert svc.call("GET", "/me", sid).status_code == 401
    with psycopg.connect(pg_url) as conn:
        assert conn.execute(f"SELECT count(*) FROM {pg_schema}.sessions").fetchone() == (0,)


def test_cookie_flags(start: Callable[..., Service]) -> None:
    svc = start(SESSION_COOKIE_SECURE="true", SESSION_MAX_AGE="600")
    header = set_cookie(svc.call("POST", "/login", json={"user": "alice"}))
    assert header is not None
    value, *flags = header.split("; ")
    assert value.startswith("session=") and len(value) == len("session=") + 56
    assert flags == ["Max-Age=600", "Path=/", "HttpOnly", "Secure", "SameSite=lax"]


def test_the_cookie_is_renewed_when_less_than_half_its_lifetime_is_left(
    start: Callable[..., Service],
) -> None:
    svc = start(SESSION_MAX_AGE="4")
    sid = _login(svc, "alice")
    assert set_cookie(svc.call("GET", "/me", sid)) is None
    time.sleep(2.6)
    renewed = svc.call("GET", "/me", sid)
    assert renewed.status_code == 200 and sid_of(renewed) == sid  # the same id, a new lifetime
    time.sleep(1.6)  # past the first lifetime, more than half of the renewed one left
    again = svc.call("GET", "/me", sid)
    assert again.status_code == 200 and set_cookie(again) is None


def test_tampered_unknown_and_chosen_ids_get_nothing(start: Callable[..., Service]) -> None:
    svc = start()
    sid = _login(svc, "alice")
    flipped = sid[:10] + ("A" if sid[10] != "A" else "B") + sid[11:]
    for forged in (flipped, sid[:-1], "x" * 56, "attacker-chosen-id-1234567890"):
        refused = svc.call("GET", "/me", forged)
        assert refused.status_code == 401
        assert set_cookie(refused) is not None and "Max-Age=0" in str(set_cookie(refused))
        # Storing under a forged id makes a fresh, server-made session.
        fresh = sid_of(svc.call("POST", "/cart", forged, json={"name": "x"}))
        assert fresh != forged and svc.call("GET", "/me", fresh).status_code == 401  # anonymous
    svc.http.cookies.clear()
    bad = svc.http.get("/me", headers={"cookie": "session=a b"})
    assert bad.status_code == 401 and set_cookie(bad) is None  # not an id at all: ignored
    assert svc.call("GET", "/me", sid).json()["user"] == "alice"


def test_revoke_all_across_two_worker_processes(start: Callable[..., Service]) -> None:
    one, two = start(), start()
    laptop, phone = _login(one, "alice"), _login(two, "alice")
    bob = _login(two, "bob")
    for svc in (one, two):  # cached in both processes' memcached view
        for sid in (laptop, phone):
            got = svc.call("GET", "/me", sid)
            assert got.json().get("user") == "alice", (got.status_code, got.text)
    revoked = one.call("POST", "/logout-everywhere", laptop)
    assert revoked.json() == {"revoked": 2} and "Max-Age=0" in str(set_cookie(revoked))
    # The other worker's next request is refused, for every session of alice.
    assert two.call("GET", "/me", phone).status_code == 401
    assert two.call("GET", "/me", laptop).status_code == 401
    assert one.call("GET", "/me", phone).status_code == 401
    assert two.call("GET", "/me", bob).json()["user"] == "bob"
    assert one.metrics()["revocations"] == 1
    # Logging in again works and is not caught by the old revocation.
    again = _login(two, "alice")
    assert one.call("GET", "/me", again).json()["user"] == "alice"


def test_a_lost_generation_never_revives_a_session(
    start: Callable[..., Service], memcached_servers: Callable[..., list[MemcachedProcess]]
) -> None:
    server = memcached_servers(1)[0]
    svc = start(memcached=server.url)
    sid = _login(svc, "alice")
    assert svc.call("GET", "/me", sid).status_code == 200
    svc.call("POST", "/logout-everywhere", sid)
    server.restart()  # every generation and copy lost
    time.sleep(0.2)
    assert svc.call("GET", "/me", sid).status_code == 401


@pytest.mark.parametrize("trouble", ["killed", "hung"])
def test_memcached_down_or_hung_falls_back_to_postgresql(
    start: Callable[..., Service],
    memcached_servers: Callable[..., list[MemcachedProcess]],
    trouble: str,
) -> None:
    server = memcached_servers(1)[0]
    one, two = start(memcached=server.url), start(memcached=server.url)
    sid = _login(one, "alice")
    one.call("POST", "/cart", sid, json={"name": "book"})
    server.kill() if trouble == "killed" else server.pause()
    try:
        durations = []
        for i in range(10):
            began = time.perf_counter()
            got = two.call("GET", "/me", sid)
            added = one.call("POST", "/cart", sid, json={"name": f"i{i}"})
            durations.append(time.perf_counter() - began)
            assert got.status_code == 200 and len(got.json()["cart"]) == i + 1
            assert added.status_code == 200 and len(added.json()["cart"]) == i + 2
        other = _login(two, "bob")
        assert one.call("GET", "/me", other).json()["user"] == "bob"
        assert two.call("POST", "/logout", other).status_code == 200
        assert one.call("GET", "/me", other).status_code == 401
        assert one.call("POST", "/logout-everywhere", sid).json() == {"revoked": 1}
        assert two.call("GET", "/me", sid).status_code == 401
        # Each request pays at most its timeouts until the servers' breakers open (three
        # failures); from then on the store answers alone, well under the 200 ms fallback target.
        assert max(durations) < 1.5 and max(durations[3:]) < 0.2, durations
        assert two.metrics()["bypassed"] >= 10
    finally:
        if trouble == "hung":
            server.resume()


def test_store_down(start: Callable[..., Service], pg_url: str, pg_schema: str) -> None:
    """PostgreSQL failing: cached sessions still read; writes fail loudly, never half-done."""
    svc = start()
    sid = _login(svc, "alice")
    assert svc.call("GET", "/me", sid).status_code == 200
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {pg_schema}.sessions RENAME TO gone")
    try:
        assert svc.call("GET", "/me", sid).json()["user"] == "alice"  # a hit needs no store
        assert svc.call("POST", "/cart", sid, json={"name": "x"}).status_code == 500
        svc.reconnect()
        assert svc.call("GET", "/me", "y" * 43).status_code == 500  # a miss needs the store
        svc.reconnect()
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"ALTER TABLE {pg_schema}.gone RENAME TO sessions")
    # The failed write left nothing stale: the cart is what the store holds.
    assert svc.call("GET", "/me", sid).json() == {"user": "alice", "cart": []}
    assert svc.call("POST", "/cart", sid, json={"name": "y"}).json() == {"cart": ["y"]}


def test_a_disabled_cache_reads_the_store(start: Callable[..., Service]) -> None:
    svc = start(MEMCACHED_ENABLED="false")
    sid = _login(svc, "alice")
    assert svc.call("POST", "/cart", sid, json={"name": "a"}).json() == {"cart": ["a"]}
    assert svc.call("GET", "/me", sid).json() == {"user": "alice", "cart": ["a"]}
    assert svc.http.get("/health").json()["cache"]["status"] in ("disabled", "ok")
