"""Testing code that uses memo: a pytest plugin, event recording, and the backend contract.

Installed with memo and registered as the pytest plugin `memo` (entry point
`pytest11`), so its fixtures are available in every test suite of a project
that depends on memo:

- `memo_cache`: a fresh `memory://` Cache for one test; it is also the default
  Cache of `@memo.cached` functions for the duration of the test.
- `memo_events`: an `EventLog` of everything `memo_cache` did during the test.
- `memcached_url`: `memcached://127.0.0.1:<port>` of a real memcached started
  for the test session on a free port. When the `memcached` binary is missing
  (or `$MEMCACHED_BIN` names none) or it will not start, the tests using it are
  skipped with the reason; set `MEMO_REQUIRE_MEMCACHED=1` (e.g. in CI) to make
  that an error instead.

Helpers usable with any Cache: `record_events(cache)`, `assert_hits(cache, n)`,
`assert_misses(cache, n)`.

`BackendContract` is the generic test suite every memo backend passes; subclass
it with a `make_backend` fixture to check a backend you wrote.

Disable the plugin with `-p no:memo` (e.g. when your suite already defines a
`memcached_url` fixture of its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, NoReturn

import pytest

import memo
from memo import _cache
from memo._backend import Backend
from memo._events import Event, EventHook

#: The `keys` fixture of `BackendContract`: a name -> a fresh key.
Keys = Callable[[str], str]

__all__ = [
    "BackendContract",
    "EventLog",
    "assert_hits",
    "assert_misses",
    "record_events",
    "start_memcached",
]


# -- events ----------------------------------------------------------------------


class EventLog(list[Event]):
    """The events a Cache emitted, in order, with counting helpers."""

    def of(self, kind: str, ns: str | None = None, function: str | None = None) -> list[Event]:
        """Return the events of `kind`, optionally of one namespace and function.

        `function` matches the qualified name or its last part (`"get_user"`).
        """
        return [
            e
            for e in self
            if e.kind == kind
            and (ns is None or e.ns == ns)
            and (
                function is None
                or e.function == function
                or (e.function or "").rsplit(".", 1)[-1] == function
            )
        ]

    def count(self, kind: str, ns: str | None = None, function: str | None = None) -> int:  # type: ignore[override]
        """Return how many events of `kind` (and namespace, function) were recorded."""
        return len(self.of(kind, ns, function))

    @property
    def kinds(self) -> list[str]:
        """The kinds in order, e.g. `["miss", "set", "hit"]`."""
        return [e.kind for e in self]

    @property
    def hits(self) -> int:
        return self.count("hit")

    @property
    def misses(self) -> int:
        return self.count("miss")


@contextlib.contextmanager
def record_events(cache: memo.Cache) -> Iterator[EventLog]:
    """Record every event `cache` emits inside the block (its own hook still runs).

    with record_events(cache) as events:
        get_user(1); get_user(1)
    assert events.kinds == ["miss", "set", "hit"]
    """
    log = EventLog()
    previous: EventHook | None = cache.on_event
    cache.on_event = log.append if previous is None else [previous, log.append]
    try:
        yield log
    finally:
        cache.on_event = previous


def _counter(cache: memo.Cache, name: str, ns: str | None) -> int:
    stats = cache.stats(ns) if ns is not None else cache.stats()["total"]
    return int(stats[name])


def assert_hits(cache: memo.Cache, expected: int, ns: str | None = None) -> None:
    """Assert that `cache` has served exactly `expected` hits (in namespace `ns`, or in all)."""
    found = _counter(cache, "hits", ns)
    where = f" in namespace {ns!r}" if ns is not None else ""
    assert found == expected, f"expected {expected} cache hits{where}, got {found}: {cache.stats()}"


def assert_misses(cache: memo.Cache, expected: int, ns: str | None = None) -> None:
    """Assert that `cache` has counted exactly `expected` misses (in namespace `ns`, or in all)."""
    found = _counter(cache, "misses", ns)
    where = f" in namespace {ns!r}" if ns is not None else ""
    assert found == expected, f"expected {expected} cache misses{where}, got {found}: {cache.stats()}"


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture
def memo_cache() -> Iterator[memo.Cache]:
    """A fresh memory:// Cache, also the default Cache of `@memo.cached` during the test."""
    cache = memo.Cache("memory://")
    with _cache._default_lock:
        previous, _cache._default = _cache._default, cache
    try:
        yield cache
    finally:
        with _cache._default_lock:
            _cache._default = previous
        cache.close()


