"""Keys: from a function and its arguments to a memcached-safe, collision-free key.

Pure: no I/O, no client imports. Three steps, each decided as much as possible
when a function is decorated rather than when it is called:

1. `Binder` maps a call's `(args, kwargs)` to the tuple of parameter values in
   signature order, defaults applied, so `f(1)`, `f(1, full=False)` and
   `f(user_id=1)` give one tuple. It is prepared once per function; the general
   `inspect.Signature.bind` (about 3 µs) runs only for signatures with `*args`
   or `**kwargs`, and to produce the exact `TypeError` of a wrong call.
2. `canonical` turns each value into a JSON tree in which every type that JSON
   would blur is tagged: `1`, `1.0`, `True`, `"1"` and `b"1"` stay apart, so do
   `(1, 2)` and `[1, 2]`, `{1: "a"}` and `{"1": "a"}`. Objects whose only
   identity is their address are refused (`UnkeyableArgumentError`).
3. `KeyMaker` hashes the function identity and the canonical arguments with
   blake2b-128 and lays the key out as
   `<prefix><namespace>:<function>:<generation>:<digest>`: readable up to the
   digest, ASCII, no whitespace or control characters, at most 250 bytes.
   The readable parts are sanitised and shortened, which is safe because the
   digest covers the exact namespace and function identity.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import hashlib
import inspect
import re
import uuid
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import PurePath
from typing import Any

import orjson

from ._errors import ConfigurationError, UnkeyableArgumentError
from ._sentinels import NOT_GIVEN

__all__ = ["Binder", "KeyMaker", "canonical", "qualified_name", "safe_segment"]


#: Types whose JSON form is already unambiguous (orjson keeps 1, 1.0, true, "1" apart).
_PLAIN = frozenset({str, int, bool, type(None)})
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


def qualified_name(obj: Any) -> str:
    """Return `module.qualname` of a class or function."""
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"


class _Unkeyable(Exception):
    """Internal: raised deep in `canonical`, re-raised with the parameter's name."""

    def __init__(self, value: Any, why: str) -> None:
        super().__init__(why)
        self.value = value
        self.why = why


def _sorted_pairs(pairs: Iterable[tuple[Any, Any]]) -> list[list[Any]]:
    # Sort by the canonical bytes of the key: a total order for any mix of key types.
    items = [[canonical(k), canonical(v)] for k, v in pairs]
    items.sort(key=lambda kv: orjson.dumps(kv[0]))
    return items


def _canon_dict(value: dict[Any, Any]) -> Any:
    if all(type(k) is str for k in value):
        return {"d": [[k, canonical(value[k])] for k in sorted(value)]}
    return {"d": _sorted_pairs(value.items())}


def _canon_set(tag: str) -> Callable[[Any], Any]:
    def canon(value: Any) -> Any:
        items = [canonical(v) for v in value]
        items.sort(key=orjson.dumps)
        return {tag: items}

    return canon


def _canon_int(value: int) -> Any:
    return value if _INT64_MIN <= value <= _UINT64_MAX else {"I": str(value)}


def _canon_float(value: float) -> Any:
    # orjson writes nan and infinities as null: tag them so they never meet None.
    return value if value - value == 0.0 else {"F": repr(value)}


_CANON: dict[type, Callable[[Any], Any]] = {
    str: lambda v: v,
    bool: lambda v: v,
    type(None): lambda v: v,
    int: _canon_int,
    float: _canon_float,
    bytes: lambda v: {"b": v.hex()},
    bytearray: lambda v: {"ba": v.hex()},
    list: lambda v: [canonical(x) for x in v],
    tuple: lambda v: {"t": [canonical(x) for x in v]},
    dict: _canon_dict,
    set: _canon_set("s"),
    frozenset: _canon_set("fs"),
    _dt.datetime: lambda v: {"dt": v.isoformat()},
    _dt.date: lambda v: {"da": v.isoformat()},
    _dt.time: lambda v: {"ti": v.isoformat()},
    _dt.timedelta: lambda v: {"td": [v.days, v.seconds, v.microseconds]},
    uuid.UUID: lambda v: {"u": v.hex},
    Decimal: lambda v: {"D": str(v)},
    complex: lambda v: {"cx": [_canon_float(v.real), _canon_float(v.imag)]},
}


def canonical(value: Any) -> Any:
    """Return a JSON tree that identifies `value` by type and value.

    Raises:
        _Unkeyable: the value has no value-based identity.
    """
    handler = _CANON.get(type(value))
    if handler is not None:
        return handler(value)
    return _canon_object(value)


