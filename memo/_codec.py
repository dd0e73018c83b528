"""Values: a typed orjson codec and memo's versioned wire format.

Pure: no I/O, no client imports.

Wire format (all integers big-endian)::

    b"m" | version (1 byte, now 2) | flags (1 byte) | [expiry: uint64 Unix time in ms] | body
    [0]    [1]                        [2]             [3:11], with EXPIRES               [3:] or [11:]

This module is the one place that reads or writes the header: `read_header`
and `with_expiry` serve code that needs its fields, and the flattened hit
paths (which compare the first 3 bytes with `PLAIN_HEADER` or
`PLAIN_EXPIRES_HEADER` and slice the expiry at 3:11 inline, for speed) use
the constants exported here.

The JSON body always ends with a newline (orjson never writes one inside a
value), so a truncated body is detected, never decoded as a shorter value.

Flags: `PLAIN` (the body is plain JSON: decode is one `orjson.loads`),
`ZLIB` (the body is zlib-compressed), `EXPIRES` (an 8-byte expiry time in
milliseconds follows the flags: memcached's own clock ticks once a second, so
the exact lifetime of an entry is kept here and checked by the reader),
`LEASE` (not a value: a lease marker, whose body is its owner's token).
Anything else (another magic, an unknown version or flag, a truncated or
corrupt body, a class this reader does not know) is a `DecodeError`, which the
engine treats as a miss. Version 1 (memo 0.1) had no expiry and is still read.

Typed JSON: values JSON cannot tell apart are wrapped in single-key objects
whose key starts with NUL (`{"\\u0000t": [...]}` is a tuple). A plain dict can
never look like one: a dict with a key starting with NUL, or with non-str keys,
is itself wrapped. Classes (dataclasses, pydantic models, NamedTuples, enums)
are written by name and rebuilt only from a `TypeRegistry`: the classes named by
the function's return annotation, those registered explicitly, and those the
function itself returned in this process. Decoding never imports a module
because the data names it, so whoever can write to the cache cannot make a
reader load code (the danger of pickle in a shared cache).
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import datetime as _dt
import enum
import marshal
import typing
import uuid
import zlib
import zoneinfo
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any, NamedTuple

import orjson

from ._canonical import qualified_name
from ._errors import MemoError, SerializationError

__all__ = ["Codec", "DecodeError", "TypeRegistry", "register_type"]

MAGIC = b"m"
VERSION = 2
#: The format versions this reader decodes.
READ_VERSIONS = (1, VERSION)
PLAIN, ZLIB, EXPIRES, LEASE = 1, 2, 4, 8
_KNOWN_FLAGS = PLAIN | ZLIB | EXPIRES
#: Where a body starts: after magic, version and flags; after the expiry too with `EXPIRES`.
BODY_START, BODY_START_EXPIRES = 3, 11
#: The first 3 bytes of the common values: plain JSON, without and with an exact expiry.
PLAIN_HEADER = MAGIC + bytes([VERSION, PLAIN])
PLAIN_EXPIRES_HEADER = MAGIC + bytes([VERSION, PLAIN | EXPIRES])
LEASE_HEADER = MAGIC + bytes([VERSION, LEASE])
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1
_NUL = "\x00"
#: The types of a JSON tree's leaves, which `from_tree` returns as they are.
_LEAVES: frozenset[type] = frozenset((str, int, float, bool, type(None)))
_NEWLINE = orjson.OPT_APPEND_NEWLINE


class DecodeError(MemoError, ValueError):
    """Stored bytes this codec cannot turn back into a value (treated as a miss)."""


class TypeRegistry:
    """Classes a codec may rebuild, by `module.qualname`."""

    __slots__ = ("_types", "parent")

    def __init__(self, types: Iterable[type] = (), parent: TypeRegistry | None = None) -> None:
        self._types: dict[str, type] = {}
        self.parent = parent
        for cls in types:
            self.add(cls)

    def add(self, cls: type) -> None:
        """Allow `cls` (and the classes its annotations name) to be rebuilt."""
        for found in _classes_in(cls, set()):
            self._types[qualified_name(found)] = found

    def add_annotation(self, annotation: Any) -> None:
        """Allow every class an annotation such as `list[User] | None` names."""
        for found in _classes_in(annotation, set()):
            self._types[qualified_name(found)] = found

    def learn(self, cls: type) -> None:
        """Remember a class this codec has just encoded."""
        self._types.setdefault(qualified_name(cls), cls)

    def get(self, name: str) -> type | None:
        found = self._types.get(name)
        if found is None and self.parent is not None:
            return self.parent.get(name)
        return found


#: Classes every codec may rebuild (see `register_type`).
GLOBAL_TYPES = TypeRegistry()


def register_type(cls: type) -> type:
    """Let every memo codec rebuild instances of `cls`; usable as a class decorator."""
    GLOBAL_TYPES.add(cls)
    return cls


def _is_model(obj: Any) -> bool:
    return isinstance(obj, type) and hasattr(obj, "__pydantic_fields__") and hasattr(obj, "model_validate")


def _is_rebuildable(obj: Any) -> bool:
    return isinstance(obj, type) and (
        dataclasses.is_dataclass(obj)
        or issubclass(obj, enum.Enum)
        or (issubclass(obj, tuple) and hasattr(obj, "_fields"))
        or _is_model(obj)
    )


def _classes_in(annotation: Any, seen: set[int]) -> Iterable[type]:
    """Yield the rebuildable classes an annotation names, following their fields."""
    if id(annotation) in seen:
        return
    seen.add(id(annotation))
    if _is_rebuildable(annotation):
        yield annotation
        try:
            hints = typing.get_type_hints(annotation)
        except Exception:  # unresolvable forward references: those classes are learned on encode
            hints = {}
        for hint in hints.values():
            yield from _classes_in(hint, seen)
    for arg in typing.get_args(annotation):
        yield from _classes_in(arg, seen)


# -- encoding ---------------------------------------------------------------


# orjson hands dataclasses, datetimes and subclasses of built-ins to `default` with these
# options, and refuses sets, bytes, Decimal, non-str keys and ints beyond 64 bits. It still
# writes enum members as their values, and IntEnum/StrEnum members compare equal to them:
# `marshal` accepts only exact built-in types, so it refuses every enum member and subclass,
# in C. What JSON writes with a loss of type among exact types (tuples, nan) is caught by
# comparing the decoded body with the value, also in C, unlike a Python-level walk.
_PLAIN_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_APPEND_NEWLINE
)


def _refuse(value: Any) -> Any:
    raise TypeError


#: Raises ValueError for anything but exact built-in types (version 2: no shared references).
_exact_types = marshal.dumps


def _plain_body(value: Any) -> bytes | None:
    """Return the orjson body of `value` if plain JSON round-trips it exactly, else None."""
    try:
        body = orjson.dumps(value, default=_refuse, option=_PLAIN_OPTIONS)
        _exact_types(value, 2)
    except (TypeError, ValueError):
        return None
    try:
        same = orjson.loads(body) == value
    except Exception:  # a value whose __eq__ raises is not plain
        return None
    return body if same else None


class Codec:
    """Encode values to memo's wire format and back, keeping their types.

    Args:
        types: a registry of classes this codec may rebuild (default: a new one
            whose parent is the global registry).
        compress_threshold: bodies longer than this many bytes are zlib-compressed
            (None: never).
        compress_level: zlib level (1 fastest .. 9 smallest).
    """

    def __init__(
        self,
        types: TypeRegistry | None = None,
        compress_threshold: int | None = 16 * 1024,
        compress_level: int = 3,
    ) -> None:
        self.types = types if types is not None else TypeRegistry(parent=GLOBAL_TYPES)
        self.compress_threshold = compress_threshold
        self.compress_level = compress_level

    # -- bytes ---------------------------------------------------------------

    def encode(self, value: Any, expires_ms: int | None = None) -> bytes:
        """Return the wire bytes of `value`, with its exact expiry (Unix ms) if given.

        Raises:
            SerializationError: `value` holds a type this codec cannot round-trip.
        """
        plain = _plain_body(value)
        try:
            if plain is not None:
                flags, body = PLAIN, plain
            else:
                flags, body = 0, orjson.dumps(self.to_tree(value), option=_NEWLINE)
        except SerializationError:
            raise
        except (TypeError, ValueError, RecursionError) as exc:
            raise SerializationError(f"cannot encode {type(value).__name__}: {exc}") from exc
        threshold = self.compress_threshold
        if threshold is not None and len(body) > threshold:
            packed = zlib.compress(body, self.compress_level)
            if len(packed) < len(body):
                flags |= ZLIB
                body = packed
        if flags == PLAIN:  # the usual value: its header is a constant
            if expires_ms is None:
                return PLAIN_HEADER + body
            return b"".join((PLAIN_EXPIRES_HEADER, expires_ms.to_bytes(8, "big"), body))
        if expires_ms is not None:
            return MAGIC + bytes([VERSION, flags | EXPIRES]) + expires_ms.to_bytes(8, "big") + body
        return MAGIC + bytes([VERSION, flags]) + body

    def encode_many(self, values: list[Any], expires_ms: int) -> list[bytes] | None:
        """`encode` of each value, all with the same exact expiry, when every one is plain JSON
        (a batch's usual values) and none is long enough to compress; else None (encode them
        one by one).

        `_plain_body`'s checks, each run once for the whole list: exact built-in types
        (`marshal` of the list accepts it iff it accepts every element), and the bodies
        decoded together equal to the values (list equality is element by element).
        """
        threshold = self.compress_threshold
        try:
            bodies = [orjson.dumps(value, default=_refuse, option=_PLAIN_OPTIONS) for value in values]
            _exact_types(values, 2)
            same = orjson.loads(b"[" + b",".join(bodies) + b"]") == values
        except Exception:  # TypeError, ValueError; or a value whose __eq__ raises: not plain
            return None
        if not same or (threshold is not None and max(map(len, bodies), default=0) > threshold):
            return None
        head = PLAIN_EXPIRES_HEADER + expires_ms.to_bytes(8, "big")
        return [head + body for body in bodies]

    def decode(self, data: bytes) -> Any:
        """Return the value `data` holds.

        Raises:
            DecodeError: the bytes are not a value this codec wrote and can rebuild.
        """
        if data.endswith(b"\n"):  # the hit paths of JSON-shaped results (3, 11: the body starts)
            start = 3 if data.startswith(PLAIN_HEADER) else 11 if data.startswith(PLAIN_EXPIRES_HEADER) else 0
            if start:
                try:
                    return orjson.loads(data[start:])
                except orjson.JSONDecodeError as exc:
                    raise DecodeError(str(exc)) from None
        if (
            len(data) < BODY_START
            or data[:1] != MAGIC
            or data[1] not in READ_VERSIONS
            or data[2] & ~_KNOWN_FLAGS
        ):
            raise DecodeError("not a memo value of a known format version")
        flags = data[2]
        start = BODY_START_EXPIRES if flags & EXPIRES and data[1] == VERSION else BODY_START
        if flags & EXPIRES and data[1] != VERSION:
            raise DecodeError("a version 1 value never carried an expiry")
        body = data[start:]
        try:
            if flags & ZLIB:
                body = zlib.decompress(body)
            if body[-1:] != b"\n":
                raise DecodeError("truncated value")
            tree = orjson.loads(body)
            return tree if flags & PLAIN else self.from_tree(tree)
        except DecodeError:
            raise
        except Exception as exc:  # corrupt bytes must be a miss, whatever broke
            raise DecodeError(f"{type(exc).__name__}: {exc}") from None

    # -- LangGraph's SerializerProtocol shape ----------------------------------

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        """Return `("memo", bytes)`: the `dumps_typed` of LangGraph's serializers."""
        return "memo", self.encode(obj)

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        """Rebuild what `dumps_typed` wrote; raise `DecodeError` for anything else."""
        kind, payload = data
        if kind != "memo":
            raise DecodeError(f"not written by memo's codec (type {kind!r})")
        return self.decode(payload)

    # -- typed trees -----------------------------------------------------------

    def to_tree(self, value: Any) -> Any:
        """Return a JSON-able tree of `value` with its types tagged."""
        handler = _ENCODERS.get(type(value))
        if handler is not None:
            return handler(self, value)
        return self._object_to_tree(value)

    def _object_to_tree(self, value: Any) -> Any:
        cls = type(value)
        name = qualified_name(cls)
        if isinstance(value, enum.Enum):
            self.types.learn(cls)
            return {"\x00e": [name, self.to_tree(value.value)]}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            self.types.learn(cls)
            fields = {f.name: self.to_tree(getattr(value, f.name)) for f in dataclasses.fields(value)}
            return {"\x00c": [name, fields]}
        if isinstance(value, tuple) and hasattr(cls, "_fields"):
            self.types.learn(cls)
            return {"\x00n": [name, [self.to_tree(x) for x in value]]}
        if _is_model(cls):
            self.types.learn(cls)
            return {"\x00P": _enc_model(self, cls, name, value)}
        raise SerializationError(
            f"memo cannot store a {name}: the codec round-trips built-in values, datetimes, "
            "UUID, Decimal, enums, dataclasses, NamedTuples and pydantic models"
        )

    def from_tree(self, tree: Any) -> Any:
        """Rebuild the value a `to_tree` tree describes."""
        # Plain loops, and leaves kept as they are without a call: a third faster than
        # comprehensions recursing into every node (a cached session's tree: 2.7 -> 1.8 µs).
        t = type(tree)
        if t is list:
            items = []
            for x in tree:
                items.append(x if type(x) in _LEAVES else self.from_tree(x))
            return items
        if t is dict:
            if len(tree) == 1:
                for tag in tree:
                    if tag.startswith(_NUL):
                        return _DECODERS[tag](self, tree[tag])
            rebuilt = {}
            for k, v in tree.items():
                rebuilt[k] = v if type(v) in _LEAVES else self.from_tree(v)
            return rebuilt
        return tree

    def _class(self, name: str, kind: Callable[[type], bool]) -> Any:
        cls = self.types.get(name)
        if cls is None or not kind(cls):
            raise DecodeError(
                f"class {name} is not known to this codec; annotate the function's return type "
                "or call memo.register_type()"
            )
        return cls


