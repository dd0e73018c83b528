"""The backend's operations as requests: what to send, how to read the reply, what it means.

Each function returns a `Request`: the bytes to send, a fresh reply plan
(`_proto`) and `finish(reply, server_id)`, which turns the collected reply
into the operation's result. The sync and async drivers only run requests on
a connection, so each operation is written here once, for both flavours and
both protocols: `meta=True` for a server that speaks the meta protocol
(`mg`/`ms`/`md`), False for the classic text protocol. Results are the same
either way; that is the contract the tests hold both protocols to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, NamedTuple

from .._codec import NATIVE_LEASE, Won
from . import _proto as p
from ._wire import ServerError

__all__ = [
    "LeasedReads",
    "Request",
    "add_or_append",
    "cas",
    "delete",
    "delete_if",
    "delete_many",
    "get_many",
    "get_one",
    "get_or_lease",
    "get_or_lease_many",
    "LEASE_FLAGS",
    "lease_flags",
    "lease_seconds",
    "META_CAS_REPLIES",
    "meta_cas",
    "leased_value",
    "meta_lease",
    "meta_value",
    "one_meta",
    "set_one",
    "gets",
    "lease",
    "set_many",
    "stats",
    "store",
    "touch",
]


class Request(NamedTuple):
    data: bytes
    plan: Any  # a reply plan of `_proto`: `collect(reader)` and `short`
    finish: Callable[[Any, str], Any]


def _same(reply: Any, server_id: str) -> Any:
    return reply


def _stored_line(lines: list[bytes], server_id: str) -> bool:
    # NOT_STORED, EXISTS, NOT_FOUND and error lines (SERVER_ERROR "object too large") all mean "not stored".
    return lines[0] == b"STORED"


def _hd(replies: list[Any], server_id: str) -> bool:
    return type(replies[0]) is p.Meta and replies[0].code == b"HD"


def _ttl(exp: int) -> bytes:
    return b" T%d" % exp if exp else b""


def get_many(kbs: list[bytes], server_id: str, meta: bool) -> Request:
    """`{key: value}` of the hits among `kbs`, with one classic `get k1 k2 ...` on every server.

    A meta server gets the classic command too: the quiet `mg ... q` batch sends the
    same bytes for the hits and nothing more for the misses than `get`'s `END`, and
    its replies cost about three times as much to read here (100 keys: 928 µs
    against 284 µs, measured), where `get`'s reply is cut in one pass (`whole_get`).
    """
    return Request(p.get(kbs), p.Fetch(frozenset(kbs), server_id), _same)


def one_meta(server_id: str) -> p.MetaLines:
    return p.MetaLines(1, server_id)


def meta_value(replies: list[Any], server_id: str = "") -> bytes | None:
    """The value of an `mg <key> v` reply; None on a miss; `NATIVE_LEASE` for another's lease."""
    reply = replies[0]
    if reply.code == b"EN":
        return None
    if reply.code != b"VA" or reply.data is None:
        raise p.ProtocolViolation(repr(reply)[:120])
    return seen(reply.data, reply.flags)


def seen(data: bytes, flags: Any) -> bytes:
    """Stored bytes as a meta reply shows them: the empty placeholder of a lease another caller
    took with `mg … N` (flagged `Z`: its win token was sent) is `NATIVE_LEASE`. `flags`: the
    reply's return flags, by letter or as tokens."""
    return NATIVE_LEASE if not data and b"Z" in flags else data


