"""Keys: binding, type-tagged canonical form, refusals, layout. Pure: no backend."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import PurePosixPath
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import memo
from memo._keys import Binder, KeyMaker, canonical, safe_segment

KEY_RE = re.compile(r"[!-~]{1,250}")  # printable ASCII, no whitespace or control characters


def keymaker(fn: Any, ns: str = "ns", **kw: Any) -> KeyMaker:
    return KeyMaker(
        ns,
        f"{fn.__module__}.{fn.__qualname__}",
        kw.pop("version", None),
        Binder(fn, kw.pop("ignore", ())),
        **kw,
    )


def f(user_id: int, *, full: bool = False) -> None: ...


def g(a: Any, b: Any = 2, /, c: Any = 3, *args: Any, d: Any, e: Any = 5, **kwargs: Any) -> None: ...


class TestBinding:
    def test_defaults_keywords_and_order_give_one_key(self) -> None:
        km = keymaker(f)
        assert km.digest((1,), {}) == km.digest((1,), {"full": False}) == km.digest((), {"user_id": 1})
        assert km.digest((), {"full": False, "user_id": 1}) == km.digest((), {"user_id": 1, "full": False})
        assert km.digest((1,), {"full": True}) != km.digest((1,), {})

    def test_complex_signature_binds_like_a_call(self) -> None:
        km = keymaker(g)
        assert km.digest((1,), {"d": 4}) == km.digest((1, 2, 3), {"d": 4, "e": 5})
        assert km.digest((1,), {"d": 4, "z": 1}) != km.digest((1,), {"d": 4, "z": 2})
        assert km.digest((1, 2, 3, 9), {"d": 4}) != km.digest((1, 2, 3), {"d": 4})
        assert km.digest((1,), {"d": 4, "x": 1, "y": 2}) == km.digest((1,), {"y": 2, "d": 4, "x": 1})

    @pytest.mark.parametrize(
        ("args", "kwargs"),
        [((), {}), ((1, 2), {}), ((1,), {"user_id": 1}), ((1,), {"nope": 1}), ((1, True), {})],
    )
    def test_wrong_calls_raise_the_same_type_error_as_calling(self, args: Any, kwargs: Any) -> None:
        with pytest.raises(TypeError) as expected:
            f(*args, **kwargs)
        with pytest.raises(TypeError) as got:
            keymaker(f).digest(args, kwargs)
        assert type(got.value) is type(expected.value)

    def test_positional_only_cannot_be_passed_by_keyword(self) -> None:
        with pytest.raises(TypeError):
            keymaker(g).digest((), {"a": 1, "d": 1})

    def test_ignore_leaves_a_parameter_out(self) -> None:
        def h(user_id: int, db: object) -> None: ...

        km = keymaker(h, ignore=("db",))
        assert km.digest((1, object()), {}) == km.digest((1, object()), {})
        assert km.digest((1, None), {}) != km.digest((2, None), {})

    def test_ignore_of_an_unknown_name_is_a_configuration_error(self) -> None:
        with pytest.raises(memo.ConfigurationError, match="nope"):
            Binder(f, ignore=("nope",))


class Color(enum.Enum):
    RED = 1


class Number(enum.IntEnum):
    ONE = 1


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


class Pair(NamedTuple):
    a: int
    b: int


class Plain:
    pass


class WithRepr:
    def __init__(self, v: int) -> None:
        self.v = v

    def __repr__(self) -> str:
        return f"WithRepr({self.v})"


class WithKey:
    def __init__(self, v: int) -> None:
        self.v = v

    def __cache_key__(self) -> Any:
        return ("v", self.v)


DISTINCT: list[Any] = [
    1,
    1.0,
    True,
    "1",
    b"1",
    bytearray(b"1"),
    None,
    0,
    0.0,
    False,
    "",
    b"",
    -0.0,
    (1, 2),
    [1, 2],
    {1: "a"},
    {"1": "a"},
    {1.0: "a"},
    {True: "a"},
    {1, 2},
    frozenset({1, 2}),
    [],
    (),
    {},
    set(),
    frozenset(),
    [[]],
    [()],
    ("a",),
    ["a"],
    {"a": None},
    {"a": ()},
    2**64,
    2**64 + 1,
    -(2**63) - 1,
    float("inf"),
    float("-inf"),
    float("nan"),
    dt.datetime(2024, 1, 1),
    dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
    dt.date(2024, 1, 1),
    dt.time(1, 2),
    dt.timedelta(1),
    uuid.UUID(int=1),
    Decimal("1"),
    Decimal("1.0"),
    Color.RED,
    Number.ONE,
    Point(1, 2),
    Pair(1, 2),
    PurePosixPath("/a"),
    "/a",
    WithRepr(1),
    WithKey(1),
    ("v", 1),
    complex(1, 0),
    Plain,
    Point,
    len,
]


class TestCanonicalForm:
    def test_values_of_different_types_never_share_a_key(self) -> None:
        km = keymaker(f)
        digests = [km.digest((v,), {}) for v in DISTINCT]
        assert len(set(digests)) == len(DISTINCT)

    def test_containers_are_keyed_by_value_not_order(self) -> None:
        km = keymaker(f)
        a = {"x": 1, "y": [1, {2: "b", 1: "a"}]}
        b = {"y": [1, {1: "a", 2: "b"}], "x": 1}
        assert km.digest((a,), {}) == km.digest((b,), {})
        assert km.digest(({3, 1, 2},), {}) == km.digest(({2, 3, 1},), {})
        assert km.digest(({1: "a", "1": "b"},), {}) == km.digest(({"1": "b", 1: "a"},), {})

    def test_equal_value_objects_share_a_key(self) -> None:
        km = keymaker(f)
        assert km.digest((Point(1, 2),), {}) == km.digest((Point(1, 2),), {})
        assert km.digest((WithKey(3),), {}) == km.digest((WithKey(3),), {})
        assert km.digest((uuid.UUID(int=5),), {}) == km.digest((uuid.UUID(int=5),), {})

    def test_pydantic_models_are_keyed_by_value(self) -> None:
        pydantic = pytest.importorskip("pydantic")

        class User(pydantic.BaseModel):
            id: int
            tags: list[str]

        km = keymaker(f)
        assert km.digest((User(id=1, tags=["a"]),), {}) == km.digest((User(id=1, tags=["a"]),), {})
        assert km.digest((User(id=1, tags=["a"]),), {}) != km.digest((User(id=2, tags=["a"]),), {})
        assert km.digest((User(id=1, tags=["a"]),), {}) != km.digest(({"id": 1, "tags": ["a"]},), {})

    def test_an_address_only_object_is_refused_with_the_parameter_and_the_fixes(self) -> None:
        km = keymaker(f)
        with pytest.raises(memo.UnkeyableArgumentError) as err:
            km.digest((), {"user_id": 1, "full": Plain()})
        message = str(err.value)
        assert (
            "'full'" in message and "ignore=" in message and "key=" in message and "__cache_key__" in message
        )
        assert isinstance(err.value, TypeError)

    def test_an_unkeyable_object_nested_in_a_container_is_refused(self) -> None:
        with pytest.raises(memo.UnkeyableArgumentError, match="user_id"):
            keymaker(f).digest(([1, {"a": Plain()}],), {})

    def test_lambdas_are_refused(self) -> None:
        with pytest.raises(memo.UnkeyableArgumentError):
            keymaker(f).digest((lambda: 1,), {})

    def test_key_callable_replaces_the_arguments(self) -> None:
        def h(user: Any, db: Any) -> None: ...

        km = keymaker(h, key=lambda user, db: user["id"])
        assert km.digest(({"id": 1, "name": "a"}, Plain()), {}) == km.digest(({"id": 1}, Plain()), {})
        assert km.digest(({"id": 1},), {"db": None}) != km.digest(({"id": 2},), {"db": None})


class TestLayout:
    def test_functions_namespaces_and_versions_never_collide(self) -> None:
        def a(x: int) -> None: ...

        def b(x: int) -> None: ...

        digests = {
            keymaker(a).digest((1,), {}),
            keymaker(b).digest((1,), {}),
            keymaker(a, ns="other").digest((1,), {}),
            keymaker(a, version=2).digest((1,), {}),
        }
        assert len(digests) == 4

    @pytest.mark.parametrize(
        "ns", ["users", "with space", "tab\there", "ünïcødé", "x" * 500, "a:b", "\x00\x01", "", "%20"]
    )
    def test_any_namespace_gives_a_valid_readable_key(self, ns: str) -> None:
        cache = memo.Cache("memory://", prefix="app:")

        @cache.cached(ns=ns)
        def a_function_with_a_rather_long_name_that_goes_on_and_on_and_on_and_on_and_on(x: Any) -> Any:
            return x

        key = a_function_with_a_rather_long_name_that_goes_on_and_on_and_on_and_on_and_on.key_for("y" * 1000)
        assert KEY_RE.fullmatch(key), key
        assert key.startswith("app:")
        assert len(key.encode()) <= 250

    def test_sanitised_namespaces_that_look_alike_stay_apart(self) -> None:
        assert safe_segment("a b", 48) == safe_segment("a_b", 48)
        cache = memo.Cache("memory://")
        calls: list[str] = []

        def make(ns: str) -> Any:
            @cache.cached(ns=ns)
            def fn(x: int) -> str:
                calls.append(ns)
                return ns

            return fn

        spaced, underscored = make("a b"), make("a_b")
        assert spaced.key_for(1) != underscored.key_for(1)
        assert (spaced(1), underscored(1)) == ("a b", "a_b")

    def test_keys_are_stable_across_processes(self) -> None:
        code = (
            "import memo\n"
            "c = memo.Cache('memory://')\n"
            "@c.cached(ns='n')\n"
            "def f(x, y=2): pass\n"
            "f.__module__ = 'tests.fixed'\n"
            "print(f.key_for((1, 'a'), y={'k': 1.5}).rsplit(':', 1)[1])\n"
        )
        runs = {
            subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                check=True,
                env={"PYTHONHASHSEED": str(seed)},
            ).stdout
            for seed in (1, 2)
        }
        assert len(runs) == 1 and len(runs.pop().strip()) == 32


# -- properties ---------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=5)
    | st.binary(max_size=5)
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.uuids()
)
hashable = st.recursive(
    scalars, lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3), max_leaves=6
)
values = st.recursive(
    hashable,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(hashable, inner, max_size=3) | st.tuples(inner)
    ),
    max_leaves=10,
)


def _identity(value: Any) -> Any:
    """An independent statement of what "the same argument" means: type and value, recursively."""
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_identity(v) for v in value))
    if isinstance(value, dict):
        return ("dict", frozenset((_identity(k), _identity(v)) for k, v in value.items()))
    if isinstance(value, frozenset):
        return ("frozenset", frozenset(_identity(v) for v in value))
    if isinstance(value, float):
        return ("float", repr(value))
    if isinstance(value, Decimal):
        return ("Decimal", str(value))
    return (type(value).__name__, value)


@settings(max_examples=300, deadline=None)
@given(a=values, b=values)
def test_distinct_arguments_give_distinct_keys(a: Any, b: Any) -> None:
    km = keymaker(f)
    same_identity = _identity(a) == _identity(b)
    assert (km.digest((a,), {}) == km.digest((b,), {})) == same_identity


@settings(max_examples=200, deadline=None)
@given(value=values, full=st.booleans())
def test_equivalent_bindings_give_the_same_key(value: Any, full: bool) -> None:
    km = keymaker(f)
    expected = km.digest((value,), {"full": full})
    assert km.digest((), {"full": full, "user_id": value}) == expected
    assert km.digest((), {"user_id": value, "full": full}) == expected
    if not full:
        assert km.digest((value,), {}) == expected


@given(value=values)
def test_canonical_form_is_json_serialisable(value: Any) -> None:
    import orjson

    orjson.dumps(canonical(value))
