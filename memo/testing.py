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
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import pytest

import memo
from memo import _defaults
from memo._backend import Backend
from memo._events import Event, EventHook

#: The `keys` fixture of `BackendContract`: a name -> a fresh key.
Keys = Callable[[str], str]

__all__ = [
    "BackendContract",
    "BackendOps",
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
    with _defaults._default_lock:
        previous, _defaults._default = _defaults._default, cache
    try:
        yield cache
    finally:
        with _defaults._default_lock:
            _defaults._default = previous
        cache.close()


@pytest.fixture
def memo_events(memo_cache: memo.Cache) -> Iterator[EventLog]:
    """The events `memo_cache` emits during the test."""
    with record_events(memo_cache) as log:
        yield log


def _unavailable(reason: str) -> NoReturn:
    from ._settings import parse_bool

    required = os.environ.get("MEMO_REQUIRE_MEMCACHED", "").strip()
    if required and parse_bool("MEMO_REQUIRE_MEMCACHED", required):
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


class BackendOps:
    """Call a backend's sync methods, or its async twins from sync code (`ops.get(k)`).

    The async flavour runs each call in a private event loop, so the contract
    needs no async test plugin.
    """

    def __init__(self, backend: Backend, flavour: str) -> None:
        self.backend = backend
        self.flavour = flavour
        self.loop = asyncio.new_event_loop() if flavour == "async" else None

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if self.loop is None:
            return getattr(self.backend, name)  # type: ignore[no-any-return]
        method = getattr(self.backend, "a" + name)
        loop = self.loop
        return lambda *args: loop.run_until_complete(method(*args))

    def close(self) -> None:
        if self.loop is not None:
            self.loop.run_until_complete(self.backend.aclose())
            self.loop.close()
        self.backend.close()


class BackendContract:
    """The behaviour every memo backend must have, as tests; subclass it to check yours.

        from memo.testing import BackendContract

        class TestMyBackend(BackendContract):
            @pytest.fixture
            def make_backend(self):
                return MyBackend()

    `make_backend` is a fixture (so it may use others, e.g. `memcached_url`)
    returning a new backend; it is closed after each test. Each test runs twice,
    through the sync methods and through their async twins (in a private event
    loop: no async plugin is needed). Every test uses fresh random keys, so a
    shared server is fine.
    """

    #: Seconds by which the backend may keep an entry past its ttl (memcached's
    #: clock ticks once a second); the expiry tests wait ttl + this.
    ttl_resolution = 1.0

    def wait(self, seconds: float) -> None:
        """Let `seconds` pass on the backend's clock (the expiry tests, once each).

        A real sleep. A backend that reads its time in this process can be checked
        without waiting: override this to move a fake clock the backend reads.
        """
        time.sleep(seconds)

    @pytest.fixture(params=["sync", "async"])
    def ops(self, request: pytest.FixtureRequest, make_backend: Backend) -> Iterator[BackendOps]:
        assert isinstance(make_backend, Backend), f"make_backend gave {make_backend!r}, not a memo.Backend"
        made = BackendOps(make_backend, request.param)
        yield made
        made.close()

    @pytest.fixture
    def keys(self) -> Keys:
        prefix = f"contract-{uuid.uuid4().hex[:12]}-"
        return lambda name: prefix + name

    # -- reads and writes ------------------------------------------------------------

    def test_get_absent_is_none(self, ops: Any, keys: Keys) -> None:
        assert ops.get(keys("absent")) is None
        assert ops.gets(keys("absent")) is None
        assert ops.get_many([keys("absent"), keys("absent2")]) == {}

    def test_set_then_get_returns_the_exact_bytes(self, ops: Any, keys: Keys) -> None:
        for name, value in [("binary", bytes(range(256)) + b"\r\nEND\r\n"), ("empty", b""), ("text", b"v")]:
            assert ops.set(keys(name), value, None) is True
            got = ops.get(keys(name))
            assert got == value and type(got) is bytes

    def test_set_overwrites(self, ops: Any, keys: Keys) -> None:
        ops.set(keys("k"), b"1", None)
        ops.set(keys("k"), b"2", None)
        assert ops.get(keys("k")) == b"2"

    def test_get_many_returns_only_what_is_there(self, ops: Any, keys: Keys) -> None:
        ops.set(keys("a"), b"1", None)
        ops.set(keys("b"), b"2", 60)
        assert ops.get_many([keys("a"), keys("b"), keys("c")]) == {keys("a"): b"1", keys("b"): b"2"}
        assert ops.get_many([]) == {}

    def test_set_many_stores_each_item_with_its_ttl(self, ops: Any, keys: Keys) -> None:
        items = [(keys("a"), b"1", None), (keys("b"), b"2", 60), (keys("c"), b"3", 1.5)]
        assert ops.set_many(items) == []
        want = {keys("a"): b"1", keys("b"): b"2", keys("c"): b"3"}
        assert ops.get_many([k for k, _, _ in items]) == want

    def test_add_stores_only_when_absent(self, ops: Any, keys: Keys) -> None:
        assert ops.add(keys("k"), b"first", None) is True
        assert ops.add(keys("k"), b"second", None) is False
        assert ops.get(keys("k")) == b"first"

    def test_delete(self, ops: Any, keys: Keys) -> None:
        ops.set(keys("k"), b"1", None)
        assert ops.delete(keys("k")) is True
        assert ops.delete(keys("k")) is False
        assert ops.get(keys("k")) is None
        ops.set_many([(keys("a"), b"1", None), (keys("b"), b"2", None)])
        ops.delete_many([keys("a"), keys("b"), keys("absent")])
        assert ops.get_many([keys("a"), keys("b")]) == {}

    def test_ttl_expires_and_none_never_does(self, ops: Any, keys: Keys) -> None:
        ops.set(keys("short"), b"1", 1)
        ops.set_many([(keys("short2"), b"1", 1)])
        ops.add(keys("short3"), b"1", 1)
        ops.set(keys("long"), b"1", 60)
        ops.set(keys("never"), b"1", None)
        self.wait(1 + self.ttl_resolution + 0.05)
        assert ops.get_many([keys("short"), keys("short2"), keys("short3")]) == {}
        assert ops.get(keys("long")) == b"1"
        assert ops.get(keys("never")) == b"1"
        assert ops.add(keys("short"), b"again", None) is True  # an expired key is absent

    def test_values_over_max_value_size_are_refused(self, ops: Any, keys: Keys) -> None:
        limit = ops.backend.max_value_size
        assert isinstance(limit, int) and limit > 0
        big = b"x" * (limit + 1)
        assert ops.set(keys("big"), big, None) is False
        assert ops.add(keys("big"), big, None) is False
        assert ops.set_many([(keys("big"), big, None), (keys("ok"), b"1", None)]) == [keys("big")]
        assert ops.get(keys("big")) is None
        assert ops.get(keys("ok")) == b"1"

    def test_longest_keys_work(self, ops: Any, keys: Keys) -> None:
        key = keys("")
        key += "k" * (250 - len(key))
        assert ops.set(key, b"1", None) is True
        assert ops.get(key) == b"1"

    # -- the primitives of leases and generations ------------------------------------------

    def test_gets_unique_changes_on_every_write(self, ops: Any, keys: Keys) -> None:
        ops.set(keys("k"), b"one", None)
        value, first = ops.gets(keys("k"))
        assert value == b"one" and isinstance(first, int)
        ops.set(keys("k"), b"two", None)
        value, second = ops.gets(keys("k"))
        assert value == b"two" and second != first

    def test_cas_stores_only_over_the_version_it_read(self, ops: Any, keys: Keys) -> None:
        ops.set(keys("k"), b"v1", None)
        _, unique = ops.gets(keys("k"))
        assert ops.cas(keys("k"), b"v2", None, unique) is True
        assert ops.cas(keys("k"), b"v3", None, unique) is False  # that version is gone
        assert ops.get(keys("k")) == b"v2"
        _, unique = ops.gets(keys("k"))
        assert ops.delete(keys("k"))
        assert ops.cas(keys("k"), b"late", None, unique) is False  # an invalidate wins
        assert ops.get(keys("k")) is None
        ops.set(keys("k"), b"v1", None)
        _, unique = ops.gets(keys("k"))
        assert ops.cas(keys("k"), b"x" * (ops.backend.max_value_size + 1), None, unique) is False
        assert ops.get(keys("k")) == b"v1"

    def test_touch(self, ops: Any, keys: Keys) -> None:
        assert ops.touch(keys("k"), 10) is False
        ops.set(keys("k"), b"v", 1)
        assert ops.touch(keys("k"), 100) is True
        self.wait(1 + self.ttl_resolution + 0.05)
        assert ops.get(keys("k")) == b"v"

    def test_lease_adds_a_marker_only_when_absent(self, ops: Any, keys: Keys) -> None:
        added, found = ops.lease(keys("k"), b"marker-a", 10)
        assert added is True and found is not None and found[0] == b"marker-a"
        added, again = ops.lease(keys("k"), b"marker-b", 10)
        assert added is False and again == found
        assert ops.cas(keys("k"), b"value", None, found[1]) is True
        assert ops.cas(keys("k"), b"other", None, found[1]) is False
        added, over_value = ops.lease(keys("k"), b"marker-c", 10)
        assert added is False and over_value is not None and over_value[0] == b"value"

    def test_control_records(self, ops: Any, keys: Keys) -> None:
        assert all(v is None for v in ops.get_all(keys("gen")).values())
        assert ops.set_all(keys("gen"), b"token", None) >= 1
        assert set(ops.get_all(keys("gen")).values()) == {b"token"}

    # -- both flavours, one store ------------------------------------------------------------

    def test_sync_and_async_share_the_store(self, ops: Any, keys: Keys) -> None:
        other = BackendOps(ops.backend, "sync" if ops.flavour == "async" else "async")
        try:
            ops.set(keys("a"), b"1", None)
            assert other.get(keys("a")) == b"1"
            other.set(keys("b"), b"2", None)
            assert ops.get(keys("b")) == b"2"
        finally:
            if other.loop is not None:
                other.loop.run_until_complete(ops.backend.aclose())
                other.loop.close()

    def test_a_cache_runs_on_it(self, ops: Any, keys: Keys) -> None:
        cache = memo.Cache(backend=ops.backend, prefix=keys("cache:"))
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
