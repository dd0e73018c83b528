"""`@cached`: the decorator and the wrapper objects it returns.

`Decorator` builds one `Memo` (the per-function engine, `memo._memo`) per
decorated function, and wraps the function in a `wrapt` wrapper that keeps
methods, classmethods, signatures and async-ness; the wrapper carries the
controls (`invalidate`, `refresh`, `key_for`, `get`, `set`, `clear`, ...).
"""

from __future__ import annotations

import inspect
import sys
import types
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar, cast, overload

import wrapt

from ._errors import ConfigurationError
from ._memo import Memo
from ._policy import check_on_error, check_ttl
from ._sentinels import NOT_GIVEN
from ._tagged import TaggedMemo

if TYPE_CHECKING:
    from ._context import Context

__all__ = ["AsyncCached", "Cached", "Decorator", "Memo"]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
_S = TypeVar("_S")
_T = TypeVar("_T")
_P2 = ParamSpec("_P2")

# mypy reads a name `MYPY` as true (as it reads TYPE_CHECKING); pyright and Python as false. The
# two checkers need `__get__`'s binding rules spelled differently (see `Cached`), each gets its own.
MYPY = False


class Cached(Protocol[P, R_co]):
    """A memoized function: what `@cached` returns, for a `def` and an `async def` alike.

    `R_co` is what a call returns: for an `async def` returning `T`, the coroutine
    (`Cached[P, Coroutine[Any, Any, T]]`, spelled `AsyncCached[P, T]`). One type for both
    keeps a generic function (`def f(x: T) -> T`) a sync function to type checkers.
    """

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...
    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool: ...
    async def ainvalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool: ...
    def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...
    async def arefresh(self: Cached[P, Awaitable[_T]], *args: P.args, **kwargs: P.kwargs) -> _T: ...
    def key_for(self, *args: P.args, **kwargs: P.kwargs) -> str: ...
    async def akey_for(self, *args: P.args, **kwargs: P.kwargs) -> str: ...
    def get(self, *args: P.args, **kwargs: P.kwargs) -> Any: ...
    async def aget(self, *args: P.args, **kwargs: P.kwargs) -> Any: ...
    def set(self, value: Any, *args: P.args, **kwargs: P.kwargs) -> None: ...
    async def aset(self, value: Any, *args: P.args, **kwargs: P.kwargs) -> None: ...
    def clear(self) -> None: ...
    async def aclear(self) -> None: ...
    def cache_info(self) -> dict[str, int]: ...
    @property
    def uncached(self) -> Callable[P, R_co]: ...
    @property
    def __wrapped__(self) -> Callable[P, R_co]: ...

    if TYPE_CHECKING:  # a class body cannot define these at run time; wrapt's proxy has them

        @property
        def __name__(self) -> str: ...
        @property
        def __qualname__(self) -> str: ...

    # Accessed on a class or an instance, a memoized function binds as the function would:
    # a first parameter `type[C]` is `@cached` above `@classmethod` (type checkers hand the
    # decorator the function with `cls`), bound to the class; a method's `self` is bound to
    # the instance; anything else (a staticmethod) binds nothing. pyright checks a protocol
    # self type's parameters and does not bind a `Callable` self type; mypy does not check the
    # parameters of a protocol self type (it would bind `self` of a staticmethod), and checks a
    # `Callable` one.
    if not MYPY:

        @overload
        def __get__(
            self: Cached[Concatenate[type[_S], _P2], R_co], instance: _S | None, owner: type[_S]
        ) -> Cached[_P2, R_co]: ...
        @overload
        def __get__(self, instance: None, owner: type[Any] | None = None) -> Cached[P, R_co]: ...
        @overload
        def __get__(
            self: Cached[Concatenate[_S, _P2], R_co], instance: _S, owner: type[Any] | None = None
        ) -> Cached[_P2, R_co]: ...
        @overload
        def __get__(self, instance: Any, owner: type[Any] | None = None) -> Cached[P, R_co]: ...

    else:

        @overload
        def __get__(  # type: ignore[misc]  # a Cached is that Callable: mypy cannot tell
            self: Callable[Concatenate[type[_S], _P2], R], instance: _S | None, owner: type[_S]
        ) -> Cached[_P2, R]: ...
        @overload
        def __get__(self, instance: None, owner: type[Any] | None = None) -> Cached[P, R_co]: ...
        @overload
        def __get__(
            self: Callable[Concatenate[_S, _P2], R], instance: _S, owner: type[Any] | None = None
        ) -> Cached[_P2, R]: ...
        @overload
        def __get__(self, instance: Any, owner: type[Any] | None = None) -> Cached[P, R_co]: ...


class AsyncCached(Cached[P, Coroutine[Any, Any, R_co]], Protocol[P, R_co]):
    """A memoized `async def` returning `R_co`: another name for `Cached[P, Coroutine[Any, Any, R_co]]`."""


# -- the wrapper objects (wrapt keeps methods, classmethods, signatures, async-ness) ----