def _enc_int(codec: Codec, v: int) -> Any:
    return v if _INT64_MIN <= v <= _UINT64_MAX else {"\x00i": str(v)}


def _enc_float(codec: Codec, v: float) -> Any:
    return v if v - v == 0.0 else {"\x00f": repr(v)}


def _utf8(v: str) -> bool:
    """Return whether JSON can hold `v` (no lone surrogate, as os.fsdecode makes)."""
    if v.isascii():
        return True
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _enc_str(codec: Codec, v: str) -> Any:
    return v if _utf8(v) else {"\x00U": _bytes_text(v.encode("utf-8", "surrogatepass"))}


def _enc_dict(codec: Codec, v: dict[Any, Any]) -> Any:
    if all(type(k) is str and not k.startswith(_NUL) and _utf8(k) for k in v):
        return {k: codec.to_tree(x) for k, x in v.items()}
    return {"\x00d": [[codec.to_tree(k), codec.to_tree(x)] for k, x in v.items()]}


def _enc_clock(v: _dt.datetime | _dt.time, short: str, full: str) -> Any:
    # ISO 8601 keeps a fixed offset only: a ZoneInfo (by its key), a named fixed zone and
    # `fold` need the long form. Plain and UTC times keep the short one.
    tz = v.tzinfo
    if not v.fold and (tz is None or tz is _dt.timezone.utc or (type(tz) is _dt.timezone and _unnamed(tz))):
        return {short: v.isoformat()}
    return {full: [v.replace(tzinfo=None).isoformat(), v.fold, _enc_zone(tz)]}


