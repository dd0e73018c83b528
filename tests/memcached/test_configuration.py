"""Configuration that cannot lie: defaults, one boolean parser, every bad option refused at construction."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from memcached_fixtures import MemcachedProcess

import memo
import memo.testing
from memo._backend import backend_from_url
from memo._memcached import MemcachedBackend
from memo._null import NullBackend
from memo._settings import VARIABLES, parse_bool, server_workers, settings_from_env

Servers = Callable[..., list[MemcachedProcess]]

# -- the boolean parser ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [(t, True) for t in ("1", "true", "TRUE", "True", "yes", "Yes", "on", "ON", " on ")]
    + [(f, False) for f in ("0", "false", "FALSE", "no", "No", "off", "OFF")],
)
def test_booleans_take_the_usual_spellings(text: str, expected: bool) -> None:
    assert parse_bool("X", text) is expected


@pytest.mark.parametrize("text", ["2", "y", "n", "t", "f", "maybe", "enabled", "-1", "truee"])
def test_anything_else_is_an_error_naming_the_variable(text: str) -> None:
    with pytest.raises(
        memo.ConfigurationError, match=r"MEMCACHED_ENABLED=.*1/0, true/false, yes/no or on/off"
    ):
        memo.Cache.from_env("MEMCACHED_", environ={"MEMCACHED_ENABLED": text})


@pytest.mark.parametrize("text", ["0", "false", "no", "off", "OFF"])
def test_require_memcached_off_skips(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv("MEMO_REQUIRE_MEMCACHED", text)
    with pytest.raises(pytest.skip.Exception):
        memo.testing._unavailable("no memcached binary")


@pytest.mark.parametrize("text", ["1", "true", "yes", "on"])
def test_require_memcached_on_fails(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv("MEMO_REQUIRE_MEMCACHED", text)
    with pytest.raises(pytest.fail.Exception, match="MEMO_REQUIRE_MEMCACHED"):
        memo.testing._unavailable("no memcached binary")


def test_require_memcached_garbage_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMO_REQUIRE_MEMCACHED", "sometimes")
    with pytest.raises(memo.ConfigurationError, match="MEMO_REQUIRE_MEMCACHED='sometimes'"):
        memo.testing._unavailable("no memcached binary")


# -- defaults of from_env ------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["MEMCACHED_", "MEMO_"])
def test_nothing_set_is_a_disabled_cache(prefix: str) -> None:
    cache = memo.Cache.from_env(prefix, environ={})
    assert cache.url == "null://" and isinstance(cache.backend, NullBackend)
    assert cache.health()["status"] == "disabled"


@pytest.mark.parametrize("prefix", ["MEMCACHED_", "MEMO_"])
def test_enabled_alone_is_memcached_on_localhost(prefix: str) -> None:
    url, options, used = settings_from_env({prefix + "ENABLED": "true"}, prefix)
    assert (url, options, used) == ("memcached://localhost:11211", {}, [prefix + "ENABLED"])
    cache = memo.Cache.from_env(prefix, environ={prefix + "ENABLED": "yes"})
    assert cache.backend.servers == ("localhost:11211",)  # type: ignore[attr-defined]


def test_hosts_or_url_switch_the_cache_on_unless_disabled() -> None:
    assert settings_from_env({"MEMCACHED_HOSTS": "a:1"}, "MEMCACHED_")[0] == "memcached://a:1"
    assert settings_from_env({"MEMO_URL": "memory://"})[0] == "memory://"
    off = {"MEMCACHED_HOSTS": "a:1", "MEMCACHED_ENABLED": "off"}
    assert settings_from_env(off, "MEMCACHED_")[0] == "null://"


def test_timeout_is_the_connect_timeout() -> None:
    _, options, _ = settings_from_env({"MEMCACHED_HOSTS": "a:1", "MEMCACHED_TIMEOUT": "5"}, "MEMCACHED_")
    assert options == {"connect_timeout": 5}
    env = {"MEMO_HOSTS": "a:1", "MEMO_CONNECT_TIMEOUT": "0.5", "MEMO_OPERATION_TIMEOUT": "20ms"}
    assert settings_from_env(env)[1] == {"connect_timeout": 0.5, "timeout": 0.02}
    with pytest.raises(memo.ConfigurationError, match="MEMO_TIMEOUT and MEMO_CONNECT_TIMEOUT"):
        settings_from_env({"MEMO_TIMEOUT": "1", "MEMO_CONNECT_TIMEOUT": "1"})
    with pytest.raises(memo.ConfigurationError, match="MEMO_OPERATION_TIMEOUT='soon'"):
        settings_from_env({"MEMO_OPERATION_TIMEOUT": "soon"})


@pytest.mark.memcached
def test_the_design_sample_timeout_does_not_stall_calls_on_a_hung_server(
    memcached_server: MemcachedProcess, caplog: pytest.LogCaptureFixture
) -> None:
    env = {"MEMCACHED_ENABLED": "true", "MEMCACHED_HOSTS": memcached_server.address, "MEMCACHED_TIMEOUT": "5"}
    with caplog.at_level(logging.WARNING, "memo"):
        cache = memo.Cache.from_env("MEMCACHED_", environ=env, key_prefix=f"hung{time.time_ns()}:")
    assert "connect_timeout=5s" in caplog.text and "fail-open needs at most 1.0s" in caplog.text
    assert cache.set("k", 1) is True  # connected while the server answers
    memcached_server.pause()
    try:
        started = time.perf_counter()
        assert cache.get("k", "fallback") == "fallback"
        took = time.perf_counter() - started
    finally:
        memcached_server.resume()
    cache.close()
    assert took < 1.0  # the operation timeout (0.25 s), not the 5 s connect timeout
    assert cache.stats()["total"]["errors"] == 1


def test_short_timeouts_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "memo"):
        memo.Cache("memcached://127.0.0.1:1", timeout=1, connect_timeout=0.5).close()
    assert caplog.text == ""


class Recording(dict[str, str]):
    """An environment that records which variables were asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)


