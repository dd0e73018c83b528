"""Keys: binding, type-tagged canonical form, refusals, layout. Pure: no backend."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import enum
import functools
import math
import os
import re
import subprocess
import sys
import uuid
import zoneinfo
from decimal import Decimal
from pathlib import PurePosixPath
from typing import Any, NamedTuple

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import memo
from memo._binding import Binder
from memo._canonical import canonical
from memo._keys import KeyMaker, safe_segment

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


class User(pydantic.BaseModel):
    id: int
    tags: list[str]


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
        "ns", ["users", "with space", "tab\there", "ünïcødé", "x" * 500, "a:b", "\x01\x02", "", "%20"]
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

    def test_a_namespace_with_a_nul_character_is_refused(self) -> None:
        cache = memo.Cache("memory://")
        with pytest.raises(memo.ConfigurationError, match="NUL"):
            cache.cached(ns="a\x00b")(lambda x: x)
        with pytest.raises(memo.ConfigurationError, match="NUL"):
            cache.clear("a\x00b")

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


class Elementwise:
    """What numpy's `a == b` returns: truth has no meaning."""

    def __bool__(self) -> bool:
        raise ValueError("the truth value of an array is ambiguous")


class Matrix:
    """numpy-like: elementwise __eq__ and a summarising repr."""

    def __init__(self, *data: int) -> None:
        self.data = data

    def __eq__(self, other: object) -> Any:
        return Elementwise()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Matrix([{self.data[0]}, ..., {self.data[-1]}])"


class SubMatrix(Matrix):
    pass


class Animal(pydantic.BaseModel):
    name: str


class Cat(Animal):
    pass


class Dog(Animal):
    pass


class Owner(pydantic.BaseModel):
    pet: Animal
    note: str = pydantic.Field(default="", exclude=True)


class Level(enum.IntEnum):
    ONE = 1


class Rank(enum.IntEnum):
    ONE = 1


class Tagged(str):
    pass


def module_function(x: int) -> int:
    return x


@pytest.fixture
def key_types() -> Any:
    """Undo every register_key_type of a test."""
    from memo import _canonical

    saved = dict(_canonical._CANON), dict(_canonical._REGISTERED)
    yield
    _canonical._CANON.clear()
    _canonical._CANON.update(saved[0])
    _canonical._REGISTERED.clear()
    _canonical._REGISTERED.update(saved[1])


def refused(value: Any) -> str:
    with pytest.raises(memo.UnkeyableArgumentError) as err:
        keymaker(f).digest((value,), {})
    message = str(err.value)
    for fix in ("'user_id'", "__cache_key__", "ignore=", "key=", "memo.register_key_type"):
        assert fix in message, (fix, message)
    return message


def digest(value: Any) -> str:
    return keymaker(f).digest((value,), {})