def _unnamed(tz: _dt.timezone) -> bool:
    # ISO 8601 text keeps a whole-minute offset exactly; fromisoformat() misreads sub-second ones.
    offset = tz.utcoffset(None)
    return (
        offset.seconds % 60 == 0
        and not offset.microseconds
        and tz.tzname(None) == _dt.timezone(offset).tzname(None)
    )


def _enc_zone(tz: _dt.tzinfo | None) -> Any:
    if tz is None:
        return None
    if type(tz) is _dt.timezone:
        offset = tz.utcoffset(None)
        name = tz.tzname(None)
        default = name == _dt.timezone(offset).tzname(None)
        return ["tz", offset.days, offset.seconds, offset.microseconds, None if default else name]
    if type(tz) is zoneinfo.ZoneInfo and tz.key is not None:
        return ["zi", tz.key]
    raise SerializationError(
        f"memo stores time zones of type datetime.timezone and zoneinfo.ZoneInfo (with a key), "
        f"not {qualified_name(type(tz))}"
    )


def _dec_zone(spec: Any) -> _dt.tzinfo | None:
    if spec is None:
        return None
    if spec[0] == "zi":
        return zoneinfo.ZoneInfo(spec[1])
    if spec[0] == "tz":
        offset = _dt.timedelta(days=spec[1], seconds=spec[2], microseconds=spec[3])
        return _dt.timezone(offset) if spec[4] is None else _dt.timezone(offset, spec[4])
    raise DecodeError(f"unknown time zone form {spec[0]!r}")


