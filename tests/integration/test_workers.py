"""A two-worker uvicorn server configured from the environment: no worker serves another's stale copy."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ports import free_port

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parents[2]

#: A service whose source of truth is a file: /write changes it and invalidates the cached
#: copy (as a service does after a database write), /read is read-through.
APP = textwrap.dedent(
    """
    import json, os, pathlib

    import memo

    SOURCE = pathlib.Path(os.environ["SOURCE_FILE"])
    cache = memo.Cache.from_env("MEMCACHED_")


    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await cache.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/write":
            SOURCE.write_text(scope["query_string"].decode())
            await cache.adelete("value")
            value = SOURCE.read_text()
        else:
            value = await cache.aget_or_set("value", SOURCE.read_text)
        body = json.dumps({"value": value, "pid": os.getpid(), "url": cache.url}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
    """
)


class Service:
    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc = proc
        # No keep-alive: each request is a new connection, taken by either worker.
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=10, limits=httpx.Limits(max_keepalive_connections=0)
        )

    def get(self, path: str) -> dict[str, Any]:
        return self.client.get(path).json()  # type: ignore[no-any-return]

    def stale_reads(self, rounds: int = 12, reads: int = 8) -> tuple[int, int, set[int], set[str]]:
        """Write, then read from fresh connections; return (stale reads, crossed rounds, pids, cache urls).

        Which worker takes a connection is the kernel's choice, and on a busy machine one
        worker may take them all; so each round reads `reads` times and on until the worker
        that did not take the write has answered too (a crossed round), or 10 s have passed.
        """
        stale = crossed = 0
        pids: set[int] = set()
        urls: set[str] = set()
        for i in range(rounds):
            wrote = self.get(f"/write?{i}")
            assert wrote["value"] == str(i)
            deadline = time.monotonic() + 10
            done = other = 0
            while done < reads or (not other and time.monotonic() < deadline):
                answer = self.get("/read")
                pids.add(answer["pid"])
                urls.add(answer["url"])
                other += answer["pid"] != wrote["pid"]
                stale += answer["value"] != str(i)
                done += 1
            crossed += other > 0
        return stale, crossed, pids, urls


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    (tmp_path / "app.py").write_text(APP)
    started: list[Service] = []

    def start(**variables: str) -> Service:
        port = free_port()
        source = tmp_path / f"source-{uuid.uuid4().hex[:8]}"
        source.write_text("initial")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMCACHED_", "MEMO_", "WEB_"))}
        env.update(variables, SOURCE_FILE=str(source))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "uvicorn", "app:app", "--workers", "2", "--port", str(port)]
        proc = subprocess.Popen(
            [*command, "--log-level", "warning", "--loop", "asyncio"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        service = Service(proc, port)
        started.append(service)
        deadline = time.monotonic() + 60
        seen: set[int] = set()
        while len(seen) < 2:  # both workers up and answering
            try:
                seen.add(service.get("/read")["pid"])
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                time.sleep(0.1)
            assert time.monotonic() < deadline, f"workers seen: {seen}"
        return service

    yield start
    for service in started:
        service.client.close()
        service.proc.terminate()
        service.proc.communicate(timeout=30)


def output(service: Service) -> str:
    service.proc.terminate()
    out, _ = service.proc.communicate(timeout=30)
    return out.decode()


def test_nothing_set_reads_the_source_every_time(serve: Any) -> None:
    service = serve()
    stale, crossed, pids, urls = service.stale_reads()
    assert (stale, crossed, len(pids), urls) == (0, 12, 2, {"null://"})
    assert "per-process cache" not in output(service)


def test_memory_asked_for_by_url_serves_stale_reads_and_says_so(serve: Any) -> None:
    # What 0.2.0 did with nothing set: each worker keeps its own copy.
    service = serve(MEMCACHED_URL="memory://")
    stale, crossed, pids, urls = service.stale_reads()
    assert (crossed, len(pids), urls) == (12, 2, {"memory://"})
    assert stale > 0  # one worker's invalidation is invisible to the other
    logged = output(service)
    assert logged.count("memory:// is a per-process cache, and this server runs 2 worker processes") == 2


@pytest.mark.memcached
def test_a_shared_memcached_serves_no_stale_reads(serve: Any, memcached_url: str) -> None:
    hosts = memcached_url.removeprefix("memcached://")
    service = serve(MEMCACHED_HOSTS=hosts, MEMCACHED_KEY_PREFIX=f"w{uuid.uuid4().hex[:8]}:")
    stale, crossed, pids, urls = service.stale_reads()
    assert (stale, crossed, len(pids), urls) == (0, 12, 2, {memcached_url})
    assert "per-process cache" not in output(service)
