"""Canonical forms: what identifies an argument's value, as a JSON tree. A closed world.

Pure: no I/O, no client imports.

`canonical(value)` turns a value into a JSON tree in which every type JSON
would blur is tagged: `1`, `1.0`, `True`, `"1"` and `b"1"` stay apart, so do
`(1, 2)` and `[1, 2]`, `{1: "a"}` and `{"1": "a"}`. The world is closed: only
the types listed here, classes registered with `register_key_type`, and
classes with a `__cache_key__()` method are keyed. Everything else is refused
(`Unkeyable`, re-raised by the key maker as `UnkeyableArgumentError` naming the
parameter): a `repr()` is never a key, because a repr may be cut (re.Pattern),
summarised (numpy arrays), masked (pydantic `SecretStr`) or an address.

Classes and functions are named by `module.qualname`, and only when importing
that name gives back the very same object. Two calls of one factory make two
functions or classes with one name: such a function passed as an argument is
refused, and such a class is keyed as that very object (`local_token`), so its
entries stay in the process. `__mp_main__` (a script's main module in a
`spawn` child) is named `__main__`, so a script and its workers share entries.

`function_identity(fn)` is the identity of a decorated function: its name, and
for lambdas, functions defined inside functions and functions of `__main__`,
what it computes: its code and the values it captured.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as _dt
import enum
import functools
import itertools
import logging
import os
import re
import sys
import types
import uuid
import weakref
import zoneinfo
from collections.abc import Callable, Iterable
from decimal import Decimal
from fractions import Fraction
from pathlib import PurePath
from typing import Any

import orjson

from ._errors import ConfigurationError, UnkeyableArgumentError

__all__ = [
    "Unkeyable",
    "canonical",
    "function_identity",
    "local_token",
    "module_name",
    "named",
    "qualified_name",
    "register_key_type",
    "unkeyable_error",
]

logger = logging.getLogger("memo")
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


def module_name(module: str) -> str:
    """Return the name a module has in every process (`__mp_main__` is `__main__`)."""
    return "__main__" if module == "__mp_main__" else module


def qualified_name(obj: Any) -> str:
    """Return `module.qualname` of a class or function (not proof that it identifies it)."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    return f"{module_name(module) if isinstance(module, str) else '?'}.{qualname or '?'}"


def named(obj: Any) -> str | None:
    """Return `module.qualname` if importing that name gives back `obj` itself, else None.

    A function or class found under its own name is identified by the name in any
    process running the same code. One defined inside a function, a lambda, or one
    replaced under its name since is not.
    """
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        return None
    found: Any = sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if found is obj or (found is not None and getattr(found, "__func__", None) is obj):
        return f"{module_name(module)}.{qualname}"
    return None


class Unkeyable(Exception):
    """Raised deep in `canonical`; the key maker re-raises it naming the parameter."""

    def __init__(self, value: Any, why: str) -> None:
        super().__init__(why)
        self.value = value
        self.why = why


def unkeyable_error(param: str, exc: Unkeyable) -> UnkeyableArgumentError:
    """Build the user-facing error for an argument that cannot be keyed."""
    cls = qualified_name(type(exc.value))
    if isinstance(exc.value, (types.FunctionType, types.MethodType, types.BuiltinFunctionType)):
        return UnkeyableArgumentError(
            f"cannot build a cache key from parameter {param!r}: {exc.why}. Fix it by passing a "
            f"function defined at module level, ignore=({param!r},) on the decorator, or a key= callable"
        )
    return UnkeyableArgumentError(
        f"cannot build a cache key from parameter {param!r}: {exc.why}. "
        f"Fix it with a __cache_key__() method on {cls} returning the values that identify it, "
        f"memo.register_key_type({cls}, fn) for a class you do not own, "
        f"ignore=({param!r},) on the decorator, or a key= callable"
    )


def class_name(cls: type) -> Any:
    """Return what identifies `cls` in a key: its name, or, for a class that cannot be
    found under its name (defined inside a function), the class object itself.

    Two classes made by two calls of one factory share a name, so such a class is
    keyed as that very object (`local_token`): its entries stay in this process.
    """
    return named(cls) or {"local": local_token(cls)}