def _dec_clock(kind: Any, payload: Any) -> Any:
    text, fold, zone = payload
    return kind.fromisoformat(text).replace(tzinfo=_dec_zone(zone), fold=fold)


def _bytes_text(v: bytes) -> str:
    return base64.b64encode(v).decode("ascii")


_ENCODERS: dict[type, Callable[[Codec, Any], Any]] = {
    str: _enc_str,
    bool: lambda c, v: v,
    type(None): lambda c, v: v,
    int: _enc_int,
    float: _enc_float,
    list: lambda c, v: [c.to_tree(x) for x in v],
    dict: _enc_dict,
    tuple: lambda c, v: {"\x00t": [c.to_tree(x) for x in v]},
    set: lambda c, v: {"\x00s": [c.to_tree(x) for x in v]},
    frozenset: lambda c, v: {"\x00S": [c.to_tree(x) for x in v]},
    bytes: lambda c, v: {"\x00b": _bytes_text(v)},
    bytearray: lambda c, v: {"\x00B": _bytes_text(v)},
    _dt.datetime: lambda c, v: _enc_clock(v, "\x00T", "\x00Z"),
    _dt.date: lambda c, v: {"\x00D": v.isoformat()},
    _dt.time: lambda c, v: _enc_clock(v, "\x00h", "\x00H"),
    _dt.timedelta: lambda c, v: {"\x00r": [v.days, v.seconds, v.microseconds]},
    uuid.UUID: lambda c, v: {"\x00u": v.hex},
    Decimal: lambda c, v: {"\x00x": str(v)},
    complex: lambda c, v: {"\x00j": [_enc_float(c, v.real), _enc_float(c, v.imag)]},
    # LangGraph stores a node's writes as a deque; its maxlen is not kept.
    collections.deque: lambda c, v: {"\x00q": [c.to_tree(x) for x in v]},
}


