"""Pytest plugin: the PostgreSQL of the test machines, one fresh schema per test.

Fixtures:
    pg_url: a connection URL ($MEMO_TEST_DATABASE_URL, default
        postgresql://postgres@127.0.0.1:5432/test: trust auth, database `test`).
    pg_schema: a new, empty schema for the calling test, dropped after it.

PostgreSQL is not started here (scripts/dev test starts it); when it cannot be
reached the tests needing it are skipped, or fail when CI is set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from memcached_fixtures import _unavailable

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def pg_url() -> str:
    url = os.environ.get("MEMO_TEST_DATABASE_URL", DEFAULT_URL)
    try:
        import psycopg
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'psycopg[binary]' psycopg_pool)")
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        _unavailable(f"PostgreSQL is not reachable at {url}: {exc} (scripts/dev test starts it)")
    return url


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    import psycopg

    name = f"memo_t{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield name
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")
