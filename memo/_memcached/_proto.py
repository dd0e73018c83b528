"""The memcached wire protocol without I/O: requests encoded to bytes, replies read from bytes.

The h11 shape. A `Reader` takes the bytes a connection received (`feed`) and
hands back reply events (`next_event`): `Value` (a `VALUE` header and its
data block), `Meta` (a meta reply: `VA` with its data, `HD`, `EN`, `NF`, `NS`,
`EX`, `MN`), `Status` (any other reply line: `END`, `STORED`, `DELETED`, a
number, `VERSION ...`, `STAT ...`) and `ErrorReply` (`ERROR`, `CLIENT_ERROR
...`, `SERVER_ERROR ...`), or `NEED_DATA`. The reader needs no context: every
data block is announced by its header's length.

What one request's reply means is a *reply plan*: an object with `collect(reader)`
that consumes events and returns the request's result, or `NEED_DATA` until
the whole reply is in (`Fetch`, `Lines`, `LineThenFetch`, `Stats`,
`MetaLines`), and `short`: what it collects from each whole one-line reply that
needs no reader (`HD`, `STORED`, ...; `NO_SHORT` when there is none), which the
sync connection looks up before feeding the reader. The functions at the end encode requests. The sync
and async connections only move bytes between a socket and these objects, so
the protocol is written, and tested with scripted byte streams, once.

Errors: `ProtocolViolation` when the bytes are not a reply to what was asked
(the connection is out of step and must be closed); `ServerError` for an
error reply where the request has no way to report one.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from typing import Any, Final, NamedTuple

from ._wire import ServerError

__all__ = [
    "END",
    "META_CODES",
    "NEED_DATA",
    "NO_SHORT",
    "ErrorReply",
    "Fetch",
    "LineThenFetch",
    "LinesThenFetch",
    "Lines",
    "Meta",
    "MetaLines",
    "Probe",
    "ProtocolViolation",
    "Reader",
    "Stats",
    "Status",
    "Value",
    "whole_get",
]


class ProtocolViolation(Exception):
    """The bytes on the wire are not a memcached reply to what was asked."""


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


#: More bytes must arrive before the next event (or the reply) is complete.
NEED_DATA: Final = _NeedData()


class Value(NamedTuple):
    """`VALUE <key> <flags> <bytes> [<cas>]` and its data block."""

    key: bytes
    flags: int
    data: bytes
    cas: int | None


class Meta(NamedTuple):
    """A meta reply: its two-letter code, its return flags (first letter -> token), its data or None."""

    code: bytes
    flags: dict[bytes, bytes]
    data: bytes | None


class Status(NamedTuple):
    """Any other reply line, without its CRLF."""

    line: bytes


class ErrorReply(NamedTuple):
    """`ERROR`, `CLIENT_ERROR <message>` or `SERVER_ERROR <message>`."""

    kind: bytes
    message: bytes

    @property
    def in_step(self) -> bool:
        """SERVER_ERROR leaves the connection in step (memcached read the request); the others may not."""
        return self.kind == b"SERVER_ERROR"

    def error(self, server_id: str) -> ServerError:
        text = (self.kind + (b" " + self.message if self.message else b""))[:200]
        return ServerError(f"memcached {server_id} answered {text.decode('ascii', 'replace')!r}")


END: Final = Status(b"END")
#: The reply codes of the meta protocol (`VA` carries a data block).
META_CODES: Final = frozenset([b"VA", b"HD", b"EN", b"NF", b"NS", b"EX", b"MN"])
_ERRORS = (b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR")
#: The longest one-line reply `short` tables hold (`NOT_STORED\r\n`): longer bytes are never
#: hashed to look one up (a reply carrying a value would be hashed whole).
SHORT_MAX: Final = 12
#: `short` of the reply plans whose replies are never one line that needs no reader.
NO_SHORT: Final[dict[bytes, Any]] = {}
_MAX_LINE = 8192  # a reply line longer than this is garbage (keys are at most 250 bytes)

Event = Value | Meta | Status | ErrorReply


def _bad(line: bytes | bytearray) -> ProtocolViolation:
    return ProtocolViolation(repr(bytes(line[:80])))


def meta_flags(tokens: list[bytes]) -> dict[bytes, bytes]:
    return {bytes(t[:1]): bytes(t[1:]) for t in tokens if t}


class Reader:
    """Reply events from a byte stream: `feed` what arrived, then `next_event` until NEED_DATA."""

    __slots__ = ("_buf", "_header", "_need", "_pos")

    def __init__(self) -> None:
        self._buf: bytes | bytearray = b""
        self._pos = 0
        # A header whose data block has not fully arrived, and where the block ends (CRLF included).
        self._header: Value | Meta | None = None
        self._need = 0

    def feed(self, data: bytes) -> None:
        """Add received bytes."""
        buf = self._buf
        if self._pos >= len(buf):
            self._buf, self._pos = data, 0
            return
        if type(buf) is bytes:
            buf = bytearray(buf[self._pos :]) if self._pos else bytearray(buf)
            self._need -= self._pos
            self._pos = 0
        buf += data
        self._buf = buf

    @property
    def pending(self) -> int:
        """Bytes received and not yet turned into events."""
        return len(self._buf) - self._pos

    def whole(self) -> bytes | None:
        """The unread bytes when they are one `bytes` object that nothing has been read from."""
        buf = self._buf
        return buf if type(buf) is bytes and not self._pos and self._header is None else None

    def clear(self) -> None:
        self._buf, self._pos = b"", 0

    def short(self, replies: dict[bytes, Any]) -> Any:
        """`replies[the unread bytes]` when they are exactly one of its keys, whole (then they are
        read); else None. The usual one-line replies, without the reader's events."""
        buf = self._buf
        if len(buf) <= SHORT_MAX and type(buf) is bytes and not self._pos and self._header is None:
            found = replies.get(buf)
            if found is not None:
                self._buf = b""
                return found
        return None

    def next_event(self) -> Event | _NeedData:
        """The next reply event, or NEED_DATA."""
        header = self._header
        buf = self._buf
        if header is not None:
            need = self._need
            if len(buf) < need:
                return NEED_DATA
            if buf[need - 2 : need] != b"\r\n":
                raise ProtocolViolation("data block not followed by CRLF")
            data = bytes(buf[self._pos : need - 2])
            self._header = None
            self._advance(need)
            return _with_data(header, data)
        pos = self._pos
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            if len(buf) - pos > _MAX_LINE:
                raise ProtocolViolation("reply line too long")
            return NEED_DATA
        line = bytes(buf[pos:eol])
        self._advance(eol + 2)
        return self._line_event(line)

    def _advance(self, pos: int) -> None:
        if pos >= len(self._buf):
            self._buf, self._pos = b"", 0
        else:
            self._pos = pos

    def _line_event(self, line: bytes) -> Event | _NeedData:
        if line.startswith(b"VALUE "):
            fields = line[6:].split(b" ")
            n = len(fields)
            if not (
                (n == 3 or (n == 4 and fields[3].isdigit())) and fields[1].isdigit() and fields[2].isdigit()
            ):
                raise _bad(line)
            return self._block(
                Value(fields[0], int(fields[1]), b"", int(fields[3]) if n == 4 else None), fields[2]
            )
        code = line[:2]
        if code in META_CODES and (len(line) == 2 or line[2:3] == b" "):
            tokens = line[3:].split(b" ")
            if code != b"VA":
                return Meta(code, meta_flags(tokens), None)
            if not tokens[0].isdigit():
                raise _bad(line)
            return self._block(Meta(code, meta_flags(tokens[1:]), b""), tokens[0])
        if line.startswith(_ERRORS):
            kind, _, message = line.partition(b" ")
            if kind in _ERRORS:
                return ErrorReply(kind, message)
        if not line or not line.isascii():
            raise _bad(line)
        return Status(line)

    def _block(self, header: Value | Meta, size: bytes) -> Event | _NeedData:
        start = self._pos
        need = start + int(size) + 2
        buf = self._buf
        if len(buf) >= need:  # the usual case: the whole block is here already
            if buf[need - 2 : need] != b"\r\n":
                raise ProtocolViolation("data block not followed by CRLF")
            data = bytes(buf[start : need - 2])
            self._advance(need)
            return _with_data(header, data)
        self._header = header
        self._need = need
        return NEED_DATA