def _dec_dataclass(codec: Codec, payload: Any) -> Any:
    # Rebuilt as stored, without running __init__ or __post_init__ again: they already ran
    # on the values when the result was made (object.__setattr__ also sets frozen and slots).
    name, fields = payload
    cls = codec._class(name, dataclasses.is_dataclass)
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in dataclasses.fields(cls))
    if fields.keys() != names:
        raise DecodeError(f"the fields of {name} changed since this value was stored")
    obj = object.__new__(cls)
    for k, v in fields.items():
        object.__setattr__(obj, k, codec.from_tree(v))
    return obj


_FIELD_NAMES: dict[type, frozenset[str]] = {}


def _dec_named(codec: Codec, payload: Any) -> Any:
    name, items = payload
    cls = codec._class(name, lambda c: issubclass(c, tuple) and hasattr(c, "_fields"))
    return tuple.__new__(cls, [codec.from_tree(x) for x in items])


def _dec_enum(codec: Codec, payload: Any) -> Any:
    name, value = payload
    return codec._class(name, lambda c: issubclass(c, enum.Enum))(codec.from_tree(value))


def _enc_model(codec: Codec, cls: Any, name: str, value: Any) -> Any:
    # Field by field, like a dataclass: model_dump() would turn a field holding a subclass
    # into its declared class and drop exclude=True fields, and validation would run again.
    fields = {k: codec.to_tree(getattr(value, k)) for k in cls.__pydantic_fields__}
    extra = getattr(value, "__pydantic_extra__", None)
    private = getattr(value, "__pydantic_private__", None)
    return [
        name,
        fields,
        None if extra is None else codec.to_tree(extra),
        sorted(value.__pydantic_fields_set__),
        None if private is None else codec.to_tree(private),
    ]


