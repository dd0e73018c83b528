"""Keys: from a function and its bound arguments to a memcached-safe, collision-free key.

Pure: no I/O, no client imports. `Binder` (`_binding.py`) maps a call to its
parameter values, `canonical` (`_canonical.py`) turns each into a type-tagged
JSON tree; `KeyMaker` hashes the function identity and the canonical arguments
with blake2b-128 and lays the key out as
`<prefix><namespace>:<function>:<generation>:<digest>`: readable up to the
digest, ASCII, no whitespace or control characters, at most 250 bytes. The
readable parts are sanitised and shortened, which is safe because the digest
covers the exact namespace and function identity.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from ._binding import Binder, call_target, injected_parameters
from ._canonical import Unkeyable, canonical, function_identity, qualified_name, unkeyable_error
from ._errors import ConfigurationError

__all__ = ["KeyMaker", "check_prefix", "safe_segment"]

Digest = Callable[[tuple[Any, ...], dict[str, Any]], str]

#: Types whose JSON form is already unambiguous (orjson keeps 1, 1.0, true, "1" apart).
_PLAIN = frozenset({str, int, bool, type(None)})


#: Argument types whose equal values are one value of one type (an int never equals a str or
#: bytes; bool, float and subclasses are left out: True == 1 and -0.0 == 0.0). A call whose
#: arguments are all of these types is remembered with its digest (see `KeyMaker.digest`).
_EXACT: frozenset[type] = frozenset({str, int, bytes, type(None)})
#: Default values that cannot change (the digest of a call that leaves one out is remembered).
_IMMUTABLE = _EXACT | {bool, float}
#: How many calls' digests a function remembers; all are forgotten when it is full.
RECENT_DIGESTS = 1024


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
    if not isinstance(prefix, str) or not _PREFIX_OK.fullmatch(prefix):
        raise ConfigurationError(
            f"prefix {prefix!r} must be at most 64 printable ASCII characters without whitespace"
        )
    return prefix


class KeyMaker:
    """Build the keys of one decorated function in one namespace.

    Args:
        ns: the namespace (any string).
        identity: the function's identity (`function_identity`: its name, or a JSON
            tree of its name, code and captured values).
        version: bumps every key of the function when its meaning changes.
        binder: binds call arguments to parameter values.
        key: optional user callable replacing the bound arguments in the key; the
            binder's `scope=` value stays in the key beside it.
        qualname: the readable function name shown in keys.
    """

    __slots__ = (
        "_base",
        "_binder",
        "_key",
        "_key_names",
        "_names",
        "_recent",
        "call_digest",
        "function_id",
        "readable",
        "target",
    )

    def __init__(
        self,
        ns: str,
        identity: Any,
        version: str | int | None,
        binder: Binder,
        key: Callable[..., Any] | None = None,
        qualname: str = "",
    ) -> None:
        self._binder = binder
        self._key = key
        self._names = binder.names
        self._key_names = ("key=", *binder.names[-1:]) if binder.names[-1:] == ("scope=",) else ("key=",)
        # The digest starts from everything that identifies the function; a copy of
        # this hasher per call costs less than hashing the prefix again. The prefix is
        # itself a digest, so whatever its length (a lambda's code), a call's arguments
        # up to 112 bytes fit the hasher's first block: one compression per call.
        seed = orjson.dumps(
            ["memo/2", ns, identity, version, binder.names if key is None else list(self._key_names)]
        )
        identity_digest = hashlib.blake2b(seed, digest_size=16).digest()
        self._base = hashlib.blake2b(identity_digest, digest_size=16)
        #: What tells this function's entries apart from others in its namespace (`fn.clear()`).
        self.function_id = identity_digest[:8].hex()
        #: The readable middle of every key: `<namespace>:<qualname>`.
        readable_name = (qualname or str(identity)).replace(".<locals>", "")
        self.readable = f"{safe_segment(ns, 48)}:{safe_segment(readable_name, 64)}"
        #: The function that runs; `call_digest`: the digest of a call of what was decorated.
        self.target: Any = None
        self.call_digest: Digest = self.digest
        #: Digests of recent calls, by their arguments: only where the arguments alone make the
        #: digest (no `key=`, no `scope=`, defaults that cannot change: `_IMMUTABLE`).
        self._recent: dict[Any, str] | None = {} if key is None and binder.pure(_IMMUTABLE) else None

    @classmethod
    def for_callable(
        cls,
        fn: Any,
        ns: str,
        version: str | int | None,
        *,
        ignore: Iterable[str] = (),
        key: Callable[..., Any] | None = None,
        scope: Callable[..., Any] | None = None,
    ) -> KeyMaker:
        """Prepare the keys of what `@cached` decorates: a function, a `functools.partial`,
        a bound method or a callable instance.

        The identity is the function that runs (`function_identity`); what is bound to
        it (a partial's arguments, a method's instance) is keyed with each call like
        the arguments given to it, so it is checked now and refused if it cannot be.

        Raises:
            ConfigurationError: `ignore=` or `scope=` name parameters the function lacks.
            UnkeyableArgumentError: a captured or bound value cannot be keyed.
        """
        target, pre_args, pre_kwargs = call_target(fn)
        identity = function_identity(target, ignore)
        binder = Binder(target, ignore, scope, injected=injected_parameters(target))
        maker = cls(
            ns, identity, version, binder, key, getattr(target, "__qualname__", "") or qualified_name(target)
        )
        maker.target = target
        if pre_args or pre_kwargs:
            maker._check_bound(pre_args, pre_kwargs)
            digest = maker.digest

            def call_digest(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
                return digest((*pre_args, *args), {**pre_kwargs, **kwargs} if pre_kwargs else kwargs)

            maker.call_digest = call_digest
        return maker

    def _check_bound(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Refuse now the bound values that every call would refuse."""
        params = list(inspect.signature(self.target).parameters)
        bound = {**dict(zip(params, args, strict=False)), **kwargs}
        for name, value in bound.items():
            if name in self._names and self._key is None:
                try:
                    orjson.dumps(canonical(value))
                except (Unkeyable, RecursionError, orjson.JSONEncodeError):
                    raise self._refusal((name,), (value,)) from None

    def digest(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """Return the hex digest for one call; raise on arguments that cannot be keyed.

        A call with arguments of `_EXACT` types and bools only gets its digest from the calls
        remembered (equal arguments of those types, position by position, bind and hash to the
        same digest): the hit paths skip binding and hashing for the arguments they see again.
        """
        recent = self._recent
        if recent is None:
            return self._compute(args, kwargs)
        flags = False
        for value in (*args, *kwargs.values()) if kwargs else args:
            kind = type(value)
            if kind not in _EXACT:
                if kind is not bool:
                    return self._compute(args, kwargs)
                flags = True
        seen: Any = (args, *kwargs.items()) if kwargs else args
        if flags:  # True == 1: the types, position by position, tell them apart
            seen = (seen, *map(type, args), *map(type, kwargs.values()))
        found = recent.get(seen)
        if found is None:
            found = self._compute(args, kwargs)
            if len(recent) >= RECENT_DIGESTS:
                recent.clear()
            recent[seen] = found
        return found

    def _compute(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        if self._key is not None:
            # scope= always stays in the key: key= chooses what identifies the arguments, not whose they are.
            values: Any = (self._key(*args, **kwargs), *self._binder.scope_of(args, kwargs))
            names: tuple[str, ...] = self._key_names
        else:
            values = self._binder.bind(args, kwargs)
            names = self._names
        try:
            for v in values:
                if type(v) not in _PLAIN:
                    payload = orjson.dumps([v if type(v) in _PLAIN else canonical(v) for v in values])
                    break
            else:  # all plain, the usual call: the tuple itself is written as the same JSON array
                payload = orjson.dumps(values)
        except (Unkeyable, RecursionError):
            raise self._refusal(names, values) from None
        except orjson.JSONEncodeError:
            # An int beyond 64 bits or a str with a lone surrogate passed the plain fast
            # path; canonical() tags both.
            try:
                payload = orjson.dumps([canonical(v) for v in values])
            except (Unkeyable, RecursionError, orjson.JSONEncodeError):
                raise self._refusal(names, values) from None
        h = self._base.copy()
        h.update(payload)
        return h.hexdigest()

    def each_digests(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        name: str,
        items: list[Any],
        known: dict[Any, str] | None = None,
    ) -> list[str]:
        """Digests of one call per item: exactly `digest` of the call with parameter `name` set to it.

        The other arguments are bound and made canonical once (`cached_many`
        keys a hundred items for about the cost of a hundred hashes). `known`,
        if given, remembers the digests of `int` and `str` items by (the other
        arguments, exact type, item), so hot items are not hashed again; the
        caller bounds its size.
        """
        values, at, fixed = self._each_fixed(args, kwargs, name)
        base, dumps, plain = self._base, orjson.dumps, _PLAIN
        out: list[str] = []
        context = dumps(fixed) if known is not None else b""
        for item in items:
            kind = type(item)
            if known is not None and (kind is int or kind is str):
                found = known.get((context, kind, item))
                if found is not None:
                    out.append(found)
                    continue
            try:
                fixed[at] = item if type(item) in plain else canonical(item)
                payload = dumps(fixed)
            except (Unkeyable, RecursionError):
                values[at] = item
                raise self._refusal(self._names, tuple(values)) from None
            except orjson.JSONEncodeError:
                values[at] = item
                payload = dumps([canonical(v) for v in values])
            h = base.copy()
            h.update(payload)
            digest = h.hexdigest()
            if known is not None and (kind is int or kind is str):
                known[(context, kind, item)] = digest
            out.append(digest)
        return out

    def each_context(self, args: tuple[Any, ...], kwargs: dict[str, Any], name: str) -> bytes:
        """The other arguments of a call as `each_digests` keys them (`name`'s slot empty).

        Two calls with the same context give each item the same digest: what a caller
        may remember item keys by.
        """
        return orjson.dumps(self._each_fixed(args, kwargs, name)[2])

    def _each_fixed(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], name: str
    ) -> tuple[list[Any], int, list[Any]]:
        """The bound values, the index of `name`, and the values made canonical with that slot None."""
        values = list(self._binder.bind(args, kwargs))
        at = self._names.index(name)
        values[at] = None  # the items' slot: filled in for each item
        try:
            fixed = [v if type(v) in _PLAIN else canonical(v) for v in values]
        except (Unkeyable, RecursionError):
            raise self._refusal(self._names, tuple(values)) from None
        return values, at, fixed

    @staticmethod
    def _refusal(names: tuple[str, ...], values: tuple[Any, ...]) -> Exception:
        """Return the error naming the first parameter whose value cannot be keyed."""
        for name, value in zip(names, values, strict=True):
            try:
                orjson.dumps(canonical(value))
            except Unkeyable as exc:
                return unkeyable_error(name, exc)
            except (RecursionError, orjson.JSONEncodeError):
                return unkeyable_error(name, Unkeyable(value, "it contains itself or is nested too deep"))
        raise AssertionError("unreachable: no value was refused")  # pragma: no cover