# -- the closed world ---------------------------------------------------------------


def _text(value: str) -> Any:
    # orjson refuses lone surrogates (os.fsdecode of a non-UTF-8 file name): tag them.
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return {"sx": value.encode("utf-8", "surrogatepass").hex()}
    return value


def _sorted_items(items: Iterable[Any]) -> list[Any]:
    # Sort by canonical bytes: a total order for any mix of types.
    canon = [canonical(x) for x in items]
    canon.sort(key=orjson.dumps)
    return canon


def _pairs(value: Any) -> list[list[Any]]:
    return [[canonical(k), canonical(v)] for k, v in value.items()]


def _canon_dict(value: dict[Any, Any]) -> Any:
    if all(type(k) is str for k in value):
        return {"d": [[_text(k), canonical(value[k])] for k in sorted(value)]}
    pairs = _pairs(value)
    pairs.sort(key=lambda kv: orjson.dumps(kv[0]))
    return {"d": pairs}


def _canon_int(value: int) -> Any:
    return value if _INT64_MIN <= value <= _UINT64_MAX else {"I": str(value)}


def _canon_float(value: float) -> Any:
    # orjson writes nan and infinities as null: tag them so they never meet None.
    return value if value - value == 0.0 else {"F": repr(value)}


def _canon_datetime(value: _dt.datetime) -> Any:
    # The time zone by identity (a ZoneInfo by its key, not its offset of the day) and `fold`.
    tz = value.tzinfo
    if tz is None:
        return {"dt": [value.isoformat(), value.fold, None]}
    return {"dt": [value.replace(tzinfo=None).isoformat(), value.fold, canonical(tz)]}


def _canon_time(value: _dt.time) -> Any:
    tz = value.tzinfo
    if tz is None:
        return {"ti": [value.isoformat(), value.fold, None]}
    return {"ti": [value.replace(tzinfo=None).isoformat(), value.fold, canonical(tz)]}


def _canon_zoneinfo(value: zoneinfo.ZoneInfo) -> Any:
    if value.key is None:
        raise Unkeyable(value, "a ZoneInfo read from a file has no key that names it")
    return {"zi": value.key}


def _canon_timezone(value: _dt.timezone) -> Any:
    offset = value.utcoffset(None)
    return {"tz": [offset.days, offset.seconds, offset.microseconds, value.tzname(None)]}


def _canon_pattern(value: re.Pattern[Any]) -> Any:
    # re.compile is a pure function of (pattern, flags), and a Pattern keeps both whole.
    return {"re": [canonical(value.pattern), value.flags]}


def _canon_partial(value: functools.partial[Any]) -> Any:
    return {"pt": [canonical(value.func), [canonical(a) for a in value.args], _canon_dict(value.keywords)]}


_CANON: dict[type, Callable[[Any], Any]] = {
    str: _text,
    bool: lambda v: v,
    type(None): lambda v: v,
    int: _canon_int,
    float: _canon_float,
    bytes: lambda v: {"b": v.hex()},
    bytearray: lambda v: {"ba": v.hex()},
    list: lambda v: [canonical(x) for x in v],
    tuple: lambda v: {"t": [canonical(x) for x in v]},
    dict: _canon_dict,
    set: lambda v: {"s": _sorted_items(v)},
    frozenset: lambda v: {"fs": _sorted_items(v)},
    collections.OrderedDict: lambda v: {"od": _pairs(v)},
    collections.defaultdict: lambda v: {"dd": [canonical(v.default_factory), _canon_dict(v)]},
    collections.deque: lambda v: {"dq": [v.maxlen, [canonical(x) for x in v]]},
    range: lambda v: {"rg": [canonical(v.start), canonical(v.stop), canonical(v.step)]},
    _dt.datetime: _canon_datetime,
    _dt.date: lambda v: {"da": v.isoformat()},
    _dt.time: _canon_time,
    _dt.timedelta: lambda v: {"td": [v.days, v.seconds, v.microseconds]},
    _dt.timezone: _canon_timezone,
    zoneinfo.ZoneInfo: _canon_zoneinfo,
    uuid.UUID: lambda v: {"u": v.hex},
    Decimal: lambda v: {"D": str(v)},
    Fraction: lambda v: {"Q": [canonical(v.numerator), canonical(v.denominator)]},
    complex: lambda v: {"cx": [_canon_float(v.real), _canon_float(v.imag)]},
    re.Pattern: _canon_pattern,
    functools.partial: _canon_partial,
    type(Ellipsis): lambda v: {"E": 0},
}
#: The built-in value types, whose subclasses are keyed as the base plus their class.
_BUILTIN_VALUES = frozenset(_CANON)
#: Classes registered with `register_key_type`, by exact class.
_REGISTERED: dict[type, Callable[[Any], Any]] = {}