def _dec_model(codec: Codec, payload: Any) -> Any:
    # Rebuilt as model_construct() does, without validators or model_post_init running again.
    name, fields, extra, fields_set, private = payload
    cls = codec._class(name, _is_model)
    values = codec.from_tree(fields)
    if values.keys() != cls.__pydantic_fields__.keys():
        raise DecodeError(f"the fields of {name} changed since this value was stored")
    obj = cls.__new__(cls)
    object.__setattr__(obj, "__dict__", values)
    object.__setattr__(obj, "__pydantic_fields_set__", set(fields_set))
    if not cls.__pydantic_root_model__:
        object.__setattr__(obj, "__pydantic_extra__", None if extra is None else codec.from_tree(extra))
        object.__setattr__(obj, "__pydantic_private__", None if private is None else codec.from_tree(private))
    return obj


def _dec_float(codec: Codec, payload: str) -> float:
    if payload not in ("nan", "inf", "-inf"):
        raise DecodeError(f"not a non-finite float: {payload!r}")
    return float(payload)


_DECODERS: dict[str, Callable[[Codec, Any], Any]] = {
    "\x00i": lambda c, p: int(p),
    "\x00f": _dec_float,
    "\x00d": lambda c, p: {c.from_tree(k): c.from_tree(v) for k, v in p},
    "\x00t": lambda c, p: tuple(c.from_tree(x) for x in p),
    "\x00q": lambda c, p: collections.deque(c.from_tree(x) for x in p),
    "\x00s": lambda c, p: {c.from_tree(x) for x in p},
    "\x00S": lambda c, p: frozenset(c.from_tree(x) for x in p),
    "\x00b": lambda c, p: base64.b64decode(p, validate=True),
    "\x00U": lambda c, p: base64.b64decode(p, validate=True).decode("utf-8", "surrogatepass"),
    "\x00B": lambda c, p: bytearray(base64.b64decode(p, validate=True)),
    "\x00T": lambda c, p: _dt.datetime.fromisoformat(p),
    "\x00Z": lambda c, p: _dec_clock(_dt.datetime, p),
    "\x00D": lambda c, p: _dt.date.fromisoformat(p),
    "\x00h": lambda c, p: _dt.time.fromisoformat(p),
    "\x00H": lambda c, p: _dec_clock(_dt.time, p),
    "\x00r": lambda c, p: _dt.timedelta(days=p[0], seconds=p[1], microseconds=p[2]),
    "\x00u": lambda c, p: uuid.UUID(hex=p),
    "\x00x": lambda c, p: Decimal(p),
    "\x00j": lambda c, p: complex(c.from_tree(p[0]), c.from_tree(p[1])),
    "\x00e": _dec_enum,
    "\x00c": _dec_dataclass,
    "\x00n": _dec_named,
    "\x00P": _dec_model,
}