def _with_data(header: Value | Meta, data: bytes) -> Value | Meta:
    if type(header) is Value:
        return Value(header.key, header.flags, data, header.cas)
    return Meta(header.code, header.flags, data)  # type: ignore[union-attr,arg-type]


# -- reply plans: what one request's reply means ---------------------------------------


def _unexpected(event: Event, server_id: str) -> Exception:
    if type(event) is ErrorReply:
        return event.error(server_id)
    return ProtocolViolation(repr(event)[:120])


class Fetch:
    """`VALUE` items up to `END`: `{key: data}`, or `{key: (data, cas)}` with `cas=True`.

    A value for a key not asked for, or a `gets` item without its cas, is out
    of step; an error reply raises `ServerError`.
    """

    __slots__ = ("cas", "found", "server_id", "wanted")
    short = NO_SHORT

    def __init__(self, wanted: Collection[bytes], server_id: str, *, cas: bool = False) -> None:
        self.wanted = wanted
        self.server_id = server_id
        self.cas = cas
        self.found: dict[bytes, Any] = {}

    def collect(self, reader: Reader) -> Any:
        if not self.cas and not self.found:
            whole = reader.whole()
            if whole is not None and whole.endswith(b"END\r\n"):
                plain = whole_get(whole, self.wanted)
                if plain is not None:
                    reader.clear()
                    return plain
        found = self.found
        while True:
            event = reader.next_event()
            if type(event) is Value:
                if event.key not in self.wanted:
                    raise ProtocolViolation(f"value for key {event.key[:80]!r} that was not asked for")
                if not self.cas:
                    found[event.key] = event.data
                elif event.cas is None:
                    raise ProtocolViolation("gets item without its cas")
                else:
                    found[event.key] = (event.data, event.cas)
            elif event is NEED_DATA:
                return NEED_DATA
            elif event == END:
                if reader.pending:
                    raise ProtocolViolation("bytes after END")
                return found
            else:
                raise _unexpected(event, self.server_id)  # type: ignore[arg-type]


