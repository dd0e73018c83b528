"""Errors at the edge: only public memo classes reach a caller under on_error="raise"."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import memo

PUBLIC_ERRORS = {
    obj
    for obj in (getattr(memo, name) for name in memo.__all__)
    if isinstance(obj, type) and issubclass(obj, Exception)
}


@pytest.fixture
def refusing_server() -> Iterator[str]:
    """A TCP server on loopback that answers every request line with a memcached error reply.

    Stands for a server out of memory or a proxy that refuses a command: the
    replies memo must translate (`SERVER_ERROR`, `CLIENT_ERROR`, `ERROR`).
    """
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    replies = [b"SERVER_ERROR out of memory\r\n", b"CLIENT_ERROR refused\r\n", b"ERROR\r\n"]
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        n = 0
        with conn:
            buf = b""
            while not stop.is_set():
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while b"\r\n" in buf:
                    line, buf = buf.split(b"\r\n", 1)
                    if line.split(b" ", 1)[0] in (b"set", b"add", b"cas"):
                        buf = buf.split(b"\r\n", 1)[1] if b"\r\n" in buf else b""  # the data block
                    try:
                        conn.sendall(replies[n % len(replies)])
                    except OSError:
                        return
                    n += 1

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f"memcached://127.0.0.1:{port}"
    stop.set()
    listener.close()


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


def test_only_public_errors_escape_with_on_error_raise(refusing_server: str) -> None:
    cache = memo.Cache(refusing_server, on_error="raise", timeout=0.5, connect_timeout=0.5)

    @cache.cached(ns="e")
    def f(x: int) -> int:
        return x

    escaped = []
    for _ in range(3):  # each reply kind in turn
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


async def test_only_public_errors_escape_async(refusing_server: str) -> None:
    cache = memo.Cache(refusing_server, on_error="raise", timeout=0.5, connect_timeout=0.5)

    @cache.cached(ns="e")
    async def f(x: int) -> int:
        return x

    found: list[BaseException] = []
    for _ in range(3):
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