def register_key_type(cls: type, fn: Callable[[Any], Any]) -> None:
    """Let memo key arguments of class `cls` by `fn(value)`, a value memo can key.

    For classes one does not own; give one's own classes a `__cache_key__()`
    method instead. `fn` must return what identifies the value completely (for a
    numpy array: dtype, shape and bytes), because equal keys share an entry. Only
    instances of exactly `cls` use it; a subclass needs its own registration.

        memo.register_key_type(np.ndarray, lambda a: (str(a.dtype), a.shape, a.tobytes()))

    Raises:
        ConfigurationError: `cls` is not a class found under its own name, is
            keyed by memo already, or `fn` is not callable.
    """
    if not isinstance(cls, type) or not callable(fn):
        raise ConfigurationError("register_key_type(cls, fn) needs a class and a callable")
    name = named(cls)
    if name is None:
        raise ConfigurationError(
            f"{qualified_name(cls)} cannot be found under its own name, so keys cannot name it: "
            "register a class defined at module level"
        )
    if cls in _BUILTIN_VALUES:
        raise ConfigurationError(f"memo keys {name} itself; it cannot be registered")

    def canon(value: Any) -> Any:
        return {"R": [name, canonical(fn(value))]}

    _REGISTERED[cls] = fn
    _CANON[cls] = canon


def canonical(value: Any) -> Any:
    """Return a JSON tree that identifies `value` by type and value.

    Raises:
        Unkeyable: the value is not of a type memo knows how to key.
        RecursionError: the value contains itself (callers turn it into Unkeyable).
    """
    handler = _CANON.get(type(value))
    if handler is not None:
        return handler(value)
    return _canon_object(value)


#: How instances of each class seen so far are keyed: the rules below depend on the class
#: only, so they are decided once per class (bounded: classes made at run time come and go).
_BY_CLASS: dict[type, Callable[[Any], Any]] = {}
_BY_CLASS_MAX = 4096


def _canon_object(value: Any) -> Any:
    cls = type(value)
    handler = _BY_CLASS.get(cls)
    if handler is None:
        handler = _handler_for(value, cls)
        # A proxy (wrapt) answers isinstance() for what it wraps: decided per instance.
        if value.__class__ is cls:
            if len(_BY_CLASS) >= _BY_CLASS_MAX:
                _BY_CLASS.clear()
            _BY_CLASS[cls] = handler
    return handler(value)


