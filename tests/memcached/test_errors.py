"""Errors at the edge: only public memo classes reach a caller under on_error="raise"."""

from __future__ import annotations

from typing import Any

import pytest

import memo

PUBLIC_ERRORS = {
    obj
    for obj in (getattr(memo, name) for name in memo.__all__)
    if isinstance(obj, type) and issubclass(obj, Exception)
}


@pytest.fixture
def refusing_server(memcached_servers: Any, nutcracker: Any) -> str:
    """twemproxy in front of a memcached that died: it answers `SERVER_ERROR Connection refused`.

    An error reply is what memo must translate: the proxy is alive and answers,
    but with an error line instead of a result.
    """
    (backend,) = memcached_servers(1)
    proxy = nutcracker([backend])
    backend.kill()
    return f"memcached://{proxy.address}"


def _escaped(call: Any) -> BaseException | None:
    try:
        call()
    except Exception as exc:
        return exc
    return None


def test_decode_error_is_a_memo_error() -> None:
    assert issubclass(memo.DecodeError, memo.MemoError)
    with pytest.raises(memo.MemoError):
        memo.Codec().decode(b"not memo bytes")


@pytest.mark.memcached
def test_only_public_errors_escape_with_on_error_raise(refusing_server: str) -> None:
    cache = memo.Cache(refusing_server, on_error="raise", timeout=0.5, connect_timeout=0.5)

    @cache.cached(ns="e")
    def f(x: int) -> int:
        return x

    escaped = []
    for _ in range(2):
        for call in (
            lambda: f(1),
            lambda: f.invalidate(1),
            lambda: f.key_for(1),
            lambda: f.refresh(1),
            lambda: cache.clear(ns="e"),
            lambda: cache.backend.get("k"),
            lambda: cache.backend.get_many(["k", "j"]),
            lambda: cache.backend.delete("k"),
            lambda: cache.backend.touch("k", 10),
            lambda: cache.backend.gets("k"),
        ):
            escaped.append(_escaped(call))
    found = [exc for exc in escaped if exc is not None]
    assert found, "the refusing server should make some calls fail"
    assert all(type(exc) in PUBLIC_ERRORS for exc in found), {type(exc) for exc in found}
    assert any(type(exc) is memo.BackendProtocolError for exc in found)
    cache.close()


@pytest.mark.memcached
async def test_only_public_errors_escape_async(refusing_server: str) -> None:
    cache = memo.Cache(refusing_server, on_error="raise", timeout=0.5, connect_timeout=0.5)

    @cache.cached(ns="e")
    async def f(x: int) -> int:
        return x

    found: list[BaseException] = []
    for _ in range(2):
        for make in (
            lambda: f(1),
            lambda: f.ainvalidate(1),
            lambda: f.akey_for(1),
            lambda: f.arefresh(1),
            lambda: cache.aclear(ns="e"),
            lambda: cache.backend.aget("k"),
            lambda: cache.backend.aget_many(["k", "j"]),
            lambda: cache.backend.adelete("k"),
        ):
            try:
                await make()
            except Exception as exc:
                found.append(exc)
    assert found
    assert all(type(exc) in PUBLIC_ERRORS for exc in found), {type(exc) for exc in found}
    assert any(type(exc) is memo.BackendProtocolError for exc in found)
    await cache.aclose()