class TestClosedWorld:
    def test_a_repr_is_never_a_key(self) -> None:
        refused(WithRepr(1))
        refused(Matrix(1, 2, 3))
        refused(memoryview(b"abc"))
        refused(pydantic.SecretStr("token-of-ann"))
        refused([{"k": pydantic.SecretStr("token-of-bob")}])

    def test_register_key_type_keys_a_class_one_does_not_own(self, key_types: Any) -> None:
        memo.register_key_type(Matrix, lambda m: m.data)
        assert digest(Matrix(1, 2, 3)) == digest(Matrix(1, 2, 3))
        assert digest(Matrix(1, 2, 3)) != digest(Matrix(1, 5, 3)) != digest((1, 5, 3))
        assert digest([Matrix(1)]) != digest([Matrix(2)])
        refused(SubMatrix(1, 2, 3))  # a subclass may hold more than its base: its own registration

    def test_register_key_type_refuses_what_it_cannot_name(self, key_types: Any) -> None:
        class Local:
            pass

        with pytest.raises(memo.ConfigurationError):
            memo.register_key_type(Local, lambda v: 1)
        with pytest.raises(memo.ConfigurationError):
            memo.register_key_type(int, lambda v: 1)
        with pytest.raises(memo.ConfigurationError):
            memo.register_key_type(Matrix, "not callable")  # type: ignore[arg-type]

    def test_numpy_arrays_need_a_registration(self, key_types: Any) -> None:
        np = pytest.importorskip("numpy")
        a, b = np.arange(2000), np.arange(2000)
        b[1000] = -1
        refused(a)
        memo.register_key_type(np.ndarray, lambda v: (str(v.dtype), v.shape, v.tobytes()))
        assert digest(a) != digest(b) and digest(a) == digest(np.arange(2000))

    def test_patterns_are_keyed_by_pattern_and_flags(self) -> None:
        long = "a" * 300
        assert digest(re.compile(long + "x")) != digest(re.compile(long + "y"))
        assert digest(re.compile("a")) == digest(re.compile("a"))
        assert digest(re.compile("a")) != digest(re.compile("a", re.I)) != digest(re.compile(b"a"))

    def test_ordered_dicts_keep_their_order(self) -> None:
        a = collections.OrderedDict([("x", 1), ("y", 2)])
        b = collections.OrderedDict([("y", 2), ("x", 1)])
        assert digest(a) != digest(b) and digest(a) != digest(dict(a))
        assert digest(a) == digest(collections.OrderedDict(a))

    def test_defaultdicts_keep_their_factory(self) -> None:
        assert digest(collections.defaultdict(list)) != digest(collections.defaultdict(int))

    def test_datetimes_keep_their_time_zone_by_name_and_their_fold(self) -> None:
        paris = dt.datetime(2024, 3, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
        fixed = dt.datetime(2024, 3, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=1)))
        berlin = dt.datetime(2024, 3, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Berlin"))
        assert paris == fixed == berlin
        assert len({digest(paris), digest(fixed), digest(berlin)}) == 3
        assert digest(paris) == digest(dt.datetime(2024, 3, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")))
        naive = dt.datetime(2024, 11, 3, 1, 30)
        assert digest(naive) != digest(naive.replace(fold=1))
        assert digest(dt.time(1, 30)) != digest(dt.time(1, 30, fold=1))

    def test_pydantic_models_keep_nested_classes_and_excluded_fields(self) -> None:
        assert digest(Owner(pet=Cat(name="x"))) != digest(Owner(pet=Dog(name="x")))
        assert digest(Owner(pet=Cat(name="x"), note="a")) != digest(Owner(pet=Cat(name="x"), note="b"))
        assert digest(Owner(pet=Cat(name="x"))) == digest(Owner(pet=Cat(name="x")))

    def test_enums_are_keyed_by_class_and_value(self) -> None:
        assert len({digest(Level.ONE), digest(Rank.ONE), digest(1)}) == 3

    def test_subclasses_of_built_ins_keep_their_class_and_state(self) -> None:
        a, b = Tagged("x"), Tagged("x")
        b.extra = 1  # type: ignore[attr-defined]
        assert len({digest("x"), digest(a), digest(b)}) == 3

    def test_functions_and_classes_as_arguments(self) -> None:
        assert digest(module_function) == digest(module_function) != digest(len)
        assert digest(math.sqrt) != digest(math.floor)
        assert digest(str.upper) != digest(str.lower)
        assert digest(Point) != digest(Pair)

        def factory(n: int) -> Any:
            def add(x: int) -> int:
                return x + n

            return add

        for fn in (factory(1), lambda: 1):
            with pytest.raises(memo.UnkeyableArgumentError, match=r"module level.*ignore=.*key="):
                digest(fn)

    def test_bound_methods_are_keyed_by_instance_and_function(self) -> None:
        assert digest({"k": 1}.get) != digest({"k": 2}.get)
        assert digest({"k": 1}.get) == digest({"k": 1}.get) != digest({"k": 1}.keys)
        assert digest(WithKey(1).__cache_key__) != digest(WithKey(2).__cache_key__)
        refused(Plain().__init__)
        refused(WithRepr(1).__repr__)

    def test_partials_are_keyed_by_function_and_arguments(self) -> None:
        p1, p2 = functools.partial(module_function, 1), functools.partial(module_function, 2)
        assert digest(p1) != digest(p2) and digest(p1) == digest(functools.partial(module_function, 1))
        refused(functools.partial(module_function, Plain()))

    def test_local_classes_are_keyed_as_themselves(self) -> None:
        def factory() -> Any:
            @dataclasses.dataclass
            class Local:
                x: int

            return Local

        one, two = factory(), factory()
        assert one.__qualname__ == two.__qualname__
        assert digest(one(1)) != digest(two(1)) and digest(one(1)) == digest(one(1))
        assert digest(one) != digest(two)

    def test_lone_surrogates_are_keyed(self) -> None:
        name = os.fsdecode(b"caf\xe9")
        assert name != "café"
        assert digest(name) != digest("café") and digest(name) == digest(os.fsdecode(b"caf\xe9"))
        assert digest(PurePosixPath(name)) != digest(PurePosixPath("café"))
        for wrapped in ([name], {name: 1}, {1: name}, {name}, (name,)):
            assert digest(wrapped) == digest(wrapped)

    def test_arguments_with_elementwise_eq_are_bound(self, key_types: Any) -> None:
        with pytest.raises(memo.UnkeyableArgumentError, match="user_id"):
            keymaker(f).digest((Matrix(1),), {"full": True})
        memo.register_key_type(Matrix, lambda m: m.data)
        km = keymaker(f)
        assert km.digest((), {"user_id": Matrix(1), "full": True}) == km.digest((Matrix(1),), {"full": True})

    def test_self_referential_structures_are_refused(self) -> None:
        loop: list[Any] = []
        loop.append(loop)
        cycle: dict[str, Any] = {}
        cycle["self"] = cycle
        for value in (loop, cycle, [1, loop]):
            with pytest.raises(memo.UnkeyableArgumentError, match=r"user_id.*contains itself"):
                keymaker(f).digest((value,), {})

    def test_key_keeps_the_scope(self) -> None:
        def h(user: dict[str, Any], tenant: str) -> None: ...

        km = KeyMaker(
            "ns", "h", None, Binder(h, scope=lambda tenant: tenant), key=lambda user, tenant: user["id"]
        )
        assert km.digest(({"id": 1}, "a"), {}) != km.digest(({"id": 1}, "b"), {})
        assert km.digest(({"id": 1, "x": 2}, "a"), {}) == km.digest(({"id": 1}, "a"), {})


# -- properties ---------------------------------------------------------------------

_zones = st.none() | st.timezones() | st.just(dt.timezone(dt.timedelta(hours=1)))
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=5)
    | st.binary(max_size=5)
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.uuids()
    | st.sampled_from([Color.RED, Number.ONE, Level.ONE, Rank.ONE])
    | st.datetimes(timezones=_zones).map(lambda d: d.replace(fold=d.second % 2))
    | st.builds(Point, st.integers(0, 2), st.integers(0, 2))
    | st.builds(Pair, st.integers(0, 2), st.integers(0, 2))
)
hashable = st.recursive(
    scalars, lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3), max_leaves=6
)
values = st.recursive(
    hashable,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(hashable, inner, max_size=3)
        | st.tuples(inner)
        | st.lists(st.tuples(st.text(max_size=2), inner), max_size=3).map(collections.OrderedDict)
        | st.builds(
            Owner,
            pet=st.sampled_from([Cat, Dog]).flatmap(lambda c: st.builds(c, name=st.text(max_size=2))),
            note=st.text(max_size=2),
        )
    ),
    max_leaves=10,
)