class _Controls:
    """`invalidate`, `refresh`, `key_for`... on a memoized function, bound like a call."""

    def _target(self) -> tuple[Memo, Callable[..., Any], Any]:
        raise NotImplementedError

    def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        """Drop exactly the entry a call with these arguments would read."""
        memo, _, instance = self._target()
        return memo.invalidate(instance, args, kwargs)

    async def ainvalidate(self, *args: Any, **kwargs: Any) -> bool:
        """Async `invalidate`."""
        memo, _, instance = self._target()
        return await memo.ainvalidate(instance, args, kwargs)

    def refresh(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function now, store its result, and return it (for an async function, the
        coroutine that does it, as a call returns one)."""
        memo, wrapped, instance = self._target()
        if memo.is_async:
            return memo.arefresh(wrapped, instance, args, kwargs)
        return memo.refresh(wrapped, instance, args, kwargs)

    async def arefresh(self, *args: Any, **kwargs: Any) -> Any:
        """Async `refresh`, for coroutine functions."""
        memo, wrapped, instance = self._target()
        if not memo.is_async:
            raise TypeError(f"{memo.name} is not async: use `{memo.name}.refresh(...)`")
        return await memo.arefresh(wrapped, instance, args, kwargs)

    def key_for(self, *args: Any, **kwargs: Any) -> str:
        """Return the backend key a call with these arguments reads (for debugging)."""
        memo, _, instance = self._target()
        return memo.key_for(instance, args, kwargs)

    async def akey_for(self, *args: Any, **kwargs: Any) -> str:
        """Async `key_for`."""
        memo, _, instance = self._target()
        return await memo.akey_for(instance, args, kwargs)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        """Return the cached result of a call with these arguments, or `memo.MISS`; never computes."""
        memo, _, instance = self._target()
        return memo.peek(instance, args, kwargs)

    async def aget(self, *args: Any, **kwargs: Any) -> Any:
        """Async `get`."""
        memo, _, instance = self._target()
        return await memo.apeek(instance, args, kwargs)

    def set(self, value: Any, *args: Any, **kwargs: Any) -> None:
        """Store `value` as the result of a call with these arguments (prime the cache).

        Like `refresh`, it wins over fills that started before it.
        """
        memo, _, instance = self._target()
        memo.prime(value, instance, args, kwargs)

    async def aset(self, value: Any, *args: Any, **kwargs: Any) -> None:
        """Async `set`."""
        memo, _, instance = self._target()
        await memo.aprime(value, instance, args, kwargs)

    def clear(self) -> None:
        """Drop every entry of this function (in every process), leaving its namespace alone.

        Raises:
            BackendError: the backend could not store the new generation.
        """
        self._target()[0].clear()

    async def aclear(self) -> None:
        """Async `clear`."""
        await self._target()[0].aclear()

    def invalidate_where(self, **params: Any) -> int:
        """Drop every entry whose tagged parameters had these values (`tags=("author_id",)`).

        Every entry of every function tagged with the same parameter and value is
        dropped, in every process. Returns how many tags were invalidated.
        """
        memo = self._target()[0]
        return memo.bound_cache().invalidate_tags(*_tagged(memo).tags_where(params))  # type: ignore[attr-defined,no-any-return]

    async def ainvalidate_where(self, **params: Any) -> int:
        """Async `invalidate_where`."""
        memo = self._target()[0]
        return await memo.bound_cache().ainvalidate_tags(*_tagged(memo).tags_where(params))  # type: ignore[attr-defined,no-any-return]

    def cache_info(self) -> dict[str, int]:
        """This function's counters in this process (hits, misses, sets, stale, lease_lost, ...)."""
        memo = self._target()[0]
        memo.bound_cache()  # the counters of the Cache in use now (memo.configure, memo_cache)
        return memo._stats.as_dict()

    @property
    def uncached(self) -> Callable[..., Any]:
        """The original function, bypassing the cache."""
        return self._target()[1]

    # A memoized function is a function for copy and pickle: copies are itself, and it
    # pickles by reference (as functools.lru_cache's wrappers do), so unpickled in a
    # process pool's worker it is that process's own decorated function.

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: Any) -> Any:
        return self

    def __reduce_ex__(self, protocol: Any) -> Any:
        return self.__reduce__()


class _BoundCachedFunction(_Controls, wrapt.BoundFunctionWrapper[..., Any]):
    def _target(self) -> tuple[Memo, Callable[..., Any], Any]:
        memo: Memo = self._self_parent._self_memo
        binding = self._self_binding
        if binding == "classmethod":
            instance = getattr(self.__wrapped__, "__self__", None)
        elif binding == "staticmethod":
            instance = None
        else:
            instance = self._self_instance
        return memo, self.__wrapped__, instance

    def __reduce__(self) -> Any:
        # As a bound method pickles: the attribute of what it was bound to.
        if self._self_binding == "classmethod":
            holder = getattr(self.__wrapped__, "__self__", None)
        else:
            holder = self._self_instance if self._self_binding == "function" else None
        return getattr, (self._self_owner if holder is None else holder, self.__name__)


