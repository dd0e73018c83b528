"""The engine through `@cached`: one suite, run on every backend (memory and memcached)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from ports import refused_url

import memo

Make = Callable[..., memo.Cache]


class Counter:
    def __init__(self) -> None:
        self.calls: list[Any] = []

    def __call__(self, *args: Any) -> int:
        self.calls.append(args)
        return len(self.calls)


@dataclasses.dataclass
class User:
    id: int
    name: str
    tags: tuple[str, ...] = ()


class TestSyncBasics:
    def test_hit_miss_and_equivalent_calls(self, cache: memo.Cache) -> None:
        seen = Counter()

        @cache.cached(ns="users", ttl=60)
        def get_user(user_id: int, *, full: bool = False) -> dict[str, Any]:
            seen(user_id, full)
            return {"id": user_id, "full": full}

        assert get_user(1) == {"id": 1, "full": False}
        assert get_user(1) == get_user(user_id=1) == get_user(1, full=False)
        assert get_user(1, full=True) == {"id": 1, "full": True}
        assert seen.calls == [(1, False), (1, True)]
        assert cache.stats("users") | {} == {
            "hits": 3,
            "misses": 2,
            "sets": 2,
            "errors": 0,
            "decode_errors": 0,
            "encode_errors": 0,
            "not_stored": 0,
            "stale": 0,
            "lease_lost": 0,
            "lease_waits": 0,
            "stale_on_error": 0,
            "local_hits": 0,
            "local_evictions": 0,
        }

    def test_results_keep_their_types(self, cache: memo.Cache) -> None:
        @cache.cached(ns="users")
        def load(user_id: int) -> User:
            return User(user_id, "ann", ("a",))

        first, second = load(7), load(7)
        assert first == second == User(7, "ann", ("a",))
        assert isinstance(second, User) and isinstance(second.tags, tuple)
        assert cache.stats("users")["hits"] == 1

    def test_cached_none_is_a_hit(self, cache: memo.Cache) -> None:
        seen = Counter()

        @cache.cached()
        def nothing(x: int) -> None:
            seen(x)

        assert nothing(1) is None and nothing(1) is None
        assert len(seen.calls) == 1

    def test_a_hit_returns_a_fresh_copy(self, cache: memo.Cache) -> None:
        @cache.cached()
        def items() -> list[int]:
            return [1, 2]

        items().append(3)
        got = items()
        got.append(4)
        assert items() == [1, 2]

    def test_invalidate_refresh_key_for_uncached(self, cache: memo.Cache) -> None:
        seen = Counter()

        @cache.cached(ns="users")
        def get_user(user_id: int, full: bool = False) -> int:
            return seen(user_id)

        assert get_user(42) == 1
        assert get_user.key_for(42) == get_user.key_for(user_id=42, full=False)
        assert get_user.invalidate(user_id=42) is True  # binds like a call
        assert get_user.invalidate(42) is False
        assert get_user(42) == 2
        assert get_user.refresh(42) == 3
        assert get_user(42) == 3
        assert get_user.uncached(42) == 4
        assert get_user(42) == 3
        with pytest.raises(TypeError):
            get_user.invalidate()
        with pytest.raises(TypeError):
            get_user.key_for(1, 2, 3)

    def test_functions_in_one_namespace_do_not_collide(self, cache: memo.Cache) -> None:
        @cache.cached(ns="same")
        def a(x: int) -> str:
            return "a"

        @cache.cached(ns="same")
        def b(x: int) -> str:
            return "b"

        assert (a(1), b(1), a(1), b(1)) == ("a", "b", "a", "b")

    def test_argument_types_do_not_collide(self, cache: memo.Cache) -> None:
        @cache.cached()
        def echo(x: Any) -> str:
            return f"{type(x).__name__}:{x!r}"

        args = [1, 1.0, True, "1", b"1", (1,), [1], {1: 1}, {"1": 1}]
        first = [echo(a) for a in args]
        assert [echo(a) for a in args] == first
        assert len(set(first)) == len(args)

    def test_version_changes_the_key(self, cache: memo.Cache) -> None:
        def make(version: int) -> Any:
            @cache.cached(version=version)
            def f(x: int) -> int:
                return version

            return f

        assert make(1)(1) == 1 and make(2)(1) == 2 and make(1)(1) == 1

    def test_unkeyable_argument_raises_before_running(self, cache: memo.Cache) -> None:
        seen = Counter()

        @cache.cached()
        def use(conn: Any) -> int:
            return seen(conn)

        with pytest.raises(memo.UnkeyableArgumentError, match="'conn'"):
            use(object())
        assert seen.calls == []

    def test_ignore_and_key_options(self, cache: memo.Cache) -> None:
        @cache.cached(ignore=("db",))
        def by_id(user_id: int, db: object) -> int:
            return user_id

        @cache.cached(key=lambda user, db: user["id"])
        def by_user(user: dict[str, Any], db: object) -> str:
            return user["name"]

        assert by_id(1, object()) == 1 and by_id(1, object()) == 1
        assert by_user({"id": 1, "name": "a"}, object()) == "a"
        assert by_user({"id": 1, "name": "changed"}, object()) == "a"
        assert cache.stats()["total"]["hits"] == 2

    def test_large_values_are_compressed(self, cache: memo.Cache) -> None:
        @cache.cached()
        def big() -> str:
            return "x" * 500_000

        assert big() == big()
        raw = cache.backend.get(big.key_for())
        assert raw is not None and len(raw) < 10_000

    def test_too_large_values_are_not_stored_and_counted(self, make_cache: Make) -> None:
        cache = make_cache(compress_threshold=None)
        seen = Counter()

        @cache.cached(ns="big")
        def huge() -> str:
            seen()
            return "y" * (2 * 1024 * 1024)

        assert len(huge()) == len(huge()) == 2 * 1024 * 1024
        assert len(seen.calls) == 2
        assert cache.stats("big")["not_stored"] == 2 and cache.stats("big")["sets"] == 0


class TestMethods:
    def test_methods_key_on_the_instance_value(self, cache: memo.Cache) -> None:
        seen = Counter()

        class Repo:
            def __init__(self, tenant: str) -> None:
                self.tenant = tenant

            def __cache_key__(self) -> str:
                return self.tenant

            @cache.cached(ns="repo")
            def get(self, x: int) -> str:
                seen(self.tenant, x)
                return f"{self.tenant}:{x}"

        a, a2, b = Repo("a"), Repo("a"), Repo("b")
        assert (a.get(1), a2.get(1), b.get(1), Repo.get(a, 1)) == ("a:1", "a:1", "b:1", "a:1")
        assert seen.calls == [("a", 1), ("b", 1)]
        assert a.get.key_for(1) == Repo.get.key_for(a2, 1) != b.get.key_for(1)
        assert a.get.invalidate(1) and a2.get(1) == "a:1" and len(seen.calls) == 3
        assert b.get.refresh(1) == "b:1" and len(seen.calls) == 4

    def test_an_instance_without_identity_is_refused(self, cache: memo.Cache) -> None:
        class Service:
            @cache.cached()
            def work(self, x: int) -> int:
                return x

        with pytest.raises(memo.UnkeyableArgumentError, match="'self'"):
            Service().work(1)

    def test_classmethods_and_staticmethods(self, cache: memo.Cache) -> None:
        seen = Counter()

        class K:
            @cache.cached(ns="k")
            @classmethod
            def inner(cls, x: int) -> str:
                seen("inner", cls.__name__, x)
                return cls.__name__

            @classmethod
            @cache.cached(ns="k")
            def outer(cls, x: int) -> str:
                seen("outer", cls.__name__, x)
                return cls.__name__

            @cache.cached(ns="k")
            @staticmethod
            def static(x: int) -> int:
                seen("static", x)
                return x

        class Sub(K):
            pass

        assert (K.inner(1), K().inner(1), Sub.inner(1)) == ("K", "K", "Sub")
        assert (K.outer(1), K().outer(1), Sub.outer(1)) == ("K", "K", "Sub")
        assert (K.static(1), K().static(1), Sub.static(1)) == (1, 1, 1)
        assert seen.calls == [
            ("inner", "K", 1),
            ("inner", "Sub", 1),
            ("outer", "K", 1),
            ("outer", "Sub", 1),
            ("static", 1),
        ]
        assert K.inner.key_for(1) == K().inner.key_for(1) != Sub.inner.key_for(1)
        assert K.inner.invalidate(1) and K().inner(1) == "K" and len(seen.calls) == 6


class TestAsync:
    async def test_async_hit_miss_invalidate(self, cache: memo.Cache) -> None:
        seen = Counter()

        @cache.cached(ns="a", ttl=60)
        async def aget(user_id: int) -> tuple[int, int]:
            await asyncio.sleep(0)
            return user_id, seen(user_id)

        assert asyncio.iscoroutinefunction(aget)
        assert await aget(1) == await aget(user_id=1) == (1, 1)
        assert await aget.ainvalidate(1) is True
        assert await aget(1) == (1, 2)
        assert await aget.arefresh(1) == (1, 3)
        assert await aget(1) == (1, 3)
        assert await aget.akey_for(1) == aget.key_for(1)
        # `refresh` of an async function returns the coroutine that refreshes, as a call does
        # (type checkers see `refresh` return what a call returns).
        refreshing = aget.refresh(1)
        assert asyncio.iscoroutine(refreshing) and len(seen.calls) == 3
        assert await refreshing == (1, 4)
        assert await aget(1) == (1, 4)
        assert cache.stats("a")["hits"] == 3

    async def test_async_methods(self, cache: memo.Cache) -> None:
        class Repo:
            def __init__(self, n: int) -> None:
                self.n = n

            def __cache_key__(self) -> int:
                return self.n

            @cache.cached()
            async def get(self, x: int) -> int:
                return self.n * x

        assert await Repo(2).get(3) == 6 and await Repo(3).get(3) == 9 and await Repo(2).get(3) == 6

    async def test_sync_and_async_functions_share_entries_through_the_backend(
        self, cache: memo.Cache
    ) -> None:
        @cache.cached(ns="shared")
        async def aget(x: int) -> list[int]:
            return [x]

        await aget(5)
        assert memo.Codec().decode(cache.backend.get(aget.key_for(5))) == [5]  # type: ignore[arg-type]
        assert await aget.aget(5) == [5]


class TestNamespaces:
    def test_clear_one_namespace(self, cache: memo.Cache) -> None:
        seen = Counter()

        @cache.cached(ns="users")
        def u(x: int) -> int:
            return seen("u", x)

        @cache.cached(ns="orders")
        def o(x: int) -> int:
            return seen("o", x)

        u(1), o(1)
        cache.clear(ns="users")
        u(1), o(1)
        assert seen.calls == [("u", 1), ("o", 1), ("u", 1)]
        cache.clear()
        u(1), o(1)
        assert len(seen.calls) == 5

    async def test_aclear(self, cache: memo.Cache) -> None:
        seen = Counter()

        @cache.cached(ns="n")
        async def f(x: int) -> int:
            return seen(x)

        await f(1)
        await cache.aclear(ns="n")
        assert await f(1) == 2
        await cache.aclear()
        assert await f(1) == 3

    @pytest.mark.memcached
    def test_another_process_sees_a_clear_within_ns_refresh(self, memcached_url: str) -> None:
        # Two Caches on one memcached stand for two processes (memory:// is per process).
        prefix = f"t{uuid.uuid4().hex[:10]}:"
        here = memo.Cache(memcached_url, prefix=prefix, ns_refresh=0.2)
        there = memo.Cache(memcached_url, prefix=prefix, ns_refresh=0.2)
        seen = Counter()

        def define(cache: memo.Cache) -> Any:
            @cache.cached(ns="shared")
            def f(x: int) -> int:
                return seen(x)

            return f

        f_here, f_there = define(here), define(there)
        assert f_here(1) == 1 and f_there(1) == 1  # the other Cache reads this one's entry
        here.clear(ns="shared")
        assert f_here(1) == 2  # immediate where it was cleared
        time.sleep(0.25)
        assert f_there(1) == 2  # the other sees the new generation once its copy is stale
        here.close()
        there.close()

    @pytest.mark.memcached
    async def test_stale_generations_of_many_namespaces_are_one_read(self, memcached_servers: Any) -> None:
        (process,) = memcached_servers(1, verbose=True)
        # Classic, so that one batch is one `get` line in the server's log (meta batches are
        # quiet `mg` lines ended by `mn`: tests/memcached/test_proto_wire.py).
        cache = memo.Cache(process.url, ns_refresh=0, protocol="classic")
        names = [f"ns{i}" for i in range(5)]
        first = cache.generations(names)
        assert all(first[n] for n in names) and len(set(first.values())) == 5
        before = len(process.commands("get"))
        assert cache.generations(names) == first  # stale at once (ns_refresh=0): read again
        assert await cache.agenerations(names) == first
        gets = process.commands("get")[before:]
        assert len(gets) == 2 and all(len(line.split()) == 1 + 1 + len(names) for line in gets), gets
        cache.clear(ns="ns3")
        after = cache.generations(names)
        assert [after[n] == first[n] for n in names] == [True, True, True, False, True]
        cache.close()
        await cache.aclose()

    @pytest.mark.memcached
    def test_a_lost_generation_never_revives_old_entries(self, memcached_servers: Any) -> None:
        (process,) = memcached_servers(1)
        here = memo.Cache(process.url, ns_refresh=0)
        seen = Counter()

        def define(cache: memo.Cache) -> Any:
            @cache.cached(ns="g")
            def f(x: int) -> int:
                return seen(x)

            return f

        f = define(here)
        f(1)
        here.clear(ns="g")
        assert f(1) == 2

        def lose_tokens() -> None:  # evicted, or the server restarted
            here.backend.delete(here._gens.root_key)
            here.backend.delete(here._ns_key("g"))

        lose_tokens()
        assert f(1) == 2  # a process that knew the token keeps it, and writes it back
        assert here.backend.get(here._ns_key("g")) is not None
        lose_tokens()
        there = memo.Cache(process.url, ns_refresh=0)
        assert define(there)(1) == 3  # a process that never knew it makes a new one: a miss
        here.close()
        there.close()


class TestTtl:
    def test_entries_expire(self, elapse: Callable[[float], None], cache: memo.Cache) -> None:
        seen = Counter()

        @cache.cached(ttl=1)
        def f() -> int:
            return seen()

        assert f() == f() == 1
        elapse(1.1)  # the value's header expires to the millisecond, whatever memcached's clock
        assert f() == 2

    def test_long_ttls_are_kept(self, cache: memo.Cache) -> None:
        @cache.cached(ttl=90 * 24 * 3600)
        def f() -> int:
            return 1

        f()
        assert f.get() == 1

    def test_cache_default_ttl(self, elapse: Callable[[float], None], make_cache: Make) -> None:
        cache = make_cache(ttl=1)
        seen = Counter()

        @cache.cached()
        def f() -> int:
            return seen()

        assert f() == f() == 1
        elapse(1.1)  # the value's header expires to the millisecond, whatever memcached's clock
        assert f() == 2

    @pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf"), True, "60"])
    def test_bad_ttls_are_refused_at_decoration(self, ttl: Any) -> None:
        with pytest.raises(memo.ConfigurationError):
            memo.Cache().cached(ttl=ttl)


class TestFailures:
    def test_unserializable_results_are_returned_counted_and_logged_once(
        self, cache: memo.Cache, caplog: pytest.LogCaptureFixture
    ) -> None:
        seen = Counter()

        @cache.cached(ns="odd")
        def weird() -> object:
            seen()
            return object()

        with caplog.at_level(logging.WARNING, logger="memo"):
            first, second = weird(), weird()
        assert type(first) is object and type(second) is object
        assert len(seen.calls) == 2
        assert cache.stats("odd")["encode_errors"] == 2
        assert len([r for r in caplog.records if "not cached" in r.getMessage()]) == 1

    def test_strict_raises(self, make_cache: Make) -> None:
        cache = make_cache(strict=True)

        @cache.cached()
        def weird() -> object:
            return object()

        with pytest.raises(memo.SerializationError):
            weird()

        @cache.cached(strict=False)
        def lenient() -> object:
            return object()

        assert type(lenient()) is object

    @pytest.mark.parametrize("garbage", [b"garbage", b"m\x01\x01[1", b"m\x09\x00[]\n", b"\x80\x04pickle"])
    def test_undecodable_entries_are_misses(self, cache: memo.Cache, garbage: bytes) -> None:
        seen = Counter()

        @cache.cached(ns="c")
        def f(x: int) -> int:
            return seen(x)

        key = f.key_for(1)
        cache.backend.set(key, garbage, None)
        assert f(1) == 1
        assert f(1) == 1
        assert cache.stats("c")["decode_errors"] == 1
        assert cache.stats("c")["hits"] == 1

    def test_an_empty_item_is_a_placeholder_not_a_decode_error(self, cache: memo.Cache) -> None:
        """memo never stores b"": an empty item is a lease the server granted (meta `mg … N`),
        as a classic multi-key get shows it. A miss; the fill takes its place."""
        seen = Counter()

        @cache.cached(ns="c")
        def f(x: int) -> int:
            return seen(x)

        cache.backend.set(f.key_for(1), b"", None)
        assert f(1) == 1
        assert f(1) == 1
        assert cache.stats("c")["decode_errors"] == 0
        assert cache.stats("c")["hits"] == 1 and cache.stats("c")["sets"] == 1

    def test_exceptions_are_not_cached(self, cache: memo.Cache) -> None:
        seen = Counter()

        @cache.cached()
        def flaky(x: int) -> int:
            if seen(x) == 1:
                raise ValueError("first call fails")
            return x

        with pytest.raises(ValueError):
            flaky(1)
        assert flaky(1) == 1 and flaky(1) == 1 and len(seen.calls) == 2

    def test_generators_are_refused(self) -> None:
        with pytest.raises(memo.ConfigurationError, match="generator"):

            @memo.Cache().cached()
            def gen() -> Any:
                yield 1


class TestSingleFlight:
    def test_threads_on_one_cold_key_compute_once(self, cache: memo.Cache) -> None:
        seen = Counter()
        lock = threading.Lock()

        @cache.cached(ns="hot")
        def slow(x: int) -> list[int]:
            with lock:
                seen(x)
            time.sleep(0.2)
            return [x]

        results: list[Any] = []
        barrier = threading.Barrier(32)

        def worker() -> None:
            barrier.wait()
            results.append(slow(1))

        threads = [threading.Thread(target=worker) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(seen.calls) == 1
        assert results == [[1]] * 32
        assert len({id(r) for r in results}) == 32  # nobody shares a mutable result

    def test_followers_get_the_leaders_exception(self, cache: memo.Cache) -> None:
        seen = Counter()

        @cache.cached()
        def boom(x: int) -> int:
            seen(x)
            time.sleep(0.2)
            raise RuntimeError("boom")

        errors: list[BaseException] = []

        def worker() -> None:
            try:
                boom(1)
            except RuntimeError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(errors) == 8 and len(seen.calls) == 1

    async def test_tasks_on_one_cold_key_compute_once(self, cache: memo.Cache) -> None:
        seen = Counter()

        @cache.cached(ns="hot")
        async def slow(x: int) -> dict[str, int]:
            seen(x)
            await asyncio.sleep(0.1)
            return {"x": x}

        results = await asyncio.gather(*(slow(1) for _ in range(200)))
        assert len(seen.calls) == 1 and all(r == {"x": 1} for r in results)
        assert len({id(r) for r in results}) == 200

    async def test_cancelling_a_waiter_spares_the_others_and_the_computation(self, cache: memo.Cache) -> None:
        seen = Counter()
        started = asyncio.Event()

        @cache.cached(ns="hot")
        async def slow(x: int) -> int:
            seen(x)
            started.set()
            await asyncio.sleep(0.2)
            return x * 10

        first = asyncio.create_task(slow(1))
        await started.wait()
        others = [asyncio.create_task(slow(1)) for _ in range(5)]
        await asyncio.sleep(0.01)
        first.cancel()
        others[0].cancel()
        assert await asyncio.gather(*others[1:]) == [10] * 4
        assert first.cancelled() and others[0].cancelled()
        assert len(seen.calls) == 1
        assert await slow(1) == 10 and len(seen.calls) == 1  # and the result was stored

    async def test_when_every_waiter_is_cancelled_the_computation_stops(self, cache: memo.Cache) -> None:
        finished = Counter()

        @cache.cached()
        async def slow(x: int) -> int:
            await asyncio.sleep(0.2)
            finished(x)
            return x

        tasks = [asyncio.create_task(slow(1)) for _ in range(3)]
        await asyncio.sleep(0.02)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.3)
        assert finished.calls == []
        assert await slow(1) == 1


class TestDefaultCache:
    def test_configure_and_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from memo import _defaults

        monkeypatch.setattr(_defaults, "_default", None)
        monkeypatch.setenv("MEMO_URL", "memory://?max_entries=5")
        seen = Counter()

        @memo.cached(ns="d")
        def f(x: int) -> int:
            return seen(x)

        assert f(1) == f(1) == 1
        default = memo.default_cache()
        assert default.backend.max_entries == 5  # type: ignore[attr-defined]
        memo.configure("memory://", prefix="other:")
        assert f(1) == 2  # rebinds to the newly configured Cache
        assert f.key_for(1).startswith("other:")

    def test_bad_urls_and_options(self) -> None:
        with pytest.raises(memo.ConfigurationError, match="scheme"):
            memo.Cache("redis://localhost")
        with pytest.raises(memo.ConfigurationError, match="max_entries"):
            memo.Cache("memory://", timeout=1)
        with pytest.raises(memo.ConfigurationError):
            memo.Cache("memory://?max_entries=abc")
        with pytest.raises(memo.ConfigurationError):
            memo.Cache(prefix="has space")
        with pytest.raises(memo.ConfigurationError):
            memo.Cache(on_error="explode")  # type: ignore[arg-type]


def test_memory_backend_is_bounded_lru() -> None:
    cache = memo.Cache("memory://?max_entries=3")
    b = cache.backend
    for k in "abcd":
        b.set(k, b"v", None)
    assert b.get("a") is None and b.get("b") == b"v"
    b.set("e", b"v", None)
    assert b.get("c") is None and b.get("b") == b"v"


class TestScopeAndInjected:
    def test_scope_adds_picked_arguments_to_the_key(self, cache: memo.Cache) -> None:
        seen = Counter()

        @cache.cached(ns="s", ignore=("config",), scope=lambda config: config["user"])
        def answer(question: str, config: dict[str, Any]) -> str:
            seen(question, config["user"])
            return f"{config['user']}:{question}"

        assert answer("q", {"user": "ann", "trace": 1}) == "ann:q"
        assert answer("q", {"user": "ann", "trace": 2}) == "ann:q"  # other config values do not matter
        assert answer("q", {"user": "bob", "trace": 1}) == "bob:q"  # but the scoped one does
        assert len(seen.calls) == 2
        assert answer.key_for("q", {"user": "ann"}) != answer.key_for("q", {"user": "bob"})

    def test_scope_must_name_parameters_of_the_function(self) -> None:
        with pytest.raises(memo.ConfigurationError, match="nope"):

            @memo.Cache().cached(scope=lambda nope: nope)
            def f(x: int) -> int:
                return x


class TestFailOpen:
    """The decorated function keeps working when memcached does not."""

    def test_refused_connection_runs_the_function(self) -> None:
        cache = memo.Cache(refused_url(), timeout=0.1, connect_timeout=0.1)
        seen = Counter()

        @cache.cached(ns="down")
        def f(x: int) -> int:
            return seen(x)

        assert [f(1), f(1), f(1)] == [1, 2, 3]
        assert cache.stats("down")["errors"] >= 1 and cache.stats("down")["hits"] == 0
        with pytest.raises(memo.BackendError):
            cache.clear(ns="down")  # a clear that did not happen is never reported as done
        cache.close()

    async def test_refused_connection_async(self) -> None:
        cache = memo.Cache(refused_url(), timeout=0.1, connect_timeout=0.1)

        @cache.cached(ns="down")
        async def f(x: int) -> int:
            return x * 2

        assert await f(2) == 4 and await f(2) == 4
        assert await f.ainvalidate(2) is False
        await cache.aclose()

    def test_on_error_raise(self) -> None:
        cache = memo.Cache(refused_url(), timeout=0.1, on_error="raise")

        @cache.cached()
        def f(x: int) -> int:
            return x

        with pytest.raises(memo.BackendUnavailable):
            f(1)

        @cache.cached(on_error="ignore")
        def g(x: int) -> int:
            return x

        assert g(1) == 1
        cache.close()

    @pytest.mark.memcached
    def test_hung_server_costs_at_most_the_timeout_then_nothing(self, memcached_servers: Any) -> None:
        (process,) = memcached_servers(1)
        cache = memo.Cache(process.url, timeout=0.2, failure_threshold=2, retry_after=60)

        @cache.cached(ns="hung")
        def f(x: int) -> int:
            return x + 1

        assert f(1) == 2
        process.pause()
        try:
            start = time.perf_counter()
            assert f(1) == 2 and f(1) == 2  # each waits out the timeout; the breaker opens
            assert time.perf_counter() - start < 2 * 0.2 + 0.5
            start = time.perf_counter()
            assert [f(1) for _ in range(100)] == [2] * 100
            assert time.perf_counter() - start < 0.2  # breaker open: no waiting at all
            assert cache.stats("hung")["errors"] >= 2
        finally:
            process.resume()
            cache.close()