def lease_seconds(lease_ttl: float) -> int:
    """memcached's whole seconds for a lease of `lease_ttl` (rounded up, at least 1)."""
    return max(1, -int(-lease_ttl // 1))


#: `lease_flags` by lease_ttl: a Cache has one or a few lease_ttls, each a hit path's constant
#: (read directly by the sync hit path).
LEASE_FLAGS: dict[float, bytes] = {}


def lease_flags(lease_ttl: float) -> bytes:
    """What follows the key in the `mg` of `get_or_lease`: its flags and the CRLF."""
    flags = LEASE_FLAGS.get(lease_ttl)
    if flags is None:
        if len(LEASE_FLAGS) >= 64:  # lease_ttls computed per call: keep the table small
            LEASE_FLAGS.clear()
        flags = LEASE_FLAGS[lease_ttl] = b" v c N%d\r\n" % lease_seconds(lease_ttl)
    return flags


def leased_value(data: bytes, flags: list[bytes]) -> bytes:
    """What an `mg <key> v c N<ttl>` reply means: the value; `Won` for the caller that took
    the lease (`W`); `NATIVE_LEASE` while another holds it (`Z`). `flags`: the return flags."""
    if len(flags) == 1:
        return data  # `c<cas>` alone: a plain hit
    if b"W" in flags:
        for flag in flags:
            if flag[:1] == b"c":  # the first cas flag
                if flag[1:].isdigit():
                    return Won(int(flag[1:]))
                break
        raise p.ProtocolViolation(b" ".join(flags).decode("ascii", "replace")[:120])
    return seen(data, flags)


def _leased(replies: list[Any], server_id: str) -> bytes:
    reply = replies[0]
    if reply.code != b"VA" or reply.data is None:
        raise p.ProtocolViolation(repr(reply)[:120])
    flags = [k + v for k, v in reply.flags.items()]
    return leased_value(reply.data, flags)


def get_or_lease(kb: bytes, lease_ttl: float, server_id: str, meta: bool) -> Request:
    """The value; or, on a meta server, the lease taken on a miss (see `leased_value`).

    A classic server answers a plain `get`: None on a miss, and the caller leases
    with `lease`.
    """
    if meta:
        return Request(b"mg " + kb + lease_flags(lease_ttl), p.MetaLines(1, server_id), _leased)
    return get_one(kb, server_id, False)


def get_or_lease_many(kbs: list[bytes], seconds: int, server_id: str, meta: bool) -> Request:
    """Several keys' values, taking the lease of each missing one, in one round trip: for each
    key in order, the value; Won (this caller took the lease); a lease marker (another caller
    holds it); or None.

    A meta server gets one `mg <key> v c N<seconds>` per key, pipelined. A classic server
    gets the `add` of `NATIVE_LEASE` under each key, then one `gets` of them all (the
    server's own placeholder, written by hand: the caller whose `add` stored it holds the
    lease, and it is released and stored over exactly like the server's); None: the key
    went between the two. `seconds` 0: no lease, one plain `get`, a miss None.
    """
    if not seconds:
        return Request(p.get(kbs), p.Fetch(frozenset(kbs), server_id), _found_each(kbs))
    if meta:
        data = b"".join([b"mg %b v c N%d\r\n" % (kb, seconds) for kb in kbs])
        return Request(data, LeasedAnswers(len(kbs), server_id), _same)
    adds = b"".join([p.store(b"add", kb, NATIVE_LEASE, seconds) for kb in kbs])
    data = adds + b"gets " + b" ".join(kbs) + b"\r\n"
    return Request(data, p.LinesThenFetch(len(kbs), kbs, server_id), _added_each(kbs))


class LeasedReads:
    """The request of one server's part of `get_or_lease_many`, noting whether it went out
    leasing (to a meta server, so a reply lost mid-way may hold granted leases)."""

    __slots__ = ("kbs", "seconds", "sent")

    def __init__(self, kbs: list[bytes], seconds: int) -> None:
        self.kbs, self.seconds, self.sent = kbs, seconds, False

    def request(self, server_id: str, meta: bool) -> Request:
        self.sent = bool(meta and self.seconds)
        return get_or_lease_many(self.kbs, self.seconds, server_id, meta)


class LeasedAnswers:
    """The replies to `count` pipelined `mg <key> v c N<ttl>` (which never miss): each key's
    answer, as `leased_value` reads it.

    The usual reply, whole in the first read, is cut and read in one pass (`whole_get`'s
    reasoning: every piece has the length its header gives, or nothing is taken); anything
    else goes event by event (`MetaLines`: an error reply raises `ServerError`, another
    code is out of step).
    """

    short = p.NO_SHORT

    __slots__ = ("count", "lines")

    def __init__(self, count: int, server_id: str) -> None:
        self.count = count
        self.lines = p.MetaLines(count, server_id)

    def collect(self, reader: p.Reader) -> Any:
        if not self.lines.replies:
            whole = reader.whole()
            if whole is not None:
                answers = _whole_answers(whole, self.count)
                if answers is not None:
                    reader.clear()
                    return answers
        replies = self.lines.collect(reader)
        if replies is p.NEED_DATA:
            return p.NEED_DATA
        return [_leased([reply], "") for reply in replies]


def _whole_answers(buf: bytes, count: int) -> list[bytes] | None:
    parts = buf.split(b"\r\n")
    if len(parts) != 2 * count + 1 or parts[-1]:
        return None
    answers: list[bytes] = []
    for header, data in zip(parts[0:-1:2], parts[1::2], strict=True):
        tokens = header.split(b" ")
        n = len(tokens)
        if n < 3 or tokens[0] != b"VA" or not tokens[1].isdigit() or len(data) != int(tokens[1]):
            return None
        if n == 3:  # `c<cas>` alone: a value
            answers.append(data)
        elif n == 4 and tokens[3] == b"W" and tokens[2][:1] == b"c" and tokens[2][1:].isdigit():
            answers.append(Won(int(tokens[2][1:])))  # the usual miss: this caller took the lease
        else:
            answers.append(leased_value(data, tokens[2:]))
    return answers


def _added_each(kbs: list[bytes]) -> Callable[[Any, str], Any]:
    def finish(reply: tuple[list[bytes], dict[bytes, tuple[bytes, int]]], server_id: str) -> list[Any]:
        lines, found = reply
        out: list[Any] = []
        for kb, line in zip(kbs, lines, strict=True):
            got = found.get(kb)
            if got is None:
                out.append(None)
            elif line == b"STORED" and got[0] == NATIVE_LEASE:
                out.append(Won(got[1]))
            else:
                out.append(got[0])
        return out

    return finish


def _found_each(kbs: list[bytes]) -> Callable[[Any, str], Any]:
    def finish(found: dict[bytes, bytes], server_id: str) -> list[bytes | None]:
        return list(map(found.get, kbs))

    return finish


def get_one(kb: bytes, server_id: str, meta: bool) -> Request:
    """One key's value, or None."""
    if meta:
        return Request(p.mg(kb, b"v"), p.MetaLines(1, server_id), meta_value)
    return Request(p.get((kb,)), p.Fetch((kb,), server_id), _classic_get(kb))


def _classic_get(kb: bytes) -> Callable[[Any, str], Any]:
    return lambda found, server_id: found.get(kb)


def set_one(kb: bytes, value: bytes, exp: int, server_id: str, meta: bool) -> Request:
    return store(b"set", kb, value, exp, server_id, meta)


def store(verb: bytes, kb: bytes, value: bytes, exp: int, server_id: str, meta: bool) -> Request:
    """`set` or `add`: True when stored."""
    if meta:
        mode = b" ME" if verb == b"add" else b""
        return Request(p.ms(kb, value, b"F0" + _ttl(exp) + mode), p.MetaLines(1, server_id), _hd)
    return Request(p.store(verb, kb, value, exp), p.Lines(1), _stored_line)


def cas(kb: bytes, value: bytes, exp: int, unique: int, server_id: str, meta: bool) -> Request:
    """Store only if unchanged since `unique` was read: True when stored."""
    if meta:
        return Request(meta_cas(kb, value, exp, unique), p.MetaLines(1, server_id, errors=True), _cas_meta)
    return Request(p.cas(kb, value, exp, unique), p.Lines(1), _cas_line)


def meta_cas(kb: bytes, value: bytes, exp: int, unique: int) -> bytes:
    """The `ms` of `cas` on a meta server."""
    if exp:
        return b"ms %b %d F0 T%d C%d\r\n%b\r\n" % (kb, len(value), exp, unique, value)
    return b"ms %b %d F0 C%d\r\n%b\r\n" % (kb, len(value), unique, value)


#: What the usual whole replies to a meta `cas` mean (stored or not); others go to its plan.
META_CAS_REPLIES: Final = {b"HD\r\n": True, b"EX\r\n": False, b"NF\r\n": False, b"NS\r\n": False}


def _cas_line(lines: list[bytes], server_id: str) -> bool | None:
    """True: stored; False: the key changed or went (another writer); None: the server refused it
    (`SERVER_ERROR`, e.g. larger than its item size; memcached may drop the old item then)."""
    line = lines[0]
    return True if line == b"STORED" else None if line.startswith(b"SERVER_ERROR") else False


def _cas_meta(replies: list[Any], server_id: str) -> bool | None:
    reply = replies[0]
    if type(reply) is p.ErrorReply:
        if not reply.in_step:
            raise ServerError(f"memcached {server_id} answered {reply.kind.decode()} to a cas")
        return None
    return bool(reply.code == b"HD")


def _deleted(line: bytes, server_id: str) -> bool:
    if line in (b"DELETED", b"HD"):
        return True
    if line in (b"NOT_FOUND", b"NF"):
        return False
    raise ServerError(f"memcached {server_id} answered {line[:200].decode('ascii', 'replace')!r}")


def _code(reply: Any) -> bytes:
    """A classic reply line as it is; a meta reply's code; an error reply's line."""
    if type(reply) is bytes:
        return reply
    return reply.code if type(reply) is p.Meta else reply.kind + b" " + reply.message


def _deleted_one(replies: list[Any], server_id: str) -> bool:
    return _deleted(_code(replies[0]), server_id)


def delete(kb: bytes, server_id: str, meta: bool) -> Request:
    """True when the key was there; an error reply raises `ServerError`."""
    if meta:
        return Request(p.md(kb), p.MetaLines(1, server_id), _deleted_one)
    return Request(p.delete(kb), p.Lines(1), _deleted_one)


def delete_if(kb: bytes, unique: int, server_id: str, meta: bool) -> Request:
    """Delete `kb` only while its cas is still `unique` (meta `md <key> C<cas>`): True if deleted."""
    if not meta:
        raise p.ProtocolViolation("delete_if needs the meta protocol")
    return Request(p.md(kb, b"C%d" % unique), p.MetaLines(1, server_id), _deleted_one)


def _all_deleted(replies: list[Any], server_id: str) -> None:
    for reply in replies:
        _deleted(_code(reply), server_id)


def delete_many(kbs: list[bytes], server_id: str, meta: bool) -> Request:
    """Pipelined deletes of one server; an error reply raises `ServerError`."""
    if meta:
        return Request(b"".join(p.md(kb) for kb in kbs), p.MetaLines(len(kbs), server_id), _all_deleted)
    return Request(b"".join(p.delete(kb) for kb in kbs), p.Lines(len(kbs)), _all_deleted)


def _touched(replies: list[Any], server_id: str) -> bool:
    line = _code(replies[0])
    if line in (b"TOUCHED", b"HD"):
        return True
    if line in (b"NOT_FOUND", b"EN"):
        return False
    raise ServerError(f"memcached {server_id} answered {line[:200].decode('ascii', 'replace')!r}")


def touch(kb: bytes, exp: int, server_id: str, meta: bool) -> Request:
    """Set a key's expiry: True when the key was there."""
    if meta:
        return Request(p.mg(kb, b"T%d" % exp), p.MetaLines(1, server_id), _touched)
    return Request(p.touch(kb, exp), p.Lines(1), _touched)


def _meta_found(reply: Any) -> tuple[bytes, int] | None:
    if type(reply) is not p.Meta or reply.code == b"EN":
        return None
    cas_token = reply.flags.get(b"c", b"")
    if reply.code != b"VA" or reply.data is None or not cas_token.isdigit():
        raise p.ProtocolViolation(repr(reply)[:120])
    return seen(reply.data, reply.flags), int(cas_token)


def _meta_gets(replies: list[Any], server_id: str) -> tuple[bytes, int] | None:
    return _meta_found(replies[0])


def gets(kb: bytes, server_id: str, meta: bool) -> Request:
    """`(value, cas unique)`, or None on a miss."""
    if meta:
        return Request(p.mg(kb, b"v c"), p.MetaLines(1, server_id), _meta_gets)
    return Request(p.gets(kb), p.Fetch((kb,), server_id, cas=True), _classic_get(kb))


def meta_lease(replies: list[Any], server_id: str) -> tuple[bool, tuple[bytes, int] | None]:
    added, got = replies
    return type(added) is p.Meta and added.code == b"HD", _meta_found(got)


def _classic_lease(kb: bytes) -> Callable[[Any, str], Any]:
    return lambda reply, server_id: (reply[0] == b"STORED", reply[1].get(kb))


def lease(kb: bytes, marker: bytes, exp: int, server_id: str, meta: bool) -> Request:
    """`add` the marker and read the key with its cas, in one round trip: `(added, (value, cas) | None)`."""
    if meta:
        data = p.ms(kb, marker, b"F0" + _ttl(exp) + b" ME") + p.mg(kb, b"v c")
        return Request(data, p.MetaLines(2, server_id), meta_lease)
    return Request(p.lease(kb, marker, exp), p.LineThenFetch(kb, server_id), _classic_lease(kb))


def _not_stored(entries: list[tuple[str, bytes, bytes, int]]) -> Callable[[Any, str], Any]:
    def finish(replies: list[Any], server_id: str) -> list[str]:
        return [
            entry[0]
            for entry, reply in zip(entries, replies, strict=True)
            if reply != b"STORED" and not (type(reply) is p.Meta and reply.code == b"HD")
        ]

    return finish


def set_many(entries: list[tuple[str, bytes, bytes, int]], server_id: str, meta: bool) -> Request:
    """Pipelined sets of one server, any mix of TTLs: the keys not stored.

    Every reply is read: `SERVER_ERROR` (a value above the server's `-I`:
    memcached reads and drops it) marks only its own key not stored.
    """
    if meta:
        data = b"".join([p.ms(kb, value, b"F0" + _ttl(exp)) for _, kb, value, exp in entries])
        return Request(data, p.MetaLines(len(entries), server_id, errors=True), _not_stored(entries))
    data = b"".join([p.store(b"set", kb, value, exp) for _, kb, value, exp in entries])
    return Request(data, p.Lines(len(entries)), _not_stored(entries))


def _any_stored(replies: list[Any], server_id: str) -> bool:
    return any(r == b"STORED" or (type(r) is p.Meta and r.code == b"HD") for r in replies)


def add_or_append(kb: bytes, value: bytes, exp: int, server_id: str, meta: bool) -> Request:
    """`add`, else `append`, in one round trip: True when either stored.

    Where `add` stored, the `append` doubles the value, which records that
    only grow (generation tokens) read the same.
    """
    if meta:
        data = p.ms(kb, value, b"F0" + _ttl(exp) + b" ME") + p.ms(kb, value, b"MA")
        return Request(data, p.MetaLines(2, server_id, errors=True), _any_stored)
    return Request(p.add_or_append(kb, value, exp), p.Lines(2), _any_stored)


def stats(server_id: str, meta: bool) -> Request:
    """The server's `stats`, name to value."""
    return Request(p.STATS, p.Stats(server_id), _same)