def _canon_object(value: Any) -> Any:
    cls = type(value)
    name = qualified_name(cls)
    cache_key = getattr(value, "__cache_key__", None)
    if callable(cache_key) and not isinstance(value, type):
        return {"k": [name, canonical(cache_key())]}
    if isinstance(value, enum.Enum):
        return {"e": [name, canonical(value.value)]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            "dc": [name, [[f.name, canonical(getattr(value, f.name))] for f in dataclasses.fields(value)]]
        }
    if hasattr(cls, "__pydantic_fields__") and hasattr(value, "model_dump"):
        return {"pd": [name, canonical(value.model_dump())]}
    if isinstance(value, tuple) and hasattr(cls, "_fields"):
        return {"nt": [name, [canonical(x) for x in value]]}
    if isinstance(value, PurePath):
        return {"p": [name, str(value)]}
    if isinstance(value, type) or inspect.isfunction(value) or inspect.isbuiltin(value):
        # Classes and functions are identified by where they are defined.
        defined = qualified_name(value)
        if "<lambda>" in defined:
            raise _Unkeyable(value, "a lambda has no stable name")
        return {"c": defined}
    # Subclasses of the built-in value types keep their class in the key.
    for base in cls.__mro__[1:]:
        handler = _CANON.get(base)
        if handler is not None:
            return {"sub": [name, handler(value)]}
    if cls.__repr__ is object.__repr__:  # type: ignore[comparison-overlap]
        raise _Unkeyable(value, f"{name} has no value-based identity (its repr is its address)")
    # A class that wrote its own __repr__ declares what distinguishes its instances.
    return {"r": [name, repr(value)]}


def unkeyable_error(param: str, exc: _Unkeyable) -> UnkeyableArgumentError:
    """Build the user-facing error for an argument that cannot be keyed."""
    return UnkeyableArgumentError(
        f"cannot build a cache key from parameter {param!r}: {exc.why}. "
        f"Fix it with ignore=({param!r},) on the decorator, a key= callable, "
        f"or a __cache_key__() method on {qualified_name(type(exc.value))} returning "
        "the values that identify it"
    )


