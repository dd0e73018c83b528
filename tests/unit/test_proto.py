"""The memcached protocol without sockets: scripted byte streams in, replies out, requests encoded.

Every reply memo reads is fed whole, split at every byte boundary, and one
byte at a time; each must give exactly the same result. Replies that do not
answer the request (garbage, keys not asked for, bytes after the end, error
lines) must raise, never yield a value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from socket_doubles import Replies

from memo._codec import NATIVE_LEASE, Won
from memo._errors import BackendProtocolError, BackendUnavailable
from memo._memcached import _ops as ops
from memo._memcached import _proto as p
from memo._memcached._leasing import cas_many_request, lease_many_request
from memo._memcached._wire import key_bytes, keys_bytes

SID = "test:11211"


def collect(plan: Any, *chunks: bytes) -> Any:
    """Feed `chunks` one by one; the reply must complete with the last one, not before."""
    reader = p.Reader()
    result: Any = p.NEED_DATA
    for i, chunk in enumerate(chunks):
        assert result is p.NEED_DATA, f"complete before chunk {i}"
        reader.feed(chunk)
        result = plan.collect(reader)
    assert result is not p.NEED_DATA, "incomplete after the last chunk"
    return result


def every_split(reply: bytes) -> list[list[bytes]]:
    """The reply whole, cut once at every boundary, cut twice at some, and one byte at a time."""
    cuts = [[reply]]
    cuts += [[reply[:i], reply[i:]] for i in range(1, len(reply))]
    cuts += [[reply[:i], reply[i : i + 3], reply[i + 3 :]] for i in range(1, len(reply) - 3, 2)]
    cuts.append([reply[i : i + 1] for i in range(len(reply))])
    return cuts


# (request builder, reply bytes, expected result), for both protocols
CASES: list[tuple[str, Callable[[], ops.Request], bytes, Any]] = [
    ("get hit", lambda: ops.get_one(b"k", SID, False), b"VALUE k 0 3\r\nabc\r\nEND\r\n", b"abc"),
    ("get miss", lambda: ops.get_one(b"k", SID, False), b"END\r\n", None),
    (
        "get CRLF in value",
        lambda: ops.get_one(b"k", SID, False),
        b"VALUE k 5 4\r\n\r\nEN\r\nEND\r\n",
        b"\r\nEN",
    ),
    (
        "multi-get",
        lambda: ops.get_many([b"a", b"b", b"c"], SID, False),
        b"VALUE a 0 1\r\n1\r\nVALUE c 7 2\r\n22\r\nEND\r\n",
        {b"a": b"1", b"c": b"22"},
    ),
    ("gets", lambda: ops.gets(b"k", SID, False), b"VALUE k 0 2\r\nhi\r\nEND\r\n", "bad"),
    ("gets cas", lambda: ops.gets(b"k", SID, False), b"VALUE k 0 2 99\r\nhi\r\nEND\r\n", (b"hi", 99)),
    ("gets miss", lambda: ops.gets(b"k", SID, False), b"END\r\n", None),
    ("set", lambda: ops.store(b"set", b"k", b"v", 0, SID, False), b"STORED\r\n", True),
    ("add refused", lambda: ops.store(b"add", b"k", b"v", 5, SID, False), b"NOT_STORED\r\n", False),
    (
        "set too large",
        lambda: ops.store(b"set", b"k", b"v", 5, SID, False),
        b"SERVER_ERROR too large\r\n",
        False,
    ),
    ("cas", lambda: ops.cas(b"k", b"v", 5, 7, SID, False), b"STORED\r\n", True),
    ("cas exists", lambda: ops.cas(b"k", b"v", 5, 7, SID, False), b"EXISTS\r\n", False),
    ("cas gone", lambda: ops.cas(b"k", b"v", 5, 7, SID, False), b"NOT_FOUND\r\n", False),
    ("delete", lambda: ops.delete(b"k", SID, False), b"DELETED\r\n", True),
    ("delete miss", lambda: ops.delete(b"k", SID, False), b"NOT_FOUND\r\n", False),
    ("touch", lambda: ops.touch(b"k", 9, SID, False), b"TOUCHED\r\n", True),
    ("touch miss", lambda: ops.touch(b"k", 9, SID, False), b"NOT_FOUND\r\n", False),
    (
        "lease won",
        lambda: ops.lease(b"k", b"m", 5, SID, False),
        b"STORED\r\nVALUE k 0 1 12\r\nm\r\nEND\r\n",
        (True, (b"m", 12)),
    ),
    ("lease lost", lambda: ops.lease(b"k", b"m", 5, SID, False), b"NOT_STORED\r\nEND\r\n", (False, None)),
    (
        "set_many",
        lambda: ops.set_many([("a", b"a", b"1", 0), ("b", b"b", b"2", 0), ("c", b"c", b"3", 0)], SID, False),
        b"STORED\r\nSERVER_ERROR object too large for cache\r\nNOT_STORED\r\n",
        ["b", "c"],
    ),
    ("delete_many", lambda: ops.delete_many([b"a", b"b"], SID, False), b"DELETED\r\nNOT_FOUND\r\n", None),
    (
        "add_or_append",
        lambda: ops.add_or_append(b"k", b"v", 0, SID, False),
        b"NOT_STORED\r\nSTORED\r\n",
        True,
    ),
    (
        "stats",
        lambda: ops.stats(SID, False),
        b"STAT pid 12\r\nSTAT version 1.6.18\r\nEND\r\n",
        {"pid": "12", "version": "1.6.18"},
    ),
    # meta
    ("mg hit", lambda: ops.get_one(b"k", SID, True), b"VA 3\r\nabc\r\n", b"abc"),
    ("mg miss", lambda: ops.get_one(b"k", SID, True), b"EN\r\n", None),
    ("mg gets", lambda: ops.gets(b"k", SID, True), b"VA 2 c99\r\nhi\r\n", (b"hi", 99)),
    ("mg gets miss", lambda: ops.gets(b"k", SID, True), b"EN\r\n", None),
    ("ms", lambda: ops.store(b"set", b"k", b"v", 0, SID, True), b"HD\r\n", True),
    ("ms add refused", lambda: ops.store(b"add", b"k", b"v", 0, SID, True), b"NS\r\n", False),
    ("ms cas exists", lambda: ops.cas(b"k", b"v", 5, 7, SID, True), b"EX\r\n", False),
    ("ms cas gone", lambda: ops.cas(b"k", b"v", 5, 7, SID, True), b"NF\r\n", False),
    ("md", lambda: ops.delete(b"k", SID, True), b"HD\r\n", True),
    ("md miss", lambda: ops.delete(b"k", SID, True), b"NF\r\n", False),
    ("mg touch", lambda: ops.touch(b"k", 9, SID, True), b"HD\r\n", True),
    ("mg touch miss", lambda: ops.touch(b"k", 9, SID, True), b"EN\r\n", False),
    (
        "meta lease won",
        lambda: ops.lease(b"k", b"m", 5, SID, True),
        b"HD\r\nVA 1 c12\r\nm\r\n",
        (True, (b"m", 12)),
    ),
    ("meta lease lost", lambda: ops.lease(b"k", b"m", 5, SID, True), b"NS\r\nEN\r\n", (False, None)),
    (
        "meta set_many",
        lambda: ops.set_many([("a", b"a", b"1", 0), ("b", b"b", b"2", 0)], SID, True),
        b"HD\r\nSERVER_ERROR object too large for cache\r\n",
        ["b"],
    ),
    ("meta add_or_append", lambda: ops.add_or_append(b"k", b"v", 0, SID, True), b"NS\r\nHD\r\n", True),
    ("meta delete_many", lambda: ops.delete_many([b"a", b"b"], SID, True), b"HD\r\nNF\r\n", None),
    # leased reads of several keys: a hit, the lease won, another's lease, a value with CRLF
    (
        "meta get_or_lease_many",
        lambda: ops.get_or_lease_many([b"a", b"b", b"c", b"d"], 5, SID, True),
        b"VA 2 c7\r\nhi\r\nVA 0 c8 W\r\n\r\nVA 0 c9 Z\r\n\r\nVA 4 c3\r\n\r\nx\r\r\n",
        [b"hi", Won(8), NATIVE_LEASE, b"\r\nx\r"],
    ),
    (
        "classic get_or_lease_many",
        lambda: ops.get_or_lease_many([b"a", b"b", b"c", b"d"], 5, SID, False),
        b"STORED\r\nNOT_STORED\r\nNOT_STORED\r\nSTORED\r\n"
        b"VALUE a 0 %d 11\r\n%b\r\nVALUE b 0 2 12\r\nhi\r\nVALUE c 0 %d 13\r\n%b\r\nEND\r\n"
        % (len(NATIVE_LEASE), NATIVE_LEASE, len(NATIVE_LEASE), NATIVE_LEASE),
        [Won(11), b"hi", NATIVE_LEASE, None],  # d went between add and gets
    ),
    (
        "get_or_lease_many without a lease",
        lambda: ops.get_or_lease_many([b"a", b"b"], 0, SID, True),
        b"VALUE b 0 1\r\nv\r\nEND\r\n",
        [None, b"v"],
    ),
    (
        "meta lease_many",
        lambda: lease_many_request([("a", b"a", b"m", 5), ("b", b"b", b"m", 5)], SID, True),
        b"HD\r\nNS\r\nVA 1 c5\r\nm\r\nVA 0 c6 Z\r\n\r\n",
        {"a": (True, (b"m", 5)), "b": (False, (NATIVE_LEASE, 6))},
    ),
    (
        "classic lease_many",
        lambda: lease_many_request([("a", b"a", b"m", 5), ("b", b"b", b"m", 5)], SID, False),
        b"STORED\r\nNOT_STORED\r\nVALUE a 0 1 5\r\nm\r\nVALUE b 0 1 6\r\nv\r\nEND\r\n",
        {"a": (True, (b"m", 5)), "b": (False, (b"v", 6))},
    ),
    (
        "cas_many",
        lambda: cas_many_request([("a", b"a", b"1", 0, 5), ("b", b"b", b"2", 0, 6)], SID, False),
        b"STORED\r\nEXISTS\r\n",
        ["b"],
    ),
]


@pytest.mark.parametrize(("name", "build", "reply", "expected"), CASES, ids=[c[0] for c in CASES])
def test_every_reply_split_at_every_byte(
    name: str, build: Callable[[], ops.Request], reply: bytes, expected: Any
) -> None:
    for chunks in every_split(reply):
        request = build()
        if expected == "bad":
            with pytest.raises(p.ProtocolViolation):
                collect(request.plan, *chunks)
            continue
        assert request.finish(collect(request.plan, *chunks), SID) == expected, chunks


def test_a_value_of_a_megabyte_in_many_reads() -> None:
    value = bytes(range(256)) * 4096
    reply = b"VALUE k 0 %d\r\n%b\r\nEND\r\n" % (len(value), value)
    chunks = [reply[i : i + 65536] for i in range(0, len(reply), 65536)]
    request = ops.get_one(b"k", SID, False)
    assert request.finish(collect(request.plan, *chunks), SID) == value
    meta = b"VA %d\r\n%b\r\n" % (len(value), value)
    request = ops.get_one(b"k", SID, True)
    assert request.finish(
        collect(request.plan, *[meta[i : i + 9999] for i in range(0, len(meta), 9999)]), SID
    ) == (value)


def test_reader_events() -> None:
    reader = p.Reader()
    reader.feed(b"VALUE k 3 2 7\r\nhi\r\nEND\r\nSTORED\r\nVA 1 c5 t-1 W\r\nx\r\nHD k\x01\r\n")
    reader.feed(b"SERVER_ERROR out of memory\r\nCLIENT_ERROR bad data chunk\r\nERROR\r\n42\r\nMN\r\n")
    events = []
    while (event := reader.next_event()) is not p.NEED_DATA:
        events.append(event)
    assert events == [
        p.Value(b"k", 3, b"hi", 7),
        p.END,
        p.Status(b"STORED"),
        p.Meta(b"VA", {b"c": b"5", b"t": b"-1", b"W": b""}, b"x"),
        p.Meta(b"HD", {b"k": b"\x01"}, None),
        p.ErrorReply(b"SERVER_ERROR", b"out of memory"),
        p.ErrorReply(b"CLIENT_ERROR", b"bad data chunk"),
        p.ErrorReply(b"ERROR", b""),
        p.Status(b"42"),
        p.Meta(b"MN", {}, None),
    ]
    assert reader.pending == 0
    assert events[5].in_step and not events[6].in_step and not events[7].in_step


GARBAGE = [
    b"VALUE c 0 1\r\nc\r\nEND\r\n",  # a key not asked for
    b"VALUE a 0 2\r\n1\r\nEND\r\n",  # shorter than its header says
    b"VALUE a 0 -2\r\n\r\nEND\r\n",
    b"VALUE a 0 x\r\n1\r\nEND\r\n",
    b"VALUE a 0\r\n1\r\nEND\r\n",
    b"VALUE a 0 1\r\n1\r\nEND\r\nVALUE b 0 1\r\nb\r\nEND\r\n",  # bytes after END
    b"VALUE a 0 1 5\r\n1\r\nVALUE b 0\r\nb\r\nEND\r\n",  # five fields, then three: eight in all
    b"VALUE a 0 1\r\n1\r\nVALUE a\r\nEND\r\n",
    b"STORED\r\n",
    b"HD\r\n",
    b"\xff\xfe\r\n",
    b"\r\n",
    b"x" * 9000,  # a line that never ends
]


@pytest.mark.parametrize("reply", GARBAGE)
def test_garbage_is_out_of_step(reply: bytes) -> None:
    for chunks in ([reply], [reply[:5], reply[5:]]):
        with pytest.raises(p.ProtocolViolation):
            collect(ops.get_many([b"a", b"b"], SID, False).plan, *chunks)


@pytest.mark.parametrize(
    "reply",
    [
        b"VA 1 kz\r\nz\r\nMN\r\n",
        b"VA 1\r\nz\r\nMN\r\n",
        b"EN\r\nMN\r\n",
        b"MN\r\nHD\r\n",
        b"END\r\n",
        b"VA x\r\n",
    ],
)
def test_meta_garbage_is_out_of_step(reply: bytes) -> None:
    with pytest.raises(p.ProtocolViolation):
        collect(ops.get_one(b"a", SID, True).plan, reply)


ERRORS = [b"ERROR\r\n", b"CLIENT_ERROR bad command line format\r\n", b"SERVER_ERROR out of memory\r\n"]


@pytest.mark.parametrize("reply", ERRORS)
@pytest.mark.parametrize("meta", [False, True])
def test_error_replies(reply: bytes, meta: bool) -> None:
    # A read has no way to report an error: it raises, naming the server and the reply.
    for build in (
        lambda: ops.get_many([b"a"], SID, meta),
        lambda: ops.get_one(b"a", SID, meta),
        lambda: ops.gets(b"a", SID, meta),
        lambda: ops.lease(b"a", b"m", 1, SID, meta),
    ):
        with pytest.raises(BackendProtocolError, match=f"{SID}.*{reply.split()[0].decode()}"):
            request = build()
            request.finish(collect(request.plan, reply), SID)
    # A store reports "not stored"; the connection is reusable after SERVER_ERROR only.
    request = ops.store(b"set", b"a", b"v", 0, SID, meta)
    if meta:
        request = ops.set_many([("a", b"a", b"v", 0)], SID, meta)
        assert request.finish(collect(request.plan, reply), SID) == ["a"]
    else:
        assert request.finish(collect(request.plan, reply), SID) is False
    assert request.plan.in_step is reply.startswith(b"SERVER_ERROR")
    # A delete or touch must say whether the key was there: an error reply raises.
    for build in (lambda: ops.delete(b"a", SID, meta), lambda: ops.touch(b"a", 1, SID, meta)):
        with pytest.raises(BackendProtocolError):
            request = build()
            request.finish(collect(request.plan, reply), SID)


def test_more_replies_than_requests() -> None:
    with pytest.raises(p.ProtocolViolation):
        collect(ops.store(b"set", b"k", b"v", 0, SID, False).plan, b"STORED\r\nSTORED\r\n")
    with pytest.raises(p.ProtocolViolation):
        collect(ops.store(b"set", b"k", b"v", 0, SID, True).plan, b"HD\r\nHD\r\n")


def test_leased_reads_tell_the_lease_won_from_a_value() -> None:
    request = ops.get_or_lease_many([b"a", b"b"], 5, SID, True)
    got = request.finish(collect(request.plan, b"VA 0 c8 W\r\n\r\nVA 0 c9 Z\r\n\r\n"), SID)
    assert type(got[0]) is Won and got[0].unique == 8 and type(got[1]) is bytes
    # The flags come back in the order asked (`c` first); in another order the cas is still found.
    assert ops.leased_value(b"", [b"W", b"c12"]).unique == 12  # type: ignore[attr-defined]
    request = ops.get_or_lease_many([b"a"], 5, SID, False)
    reply = b"STORED\r\nVALUE a 0 %d 11\r\n%b\r\nEND\r\n" % (len(NATIVE_LEASE), NATIVE_LEASE)
    got = request.finish(collect(request.plan, reply), SID)
    assert type(got[0]) is Won and got[0].unique == 11
    # The add stored nothing, yet a placeholder is there: another caller's lease, not this one's.
    reply = b"NOT_STORED\r\nVALUE a 0 %d 11\r\n%b\r\nEND\r\n" % (len(NATIVE_LEASE), NATIVE_LEASE)
    got = ops.get_or_lease_many([b"a"], 5, SID, False).finish(
        collect(ops.get_or_lease_many([b"a"], 5, SID, False).plan, reply), SID
    )
    assert type(got[0]) is bytes and got[0] == NATIVE_LEASE


@pytest.mark.parametrize(
    "reply",
    [b"VA 1 c2\r\nz\r\nEN\r\n", b"VA 1 c2\r\nz\r\nHD\r\n", b"VA 1 c2\r\nz\r\nMN\r\n", b"VA x\r\n"],
)
def test_leased_reads_that_do_not_answer_are_out_of_step(reply: bytes) -> None:
    for chunks in ([reply], [reply[:4], reply[4:]]):
        with pytest.raises(p.ProtocolViolation):
            collect(ops.get_or_lease_many([b"a", b"b"], 5, SID, True).plan, *chunks)


def test_whole_replies_are_cut_in_one_pass_only_when_plainly_whole() -> None:
    assert p.whole_get(b"VALUE a 0 1\r\n1\r\nVALUE b 3 2\r\n22\r\nEND\r\n", {b"a", b"b"}) == {
        b"a": b"1",
        b"b": b"22",
    }
    assert p.whole_get(b"END\r\n", {b"a"}) == {}
    for doubtful in (
        b"VALUE a 0 1\r\n1\r\nVALUE b 0 2\r\n\r\n\r\nEND\r\n",  # CRLF in a value
        b"VALUE a 0 1 5\r\n1\r\nEND\r\n",  # with a cas
        b"VALUE a 0 1\r\n1\r\n",  # not yet whole
        b"VALUE a 0 1\r\n1\r\nVALUE a 0 1 5\r\n1\r\nVALUE a 0\r\n1\r\nEND\r\n",  # 4+5+3 fields
        b"VALUE c 0 1\r\n1\r\nEND\r\n",
        b"",
    ):
        assert p.whole_get(doubtful, {b"a", b"b"}) is None, doubtful
    answers = ops._whole_answers(b"VA 1 c1\r\n1\r\nVA 0 c2 W\r\n\r\n", 2)
    assert answers == [b"1", NATIVE_LEASE] and type(answers[1]) is Won  # type: ignore[index]
    for doubtful in (
        b"VA 1 c1\r\n1\r\n",
        b"VA 2 c1\r\n1\r\n\r\nVA 0 c3\r\n\r\n",  # CRLF in a value
        b"VA 1 c1\r\n1\r\nVA 0\r\n\r\n",  # no cas
        b"EN\r\nEN\r\n",
        b"VA x c1\r\n\r\nVA 0 c2\r\n\r\n",
    ):
        assert ops._whole_answers(doubtful, 2) is None, doubtful
    for lines, plain in ((b"STORED\r\nEXISTS\r\n", True), (b"STORED\r\nSERVER_ERROR x\r\n", False)):
        reader = p.Reader()
        reader.feed(lines)
        assert (p.whole_lines(reader, 2, p.STATUS_LINES) is not None) is plain
        assert reader.pending == (0 if plain else len(lines))


def test_keys_are_checked_all_at_once_as_one_by_one() -> None:
    keys = [f"p:{i}:" + "x" * i for i in range(1, 240)]
    assert keys_bytes(keys) == [key_bytes(key) for key in keys]
    assert keys_bytes([]) == []
    for bad in ("a b", "", "k" * 251, "a\x01", "caf\u00e9", "a\x7f", "a\r\nb", "a\tb"):
        with pytest.raises(ValueError, match="invalid memcached key"):
            keys_bytes(["good", bad, "good2"])
    # Not a str at all: the error `key_bytes` gives for it.
    with pytest.raises(AttributeError):
        keys_bytes(["good", b"bytes"])  # type: ignore[list-item]


def test_lean_hit_paths() -> None:
    assert p.lean_value(b"VALUE k 0 2\r\nhi\r\nEND\r\n", b"k") == b"hi"
    assert p.lean_value(b"END\r\n", b"k") is None
    for doubtful in (
        b"VALUE k 0 2\r\nhi\r\nEN",
        b"VALUE j 0 2\r\nhi\r\nEND\r\n",
        b"VALUE k 0 2 5\r\nhi\r\nEND\r\n",
    ):
        assert p.lean_value(doubtful, b"k") is p.NEED_DATA
    assert p.lean_meta_value(b"VA 2\r\nhi\r\n") == b"hi"
    assert p.lean_meta_value(b"EN\r\n") is None
    for doubtful in (b"VA 2\r\nh", b"VA 2 f0\r\nhi\r\n", b"HD\r\n", b"SERVER_ERROR x\r\n"):
        assert p.lean_meta_value(doubtful) is p.NEED_DATA


def test_requests_on_the_wire() -> None:
    assert ops.get_many([b"a", b"b"], SID, False).data == b"get a b\r\n"
    assert ops.get_many([b"a", b"b"], SID, True).data == b"get a b\r\n"  # batches stay classic
    assert ops.store(b"set", b"k", b"vv", 30, SID, False).data == b"set k 0 30 2\r\nvv\r\n"
    assert ops.store(b"add", b"k", b"vv", 30, SID, True).data == b"ms k 2 F0 T30 ME\r\nvv\r\n"
    assert ops.store(b"set", b"k", b"vv", 0, SID, True).data == b"ms k 2 F0\r\nvv\r\n"
    assert ops.cas(b"k", b"v", 3, 77, SID, False).data == b"cas k 0 3 1 77\r\nv\r\n"
    assert ops.cas(b"k", b"v", 3, 77, SID, True).data == b"ms k 1 F0 T3 C77\r\nv\r\n"
    assert ops.delete(b"k", SID, False).data == b"delete k\r\n"
    assert ops.delete(b"k", SID, True).data == b"md k\r\n"
    assert ops.touch(b"k", 4, SID, False).data == b"touch k 4\r\n"
    assert ops.touch(b"k", 4, SID, True).data == b"mg k T4\r\n"
    assert ops.gets(b"k", SID, True).data == b"mg k v c\r\n"
    assert ops.lease(b"k", b"m", 5, SID, False).data == b"add k 0 5 1\r\nm\r\ngets k\r\n"
    assert ops.lease(b"k", b"m", 5, SID, True).data == b"ms k 1 F0 T5 ME\r\nm\r\nmg k v c\r\n"
    assert ops.add_or_append(b"k", b"v", 5, SID, False).data == b"add k 0 5 1\r\nv\r\nappend k 0 0 1\r\nv\r\n"
    assert ops.delete_many([b"a", b"b"], SID, False).data == b"delete a\r\ndelete b\r\n"
    assert ops.stats(SID, False).data == b"stats\r\n"
    assert p.MN == b"mn\r\n"


# -- the sync hit path's lean readers (memo/_memcached/_sync.py): a reply whole in one read is
# cut in place; anything else is read by the reply plans above, with the same result.

VALUE = b'm\x02\x05\x00\x00\x01\xa2R\xd6\xf0\xc5{"id":42}\n'


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (b"VA 2\r\nhi\r\n", b"hi"),
        (b"VA 2 c77\r\nhi\r\n", b"hi"),
        (b"VA %d c1234567890123\r\n%b\r\n" % (len(VALUE), VALUE), VALUE),
        (b"VA 0 c5\r\n\r\n", b""),  # an empty item, not flagged as anyone's lease
        (b"VA 6 c1\r\n\r\nVA 1\r\n", b"\r\nVA 1"),  # cut by its length, not at CRLF
        (b"VA 02\r\nhi\r\n", b"hi"),
    ],
)
def test_lean_meta_hit_cuts_a_plain_hit(reply: bytes, expected: bytes) -> None:
    assert p.lean_meta_hit(reply) == expected
    for i in range(len(reply)):  # every shorter read is a reply still arriving
        assert p.lean_meta_hit(reply[:i]) is p.NEED_DATA


@pytest.mark.parametrize(
    "reply",
    [
        b"VA 0 c5 W\r\n\r\n",  # the lease granted: not a value
        b"VA 0 c5 Z\r\n\r\n",  # another's lease
        b"VA 2 c5 X W\r\nhi\r\n",  # stale
        b"VA 2 c5 Z X\r\nhi\r\n",
        b"VA 2 W c5\r\nhi\r\n",
        b"VA 2 t30\r\nhi\r\n",
        b"VA 2 c\r\nhi\r\n",
        b"VA 2 c12x\r\nhi\r\n",
        b"VA 2 C12\r\nhi\r\n",
        b"VA 2 c1 \r\nhi\r\n",
        b"VA 2  c1\r\nhi\r\n",
        b"VA -2\r\nhi\r\n",
        b"VA +2\r\nhi\r\n",
        b"VA x\r\nhi\r\n",
        b"VA \r\n\r\n",
        b"VA 2\r\nhi\r\r",  # no CRLF after the data
        b"VA 2\r\nhix\r\n",  # longer than its header says
        b"VA 2\r\nh\r\n",
        b"VA 2\r\nhi\r\nVA 2\r\nhi\r\n",  # more than one reply
        b"VA 2\r\nhi\r\nEN\r\n",
        b"EN\r\n",
        b"HD\r\n",
        b"NF\r\n",
        b"VALUE k 0 2\r\nhi\r\nEND\r\n",
        b"SERVER_ERROR out of memory\r\n",
        b"CLIENT_ERROR bad command line format\r\n",
        b"ERROR\r\n",
        b"",
    ],
)
def test_lean_meta_hit_leaves_everything_else_to_the_reader(reply: bytes) -> None:
    assert p.lean_meta_hit(reply) is p.NEED_DATA


def sync_get(chunks: list[bytes], lease_ttl: float = 0.0, meta: bool = True) -> tuple[Any, bytes]:
    from memo._memcached._sync import SyncConnection

    sock = Replies(*chunks)
    conn = SyncConnection(sock, meta=meta)
    got = conn.get(b"k", SID, lease_ttl)
    assert conn.reader.pending == 0 and not sock.chunks
    return got, sock.sent


# (reply, what a leased read returns, what a plain `mg k v` returns)
META_READS: list[tuple[bytes, Any, Any]] = [
    (b"VA 2 c7\r\nhi\r\n", b"hi", "n/a"),
    (b"VA 2\r\nhi\r\n", "n/a", b"hi"),
    (b"VA 0 c7 W\r\n\r\n", ("won", 7), "n/a"),
    (b"VA 0 c7 Z\r\n\r\n", "lease", "n/a"),
    (b"VA 2 c7 X W\r\nhi\r\n", ("won", 7), "n/a"),  # stale: this caller refreshes it
    (b"VA 2 c7 Z X\r\nhi\r\n", b"hi", "n/a"),  # stale, another is refreshing: its value
    (b"VA 0 c7\r\n\r\n", b"", "n/a"),
    (b"EN\r\n", "n/a", None),
    (b"VA %d c9\r\n%b\r\n" % (len(VALUE), VALUE), VALUE, "n/a"),
]


def _meaning(got: Any) -> Any:
    from memo._codec import NATIVE_LEASE, Won

    if type(got) is Won:
        return ("won", got.unique)
    return "lease" if got == NATIVE_LEASE else got


@pytest.mark.parametrize(("reply", "leased", "plain"), META_READS)
def test_sync_meta_get_reads_every_split_alike(reply: bytes, leased: Any, plain: Any) -> None:
    for lease_ttl, expected in ((10.0, leased), (0.0, plain)):
        if expected == "n/a":
            continue
        for chunks in every_split(reply):
            got, sent = sync_get(chunks, lease_ttl)
            assert _meaning(got) == expected, chunks
            assert sent == (b"mg k v c N10\r\n" if lease_ttl else b"mg k v\r\n")


def test_sync_meta_get_of_a_megabyte_in_many_reads() -> None:
    value = bytes(range(256)) * 4096
    reply = b"VA %d c3\r\n%b\r\n" % (len(value), value)
    assert sync_get([reply[i : i + 65536] for i in range(0, len(reply), 65536)], 10.0)[0] == value
    assert sync_get([reply], 10.0)[0] == value


def test_sync_classic_get_reads_every_split_alike() -> None:
    for chunks in every_split(b"VALUE k 0 2\r\nhi\r\nEND\r\n"):
        assert sync_get(chunks, 0.0, meta=False) == (b"hi", b"get k\r\n")
    assert sync_get([b"END\r\n"], 0.0, meta=False) == (None, b"get k\r\n")


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"EN\r\n", p.ProtocolViolation),  # `mg … N` never misses: out of step
        (b"HD\r\n", p.ProtocolViolation),
        (b"VA 2 c1\r\nhi\r\nVA 2 c1\r\nhi\r\n", p.ProtocolViolation),
        (b"VA 0 c1 W\r\n\r\nEN\r\n", p.ProtocolViolation),
        (b"VA 0 cx W\r\n\r\n", p.ProtocolViolation),
        (b"SERVER_ERROR out of memory\r\n", BackendProtocolError),
        (b"CLIENT_ERROR bad command line format\r\n", BackendProtocolError),
        (b"ERROR\r\n", BackendProtocolError),
        (b"VA 2 c1\r\nh", "closed"),  # closed mid-reply
        (b"", "closed"),
    ],
)
def test_sync_leased_read_refuses_what_does_not_answer_it(reply: bytes, error: Any) -> None:
    from memo._memcached._sync import Closed

    with pytest.raises(Closed if error == "closed" else error):
        sync_get([reply], 10.0)


def test_lease_flags_round_up_to_whole_seconds() -> None:
    assert ops.lease_flags(10.0) == b" v c N10\r\n"
    assert ops.lease_flags(0.2) == b" v c N1\r\n"
    assert ops.lease_flags(2.5) == b" v c N3\r\n"
    assert ops.get_or_lease(b"k", 2.5, SID, True).data == b"mg k v c N3\r\n"


@pytest.mark.parametrize(
    ("build", "reply", "expected"),
    [
        (lambda: ops.cas(b"k", b"v", 5, 7, SID, True), b"HD\r\n", True),
        (lambda: ops.cas(b"k", b"v", 5, 7, SID, True), b"EX\r\n", False),
        (lambda: ops.cas(b"k", b"v", 5, 7, SID, True), b"NF\r\n", False),
        (lambda: ops.cas(b"k", b"v", 5, 7, SID, True), b"NS\r\n", False),
        (lambda: ops.cas(b"k", b"v", 5, 7, SID, True), b"SERVER_ERROR object too large for cache\r\n", None),
        (lambda: ops.cas(b"k", b"v", 5, 7, SID, False), b"STORED\r\n", True),
        (lambda: ops.cas(b"k", b"v", 5, 7, SID, False), b"EXISTS\r\n", False),
        (lambda: ops.delete(b"k", SID, True), b"NF\r\n", False),
        (lambda: ops.touch(b"k", 3, SID, True), b"EN\r\n", False),
        (lambda: ops.store(b"set", b"k", b"v", 0, SID, False), b"NOT_STORED\r\n", False),
    ],
)
def test_sync_run_reads_one_line_replies_whole_or_split(
    build: Callable[[], ops.Request], reply: bytes, expected: Any
) -> None:
    from memo._memcached._sync import SyncConnection

    for chunks in every_split(reply):
        request = build()
        conn = SyncConnection(Replies(*chunks))
        assert request.finish(conn.run(request.data, request.plan), SID) == expected, chunks
        assert conn.reader.pending == 0


@pytest.mark.parametrize(
    ("plan", "reply"),
    [
        (lambda: p.MetaLines(1, SID), b"HD\r\nHD\r\n"),
        (lambda: p.MetaLines(1, SID), b"HD\r\nEN"),
        (lambda: p.Lines(1), b"STORED\r\nSTORED\r\n"),
        (lambda: p.Stats(SID), b"STAT pid 1\r\nEND\r\nEND\r\n"),
    ],
)
def test_sync_run_refuses_bytes_after_the_reply(plan: Callable[[], Any], reply: bytes) -> None:
    from memo._memcached._sync import SyncConnection

    with pytest.raises(p.ProtocolViolation):
        SyncConnection(Replies(reply)).run(b"x\r\n", plan())


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (b"HD\r\n", True),
        (b"EX\r\n", False),  # changed since the read: another writer (an invalidate) won
        (b"NF\r\n", False),
        (b"NS\r\n", False),
        (b"SERVER_ERROR object too large for cache\r\n", None),  # refused: the connection stays in step
    ],
)
def test_sync_meta_cas_reads_its_replies_whole_or_split(reply: bytes, expected: Any) -> None:
    from memo._memcached._sync import SyncConnection

    for chunks in every_split(reply):
        sock = Replies(*chunks)
        conn = SyncConnection(sock, meta=True)
        assert conn.meta_cas(b"k", b"v", 5, 7, SID) is expected, chunks
        assert sock.sent == b"ms k 1 F0 T5 C7\r\nv\r\n" and not sock.chunks
        assert conn.reader.pending == 0
    assert (
        ops.meta_cas(b"k", b"vv", 0, 7)
        == b"ms k 2 F0 C7\r\nvv\r\n"
        == ops.cas(b"k", b"vv", 0, 7, SID, True).data
    )


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"ERROR\r\n", BackendProtocolError),  # out of step: raised, and the connection is closed
        (b"CLIENT_ERROR bad data chunk\r\n", BackendProtocolError),
        (b"HD\r\nHD\r\n", p.ProtocolViolation),
        (b"MN\r\n", p.ProtocolViolation),
        (b"STORED\r\n", p.ProtocolViolation),
        (b"HD", "closed"),
        (b"", "closed"),
    ],
)
def test_sync_meta_cas_refuses_what_does_not_answer_it(reply: bytes, error: Any) -> None:
    from memo._memcached._sync import Closed, SyncConnection

    with pytest.raises(Closed if error == "closed" else error):
        SyncConnection(Replies(reply), meta=True).meta_cas(b"k", b"v", 5, 7, SID)


def test_one_server_needs_no_routing() -> None:
    from memo._memcached._server import Server
    from memo._memcached._topology import Topology

    servers = [Server(f"10.0.0.{i}", 11211, 3, 1.0) for i in range(3)]
    assert Topology(servers[:1]).server_for(b"any") is servers[0]
    routed = Topology(servers)
    assert routed.server_for(b"k1") is servers[routed.index(b"k1")]
    assert {routed.server_for(b"k%d" % i).id for i in range(100)} == {s.id for s in servers}
    with pytest.raises(BackendUnavailable):
        Topology([]).server_for(b"k")


def test_lean_meta_won_reads_only_a_fresh_lease_whole() -> None:
    assert p.lean_meta_won(b"VA 0 c77 W\r\n\r\n") == 77
    assert p.lean_meta_won(b"VA 0 c1234567890123456 W\r\n\r\n") == 1234567890123456
    reply = b"VA 0 c77 W\r\n\r\n"
    for i in range(len(reply)):
        assert p.lean_meta_won(reply[:i]) is None
    for doubtful in (
        b"VA 0 c77 W\r\n\r\nHD\r\n",
        b"VA 0 c77 Z\r\n\r\n",  # another's lease
        b"VA 2 c77 X W\r\nhi\r\n",  # stale: the general read gives the win
        b"VA 1 c77 W\r\nx\r\n",
        b"VA 0 c W\r\n\r\n",
        b"VA 0 W c77\r\n\r\n",
        b"VA 0 c77 W\r\nx\r\n",
        b"VA 0 c77\r\n\r\n",
        b"EN\r\n",
    ):
        assert p.lean_meta_won(doubtful) is None, doubtful


def test_every_reply_plan_says_what_it_collects_from_a_whole_one_line_reply() -> None:
    """The sync connection looks a plan's `short` up before it feeds its reader: a plan without
    one fails its first request, whichever command it belongs to."""
    import inspect

    from memo._memcached import _leasing, _ops, _proto

    plans = [
        cls
        for module in (_proto, _ops, _leasing)
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if cls.__module__ == module.__name__ and callable(getattr(cls, "collect", None))
    ]
    assert len(plans) >= 8
    missing = [cls.__qualname__ for cls in plans if not hasattr(cls, "short")]  # a slot counts
    assert missing == []


def test_no_short_reply_is_longer_than_the_bytes_looked_up() -> None:
    """Replies longer than SHORT_MAX are never looked up in a `short` table (a value's reply is
    not hashed whole): every reply such a table holds must fit."""
    from memo._memcached import _ops, _proto

    tables = [_proto._SHORT_LINES, _proto._SHORT_META, _ops.META_CAS_REPLIES]
    assert max(len(reply) for table in tables for reply in table) == p.SHORT_MAX
    reply = b"VA 10 \r\n0123456789\r\n"  # longer than SHORT_MAX: the reader's, never a table's
    reader = p.Reader()
    reader.feed(reply)
    assert reader.short({reply: ("looked up",)}) is None
