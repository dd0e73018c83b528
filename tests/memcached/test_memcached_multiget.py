"""The sync multi-key `get` of `memcached://`: replies read whole or in pieces, and anything odd refused.

`MemcachedBackend.get_many` parses the reply itself. A reply that arrived in
one read is cut at every CRLF at once; one that did not, or whose values hold
CRLF or look like the end of a reply, is parsed as bytes arrive. Both must give
exactly the stored bytes, and a reply that is not an answer to the request must
raise (the connection is then closed), never yield a value.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
from protocol_fixtures import protocol  # noqa: F401 - the fixture, parametrised over both protocols
from socket_doubles import Replies

from memo._errors import BackendError, BackendProtocolError
from memo._memcached import MemcachedBackend
from memo._memcached._ops import get_many
from memo._memcached._proto import Fetch, ProtocolViolation
from memo._memcached._protocol import Connection as _Connection
from memo._memcached._sync import Closed, SyncConnection

TRICKY = [
    b"",
    b"END",
    b"\r\nEND\r\n",
    b"VALUE other 0 3\r\nabc\r\nEND\r\n",
    b"x\r\n" * 100,
    os.urandom(4096),
    os.urandom(300_000),  # several reads
]


@pytest.mark.memcached
@pytest.mark.usefixtures("protocol")
def test_values_of_every_shape_come_back_exactly(memcached_url: str) -> None:
    backend = MemcachedBackend.from_url(urlsplit(memcached_url), {})
    prefix = f"mg{uuid.uuid4().hex[:8]}:"
    stored = {f"{prefix}{i}": value for i, value in enumerate(TRICKY)}
    stored |= {f"{prefix}plain{i}": b"v%d" % i for i in range(200)}
    assert backend.set_many([(key, value, None) for key, value in stored.items()]) == []
    asked = [*stored, f"{prefix}absent", f"{prefix}also-absent"]
    for _ in range(2):  # the connection stays in step
        assert backend.get_many(asked) == stored
    for key, value in stored.items():  # one at a time: the fast path for every shape
        assert backend.get_many([key, f"{prefix}absent"]) == {key: value}
    assert backend.get_many([f"{prefix}absent"]) == {}

    async def read_async() -> None:
        for _ in range(2):
            assert await backend.aget_many(asked) == stored
        for key, value in stored.items():
            assert await backend.aget_many([key, f"{prefix}absent"]) == {key: value}
        await backend.aclose()

    asyncio.run(read_async())
    backend.close()


def FakeClient(*chunks: bytes) -> SyncConnection:
    return SyncConnection(Replies(*chunks))


KEYS = [b"a", b"b"]


def _get_many_sync(client: SyncConnection, kbs: list[bytes]) -> dict[bytes, bytes]:
    request = get_many(kbs, "test:11211", meta=False)
    return client.run(request.data, request.plan)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "chunks",
    [
        [b"VALUE a 0 1\r\n1\r\nVALUE b 7 2\r\n22\r\nEND\r\n"],
        [b"VALUE a 0 1\r\n1\r\nVAL", b"UE b 7 2\r\n22\r\nEND\r\n"],
        [b"VALUE a 0 1\r\n1\r\nVALUE b 7 2\r\n2", b"2\r", b"\nEND\r\n"],
        [b"VALUE a 0 1\r\n1\r\nVALUE b 7 2\r\n22\r\nEND", b"\r\n"],
    ],
    ids=["one read", "header split", "value split", "END split"],
)
def test_replies_in_any_number_of_reads(chunks: list[bytes]) -> None:
    client = FakeClient(*chunks)
    assert _get_many_sync(client, KEYS) == {b"a": b"1", b"b": b"22"}
    assert client.sock.sent == b"get a b\r\n"


def test_a_value_ending_like_a_reply_is_read_to_the_real_end() -> None:
    # The first read ends in "END\r\n", but inside a value: more follows.
    first = b"VALUE a 0 5\r\nxxEND\r\n"
    assert _get_many_sync(FakeClient(first, b"VALUE b 0 1\r\nb\r\nEND\r\n"), KEYS) == {
        b"a": b"xxEND",
        b"b": b"b",
    }


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"VALUE c 0 1\r\nc\r\nEND\r\n", ProtocolViolation),  # a key not asked for
        (b"VALUE a 0 2\r\n1\r\nEND\r\n", ProtocolViolation),  # shorter than its header says
        (b"VALUE a 0 -2\r\n\r\nEND\r\n", ProtocolViolation),
        (b"VALUE a 0 x\r\n1\r\nEND\r\n", ProtocolViolation),
        (b"VALUE a 0\r\n1\r\nEND\r\n", ProtocolViolation),
        (b"VALUE a 0 1\r\n1\r\nEND\r\nVALUE b 0 1\r\nb\r\nEND\r\n", ProtocolViolation),  # after END
        (b"SERVER_ERROR out of memory\r\n", BackendProtocolError),
        (b"CLIENT_ERROR bad command line format\r\n", BackendProtocolError),
        (b"ERROR\r\n", BackendProtocolError),
        (b"STORED\r\n", ProtocolViolation),
        (b"VALUE a 0 1\r\n1", Closed),  # closed mid-reply
    ],
)
def test_replies_that_do_not_answer_the_request_raise(reply: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        _get_many_sync(FakeClient(reply), KEYS)


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.aborted = False

    def write(self, data: Any) -> None:
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True


async def fetch_async(*chunks: bytes) -> Any:
    """Feed a reply to an async connection in the given chunks; return the request's outcome."""
    conn = _Connection(asyncio.get_running_loop(), "test:11211")
    conn.connection_made(Transport())
    wanted = frozenset({b"a", b"b"})
    future = conn.request(b"get a b\r\n", Fetch(wanted, "test:11211"), timeout=5)
    for chunk in chunks:
        if not future.done():
            conn.data_received(chunk)
    conn.abort()
    return future.result()


async def test_async_replies_whole_or_in_pieces() -> None:
    whole = b"VALUE a 0 1\r\n1\r\nVALUE b 7 2\r\n22\r\nEND\r\n"
    assert await fetch_async(whole) == {b"a": b"1", b"b": b"22"}
    assert await fetch_async(whole[:20], whole[20:]) == {b"a": b"1", b"b": b"22"}
    tricky = b"VALUE a 0 5\r\nxxEND\r\n"
    rest = b"VALUE b 0 4\r\n\r\n\r\n\r\nEND\r\n"
    assert await fetch_async(tricky, rest) == {b"a": b"xxEND", b"b": b"\r\n\r\n"}


@pytest.mark.parametrize(
    "reply",
    [
        b"VALUE c 0 1\r\nc\r\nEND\r\n",
        b"VALUE a 0 2\r\n1\r\nEND\r\n",
        b"VALUE a 0 1\r\n1\r\nEND\r\nVALUE b 0 1\r\nb\r\nEND\r\n",
        b"SERVER_ERROR out of memory\r\nEND\r\n",
    ],
)
async def test_async_replies_that_do_not_answer_the_request_raise(reply: bytes) -> None:
    with pytest.raises(BackendError):
        await fetch_async(reply)