def _identity(value: Any) -> Any:
    """An independent statement of what "the same argument" means: type and value, recursively."""
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_identity(v) for v in value))
    if isinstance(value, collections.OrderedDict):
        return ("OrderedDict", tuple((_identity(k), _identity(v)) for k, v in value.items()))
    if isinstance(value, dict):
        return ("dict", frozenset((_identity(k), _identity(v)) for k, v in value.items()))
    if isinstance(value, frozenset):
        return ("frozenset", frozenset(_identity(v) for v in value))
    if isinstance(value, float):
        return ("float", repr(value))
    if isinstance(value, Decimal):
        return ("Decimal", str(value))
    if isinstance(value, dt.datetime):
        zone = value.tzinfo
        return ("datetime", value.replace(tzinfo=None), value.fold, getattr(zone, "key", None) or repr(zone))
    if isinstance(value, pydantic.BaseModel):
        return (
            type(value).__name__,
            tuple((n, _identity(getattr(value, n))) for n in type(value).model_fields),
        )
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


# -- remembered digests ------------------------------------------------------------------------


def _fresh_digest(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The digest computed from scratch (a new KeyMaker remembers nothing)."""
    return keymaker(fn)._compute(args, kwargs)


@settings(max_examples=200, deadline=None)
@given(calls=st.lists(st.tuples(values, st.booleans()), min_size=1, max_size=12))
def test_remembered_digests_are_the_digests_computed(calls: list[tuple[Any, bool]]) -> None:
    # One KeyMaker sees every call twice, in order: the second time many come from what it
    # remembers, and each is exactly the digest of that call computed afresh.
    km = keymaker(f)
    for value, full in calls * 2:
        assert km.digest((value,), {"full": full}) == _fresh_digest(f, (value,), {"full": full})
        assert km.digest((value,), {}) == _fresh_digest(f, (value,), {})


def test_equal_arguments_of_other_types_are_not_taken_for_remembered_ones() -> None:
    km = keymaker(f)
    first = km.digest((1,), {})
    assert km._recent == {(1,): first}
    for other in (1.0, memo_int(1)):  # never remembered: -0.0 == 0.0, and a subclass keys its own way
        assert km.digest((other,), {}) == _fresh_digest(f, (other,), {}) != first
    assert km._recent == {(1,): first}
    for other in (True, 1):  # True == 1: remembered with the types of the arguments
        for _ in range(2):
            assert km.digest((other,), {}) == _fresh_digest(f, (other,), {})
            assert km.digest((), {"user_id": other}) == _fresh_digest(f, (other,), {})
            assert km.digest((1,), {"full": other}) == _fresh_digest(f, (1,), {"full": other})
    assert km.digest((True,), {}) != first and km.digest((1,), {"full": 1}) != km.digest((1,), {"full": True})
    assert len(km._recent) == 6


class memo_int(int):  # an int subclass users may pass
    pass


def test_only_calls_whose_arguments_make_the_digest_are_remembered() -> None:
    def scoped(user_id: int) -> int:
        return user_id

    tenant = ["a"]
    km = KeyMaker("ns", "scoped", None, Binder(scoped, scope=lambda user_id: tenant[0]))
    first = km.digest((1,), {})
    tenant[0] = "b"  # scope= may read more than the arguments: never remembered
    assert km.digest((1,), {}) != first and km._recent is None

    def listed(user_id: int, tags: list[str] = []) -> int:  # noqa: B006 (a default that can change)
        return user_id

    def flagged(user_id: int, full: bool = False, ratio: float = 0.5, name: str | None = None) -> int:
        return user_id

    assert keymaker(listed)._recent is None
    assert keymaker(flagged)._recent == {}
    assert keymaker(f, key=lambda user_id, full=False: user_id)._recent is None
    assert keymaker(f)._recent == {}


def test_remembered_digests_are_bounded() -> None:
    from memo._keys import RECENT_DIGESTS

    km = keymaker(f)
    for i in range(RECENT_DIGESTS * 3 + 5):
        assert km.digest((i,), {}) == _fresh_digest(f, (i,), {})
        assert len(km._recent) <= RECENT_DIGESTS
    assert len(km._recent) == 5 and (RECENT_DIGESTS * 3 + 4,) in km._recent