class _CachedFunction(_Controls, wrapt.FunctionWrapper[..., Any]):
    __bound_function_wrapper__ = _BoundCachedFunction

    def __init__(self, wrapped: Any, memo: Memo) -> None:
        super().__init__(wrapped, memo.acall if memo.is_async else memo.call)
        self._self_memo = memo

    def _target(self) -> tuple[Memo, Callable[..., Any], Any]:
        owner = _classmethod_owner(self)
        if owner is None:
            return self._self_memo, self.__wrapped__, None
        return self._self_memo, types.MethodType(self.__wrapped__, owner), owner

    def __repr__(self) -> str:
        return f"<memoized {self._self_memo.name} ns={self._self_memo.ns!r}>"

    def __reduce__(self) -> Any:
        # A global name, found by pickle as `__module__` + `__qualname__` (those of the function).
        return self.__qualname__


def _tagged(memo: Memo) -> TaggedMemo:
    if not isinstance(memo, TaggedMemo):
        raise TypeError(f"{memo.name} has no tags: decorate it with tags=(...) to use invalidate_where")
    return memo


def _classmethod_owner(wrapper: _CachedFunction) -> type | None:
    """The class whose `@classmethod` wraps `wrapper` (`@classmethod` above `@cached`), or None.

    Up to Python 3.12 `classmethod` binds the object it wraps, so `A.f` is a
    bound wrapper that knows `A`. Since 3.13 it does not: `A.f` is a plain method
    object, and `A.f.key_for(1)` reaches the unbound wrapper without `A`. The class
    is then found by the function's qualified name; when that cannot tell which
    class is meant (a subclass may be the one accessed, or the class is local to
    a function), this raises rather than build a key for the wrong class.
    """
    func = wrapper.__wrapped__
    if not inspect.isfunction(func):
        return None  # `@cached` above `@classmethod`/`@staticmethod`: wrapt binds those
    *outer, name = func.__qualname__.split(".")
    if not outer or outer[-1] == "<locals>":
        return None  # not defined in a class body
    owner: Any = None
    if "<locals>" not in outer:
        owner = sys.modules.get(func.__module__)
        for part in outer:
            owner = getattr(owner, part, None)
    if isinstance(owner, type):
        attr: Any = vars(owner).get(name)
        if not (isinstance(attr, classmethod) and attr.__func__ is wrapper):
            return None
        if not any(inspect.getattr_static(heir, name, None) is attr for heir in _subclasses(owner)):
            return owner
        reason = f"subclasses of {owner.__qualname__} share it"
    elif next(iter(inspect.signature(func).parameters), None) == "cls":
        reason = "its class is defined inside a function"
    else:
        return None
    raise TypeError(
        f"{func.__qualname__}: with @classmethod above @cached, Python 3.13+ does not tell which "
        f"class the method was called on ({reason}); put @cached above @classmethod instead"
    )


def _subclasses(cls: type) -> list[type]:
    found: list[type] = []
    subs: list[type] = type.__subclasses__(cls)
    for sub in subs:
        found += [sub, *_subclasses(sub)]
    return found


class Decorator:
    """What `cached(...)` returns: apply it to a sync or async function."""

    def __init__(self, cache: Context | None, ns: str, ttl: Any, **options: Any) -> None:
        if callable(ns):  # `@cached` without parentheses: refused here, not at the first call
            raise _bare_form(cache, ns)
        if ttl is not NOT_GIVEN:
            check_ttl(ttl)
        if "on_error" in options and options["on_error"] is not None:
            check_on_error(options["on_error"])
        self._cache, self._ns, self._ttl, self._options = cache, ns, ttl, options

    def __call__(self, fn: Callable[P, R]) -> Cached[P, R]:
        inner = fn.__func__ if isinstance(fn, (classmethod, staticmethod)) else fn
        if isinstance(inner, _Controls):
            # Two fills of one call would each take a lease on keys that name the same
            # function: refuse it here rather than make every miss wait for itself.
            raise ConfigurationError(
                f"{inner!r} is memoized already: decorate a function with @cached once "
                "(give the one decorator the ns, ttl and options it needs)"
            )
        options = dict(self._options)
        tags = options.pop("tags", None)
        if tags is None:
            memo = Memo(self._cache, fn, self._ns, self._ttl, **options)
        else:
            memo = TaggedMemo(self._cache, fn, self._ns, self._ttl, tags=tags, **options)
        return cast("Cached[P, R]", _CachedFunction(fn, memo))  # the protocol describes the wrapper


def _bare_form(cache: Context | None, fn: Callable[..., Any]) -> ConfigurationError:
    # Not supported on purpose: the first argument is the namespace (what `clear(ns)` drops),
    # and a decorator whose first argument is sometimes a function hides typos from type checkers.
    door = "memo.cached" if cache is None else "cache.cached"
    name = getattr(fn, "__qualname__", None) or repr(fn)
    return ConfigurationError(
        f"@{door} needs parentheses (above {name}): write @{door}() for the defaults "
        f'(namespace "default", the Cache\'s ttl), or @{door}(ns="...", ttl=60)'
    )