@pytest.fixture
def memo_events(memo_cache: memo.Cache) -> Iterator[EventLog]:
    """The events `memo_cache` emits during the test."""
    with record_events(memo_cache) as log:
        yield log


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("MEMO_REQUIRE_MEMCACHED"):
        pytest.fail(f"{reason} (MEMO_REQUIRE_MEMCACHED is set, so this is an error rather than a skip)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_memcached(
    binary: str, memory_mb: int = 64, timeout: float = 5.0
) -> tuple[subprocess.Popen[bytes], str]:
    """Start memcached on a free loopback port; return the process and its URL.

    Raises:
        RuntimeError: it exited or did not accept connections within `timeout`.
    """
    port = _free_port()
    argv = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", str(memory_mb)]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv += ["-u", "root"]  # memcached refuses to run as root without -u
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"memcached exited with {proc.returncode}: {stderr.strip()[-500:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"memcached://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"memcached did not accept connections within {timeout}s") from None
            time.sleep(0.01)


@pytest.fixture(scope="session")
def memcached_url() -> Iterator[str]:
    """The URL of a memcached started for this test session (skipped where there is none)."""
    binary = os.environ.get("MEMCACHED_BIN") or shutil.which("memcached")
    if not binary:
        _unavailable("memcached is not installed (no `memcached` on PATH and MEMCACHED_BIN is not set)")
    last: Exception | None = None
    for _ in range(3):  # a free port can be taken between probing and binding
        try:
            proc, url = start_memcached(binary)
            break
        except (RuntimeError, OSError) as exc:
            last = exc
    else:
        _unavailable(f"memcached ({binary}) could not be started: {last}")
    try:
        yield url
    finally:
        proc.kill()
        proc.wait()
        if proc.stderr:
            proc.stderr.close()


# -- the backend contract ----------------------------------------------------------------