#: The one-line replies to classic commands that leave the connection in step.
STATUS_LINES: Final = frozenset([b"STORED", b"NOT_STORED", b"EXISTS", b"NOT_FOUND", b"DELETED", b"TOUCHED"])
#: What `Lines(1)` collects from each whole one-line reply that needs no reader (`short`).
_SHORT_LINES: Final = {line + b"\r\n": (line,) for line in STATUS_LINES}


#: Meta replies that are only their code (no flags asked for, no data).
_BARE_META: Final = frozenset([b"HD", b"NS", b"EX", b"NF", b"EN"])


def whole_lines(reader: Reader, count: int, allowed: frozenset[bytes]) -> list[bytes] | None:
    """The `count` reply lines the reader holds, all in one piece and each one of `allowed`,
    taken from it in one split; None (nothing taken) when that is not so plainly."""
    whole = reader.whole()
    if whole is None or len(whole) > SHORT_MAX * count:  # a reply carrying data: not split here
        return None
    lines = whole.split(b"\r\n")
    if len(lines) != count + 1 or lines.pop() or not all(map(allowed.__contains__, lines)):
        return None
    reader.clear()
    return lines


class Lines:
    """`count` one-line replies (to pipelined set/add/cas/delete/touch/append): the lines.

    An error reply is kept as its line (`SERVER_ERROR ...` refuses only its own
    command); after `ERROR` or `CLIENT_ERROR` `in_step` is False and the
    connection must not be reused. Anything else is out of step.
    """

    __slots__ = ("count", "in_step", "lines", "short")

    def __init__(self, count: int = 1) -> None:
        self.count = count
        self.lines: list[bytes] = []
        self.in_step = True
        #: A whole reply -> what this plan collects from it, for replies that need no reader.
        self.short = _SHORT_LINES if count == 1 else NO_SHORT

    def collect(self, reader: Reader) -> Any:
        lines = self.lines
        if not lines:
            # The usual reply to one store, delete or touch: a status line, whole in one read;
            # a pipeline's lines, all whole, in one split.
            got = reader.short(self.short)
            if got is not None:
                return got
            whole = whole_lines(reader, self.count, STATUS_LINES)
            if whole is not None:
                self.lines = whole
                return whole
        while len(lines) < self.count:
            event = reader.next_event()
            if event is NEED_DATA:
                return NEED_DATA
            if type(event) is Status and (event.line in STATUS_LINES or event.line.isdigit()):
                lines.append(event.line)
            elif type(event) is ErrorReply:
                self.in_step = self.in_step and event.in_step
                lines.append(event.kind + (b" " + event.message if event.message else b""))
            else:
                raise ProtocolViolation(repr(event)[:120])
        if reader.pending:
            raise ProtocolViolation("more reply lines than requests")
        return lines