@pytest.mark.parametrize("prefix", ["MEMCACHED_", "MEMO_"])
def test_the_readme_table_lists_every_variable_read(prefix: str) -> None:
    from pathlib import Path

    environ = Recording()
    settings_from_env(environ, prefix)
    assert environ.asked == {prefix + name for name in VARIABLES}
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = [line for line in readme.splitlines() if line.startswith("| `MEMCACHED_")]
    for name in VARIABLES:
        assert any(f"`MEMCACHED_{name}`, `MEMO_{name}`" in line for line in table), name
    for extra in ("MEMO_REQUIRE_MEMCACHED", "MEMCACHED_BIN"):
        assert f"| `{extra}` |" in readme


# -- every bad option is one ConfigurationError at construction, naming it ----------------------------

LONG_LABEL = "a" * 64 + ".example"

BAD: list[tuple[str, Callable[[], Any], str]] = [
    ("scheme", lambda: memo.Cache("redis://h:1"), "unknown cache URL scheme 'redis'"),
    ("port-text", lambda: memo.Cache("memcached://h:abc"), "port 'abc'"),
    ("port-range", lambda: memo.Cache("memcached://h:70000"), "out of range"),
    ("port-pair", lambda: MemcachedBackend([("h", "11211")]), "port must be an int"),  # type: ignore[list-item]
    ("port-pair-range", lambda: MemcachedBackend([("h", 0)]), "port must be an int"),
    ("server-kind", lambda: MemcachedBackend([11211]), "a server is"),  # type: ignore[list-item]
    ("ipv6-unclosed", lambda: memo.Cache("memcached://[::1"), "malformed cache URL"),
    ("fragment", lambda: memo.Cache("memcached://h:1#x"), "no #fragment"),
    ("url-type", lambda: memo.Cache(b"memory://"), "a cache URL is a str"),  # type: ignore[arg-type]
    ("pool-zero", lambda: memo.Cache("memcached://h:1", pool_size=0), "pool_size"),
    ("pool-text", lambda: memo.Cache("memcached://h:1", pool_size="x"), "pool_size"),
    ("pool-float", lambda: memo.Cache("memcached://h:1", pool_size=2.5), "pool_size"),
    ("pool-bool", lambda: MemcachedBackend(["h:1"], pool_size=True), "pool_size"),
    ("timeout-text", lambda: memo.Cache("memcached://h:1", timeout="abc"), "timeout='abc'"),
    ("timeout-none", lambda: memo.Cache("memcached://h:1", timeout=None), "timeout=None"),
    ("timeout-inf", lambda: memo.Cache("memcached://h:1?timeout=inf"), "timeout"),
    ("timeout-nan", lambda: MemcachedBackend(["h:1"], timeout=float("nan")), "timeout"),
    ("connect-timeout", lambda: memo.Cache("memcached://h:1", connect_timeout=-1), "connect_timeout"),
    ("retry-after", lambda: memo.Cache("memcached://h:1", retry_after="x"), "retry_after"),
    ("threshold", lambda: memo.Cache("memcached://h:1", failure_threshold=0), "failure_threshold"),
    ("max-value", lambda: memo.Cache("memcached://h:1", max_value_size=None), "max_value_size"),
    ("max-value-neg", lambda: memo.Cache("memcached://h:1?max_value_size=-1"), "max_value_size"),
    ("tls", lambda: memo.Cache("memcached+tls://h:1", tls_context="yes"), "tls_context"),
    ("proxy", lambda: memo.Cache("memcached://h:1?proxy=mcrouter"), "proxy"),
    ("interval", lambda: memo.Cache("memcached://h:1?discovery_interval=5"), "discovery_interval"),
    ("unknown-option", lambda: memo.Cache("memcached://h:1", colour="red"), "option 'colour'"),
    ("query-twice", lambda: memo.Cache("memory://?max_entries=1&max_entries=2"), "max_entries given twice"),
    ("query-text", lambda: memo.Cache("memory://?max_entries=ten"), "max_entries='ten'"),
    ("memory-entries", lambda: memo.Cache("memory://", max_entries=None), "max_entries"),
    ("memory-entries-0", lambda: memo.Cache("memory://", max_entries=0), "max_entries"),
    ("memory-value-size", lambda: memo.Cache("memory://?max_value_size=-1"), "max_value_size"),
    ("null-option", lambda: memo.Cache("null://?x=1"), "option 'x'"),
    ("null-host", lambda: memo.Cache("null://somewhere"), "takes no host"),
    ("label", lambda: memo.Cache(f"memcached://{LONG_LABEL}:11211"), "not a DNS name"),
    ("name-length", lambda: memo.Cache("memcached://" + ".".join(["a" * 60] * 5)), "longer than a DNS name"),
    ("nul", lambda: MemcachedBackend(["bad\x00host:11211"]), "control or space"),
    ("empty-label", lambda: memo.Cache("memcached://a..b:11211"), "not a DNS name"),
    ("discovery-host", lambda: MemcachedBackend(discovery=LONG_LABEL), "not a DNS name"),
    ("prefix", lambda: memo.Cache(prefix=5), "prefix"),  # type: ignore[arg-type]
    ("ttl", lambda: memo.Cache(ttl="60"), "ttl"),  # type: ignore[arg-type]
    ("strict", lambda: memo.Cache(strict="no"), "strict"),  # type: ignore[arg-type]
    ("on-error", lambda: memo.Cache(on_error="log"), "on_error"),  # type: ignore[arg-type]
    ("ns-refresh", lambda: memo.Cache(ns_refresh="x"), "ns_refresh"),  # type: ignore[arg-type]
    ("compress", lambda: memo.Cache(compress_threshold="16k"), "compress_threshold"),  # type: ignore[arg-type]
    ("compress-neg", lambda: memo.Cache(compress_threshold=-1), "compress_threshold"),
    ("on-event", lambda: memo.Cache(on_event=5), "on_event"),  # type: ignore[arg-type]
    ("on-event-item", lambda: memo.Cache(on_event=[print, 5]), "on_event"),  # type: ignore[list-item]
    ("leases", lambda: memo.Cache(leases="off"), "leases"),  # type: ignore[arg-type]
    ("lease-ttl", lambda: memo.Cache(lease_ttl=0), "lease_ttl"),
    ("lease-wait", lambda: memo.Cache(lease_wait="x"), "lease_wait"),  # type: ignore[arg-type]
    ("backend", lambda: memo.Cache(backend="memory://"), "backend="),  # type: ignore[arg-type]
    ("env-ttl", lambda: memo.Cache.from_env(environ={"MEMO_TTL": "soon"}), "MEMO_TTL"),
    (
        "env-pool",
        lambda: memo.Cache.from_env(environ={"MEMO_HOSTS": "h:1", "MEMO_POOL_SIZE": "0"}),
        "MEMO_POOL",
    ),
    ("env-hosts", lambda: memo.Cache.from_env(environ={"MEMO_HOSTS": "h:99999"}), "MEMO_HOSTS"),
    ("env-url", lambda: memo.Cache.from_env(environ={"MEMO_URL": "redis://x"}), "redis"),
    ("env-fallback", lambda: memo.Cache.from_env(environ={"MEMO_FALLBACK": "maybe"}), "MEMO_FALLBACK"),
    ("env-timeout", lambda: memo.Cache.from_env(environ={"MEMO_TIMEOUT": "abc"}), "MEMO_TIMEOUT"),
    ("env-both", lambda: memo.Cache.from_env(environ={"MEMO_URL": "null://", "MEMO_HOSTS": "h"}), "MEMO_URL"),
]


