"""The `memo` command line, run as a subprocess against real memcached."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import memo
from memo._cli import UsageError, describe, parse_arguments
from memo._codec import Codec, lease_marker

ROOT = Path(__file__).resolve().parents[2]


Closing = Callable[[memo.Cache], memo.Cache]


@pytest.fixture
def closing() -> Iterator[Closing]:
    """Close the Caches a test makes when it ends."""
    made: list[memo.Cache] = []
    yield lambda cache: made.append(cache) or cache  # type: ignore[func-returns-value]
    for cache in made:
        cache.close()


def memo_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MEMO_URL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "memo", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60
    )


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout)


def test_the_console_script_is_declared() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"] == {"memo": "memo._cli:main"}


def test_version() -> None:
    from importlib.metadata import version

    result = memo_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"memo-memcached {memo.__version__}"
    assert version("memo-memcached") == memo.__version__  # the distribution users install


def test_the_distribution_is_memo_memcached() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == "memo-memcached"  # `memo` on the index is another project
    readme = (ROOT / "README.md").read_text()
    assert "pip install memo-memcached" in readme
    docs = (ROOT / "docs" / "getting-started.md").read_text()
    assert "pip install memo-memcached" in docs and "pip install memo " not in docs


def test_usage_errors_exit_2() -> None:
    assert memo_cli().returncode == 2
    assert memo_cli("ping").returncode == 2
    result = memo_cli("ping", "redis://127.0.0.1:6379")
    assert result.returncode == 2 and "memcached://" in result.stderr
    result = memo_cli("stats", "memcached://127.0.0.1:notaport")
    assert result.returncode == 2 and "not a number" in result.stderr


def test_unreachable_servers_exit_1() -> None:
    result = memo_cli("ping", "memcached://127.0.0.1:1", "--json")
    assert result.returncode == 1
    (row,) = as_json(result)
    assert row["ok"] is False and row["server"] == "127.0.0.1:1" and "refused" in row["error"]


@pytest.mark.memcached
def test_ping_each_server(memcached_servers: Any) -> None:
    a, b = memcached_servers(2)
    url = f"memcached://{a.address},{b.address}"
    result = memo_cli("ping", url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["server", "ok"] and "median_ms" in lines[0]
    assert [line.split()[0] for line in lines[1:]] == [a.address, b.address]
    rows = as_json(memo_cli("ping", url, "--json", "--count", "5"))
    assert all(r["ok"] and 0 < r["min_ms"] <= r["median_ms"] < 1000 and r["version"] for r in rows)
    b.kill()
    result = memo_cli("ping", url, "--json")
    assert result.returncode == 1
    assert [r["ok"] for r in as_json(result)] == [True, False]


@pytest.mark.memcached
def test_stats_per_server(memcached_servers: Any) -> None:
    (server,) = memcached_servers(1)
    with memo.Cache(server.url) as cache:
        for i in range(10):
            cache.set(f"k{i}", i)
        for i in range(15):
            cache.get(f"k{i}")
    result = memo_cli("stats", server.url, "--json")
    assert result.returncode == 0, result.stderr
    (row,) = as_json(result)
    assert row["server"] == server.address and row["version"].startswith("1.")
    assert row["items"] >= 10 and row["bytes"] > 0 and row["limit_bytes"] == 16 * 1024 * 1024
    assert row["evictions"] == 0 and row["get_hits"] >= 10 and row["get_misses"] >= 5
    assert row["hit_ratio"] == round(row["get_hits"] / (row["get_hits"] + row["get_misses"]), 4)
    table = memo_cli("stats", server.url).stdout
    assert "hit_ratio" in table.splitlines()[0] and server.address in table


@pytest.mark.memcached
def test_clear_is_cache_clear(memcached_url: str, closing: Closing) -> None:
    prefix = f"cli{uuid.uuid4().hex[:8]}:"
    cache = closing(memo.Cache(memcached_url, prefix=prefix, ns_refresh=0))
    cache.set("k", 1, ns="users")
    cache.set("k", 2, ns="orders")
    result = memo_cli("clear", memcached_url, "users", "--prefix", prefix)
    assert result.returncode == 0, result.stderr
    assert "users" in result.stdout
    assert cache.get("k", ns="users") is None
    assert cache.get("k", ns="orders") == 2
    assert memo_cli("clear", memcached_url, "--all", "--prefix", prefix, "--json").returncode == 0
    assert cache.get("k", ns="orders") is None
    assert memo_cli("clear", memcached_url, "--prefix", prefix).returncode == 2
    assert memo_cli("clear", memcached_url, "x", "--all").returncode == 2


def test_clear_failing_exits_1() -> None:
    result = memo_cli("clear", "memcached://127.0.0.1:1", "users")
    assert result.returncode == 1 and "memo clear" in result.stderr


@pytest.mark.memcached
def test_inspect_an_entry(memcached_url: str, closing: Closing) -> None:
    cache = closing(memo.Cache(memcached_url, prefix=f"cli{uuid.uuid4().hex[:8]}:"))

    @cache.cached(ns="cli")
    def f(n: int) -> Any:
        return {"n": n, "t": (1, 2)} if n else "x" * 100_000

    f(1)
    f(0)
    result = memo_cli("inspect", memcached_url, f.key_for(1), "--json")
    assert result.returncode == 0, result.stderr
    info = as_json(result)
    assert info["memo_value"] is True and info["format_version"] == 2 and info["compressed"] is False
    assert '"n":1' in info["preview"] and info["size"] > 10
    big = as_json(memo_cli("inspect", memcached_url, f.key_for(0), "--json"))
    assert big["compressed"] is True and big["size"] < 2000 and big["body_size"] > 100_000
    assert big["preview"].endswith("…")
    table = memo_cli("inspect", memcached_url, f.key_for(1)).stdout
    assert "format_version" in table and "preview" in table
    missing = memo_cli("inspect", memcached_url, f.key_for(2))
    assert missing.returncode == 1 and "not stored" in missing.stderr
    assert memo_cli("inspect", memcached_url, "bad key").returncode == 2


def test_describe_reads_the_header() -> None:
    codec = Codec()
    assert describe(codec.encode((1, "a")))["flags"] == []
    assert describe(codec.encode([1]))["flags"] == ["plain"]
    soon = int((time.time() + 60) * 1000)
    info = describe(codec.encode([1], expires_ms=soon))
    assert info["flags"] == ["plain", "expires"] and 55 < info["expires_in_s"] <= 60
    assert info["expires"].endswith("Z") and info["preview"] == "[1]"
    lease = describe(lease_marker("owner1"))
    assert lease["flags"] == ["lease"] and lease["lease_owner"] == "owner1" and "lease" in lease["note"]
    assert describe(b"m\x01\x01[1]\n")["format_version"] == 1  # memo 0.1 values are still read
    assert describe(b"m\x09\x01[1]\n")["note"].startswith("format version 9")
    assert "miss" in describe(b"m\x02\x03garbage")["note"]
    assert describe(b"abc123")["memo_value"] is False


def test_arguments_are_json_literals_or_name_equals_json() -> None:
    assert parse_arguments(["42", '"42"', "[1, 2]", "full=true", 'name="a=b"']) == (
        [42, "42", [1, 2]],
        {"full": True, "name": "a=b"},
    )
    for bad in (["hello"], ["x=1", "2"]):
        with pytest.raises(UsageError, match=r"JSON literal|after keyword"):
            parse_arguments(bad)


@pytest.mark.memcached
def test_key_of_a_call(memcached_url: str, tmp_path: Path, closing: Closing) -> None:
    (tmp_path / "myapp.py").write_text(
        "import memo\n\n"
        "@memo.cached(ns='users')\n"
        "def get_user(user_id: int, full: bool = False) -> dict:\n"
        "    return {}\n\n"
        "class Repo:\n"
        "    @staticmethod\n"
        "    @memo.cached(ns='repo')\n"
        "    def find(name: str) -> str:\n"
        "        return name\n"
        "\n"
        "def plain(x):\n"
        "    return x\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import myapp  # type: ignore[import-not-found]

        closing(memo.configure(memcached_url))
        expected = myapp.get_user.key_for(42, full=True)
        result = memo_cli("key", "myapp:get_user", "42", "full=true", "--url", memcached_url, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == expected
        assert memo_cli(
            "key", "myapp:get_user", "42", "--url", memcached_url, cwd=tmp_path
        ).stdout.strip() == (myapp.get_user.key_for(42))
        found = memo_cli("key", "myapp:Repo.find", '"x"', "--json", "--url", memcached_url, cwd=tmp_path)
        assert as_json(found)["key"] == myapp.Repo.find.key_for("x")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("myapp", None)
        memo.configure("memory://")
    for args, message in [
        (("myapp:plain", "1"), "not a memoized function"),
        (("myapp:nothing",), "has no"),
        (("nomodule:f",), "cannot import"),
        (("myapp",), "MODULE:FUNCTION"),
        (("myapp:get_user", "hello"), "JSON literal"),
        (("myapp:get_user", "1", "2", "3"), "argument"),
    ]:
        result = memo_cli("key", *args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr
    down = memo_cli("key", "myapp:get_user", "1", "--url", "memcached://127.0.0.1:1", cwd=tmp_path)
    assert down.returncode == 1


@pytest.mark.memcached
def test_tls_servers(memcached_servers: Any, memcached_tls_files: tuple[str, str], closing: Closing) -> None:
    cert, key = memcached_tls_files
    (server,) = memcached_servers(1, tls=(cert, key))
    url = server.url
    assert url.startswith("memcached+tls://")
    untrusted = memo_cli("ping", url, "--json")
    assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in as_json(untrusted)[0]["error"]
    assert memo_cli("ping", url, "--cafile", cert).returncode == 0
    (row,) = as_json(memo_cli("stats", url, "--cafile", cert, "--json"))
    assert row["ok"] and row["version"]
    context = ssl.create_default_context(cafile=cert)
    cache = closing(memo.Cache(url, tls_context=context, prefix="tls:"))

    @cache.cached(ns="tls")
    def f() -> int:
        return 1

    f()
    assert memo_cli("inspect", url, f.key_for(), "--cafile", cert).returncode == 0
    assert memo_cli("clear", url, "tls", "--prefix", "tls:", "--cafile", cert).returncode == 0
    assert memo_cli("ping", "memcached://127.0.0.1:1", "--cafile", cert).returncode == 2


@pytest.mark.memcached
def test_ping_asks_a_discovery_endpoint_for_the_nodes(memcached_servers: Any, config_endpoint: Any) -> None:
    nodes = memcached_servers(2)
    endpoint = config_endpoint(nodes)
    result = memo_cli("ping", endpoint.url, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = as_json(result)
    assert sorted(r["server"].rsplit(":", 1)[1] for r in rows) == sorted(str(n.port) for n in nodes)
    assert all(r["ok"] for r in rows)


@pytest.mark.parametrize("command", ["ping", "stats"])
def test_an_unreachable_discovery_endpoint_exits_1(command: str) -> None:
    from ports import free_port

    url = f"memcached+discovery://127.0.0.1:{free_port()}"
    result = memo_cli(command, url, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"memo {command}: no node list from the configuration endpoint" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ping", "memcached://127.0.0.1:1", "--timeout", "-1"], "argument --timeout: '-1'"),
        (["ping", "memcached://127.0.0.1:1", "--timeout", "nan"], "argument --timeout: 'nan'"),
        (["stats", "memcached://127.0.0.1:1", "--timeout", "0"], "argument --timeout: '0'"),
        (["ping", "memcached://127.0.0.1:1", "--count", "-5"], "argument --count: '-5'"),
        (["ping", "memcached://[::1"], "malformed URL"),
        (["inspect", "memcached://[::1", "k"], "malformed URL"),
        (["clear", "memcached://[::1", "ns"], "malformed URL"),
        (["ping", "memcached://h:1?pool_size=0"], "pool_size"),
        (["ping", "memcached://" + "a" * 64 + ".example:1"], "not a DNS name"),
        (["ping", "memcached://h:1", "--bogus"], "unrecognized arguments: --bogus"),
        (["nosuchcommand"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_without_a_traceback(args: list[str], message: str) -> None:
    result = memo_cli(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