class LineThenFetch:
    """One status line, then a `gets` reply: `(line, {key: (data, cas)})` (the lease's `add` + `gets`)."""

    __slots__ = ("fetch", "line", "server_id")
    short = NO_SHORT

    def __init__(self, kb: bytes, server_id: str) -> None:
        self.server_id = server_id
        self.line: bytes | None = None
        self.fetch = Fetch((kb,), server_id, cas=True)

    def collect(self, reader: Reader) -> Any:
        if self.line is None:
            event = reader.next_event()
            if event is NEED_DATA:
                return NEED_DATA
            if type(event) is not Status or event.line not in STATUS_LINES:
                raise _unexpected(event, self.server_id)  # type: ignore[arg-type]
            self.line = event.line
        found = self.fetch.collect(reader)
        return NEED_DATA if found is NEED_DATA else (self.line, found)


class LinesThenFetch:
    """`count` status lines (the `add`s), then one multi-key `gets` reply: `(lines, {key: (data, cas)})`."""

    __slots__ = ("count", "fetch", "lines", "server_id")
    short = NO_SHORT

    def __init__(self, count: int, wanted: list[bytes], server_id: str) -> None:
        self.count = count
        self.server_id = server_id
        self.lines: list[bytes] = []
        self.fetch = Fetch(wanted, server_id, cas=True)

    def collect(self, reader: Reader) -> Any:
        while len(self.lines) < self.count:
            event = reader.next_event()
            if event is NEED_DATA:
                return NEED_DATA
            if type(event) is not Status or event.line not in (b"STORED", b"NOT_STORED"):
                raise ProtocolViolation(repr(event)[:120])
            self.lines.append(event.line)
        found = self.fetch.collect(reader)
        return NEED_DATA if found is NEED_DATA else (self.lines, found)


class Stats:
    """`STAT <name> <value>` lines up to `END`: `{name: value}`."""

    __slots__ = ("server_id", "stats")
    short = NO_SHORT

    def __init__(self, server_id: str) -> None:
        self.server_id = server_id
        self.stats: dict[str, str] = {}

    def collect(self, reader: Reader) -> Any:
        while True:
            event = reader.next_event()
            if event is NEED_DATA:
                return NEED_DATA
            if event == END:
                if reader.pending:
                    raise ProtocolViolation("bytes after END")
                return self.stats
            if type(event) is Status and event.line.startswith(b"STAT "):
                _, name, value = event.line.decode("ascii").split(" ", 2)
                self.stats[name] = value
            else:
                raise _unexpected(event, self.server_id)  # type: ignore[arg-type]


class MetaLines:
    """`count` meta replies: a list of `Meta`.

    An error reply raises `ServerError`, or with `errors=True` is kept in the
    list as its `ErrorReply` (pipelined stores: `SERVER_ERROR` refuses only its
    own command; after `ERROR`/`CLIENT_ERROR` `in_step` is False).
    """

    __slots__ = ("count", "errors", "in_step", "replies", "server_id", "short")

    def __init__(self, count: int, server_id: str, *, errors: bool = False) -> None:
        self.count = count
        self.server_id = server_id
        self.errors = errors
        self.in_step = True
        self.replies: list[Meta | ErrorReply] = []
        #: A whole reply -> what this plan collects from it (see `Lines.short`).
        self.short = _SHORT_META if count == 1 else NO_SHORT

    def collect(self, reader: Reader) -> Any:
        replies = self.replies
        if not replies:
            # The usual reply to one store, delete or touch: a bare code, whole in one read;
            # a pipeline's bare codes, all whole, in one split.
            got = reader.short(self.short)
            if got is not None:
                return got
            whole = whole_lines(reader, self.count, _BARE_META)
            if whole is not None:
                self.replies = [Meta(code, {}, None) for code in whole]
                return self.replies
        while len(replies) < self.count:
            event = reader.next_event()
            if event is NEED_DATA:
                return NEED_DATA
            if type(event) is ErrorReply and self.errors:
                self.in_step = self.in_step and event.in_step
            elif type(event) is not Meta or event.code == b"MN":
                raise _unexpected(event, self.server_id)  # type: ignore[arg-type]
            replies.append(event)
        if reader.pending:
            raise ProtocolViolation("more replies than requests")
        return replies