class Binder:
    """Map `(args, kwargs)` of a call to parameter values in signature order.

    Args:
        fn: the function whose signature is bound (self/cls included for methods).
        ignore: parameter names left out of the result.
        scope: a callable whose parameter names pick arguments of the call (ignored
            ones included, e.g. `lambda config: config["configurable"]["user_id"]`);
            its return value is appended to the result, so it becomes part of the key.
        injected: more names left out, found by inspection rather than given by the
            user (a framework's injected parameters), so not checked like `ignore`.
    """

    __slots__ = (
        "_defaults",
        "_index",
        "_keep",
        "_n",
        "_n_all_positional",
        "_names",
        "_nonpos",
        "_scope",
        "_scope_args",
        "_sig",
        "_simple",
        "names",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        ignore: Iterable[str] = (),
        scope: Callable[..., Any] | None = None,
        injected: Iterable[str] = (),
    ) -> None:
        self._sig = sig = inspect.signature(fn)
        params = list(sig.parameters.values())
        ignore = set(ignore)
        unknown = ignore - {p.name for p in params}
        if unknown:
            raise ConfigurationError(
                f"ignore= names {sorted(unknown)} that {qualified_name(fn)} does not have; "
                f"its parameters are {[p.name for p in params]}"
            )
        ignore |= set(injected)
        kinds = {p.kind for p in params}
        self._simple = not ({inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD} & kinds)
        self._names = [p.name for p in params]
        self._n = len(params)
        # Parameters that can be passed by keyword, by position in the signature.
        self._index = {
            p.name: i for i, p in enumerate(params) if p.kind is not inspect.Parameter.POSITIONAL_ONLY
        }
        # How many leading parameters can be passed positionally.
        self._nonpos = sum(
            p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            for p in params
        )
        # A call passing every parameter positionally needs no binding at all.
        self._n_all_positional = self._n if self._nonpos == self._n else -1
        self._defaults = tuple(p.default if p.default is not p.empty else NOT_GIVEN for p in params)
        keep = [i for i, p in enumerate(params) if p.name not in ignore]
        self._keep: tuple[int, ...] | None = None if len(keep) == len(params) else tuple(keep)
        #: Names of the values `bind` returns, in order.
        self.names = tuple(self._names[i] for i in keep)
        self._scope = scope
        self._scope_args: tuple[tuple[str, int], ...] = ()
        if scope is not None:
            wanted = list(inspect.signature(scope).parameters)
            missing = [name for name in wanted if name not in self._names]
            if missing:
                raise ConfigurationError(
                    f"scope= asks for {missing}, which {qualified_name(fn)} does not take; "
                    f"its parameters are {self._names}"
                )
            self._scope_args = tuple((name, self._names.index(name)) for name in wanted)
            self.names += ("scope=",)

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """Return the bound values; raise `TypeError` exactly as calling the function would."""
        if self._simple:
            n = len(args)
            if not kwargs and n == self._n_all_positional:
                values = args
            elif n <= self._nonpos:
                values = self._bind_simple(args, kwargs)
            else:
                values = self._bind_slow(args, kwargs)
        else:
            values = self._bind_slow(args, kwargs)
        keep = self._keep
        if self._scope is None:
            return values if keep is None else tuple(values[i] for i in keep)
        scoped = self._scope(**{name: values[i] for name, i in self._scope_args})
        return (*(values if keep is None else (values[i] for i in keep)), scoped)

    def _bind_simple(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        values = list(args)
        values.extend(self._defaults[len(args) :])
        index = self._index
        given = len(args)
        for name, value in kwargs.items():
            i = index.get(name, -1)
            if i < given:  # unknown, positional-only, or given twice: let Python word the error
                return self._bind_slow(args, kwargs)
            values[i] = value
        if NOT_GIVEN in values:
            return self._bind_slow(args, kwargs)
        return tuple(values)

    def _bind_slow(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        bound = self._sig.bind(*args, **kwargs)
        if len(args) < self._nonpos:
            # Python 3.13.0's `Signature.bind` lets `**kwargs` take the name of a missing
            # positional-only parameter; the call itself would fail, so binding must too.
            for param in list(self._sig.parameters.values())[len(args) : self._nonpos]:
                missing = param.name not in bound.arguments and param.default is param.empty
                if missing and param.kind is param.POSITIONAL_ONLY:
                    raise TypeError(f"missing a required argument: {param.name!r}")
        bound.apply_defaults()
        return tuple(bound.arguments.values())


_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


def safe_segment(text: str, limit: int) -> str:
    """Return `text` with every run of unsafe characters replaced by `_`, cut to `limit`."""
    cleaned = _UNSAFE.sub("_", text) or "_"
    return (
        cleaned
        if len(cleaned) <= limit
        else cleaned[: limit // 2] + "~" + cleaned[-(limit - limit // 2 - 1) :]
    )


_PREFIX_OK = re.compile(r"[!-~]{0,64}")  # printable ASCII, no space, at most 64 characters


def check_prefix(prefix: str) -> str:
    """Validate a Cache's key prefix."""
    if not _PREFIX_OK.fullmatch(prefix):
        raise ConfigurationError(
            f"prefix {prefix!r} must be at most 64 printable ASCII characters without whitespace"
        )
    return prefix


class KeyMaker:
    """Build the keys of one decorated function in one namespace.

    Args:
        ns: the namespace (any string).
        identity: the function's identity, normally `module.qualname`.
        version: bumps every key of the function when its meaning changes.
        binder: binds call arguments to parameter values.
        key: optional user callable replacing the bound arguments in the key.
        qualname: the readable function name shown in keys (default: `identity`).
    """

    __slots__ = ("_base", "_binder", "_key", "_names", "readable")

    def __init__(
        self,
        ns: str,
        identity: str,
        version: str | int | None,
        binder: Binder,
        key: Callable[..., Any] | None = None,
        qualname: str | None = None,
    ) -> None:
        self._binder = binder
        self._key = key
        self._names = binder.names
        # The digest starts from everything that identifies the function; a copy of
        # this hasher per call costs less than hashing the prefix again.
        seed = orjson.dumps(["memo/1", ns, identity, version, binder.names if key is None else ["key="]])
        self._base = hashlib.blake2b(seed, digest_size=16)
        #: The readable middle of every key: `<namespace>:<qualname>`.
        readable_name = (qualname or identity).replace(".<locals>", "")
        self.readable = f"{safe_segment(ns, 48)}:{safe_segment(readable_name, 64)}"

    def digest(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """Return the hex digest for one call; raise on arguments that cannot be keyed."""
        if self._key is not None:
            values: Any = (self._key(*args, **kwargs),)
            names: tuple[str, ...] = ("key=",)
        else:
            values = self._binder.bind(args, kwargs)
            names = self._names
        try:
            payload = orjson.dumps([v if type(v) in _PLAIN else canonical(v) for v in values])
        except _Unkeyable as exc:
            for name, value in zip(names, values, strict=True):
                try:
                    canonical(value)
                except _Unkeyable:
                    raise unkeyable_error(name, exc) from None
            raise unkeyable_error(names[0], exc) from None  # pragma: no cover - found above
        except orjson.JSONEncodeError:
            # An int beyond 64 bits passed the plain fast path; canonical() tags it.
            payload = orjson.dumps([canonical(v) for v in values])
        h = self._base.copy()
        h.update(payload)
        return h.hexdigest()
