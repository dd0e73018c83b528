"""Concurrent writers and readers in several processes never leave or serve a stale session.

Real PostgreSQL (one schema per run) and a real memcached. Each process runs a
SessionCache of its own; loads are slowed at random between the SELECT and the
return, where a look-aside cache without leases installs a state older than a
write that committed meanwhile. Checked: no process ever reads a version older
than one it has seen or written, and at the end every cached session equals its
row.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from typing import Any

import pytest

import memo
from memo.sessions import SessionCache

pytestmark = [pytest.mark.memcached, pytest.mark.postgres]

PROCESSES = 4
ROUNDS = 400
SCHEMA = """
CREATE TABLE sessions (id text PRIMARY KEY, user_id text NOT NULL, version bigint NOT NULL);
"""


def _sessions(cache_url: str, prefix: str) -> SessionCache[dict[str, Any]]:
    cache = memo.Cache(cache_url, prefix=prefix, timeout=1.0)
    return SessionCache(cache, ttl=60, wait=0.01)


def worker(args: tuple[int, str, str, str, str, list[str]]) -> list[str]:
    """Read, write and touch sessions at random; return every monotonicity violation seen."""
    import psycopg
    from psycopg.rows import dict_row

    seed, pg_url, schema, cache_url, prefix, ids = args
    rng = random.Random(seed)
    sessions = _sessions(cache_url, prefix)
    conn = psycopg.connect(pg_url, autocommit=True, row_factory=dict_row, options=f"-c search_path={schema}")
    seen = dict.fromkeys(ids, 0)
    violations: list[str] = []

    def load(sid: str) -> dict[str, Any] | None:
        row = conn.execute("SELECT id, user_id, version FROM sessions WHERE id = %s", (sid,)).fetchone()
        time.sleep(rng.random() * 0.003)  # the window in which a write can commit
        return row

    def bump(sid: str) -> dict[str, Any] | None:
        return conn.execute(
            "UPDATE sessions SET version = version + 1 WHERE id = %s RETURNING id, user_id, version", (sid,)
        ).fetchone()

    for _ in range(ROUNDS):
        sid = rng.choice(ids)
        roll = rng.random()
        if roll < 0.35:
            state = sessions.write(sid, write=lambda sid=sid: bump(sid))  # type: ignore[misc]
            assert state is not None
            seen[sid] = max(seen[sid], state["version"])
        elif roll < 0.40:
            sessions.touch(sid)
        else:
            state = sessions.get(sid, user_id="alice", load=load)
            if state is None:
                violations.append(f"{sid[:6]}: read None")
            elif state["version"] < seen[sid]:
                violations.append(f"{sid[:6]}: read version {state['version']} after {seen[sid]}")
            else:
                seen[sid] = state["version"]
    conn.close()
    sessions.cache.close()
    return violations


@pytest.mark.parametrize("tagged", [False, True], ids=["anonymous-ids", "user-ids"])
def test_concurrent_writers_and_readers_across_processes(
    pg_url: str, pg_schema: str, memcached_url: str, tagged: bool
) -> None:
    """With ids from `new_id_for` too: copies then carry the user's generation."""
    import psycopg
    from psycopg.rows import dict_row

    prefix = f"conc{random.getrandbits(32):08x}:"
    sessions = _sessions(memcached_url, prefix)
    conn = psycopg.connect(
        pg_url, autocommit=True, row_factory=dict_row, options=f"-c search_path={pg_schema}"
    )
    conn.execute(SCHEMA)
    ids = [sessions.new_id_for("alice") if tagged else sessions.new_id() for _ in range(3)]
    for sid in ids:
        sessions.create(
            sid,
            insert=lambda sid=sid: conn.execute(  # type: ignore[misc]
                "INSERT INTO sessions VALUES (%s, 'alice', 1) RETURNING id, user_id, version", (sid,)
            ).fetchone(),
        )

    context = multiprocessing.get_context("spawn")
    jobs = [(seed, pg_url, pg_schema, memcached_url, prefix, ids) for seed in range(PROCESSES)]
    with context.Pool(PROCESSES) as pool:
        results = pool.map(worker, jobs)
    violations = [v for result in results for v in result]
    assert violations == []

    rows = {r["id"]: r for r in conn.execute("SELECT id, user_id, version FROM sessions").fetchall()}
    assert sum(r["version"] - 1 for r in rows.values()) > 0.3 * PROCESSES * ROUNDS * 0.9  # writes happened
    for sid in ids:
        raw = sessions.cache.backend.get(sessions.key_for(sid))
        if raw is not None and not memo._codec.is_lease(raw):
            # a cached copy: [its user's generation (None: an id without a user tag), the session]
            generation, state = sessions.codec.decode(raw)
            assert (generation is None) is not tagged
            assert state == rows[sid], "the cache holds a state the database does not"

        def load(key: str) -> dict[str, Any] | None:
            found: dict[str, Any] | None = conn.execute(
                "SELECT id, user_id, version FROM sessions WHERE id = %s", (key,)
            ).fetchone()
            return found

        assert sessions.get(sid, user_id="alice", load=load) == rows[sid]
        raw = sessions.cache.backend.get(sessions.key_for(sid))
        if raw is not None and not memo._codec.is_lease(raw):  # (a late lock's marker lasts lease_ttl)
            assert sessions.get(sid, user_id="alice", load=lambda _: pytest.fail("not cached")) == rows[sid]
    conn.close()
    sessions.cache.close()
