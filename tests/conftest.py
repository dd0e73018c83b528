"""Shared fixtures: a Cache on every backend, so the decorator suite runs on each."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator

import pytest

import memo
import memo._memory
from memo import _clock


@pytest.fixture(autouse=True)
def _pytester_without_plugin_autoload(request: pytest.FixtureRequest) -> None:
    """pytester sessions load only the plugins they name (`-p`), as their tests spell out.

    Loading every installed pytest plugin (hypothesis, anyio, langsmith, ...) costs a
    subprocess about 7 s on a busy 2-core machine; the sessions use none of them.
    """
    if "pytester" in request.fixturenames:
        request.getfixturevalue("monkeypatch").setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


@pytest.fixture(
    params=[
        "memory",
        pytest.param("memcached", marks=pytest.mark.memcached),
        pytest.param("memcached-classic", marks=pytest.mark.memcached),
    ]
)
def backend_url(request: pytest.FixtureRequest) -> str:
    """The URL of each backend the engine suite runs against.

    memcached twice: on the meta protocol its server speaks (leases taken in the read) and
    forced to the classic commands (leases with `add` + `gets`), which must behave the same.
    """
    if request.param == "memory":
        return "memory://"
    url = str(request.getfixturevalue("memcached_url"))
    return f"{url}?protocol=classic" if request.param == "memcached-classic" else url


@pytest.fixture
def make_cache(backend_url: str) -> Iterator[object]:
    """Build Caches on the current backend; each test gets its own key prefix."""
    prefix = f"t{uuid.uuid4().hex[:10]}:"
    made: list[memo.Cache] = []

    def make(**options: object) -> memo.Cache:
        options.setdefault("prefix", prefix)
        if backend_url.startswith("memcached"):
            # Tests of the engine's rules, not of timeouts (those build their own Caches): a
            # machine loaded by the parallel suite must not turn a slow connect into a fail-open
            # call that computes uncached and changes the counts the test asserts.
            options.setdefault("connect_timeout", 2.0)
            options.setdefault("timeout", 2.0)
        cache = memo.Cache(backend_url, **options)  # type: ignore[arg-type]
        made.append(cache)
        return cache

    yield make
    for cache in made:
        cache.close()


@pytest.fixture
def cache(make_cache: object) -> memo.Cache:
    return make_cache()  # type: ignore[operator,no-any-return]


@pytest.fixture
def memory_cache() -> memo.Cache:
    return memo.Cache("memory://")


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[_clock.FakeClock]:
    """A clock that moves only when told to (`advance`), read by the engine and by memory://.

    Expiry on memory:// and in values' headers, lease waits and back-offs all follow it, so
    a test of what happens after a ttl moves the clock past it instead of sleeping. A real
    memcached keeps its own clock: its halves of such tests still wait.
    """
    with _clock.use(_clock.FakeClock()) as clock:
        monkeypatch.setattr(memo._memory, "_monotonic", clock.monotonic)
        yield clock


@pytest.fixture
def elapse(request: pytest.FixtureRequest, backend_url: str) -> Callable[[float], None]:
    """`elapse(seconds)`: let time pass for the test's backend, past an expiry memo computes.

    On memory:// the `fake_clock` moves (ask for `elapse` before the Cache, so the Cache
    reads the fake clock from the start); on memcached, whose clock is the server's, a
    real wait.
    """
    if backend_url == "memory://":
        clock: _clock.FakeClock = request.getfixturevalue("fake_clock")
        return clock.advance
    return time.sleep


@pytest.fixture
def aelapse(request: pytest.FixtureRequest, backend_url: str) -> Callable[[float], Awaitable[None]]:
    """`await aelapse(seconds)`: `elapse` for async tests (the real wait yields to the loop)."""
    if backend_url == "memory://":
        clock: _clock.FakeClock = request.getfixturevalue("fake_clock")

        async def advance(seconds: float) -> None:
            clock.advance(seconds)

        return advance
    return asyncio.sleep