def _handler_for(value: Any, cls: type) -> Callable[[Any], Any]:
    """Return how to key instances of `cls` (`value` is one), or a handler that refuses them."""
    if isinstance(value, (type, types.FunctionType)):
        return _canon_named
    if isinstance(value, (types.BuiltinFunctionType, types.MethodWrapperType)):
        return _canon_builtin
    if isinstance(value, types.MethodType):
        return _canon_method
    if isinstance(value, (types.MethodDescriptorType, types.WrapperDescriptorType)):
        return _canon_descriptor
    if getattr(cls, "__cache_key__", None) is not None:
        return lambda v: {"k": [class_name(cls), canonical(v.__cache_key__())]}
    if isinstance(value, enum.Enum):
        return lambda v: {"e": [class_name(cls), canonical(v._value_)]}
    if dataclasses.is_dataclass(cls):
        names = tuple(f.name for f in dataclasses.fields(cls))
        return lambda v: {"dc": [class_name(cls), [[n, canonical(getattr(v, n))] for n in names]]}
    if hasattr(cls, "__pydantic_fields__") and hasattr(cls, "__pydantic_fields_set__"):
        return _canon_model
    if isinstance(value, tuple) and hasattr(cls, "_fields"):
        return lambda v: {"nt": [class_name(cls), [canonical(x) for x in v]]}
    if isinstance(value, PurePath):
        return lambda v: {"p": [class_name(cls), _text(str(v))]}
    for base in cls.__mro__[1:]:
        if base in _BUILTIN_VALUES:
            # A subclass of a built-in value type: its class and any state of its own.
            base_form = _CANON[base]
            return lambda v: {"sub": [class_name(cls), base_form(v), canonical(_own_state(v))]}
    return _refuse


def _refuse(value: Any) -> Any:
    raise Unkeyable(value, f"{qualified_name(type(value))} is not a type memo knows how to key")


def _canon_method(value: Any) -> Any:
    # A bound method computes what its function computes on its instance.
    return {"bm": [canonical(value.__self__), _canon_named(value.__func__)]}


def _canon_descriptor(value: Any) -> Any:
    owner: Any = value.__objclass__
    method: str = value.__name__
    if getattr(owner, method, None) is not value:
        raise Unkeyable(value, f"{method} is not found on {qualified_name(owner)}")
    return {"c": [class_name(owner), method]}


def _canon_named(value: Any) -> Any:
    name = named(value)
    if name is not None:
        return {"c": name}
    if isinstance(value, type):
        return {"c": class_name(value)}
    # A lambda or closure made per call would only ever miss under a token of its own.
    raise Unkeyable(
        value,
        f"function {qualified_name(value)} cannot be found under its own name (a lambda, a "
        "closure or a function defined inside a function), so its name does not identify it",
    )


def _canon_builtin(value: Any) -> Any:
    owner = getattr(value, "__self__", None)
    if owner is None or isinstance(owner, types.ModuleType):
        return _canon_named(value)
    # A bound built-in method ({"k": 1}.get) is its instance's value and the method's name.
    name = value.__name__
    if getattr(owner, name, None) != value:
        raise Unkeyable(value, f"the built-in method {name} is not found on its instance")
    return {"bb": [canonical(owner), name]}


def _canon_model(value: Any) -> Any:
    # Field by field with the class, like dataclasses: model_dump() would lose nested
    # classes and fields declared with exclude=True.
    cls = type(value)
    fields = [[name, canonical(getattr(value, name))] for name in cls.__pydantic_fields__]
    extra = value.__pydantic_extra__ or {}
    private = value.__pydantic_private__ or {}
    return {"pd": [class_name(cls), fields, _canon_dict(extra), _canon_dict(private)]}


def _own_state(value: Any) -> dict[str, Any]:
    """Return the attributes an instance of a subclass of a built-in type keeps."""
    state = dict(getattr(value, "__dict__", None) or {})
    for klass in type(value).__mro__:
        slots = klass.__dict__.get("__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if slot not in ("__dict__", "__weakref__") and hasattr(value, slot):
                state[slot] = getattr(value, slot)
    return state


# -- the decorated function's own identity ----------------------------------------

#: Tokens of objects identified by being themselves (see `local_token`): id -> (ref, token).
_LOCAL: dict[int, tuple[Any, str]] = {}
_PROCESS = [uuid.uuid4().hex]
_COUNTER = itertools.count()


def _new_process() -> None:
    # A forked child must never hand out a token its parent hands out too.
    _PROCESS[0] = uuid.uuid4().hex


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_process)