#: What `MetaLines(1)` collects from each whole reply that is a bare code (`short`). Shared:
#: a collected reply is only read.
_SHORT_META: Final = {code + b"\r\n": (Meta(code, {}, None),) for code in (b"HD", b"NS", b"EX", b"NF", b"EN")}


class Probe:
    """The reply to `mn`: True for `MN` (the server speaks meta), False for any other reply line."""

    __slots__ = ()
    short = NO_SHORT

    def collect(self, reader: Reader) -> Any:
        event = reader.next_event()
        if event is NEED_DATA:
            return NEED_DATA
        return type(event) is Meta and event.code == b"MN" and not reader.pending


def whole_get(buf: bytes, wanted: Collection[bytes]) -> dict[bytes, bytes] | None:
    """Parse a complete `VALUE ... END` reply in one pass, or None when it is not one plainly.

    Splitting at CRLF loses nothing, so when every header names a key asked
    for, every value piece has exactly the length its header gives, and `END`
    is the last line, the pieces are exactly what `Fetch` would cut. Any doubt
    (a value containing CRLF, a reply still incomplete) is None: the reader
    then goes event by event.

    The checks run over all items at once (the headers joined and split into
    fields: four per header, every first one `VALUE`), not item by item: a
    hundred items cost about a third as much.
    """
    parts = buf.split(b"\r\n")
    count = (len(parts) - 2) // 2
    if len(parts) != 2 * count + 2 or parts[-2] != b"END" or parts[-1]:
        return None
    if not count:
        return {}
    fields = b" ".join(parts[0:-2:2]).split(b" ")
    keys = fields[1::4]
    values = parts[1:-2:2]
    try:
        plain = (
            len(fields) == 4 * count
            and fields[0::4].count(b"VALUE") == count
            and list(map(len, values)) == list(map(int, fields[3::4]))
            and all(map(wanted.__contains__, keys))
        )
    except ValueError:
        return None
    return dict(zip(keys, values, strict=True)) if plain else None


def lean_value(buf: bytes, kb: bytes) -> bytes | _NeedData | None:
    """The reply to `get <kb>` when `buf` is exactly one whole plain reply; NEED_DATA when in doubt.

    The hit path: one `find` and one `split` instead of the reader's events.
    """
    if buf == b"END\r\n":
        return None
    eol = buf.find(b"\r\n")
    if eol > 6 and buf.startswith(b"VALUE "):
        fields = buf[6:eol].split(b" ")
        if len(fields) == 3 and fields[0] == kb and fields[2].isdigit():
            start = eol + 2
            end = start + int(fields[2])
            if len(buf) == end + 7 and buf.endswith(b"\r\nEND\r\n"):
                return buf[start:end]
    return NEED_DATA


def lean_meta_value(buf: bytes) -> bytes | _NeedData | None:
    """The reply to `mg <key> v` when `buf` is exactly one whole reply; NEED_DATA when in doubt."""
    if buf == b"EN\r\n":
        return None
    return lean_meta_hit(buf)


#: The header of a plain meta hit: `VA <size>`, or `VA <size> c<cas>` (see `lean_meta_hit`).
_META_HIT_HEADER: Final = re.compile(rb"VA (\d+)(?: c\d+)?\r\n")


def lean_meta_hit(buf: bytes) -> bytes | _NeedData:
    """The data of a plain meta hit when `buf` is exactly that whole reply; NEED_DATA when in doubt.

    A plain hit is `VA <size>\r\n<data>\r\n`, or `VA <size> c<cas>\r\n<data>\r\n` (the
    answer of `mg <key> v c N<ttl>` that found a value): no other flag, so no lease was
    granted (`W`) or is held by another (`Z`), and the item is not stale (`X`). Anything
    else (those flags, `EN`, an error, a reply split across reads, more bytes than one
    reply) is NEED_DATA: the caller reads it the general way. The hit path of both
    protocols' sync reads: one match, no reply objects.
    """
    header = _META_HIT_HEADER.match(buf)
    if header is not None:
        start = header.end()
        end = start + int(header[1])
        if len(buf) == end + 2 and buf[end:] == b"\r\n":
            return buf[start:end]
    return NEED_DATA


