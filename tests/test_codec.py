"""The typed codec and the wire format. Pure: no backend."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
import zlib
from decimal import Decimal
from typing import Any, NamedTuple

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import memo
from memo import Codec, DecodeError
from memo._codec import TypeRegistry, expires_ms, is_lease, lease_marker


class Role(enum.Enum):
    ADMIN = "admin"
    USER = "user"


@dataclasses.dataclass
class Address:
    city: str
    zip: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Person:
    name: str
    born: dt.date
    role: Role
    address: Address | None = None
    tags: frozenset[str] = frozenset()
    computed: int = dataclasses.field(init=False, default=0)


class Pt(NamedTuple):
    x: int
    y: float


class Model(pydantic.BaseModel):
    id: int
    raw: bytes
    when: dt.datetime
    pair: tuple[int, str]
    nested: list[Pt] = []


def roundtrip(value: Any, codec: Codec | None = None) -> Any:
    codec = codec or Codec(TypeRegistry([Person, Pt, Model]))
    return codec.decode(codec.encode(value))


def same(a: Any, b: Any) -> bool:
    """Equal and of the same type, all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and a != a:
        return b != b
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(
            same(k1, k2) and same(a[k1], b[k2]) for k1, k2 in zip(a, b, strict=True)
        )
    return bool(a == b)


CASES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    2**64 - 1,
    2**64,
    -(2**63) - 1,
    10**40,
    1.5,
    -0.0,
    float("inf"),
    float("-inf"),
    "",
    "text",
    "ünï\x00code",
    b"",
    b"\x00\xff",
    bytearray(b"ab"),
    [],
    [1, "a", None],
    (),
    (1, (2, [3])),
    {"a": 1},
    {1: "a", "1": "b"},
    {(1, 2): {3}},
    {"\x00t": [1]},
    {"\x00": 1, "b": 2},
    set(),
    {1, 2},
    frozenset({"a"}),
    dt.datetime(2024, 1, 2, 3, 4, 5, 6),
    dt.datetime(2024, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=5))),
    dt.date(2024, 2, 29),
    dt.time(23, 59, 59, 999999),
    dt.timedelta(days=-1, seconds=5, microseconds=7),
    uuid.UUID(int=12345),
    Decimal("1.10"),
    Decimal("-0"),
    complex(1, -2),
    Role.ADMIN,
    Pt(1, 2.5),
    [Pt(0, 0.0)],
    Person("ann", dt.date(1990, 1, 1), Role.USER, Address("x", (1, 2)), frozenset({"t"})),
    Model(
        id=1,
        raw=b"\xff",
        when=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
        pair=(1, "a"),
        nested=[Pt(1, 2.0)],
    ),
]


@pytest.mark.parametrize("value", CASES, ids=lambda v: type(v).__name__)
def test_values_come_back_with_their_types(value: Any) -> None:
    assert same(roundtrip(value), value)


def test_nan_round_trips() -> None:
    out = roundtrip(float("nan"))
    assert isinstance(out, float) and out != out


def test_plain_json_values_are_flagged_for_the_fast_path() -> None:
    data = Codec().encode({"a": [1, 2.5, None, "x"]})
    assert data[:3] == b"m\x02\x01"
    assert Codec().encode((1,))[2] & 1 == 0


def test_a_cached_none_is_a_value_not_a_miss() -> None:
    codec = Codec()
    assert codec.encode(None) != b""
    assert codec.decode(codec.encode(None)) is None


def test_large_values_are_compressed_and_small_ones_are_not() -> None:
    codec = Codec(compress_threshold=1000)
    big = {"k": "x" * 50_000}
    data = codec.encode(big)
    assert data[2] & 2 and len(data) < 5_000
    assert codec.decode(data) == big
    assert not codec.encode("x" * 10)[2] & 2
    assert not Codec(compress_threshold=None).encode(big)[2] & 2


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"m",
        b"m\x01",
        b"m\x01\x01[1]",
        b"m\x01\x0112\n3\n",
        b"\x00\x01\x01[]",
        b"m\x03\x01[1]\n",
        b"m\x01\x80[1]",
        b"m\x01\x05\x00\x00\x00\x00[1]\n",
        b"m\x02\x05\x00\x00[1]\n",
        b"m\x02\x08tok\n",
        b"m\x01\x01[1",
        b'm\x01\x00{"\\u0000zz": 1}',
        b'm\x01\x00{"\\u0000t": 5}',
        b"m\x01\x02notzlib",
        b'm\x01\x00{"\\u0000c": ["os.system", {}]}',
        b'm\x01\x00{"\\u0000f": "1e999x"}',
        b"\x80\x04\x95pickle",
        b'{"json": "from another writer"}',
        zlib.compress(b"m\x01\x01[1]"),
    ],
)
def test_undecodable_bytes_raise_decode_error_only(data: bytes) -> None:
    with pytest.raises(DecodeError):
        Codec().decode(data)