def local_token(value: Any) -> str:
    """Return a token for `value` that no other live object and no other process ever gets.

    The token lives as long as `value` (weakly referenced where possible, else kept),
    so its address can be reused only after the token is forgotten.
    """
    found = _LOCAL.get(id(value))
    if found is not None and _alive(found[0]) is value:
        return found[1]
    token = f"{_PROCESS[0]}.{next(_COUNTER)}"
    key = id(value)
    try:
        ref: Any = weakref.ref(value, lambda _, key=key: _LOCAL.pop(key, None))  # type: ignore[misc]
    except TypeError:  # not weakly referenceable: keep it, so its address is never reused
        ref = value
    _LOCAL[key] = (ref, token)
    return token


def _alive(ref: Any) -> Any:
    return ref() if isinstance(ref, weakref.ref) else ref


def function_identity(fn: Any, ignore: Iterable[str] = ()) -> Any:
    """Return what identifies a decorated function: a name, or its name, code and captures.

    A function found under its own `module.qualname` outside `__main__` is its name
    (the same in every process running the same code). A lambda, a function
    defined inside a function, or a function of `__main__` (a script or notebook,
    where one name is often redefined) is also keyed by what it computes: its code
    object and the values of the variables it captured, as they are when it is
    decorated (captured names in `ignore` are left out). A captured value memo
    cannot key (a client, a lock, a call counter) is keyed as that very object
    (`local_token`): the function's entries are then private to this process, never
    wrong; `ignore=` that name to share them when the result does not depend on it.
    """
    return _identity(fn, frozenset(ignore), [])


def _identity(fn: Any, ignore: frozenset[str], seen: list[int]) -> Any:
    if not isinstance(fn, types.FunctionType):
        # A class, a built-in function, a C callable (operator.itemgetter("a")): keyed like
        # an argument, so two objects memo cannot tell apart never share an identity.
        try:
            return {"obj": canonical(fn)}
        except (Unkeyable, RecursionError):
            raise UnkeyableArgumentError(
                f"cannot decorate {qualified_name(type(fn))} object {fn!r}: memo cannot tell it "
                "apart from others of its kind; decorate a function that calls it"
            ) from None
    name = qualified_name(fn)
    qualname = getattr(fn, "__qualname__", "")
    code = getattr(fn, "__code__", None)
    # Not `named(fn)`: while a decorator runs, the module does not hold the function yet.
    if not isinstance(code, types.CodeType) or ("<" not in qualname and not name.startswith("__main__.")):
        return name
    if id(fn) in seen:  # a function that captures itself (recursion through a closure)
        return {"rec": len(seen) - seen.index(id(fn))}
    seen.append(id(fn))
    try:
        captured = []
        for var, cell in zip(code.co_freevars, getattr(fn, "__closure__", None) or (), strict=True):
            if var in ignore:
                continue
            captured.append([var, _captured(fn, var, cell, ignore, seen)])
        return {"fn": [name, _code(code), captured]}
    finally:
        seen.pop()


def _captured(fn: Any, var: str, cell: Any, ignore: frozenset[str], seen: list[int]) -> Any:
    try:
        value = cell.cell_contents
    except ValueError:  # not assigned yet when decorated (e.g. the function's own name)
        return {"unset": 0}
    if isinstance(value, types.FunctionType) and named(value) is None:
        return _identity(value, frozenset(), seen)
    try:
        return canonical(value)
    except (Unkeyable, RecursionError):
        # A client, a lock, a call counter...: its value cannot be keyed, so the function
        # is keyed by this very object, which no other process and no later object shares.
        logger.warning(
            "memo: %s captures %r, a %s memo cannot key: its entries stay in this process; "
            "ignore=(%r,) shares them when the result does not depend on it",
            qualified_name(fn),
            var,
            qualified_name(type(value)),
            var,
        )
        return {"local": local_token(value)}


def _code(code: types.CodeType) -> Any:
    # Everything that decides what the code does; not its file name or line numbers.
    consts = [_code(c) if isinstance(c, types.CodeType) else canonical(c) for c in code.co_consts]
    return [
        code.co_code.hex(),
        consts,
        list(code.co_names),
        list(code.co_varnames),
        list(code.co_freevars),
        list(code.co_cellvars),
        code.co_argcount,
        code.co_posonlyargcount,
        code.co_kwonlyargcount,
        code.co_flags,
    ]