#: A leased read's miss: the empty item it created, and the lease it took (`W`).
_META_WON: Final = re.compile(rb"VA 0 c(\d+) W\r\n\r\n")


def lean_meta_won(buf: bytes) -> int | None:
    """The cas of the lease that `mg <key> v c N<ttl>` took on a miss (`VA 0 c<cas> W` and the
    empty item) when `buf` is exactly that whole reply; None when in doubt (the general read
    then tells a stale value, another's lease or an error)."""
    won = _META_WON.fullmatch(buf)
    return None if won is None else int(won[1])


def lean_meta_reply(buf: bytes) -> tuple[bytes, list[bytes]] | _NeedData:
    """`(data, return flags)` of one `VA <size> <flags>` reply when `buf` is exactly that whole
    reply (the answer to `mg <key> v c N<ttl>`, which never misses); NEED_DATA when in doubt."""
    eol = buf.find(b"\r\n")
    if eol > 3 and buf.startswith(b"VA "):
        tokens = buf[3:eol].split(b" ")
        size = tokens[0]
        if size.isdigit():
            start = eol + 2
            end = start + int(size)
            if len(buf) == end + 2 and buf.endswith(b"\r\n"):
                return buf[start:end], tokens[1:]
    return NEED_DATA


# -- requests -----------------------------------------------------------------------


def get(kbs: Iterable[bytes]) -> bytes:
    """`get k1 k2 ...`: one `VALUE` item per hit, then `END` (`Fetch`)."""
    return b"get " + b" ".join(kbs) + b"\r\n"


def gets(kb: bytes) -> bytes:
    return b"gets " + kb + b"\r\n"


def store(verb: bytes, kb: bytes, value: bytes, exp: int) -> bytes:
    """`set`/`add`/`append` with client flags 0: one status line (`Lines`)."""
    return b"%b %b 0 %d %d\r\n%b\r\n" % (verb, kb, exp, len(value), value)


def cas(kb: bytes, value: bytes, exp: int, unique: int) -> bytes:
    return b"cas %b 0 %d %d %d\r\n%b\r\n" % (kb, exp, len(value), unique, value)


def delete(kb: bytes) -> bytes:
    return b"delete " + kb + b"\r\n"


def touch(kb: bytes, exp: int) -> bytes:
    return b"touch %b %d\r\n" % (kb, exp)


def lease(kb: bytes, marker: bytes, exp: int) -> bytes:
    """`add` the marker, then `gets` the key, in one send (`LineThenFetch`)."""
    return store(b"add", kb, marker, exp) + gets(kb)


def add_or_append(kb: bytes, value: bytes, exp: int) -> bytes:
    """`add`, then `append` the same bytes: two status lines (`Lines(2)`)."""
    return store(b"add", kb, value, exp) + store(b"append", kb, value, 0)


STATS: Final = b"stats\r\n"
#: The meta no-op: `MN` from a server that speaks meta; it also ends a quiet batch.
MN: Final = b"mn\r\n"


def mg(kb: bytes, flags: bytes) -> bytes:
    """`mg <key> <flags>`: `VA <size> <flags>` + data, `HD <flags>`, or `EN` on a miss (`MetaLines`)."""
    return b"mg " + kb + b" " + flags + b"\r\n"


def ms(kb: bytes, value: bytes, flags: bytes) -> bytes:
    """`ms <key> <size> <flags>` + data: `HD` stored, `NS` not stored, `EX` cas mismatch, `NF` missing."""
    return b"ms %b %d %b\r\n%b\r\n" % (kb, len(value), flags, value)


def md(kb: bytes, flags: bytes = b"") -> bytes:
    """`md <key> [flags]`: `HD` deleted, `NF` not found."""
    return b"md " + kb + (b" " + flags if flags else b"") + b"\r\n"