class Header(NamedTuple):
    """What the header of stored bytes says (see the wire format above)."""

    version: int
    flags: int
    #: The exact expiry, Unix time in ms; None when none is stored (or its bytes are cut short).
    expires_ms: int | None
    #: Where the body starts: `BODY_START`, or `BODY_START_EXPIRES` for a version 2 `EXPIRES`.
    body_start: int


def read_header(data: bytes) -> Header | None:
    """Return the header of stored bytes, or None when they are not memo's (no magic, too short).

    Of a version this reader does not know (not in `READ_VERSIONS`), only `version`
    and `flags` mean anything. Pure; the body is not looked at.
    """
    if len(data) < BODY_START or data[:1] != MAGIC:
        return None
    version, flags = data[1], data[2]
    if flags & EXPIRES and version == VERSION:
        whole = len(data) >= BODY_START_EXPIRES
        expires = int.from_bytes(data[BODY_START:BODY_START_EXPIRES], "big") if whole else None
        return Header(version, flags, expires, BODY_START_EXPIRES)
    return Header(version, flags, None, BODY_START)


def with_expiry(data: bytes, expires_ms: int | None) -> bytes | None:
    """Return a value's bytes with a new exact expiry (Unix ms; None: none), body and flags kept.

    None when `data` is not a value of the current version (a lease marker, another
    version, unknown flags, an expiry cut short). Pure.
    """
    header = read_header(data)
    if (
        header is None
        or header.version != VERSION
        or header.flags & ~_KNOWN_FLAGS
        or (header.flags & EXPIRES and header.expires_ms is None)
    ):
        return None
    flags, body = header.flags & ~EXPIRES, data[header.body_start :]
    if expires_ms is None:
        return MAGIC + bytes([VERSION, flags]) + body
    return MAGIC + bytes([VERSION, flags | EXPIRES]) + expires_ms.to_bytes(8, "big") + body


def expires_ms(data: bytes) -> int | None:
    """Return the exact expiry (Unix time in ms) stored in a value's header, if any."""
    if len(data) >= BODY_START_EXPIRES and data[1] == VERSION and data[2] & EXPIRES and data[:1] == MAGIC:
        return int.from_bytes(data[BODY_START:BODY_START_EXPIRES], "big")
    return None


def lease_marker(token: str) -> bytes:
    """Return the bytes of a lease marker owned by `token` (never decodes as a value)."""
    return LEASE_HEADER + token.encode("ascii") + b"\n"


def is_lease(data: bytes) -> bool:
    """Tell whether stored bytes are a lease marker rather than a value."""
    return data.startswith(LEASE_HEADER)


def is_placeholder(data: bytes) -> bool:
    """Whether stored bytes only hold a key's place: a lease marker, or an empty item (the
    placeholder of a lease memcached granted with `mg … N`, read with a classic `get`,
    which shows no flags). memo never stores an empty value: a miss, never a decode error."""
    return not data or data.startswith(LEASE_HEADER)


#: What a backend's read returns for a key whose lease another caller took with the
#: server's own lease (memcached's meta `mg … N`: an empty item flagged `Z`): a lease
#: marker owned by nobody in particular, so every reader treats it as one.
NATIVE_LEASE = lease_marker("native")


class Won(bytes):
    """A leased read's answer to the caller that took the key's lease (meta `W`).

    Its bytes are `NATIVE_LEASE`, so code that reads it as stored bytes sees a
    lease marker (a miss, never a value); `unique` is the cas of the placeholder
    the server created, which the value's store (`cas`) and the lease's release
    compare against.
    """

    unique: int

    def __new__(cls, unique: int) -> Won:
        won = super().__new__(cls, NATIVE_LEASE)
        won.unique = unique
        return won

    def __repr__(self) -> str:
        return f"Won({self.unique})"