class BackendContract:
    """The behaviour every memo backend must have, as tests; subclass it to check yours.

        from memo.testing import BackendContract

        class TestMyBackend(BackendContract):
            @pytest.fixture
            def make_backend(self):
                return MyBackend()

    `make_backend` is a fixture (so it may use others, e.g. `memcached_url`)
    returning the backend under test; it is closed after each test. Every test
    uses fresh random keys, so a shared server is fine. The async tests run in
    their own event loops (`asyncio.run`): no async plugin is needed.
    """

    #: Whether the backend stores values for their whole ttl with one-second
    #: precision or better; the expiry test waits about two seconds.
    ttl_resolution = 1.0

    @pytest.fixture
    def backend(self, make_backend: Backend) -> Iterator[Backend]:
        assert isinstance(make_backend, Backend), f"make_backend gave {make_backend!r}, not a memo.Backend"
        yield make_backend
        make_backend.close()

    @pytest.fixture
    def keys(self) -> Keys:
        prefix = f"contract-{uuid.uuid4().hex[:12]}-"
        return lambda name: prefix + name

    @staticmethod
    def run(backend: Backend, test: Callable[[], Awaitable[Any]]) -> Any:
        """Run an async test in a fresh event loop, closing the async side after it."""

        async def main() -> Any:
            try:
                return await test()
            finally:
                await backend.aclose()

        return asyncio.run(main())

    # -- sync ---------------------------------------------------------------------

    def test_get_absent_is_none(self, backend: Backend, keys: Keys) -> None:
        assert backend.get(keys("absent")) is None
        assert backend.get_many([keys("absent"), keys("absent2")]) == {}

    def test_set_then_get_returns_the_exact_bytes(self, backend: Backend, keys: Keys) -> None:
        for name, value in [("binary", bytes(range(256)) + b"\r\nEND\r\n"), ("empty", b""), ("text", b"v")]:
            assert backend.set(keys(name), value, None) is True
            got = backend.get(keys(name))
            assert got == value and type(got) is bytes

    def test_set_overwrites(self, backend: Backend, keys: Keys) -> None:
        backend.set(keys("k"), b"1", None)
        backend.set(keys("k"), b"2", None)
        assert backend.get(keys("k")) == b"2"

    def test_get_many_returns_only_what_is_there(self, backend: Backend, keys: Keys) -> None:
        backend.set(keys("a"), b"1", None)
        backend.set(keys("b"), b"2", 60)
        assert backend.get_many([keys("a"), keys("b"), keys("c")]) == {keys("a"): b"1", keys("b"): b"2"}
        assert backend.get_many([]) == {}

    def test_set_many_stores_each_item_with_its_ttl(self, backend: Backend, keys: Keys) -> None:
        items = [(keys("a"), b"1", None), (keys("b"), b"2", 60), (keys("c"), b"3", 1.5)]
        assert backend.set_many(items) == []
        assert backend.get_many([k for k, _, _ in items]) == {
            keys("a"): b"1",
            keys("b"): b"2",
            keys("c"): b"3",
        }

    def test_add_stores_only_when_absent(self, backend: Backend, keys: Keys) -> None:
        assert backend.add(keys("k"), b"first", None) is True
        assert backend.add(keys("k"), b"second", None) is False
        assert backend.get(keys("k")) == b"first"

    def test_delete(self, backend: Backend, keys: Keys) -> None:
        backend.set(keys("k"), b"1", None)
        assert backend.delete(keys("k")) is True
        assert backend.delete(keys("k")) is False
        assert backend.get(keys("k")) is None
        backend.set_many([(keys("a"), b"1", None), (keys("b"), b"2", None)])
        backend.delete_many([keys("a"), keys("b"), keys("absent")])
        assert backend.get_many([keys("a"), keys("b")]) == {}

    def test_ttl_expires_and_none_never_does(self, backend: Backend, keys: Keys) -> None:
        backend.set(keys("short"), b"1", 1)
        backend.set_many([(keys("short2"), b"1", 1)])
        backend.add(keys("short3"), b"1", 1)
        backend.set(keys("long"), b"1", 60)
        backend.set(keys("never"), b"1", None)
        time.sleep(self.ttl_resolution + 1.05)
        assert backend.get_many([keys("short"), keys("short2"), keys("short3")]) == {}
        assert backend.get(keys("long")) == b"1"
        assert backend.get(keys("never")) == b"1"
        assert backend.add(keys("short"), b"again", None) is True  # an expired key is absent

    def test_values_over_max_value_size_are_refused(self, backend: Backend, keys: Keys) -> None:
        limit = backend.max_value_size
        assert isinstance(limit, int) and limit > 0
        big = b"x" * (limit + 1)
        assert backend.set(keys("big"), big, None) is False
        assert backend.add(keys("big"), big, None) is False
        assert backend.set_many([(keys("big"), big, None), (keys("ok"), b"1", None)]) == [keys("big")]
        assert backend.get(keys("big")) is None
        assert backend.get(keys("ok")) == b"1"

    def test_longest_keys_work(self, backend: Backend, keys: Keys) -> None:
        key = keys("")
        key += "k" * (250 - len(key))
        assert backend.set(key, b"1", None) is True
        assert backend.get(key) == b"1"

    # -- async ------------------------------------------------------------------------

    def test_async_operations(self, backend: Backend, keys: Keys) -> None:
        async def test() -> None:
            assert await backend.aget(keys("k")) is None
            assert await backend.aset(keys("k"), b"\r\n1", None) is True
            assert await backend.aget(keys("k")) == b"\r\n1"
            assert await backend.aadd(keys("k"), b"2", None) is False
            assert await backend.aadd(keys("n"), b"2", 60) is True
            assert await backend.aget_many([keys("k"), keys("n"), keys("x")]) == {
                keys("k"): b"\r\n1",
                keys("n"): b"2",
            }
            assert await backend.aset_many([(keys("a"), b"a", None), (keys("b"), b"b", 30)]) == []
            assert await backend.adelete(keys("a")) is True
            assert await backend.adelete(keys("a")) is False
            await backend.adelete_many([keys("b"), keys("k")])
            assert await backend.aget_many([keys("a"), keys("b"), keys("k")]) == {}
            big = b"x" * (backend.max_value_size + 1)
            assert await backend.aset(keys("big"), big, None) is False
            assert await backend.aset_many([(keys("big"), big, None)]) == [keys("big")]

        self.run(backend, test)

    def test_sync_and_async_share_the_store(self, backend: Backend, keys: Keys) -> None:
        backend.set(keys("from-sync"), b"s", None)

        async def test() -> None:
            assert await backend.aget(keys("from-sync")) == b"s"
            await backend.aset(keys("from-async"), b"a", None)

        self.run(backend, test)
        assert backend.get(keys("from-async")) == b"a"

    def test_async_side_reopens_in_a_new_event_loop(self, backend: Backend, keys: Keys) -> None:
        for i in range(2):

            async def test(i: int = i) -> None:
                await backend.aset(keys("k"), str(i).encode(), None)
                assert await backend.aget(keys("k")) == str(i).encode()

            self.run(backend, test)

    def test_a_cache_runs_on_it(self, backend: Backend, keys: Keys) -> None:
        cache = memo.Cache(backend=backend, prefix=keys("cache:"))
        calls: list[int] = []

        @cache.cached(ns="contract")
        def double(x: int) -> int:
            calls.append(x)
            return 2 * x

        assert double(2) == double(2) == 4
        assert calls == [2]
        cache.clear("contract")
        assert double(2) == 4
        assert calls == [2, 2]
        assert cache.get_or_set("v", lambda: (1, "a")) == (1, "a")
        assert cache.get("v") == (1, "a")