@pytest.mark.parametrize(("build", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_configuration_is_one_configuration_error(build: Callable[[], Any], message: str) -> None:
    with pytest.raises(memo.ConfigurationError) as caught:
        build()
    assert message in str(caught.value)


def test_good_names_are_accepted() -> None:
    for url in (
        "memcached://localhost:11211",
        "memcached://cache-1.internal.example.:11211",
        "memcached://" + ".".join(["a" * 63] * 3) + ":11211",
        "memcached://bücher.example:11211",  # IDNA
        "memcached://[::1]:11211",
        "memcached://my_host:11211",
    ):
        memo.Cache(url).close()
    assert isinstance(backend_from_url("memcached://h:1", {"pool_size": 2}), MemcachedBackend)
    memo.Cache("memcached+tls://h:1", tls_context=ssl.create_default_context()).close()


# -- names that fail only at resolution ---------------------------------------------------------------------


def test_a_name_the_resolver_refuses_fails_open_and_the_resolver_lives_on(
    monkeypatch: pytest.MonkeyPatch, memcached_server: MemcachedProcess
) -> None:
    from memo._memcached import _resolve

    real = _resolve._getaddrinfo

    def lookup(host: str, *args: Any) -> Any:
        if host == "refused.example":  # what the IDNA codec raises for names it cannot encode
            raise UnicodeError("encoding with 'idna' codec failed (UnicodeError: label too long)")
        return real(host, *args)

    monkeypatch.setattr(_resolve, "_getaddrinfo", lookup)
    good = f"localhost:{memcached_server.port}"
    cache = memo.Cache("memcached://refused.example:1", prefix=f"r{time.time_ns()}:")
    started = time.perf_counter()
    for _ in range(3):
        assert cache.get("k", "fallback") == "fallback"  # fails open
    assert time.perf_counter() - started < 0.5  # at once: no lookup left hanging to wait for
    assert cache.stats()["total"]["errors"] == 3
    assert cache.backend._socket_module._resolver._pending == {}  # type: ignore[attr-defined]
    cache.close()
    # One backend, one resolver: a name it cannot look up does not break the others.
    backend = MemcachedBackend(["refused.example:1", good])
    keys = [f"r{time.time_ns()}-{i}" for i in range(40)]
    to_good = [k for k in keys if backend.server_for(k) == good]
    to_refused = [k for k in keys if backend.server_for(k) != good]
    with pytest.raises(memo.BackendUnavailable, match=r"cannot look up 'refused\.example'"):
        backend.get(to_refused[0])
    assert backend.set(to_good[0], b"v", None) is True and backend.get(to_good[0]) == b"v"
    with pytest.raises(memo.BackendUnavailable, match="cannot look up"):
        backend.get(to_refused[1])
    assert backend._socket_module._resolver._pending == {}
    backend.close()


@pytest.mark.parametrize("host", [LONG_LABEL, "bad\x00host"])
async def test_async_callers_never_meet_a_bad_name(host: str) -> None:
    with pytest.raises(memo.ConfigurationError):
        memo.Cache(f"memcached://{host}:11211")
    good = memo.Cache("memcached://127.0.0.1:1", timeout=0.05, connect_timeout=0.05)
    assert await good.aget("k", "fallback") == "fallback"
    await good.aclose()


# -- how many workers serve this process ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "argv", "expected"),
    [
        ({}, ["pytest"], 1),
        ({"WEB_CONCURRENCY": "4"}, ["app"], 4),
        ({"WEB_CONCURRENCY": "x"}, ["app"], 1),
        ({}, ["/venv/bin/uvicorn", "app:app", "--workers", "2"], 2),
        ({}, ["/venv/bin/uvicorn", "app:app", "--workers=3"], 3),
        ({}, ["/venv/lib/python3.11/site-packages/uvicorn/__main__.py", "a:b", "--workers", "2"], 2),
        ({}, ["/venv/bin/gunicorn", "-w", "5", "app:app"], 5),
        ({}, ["/venv/bin/gunicorn", "-w6", "app:app"], 6),
        ({}, ["/venv/bin/hypercorn", "--workers", "2", "app:app"], 2),
        ({"GUNICORN_CMD_ARGS": "--bind 0.0.0.0 --workers 7"}, ["gunicorn"], 7),
        ({}, ["myapp", "--workers", "9"], 1),  # not a server memo knows
    ],
)
def test_server_workers(environ: dict[str, str], argv: list[str], expected: int) -> None:
    assert server_workers(environ, argv) == expected


def test_memory_under_several_workers_warns_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from memo import _settings

    monkeypatch.setattr(_settings, "_warned_pid", 0)
    with caplog.at_level(logging.WARNING, "memo"):
        memo.Cache("memory://")
        assert caplog.text == ""  # one process: nothing to say
        monkeypatch.setenv("WEB_CONCURRENCY", "2")
        memo.Cache("memory://")
        memo.Cache("memory://?max_entries=5")
        memo.Cache("null://")
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "memory:// is a per-process cache" in warnings[0]
    assert "2 worker processes" in warnings[0]


def test_async_flavour_of_the_hung_server_check_is_bounded() -> None:
    # The async side reads the same options: an operation timeout, not the connect one.
    backend = MemcachedBackend(["127.0.0.1:1"], connect_timeout=0.5)
    assert (backend._connect_timeout, backend._timeout) == (0.5, 0.25)
    asyncio.run(backend.aclose())


# -- fork while a name lookup is stalled ------------------------------------------------------------------


@pytest.mark.memcached
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_during_a_stalled_lookup_resolves_afresh(
    monkeypatch: pytest.MonkeyPatch, memcached_server: MemcachedProcess
) -> None:
    from memo._memcached import _resolve

    real = _resolve._getaddrinfo
    parent = os.getpid()
    stalled, release = threading.Event(), threading.Event()

    def lookup(host: str, *args: Any) -> Any:
        if os.getpid() == parent and host == "localhost":  # the parent's resolver hangs
            stalled.set()
            release.wait(30)
        return real(host, *args)

    monkeypatch.setattr(_resolve, "_getaddrinfo", lookup)
    cache = memo.Cache(
        f"memcached://localhost:{memcached_server.port}", connect_timeout=0.2, prefix=f"f{time.time_ns()}:"
    )
    try:
        assert cache.get("k", "fallback") == "fallback"  # the lookup is stalled: fail open
        assert stalled.is_set()
        read, write = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork of a threaded process
            pid = os.fork()
        if pid == 0:  # the child: report, and leave without running the parent's cleanup
            try:
                answer = b"ok" if cache.set("k", "child") and cache.get("k") == "child" else b"stale"
            except BaseException as exc:
                answer = repr(exc).encode()
            os.write(write, answer)
            os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        with os.fdopen(read, "rb") as pipe:
            answer = pipe.read()
    finally:
        release.set()
        cache.close()
    assert answer == b"ok"
