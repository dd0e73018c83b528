"""The reference service (examples/sessions_service) through a real uvicorn server and httpx.

Real PostgreSQL (a schema of its own per test) and real memcached processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from memcached_fixtures import MemcachedProcess
from ports import free_port

import memo

pytestmark = [pytest.mark.memcached, pytest.mark.postgres]
ROOT = Path(__file__).parent.parent
#: uvicorn's event loop for these tests: "asyncio" (uvicorn's default is uvloop when installed).
LOOP = "asyncio"


class Service:
    """The example app served by uvicorn in a thread, and an httpx client for it."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.app = app
        self.port = free_port()
        # The asyncio loop; uvicorn picks uvloop when it is installed.
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on", loop=LOOP
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def start(self) -> Service:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive(), "uvicorn exited during startup"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(20)

    def as_user(self, user: str) -> dict[str, str]:
        return {"X-User-Id": user}

    def metrics(self) -> dict[str, Any]:
        response = self.client.get("/metrics")
        assert response.status_code == 200
        return response.json()  # type: ignore[no-any-return]


@pytest.fixture
def start_service(pg_url: str, pg_schema: str) -> Iterator[Callable[..., Service]]:
    from examples.sessions_service.app import create_app

    started: list[Service] = []

    def start(cache: memo.Cache, **options: Any) -> Service:
        app = create_app(database_url=pg_url, schema=pg_schema, cache=cache, **options)
        service = Service(app).start()
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


def _cache(url: str, **options: Any) -> memo.Cache:
    return memo.Cache(url, prefix=f"svc{uuid.uuid4().hex[:8]}:", **options)


def test_the_service_end_to_end(start_service: Callable[..., Service], memcached_url: str) -> None:
    svc = start_service(_cache(memcached_url))
    alice, bob = svc.as_user("alice"), svc.as_user("bob")

    created = svc.client.post("/sessions", json={"title": "plans"}, headers=alice)
    assert created.status_code == 201
    session = created.json()
    sid = session["id"]
    assert session["user_id"] == "alice" and session["version"] == 1 and len(sid) >= 43

    # Cached on create, then served from the cache: no database query per read.
    queries = svc.metrics()["db_queries"]
    for _ in range(5):
        got = svc.client.get(f"/sessions/{sid}", headers=alice)
        assert got.status_code == 200 and got.json() == session
    m = svc.metrics()
    assert m["db_queries"] == queries and m["sessions"]["hits"] >= 5

    # Another user's session: exactly what a missing one looks like.
    refused = svc.client.get(f"/sessions/{sid}", headers=bob)
    missing = svc.client.get(f"/sessions/{svc.app.state.sessions.new_id()}", headers=bob)
    assert refused.status_code == missing.status_code == 404
    assert refused.json() == missing.json()
    assert svc.metrics()["sessions"]["forbidden"] == 1
    assert svc.client.post(f"/sessions/{sid}/messages", json={"content": "x"}, headers=bob).status_code == 404

    # A message updates the cached session (write-through): the next read needs no query.
    added = svc.client.post(f"/sessions/{sid}/messages", json={"content": "hello"}, headers=alice)
    assert added.status_code == 200
    assert added.json()["message_count"] == 1 and added.json()["version"] == 2
    queries = svc.metrics()["db_queries"]
    got = svc.client.get(f"/sessions/{sid}", headers=alice).json()
    assert got["last_message"] == "hello" and got["version"] == 2
    assert svc.metrics()["db_queries"] == queries
    messages = svc.client.get(f"/sessions/{sid}/messages", headers=alice).json()
    assert [m["content"] for m in messages] == ["hello"]

    # Delete invalidates.
    assert svc.client.delete(f"/sessions/{sid}", headers=alice).status_code == 204
    assert svc.client.get(f"/sessions/{sid}", headers=alice).status_code == 404

    # Log out everywhere: every session of the user goes, others stay.
    mine = [svc.client.post("/sessions", json={}, headers=alice).json()["id"] for _ in range(3)]
    theirs = svc.client.post("/sessions", json={}, headers=bob).json()["id"]
    assert all(svc.client.get(f"/sessions/{s}", headers=alice).status_code == 200 for s in mine)
    assert svc.client.post("/logout-everywhere", headers=alice).json() == {"revoked": 3}
    assert all(svc.client.get(f"/sessions/{s}", headers=alice).status_code == 404 for s in mine)
    assert svc.client.get(f"/sessions/{theirs}", headers=bob).status_code == 200

    health = svc.client.get("/health").json()
    assert health["cache"]["status"] == "ok"