def test_every_truncation_of_every_value_is_a_decode_error() -> None:
    codec = Codec(TypeRegistry([Person, Pt, Model]), compress_threshold=64)
    for value in [*CASES, {"k": "x" * 500}]:
        data = codec.encode(value)
        for cut in range(len(data)):
            with pytest.raises(DecodeError):
                codec.decode(data[:cut])


def test_classes_are_rebuilt_only_from_the_registry() -> None:
    writer = Codec()
    data = writer.encode(Pt(1, 2.0))
    assert writer.decode(data) == Pt(1, 2.0)  # the writer learned the class it encoded
    with pytest.raises(DecodeError, match="register_type"):
        Codec().decode(data)
    assert Codec(TypeRegistry([Pt])).decode(data) == Pt(1, 2.0)


def test_register_type_allows_every_codec(monkeypatch: pytest.MonkeyPatch) -> None:
    from memo import _codec

    monkeypatch.setattr(_codec, "GLOBAL_TYPES", TypeRegistry())

    @dataclasses.dataclass
    class Local:
        v: int

    data = Codec(TypeRegistry([Local])).encode(Local(1))
    with pytest.raises(DecodeError):
        Codec(TypeRegistry(parent=_codec.GLOBAL_TYPES)).decode(data)
    memo.register_type(Local)
    assert Codec(TypeRegistry(parent=_codec.GLOBAL_TYPES)).decode(data) == Local(1)


def test_a_registered_name_of_the_wrong_kind_is_refused() -> None:
    data = Codec().encode(Role.ADMIN).replace(b"test_codec.Role", b"test_codec.Pt__")
    with pytest.raises(DecodeError):
        Codec(TypeRegistry([Pt, Role])).decode(data)


def test_annotations_register_nested_classes() -> None:
    registry = TypeRegistry()
    registry.add_annotation(list[Person] | None)
    data = Codec(TypeRegistry([Person])).encode(
        [Person("a", dt.date(2000, 1, 1), Role.ADMIN, Address("c", ()))]
    )
    out = Codec(registry).decode(data)
    assert isinstance(out[0].address, Address) and out[0].role is Role.ADMIN


@pytest.mark.parametrize(
    "value", [object(), lambda: 1, {"a": object()}, [1, {2: open}], type("X", (str,), {})("s")]
)
def test_unknown_types_are_a_serialization_error(value: Any) -> None:
    with pytest.raises(memo.SerializationError):
        Codec().encode(value)


def test_langgraph_shaped_methods() -> None:
    codec = Codec()
    kind, data = codec.dumps_typed({"a": (1, 2)})
    assert kind == "memo" and isinstance(data, bytes)
    assert codec.loads_typed((kind, data)) == {"a": (1, 2)}
    with pytest.raises(DecodeError):
        codec.loads_typed(("msgpack", data))


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text() | st.integers(), inner, max_size=4)
        | st.frozensets(st.integers() | st.text(), max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(value=json_like)
def test_property_round_trip_keeps_types(value: Any) -> None:
    assert same(roundtrip(value, Codec(compress_threshold=32)), value)


def test_exact_expiry_rides_in_the_header_and_every_truncation_is_a_miss() -> None:
    codec = Codec(TypeRegistry([Pt]), compress_threshold=64)
    for value in [{"a": 1}, (1, 2), Pt(1, 2), "y" * 500]:
        data = codec.encode(value, expires_ms=1_800_000_000_123)
        assert codec.decode(data) == value
        assert expires_ms(data) == 1_800_000_000_123
        for cut in range(len(data)):
            with pytest.raises(DecodeError):
                codec.decode(data[:cut])
    assert expires_ms(codec.encode({"a": 1})) is None


def test_a_lease_marker_is_never_a_value() -> None:
    marker = lease_marker("abc123")
    assert is_lease(marker)
    assert not is_lease(Codec().encode("abc123"))
    with pytest.raises(DecodeError):
        Codec().decode(marker)


def test_version_1_values_are_still_read() -> None:
    assert Codec().decode(b"m\x01\x01[1]\n") == [1]
    assert Codec().decode(b'm\x01\x00{"\\u0000t":[1]}\n') == (1,)