def test_concurrent_messages_are_all_kept(start_service: Callable[..., Service], memcached_url: str) -> None:
    """No lost updates: each message is its own atomic statement; the cache gets what it returned."""
    svc = start_service(_cache(memcached_url))
    alice = svc.as_user("alice")
    sid = svc.client.post("/sessions", json={}, headers=alice).json()["id"]

    def post_many(n: int) -> None:
        with httpx.Client(base_url=str(svc.client.base_url), timeout=10) as client:
            for i in range(10):
                response = client.post(
                    f"/sessions/{sid}/messages", json={"content": f"{n}.{i}"}, headers=alice
                )
                assert response.status_code == 200

    threads = [threading.Thread(target=post_many, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for _ in range(2):  # whether from the cache or refilled (a write that lost its lock deletes)
        session = svc.client.get(f"/sessions/{sid}", headers=alice).json()
        assert session["message_count"] == 40 and session["version"] == 41
    messages = svc.client.get(f"/sessions/{sid}/messages", headers=alice).json()
    assert sorted(m["content"] for m in messages) == sorted(f"{n}.{i}" for n in range(4) for i in range(10))


def test_sessions_expire_with_their_lifetime(
    start_service: Callable[..., Service], memcached_url: str
) -> None:
    svc = start_service(_cache(memcached_url), session_lifetime=1.0)
    alice = svc.as_user("alice")
    sid = svc.client.post("/sessions", json={}, headers=alice).json()["id"]
    assert svc.client.get(f"/sessions/{sid}", headers=alice).status_code == 200
    time.sleep(1.1)
    assert svc.client.get(f"/sessions/{sid}", headers=alice).status_code == 404
    assert svc.metrics()["sessions"]["expired"] >= 1


@pytest.mark.parametrize("trouble", ["stopped", "hung"])
def test_the_service_falls_back_to_postgresql(
    start_service: Callable[..., Service],
    memcached_servers: Callable[..., list[MemcachedProcess]],
    trouble: str,
) -> None:
    server = memcached_servers(1)[0]
    svc = start_service(_cache(server.url, timeout=0.05, connect_timeout=0.05, retry_after=5))
    alice = svc.as_user("alice")
    sid = svc.client.post("/sessions", json={}, headers=alice).json()["id"]
    if trouble == "stopped":
        server.kill()
    else:
        server.pause()
    try:
        durations = []
        for i in range(20):
            start = time.perf_counter()
            got = svc.client.get(f"/sessions/{sid}", headers=alice)
            added = svc.client.post(f"/sessions/{sid}/messages", json={"content": f"m{i}"}, headers=alice)
            durations.append(time.perf_counter() - start)
            assert got.status_code == 200 and got.json()["message_count"] == i
            assert added.status_code == 200 and added.json()["message_count"] == i + 1
        assert svc.client.get(f"/sessions/{sid}", headers=svc.as_user("bob")).status_code == 404
        other = svc.client.post("/sessions", json={}, headers=alice).json()["id"]
        assert svc.client.delete(f"/sessions/{other}", headers=alice).status_code == 204
        assert max(durations) < 0.5, durations  # two requests, at most one cache timeout each
        assert svc.client.get("/health").json()["cache"]["status"] == "down"
        assert svc.metrics()["sessions"]["bypassed"] >= 20
    finally:
        if trouble == "hung":
            server.resume()


def test_the_service_configured_from_the_environment(pg_url: str, pg_schema: str, memcached_url: str) -> None:
    """`uvicorn --factory` in its own process, memcached settings from MEMCACHED_* variables."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "DATABASE_URL": pg_url,
        "DATABASE_SCHEMA": pg_schema,
        "MEMCACHED_HOSTS": memcached_url.removeprefix("memcached://"),
        "MEMCACHED_TIMEOUT": "50ms",
        "MEMCACHED_POOL_SIZE": "4",
        "MEMCACHED_KEY_PREFIX": f"env{uuid.uuid4().hex[:8]}:",
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "examples.sessions_service.app:create_app"]
    proc = subprocess.Popen(
        [*command, "--port", str(port), "--log-level", "warning", "--loop", LOOP],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    health = client.get("/health")
                    break
                except httpx.TransportError:
                    assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                    assert time.monotonic() < deadline, "the service did not start"
                    time.sleep(0.1)
            assert health.json()["cache"]["status"] == "ok"
            assert list(health.json()["cache"]["servers"]) == [memcached_url.removeprefix("memcached://")]
            alice = {"X-User-Id": "alice"}
            sid = client.post("/sessions", json={"title": "t"}, headers=alice).json()["id"]
            assert client.get(f"/sessions/{sid}", headers=alice).json()["title"] == "t"
            metrics = client.get("/metrics").json()
            assert metrics["sessions"]["hits"] == 1 and metrics["sessions"]["writes"] == 1
    finally:
        proc.terminate()
        proc.communicate(timeout=20)  # reaps it and closes the pipe
