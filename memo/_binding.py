"""Binding: from a call's `(args, kwargs)` to parameter values, and what is bound already.

Pure: no I/O, no client imports, and no framework's names.

`Binder` maps a call to the tuple of parameter values in signature order,
defaults applied, so `f(1)`, `f(1, full=False)` and `f(user_id=1)` give one
tuple. It is prepared once per function; the general `inspect.Signature.bind`
(about 3 µs) runs only for signatures with `*args` or `**kwargs`, and to
produce the exact `TypeError` of a wrong call.

`call_target` takes apart what `@cached` may decorate besides a function
(a `functools.partial`, a bound method, a callable instance) into the function
that runs and the arguments already bound to it, which are then keyed with
each call like the arguments given to it.

`injected_parameters` finds the parameters a framework fills in when it calls
the function (LangGraph's `config`, `store`...), which keys leave out. The
core does not know any framework's rules: when a parameter's annotation is a
class of a framework package, the memo module for that package decides. The
package is then imported already (the annotation is its class), so the answer
does not depend on import order. A function can also be declared called by a
framework (`INJECTS_MARK`, set by the integration's marker), for frameworks
that inject by name whatever the annotation.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

from ._canonical import qualified_name
from ._errors import ConfigurationError
from ._sentinels import NOT_GIVEN

__all__ = ["Binder", "call_target", "injected_parameters"]


#: Framework packages (top-level module names) whose classes, used as a parameter's
#: annotation, mean the framework may inject parameters; the memo module named decides which.
INJECTION_RULES = {"langgraph": "memo.langgraph", "langchain_core": "memo.langgraph"}

#: A function whose (unwrapped) function has this attribute, naming one of the memo
#: modules above, is declared called by that framework (e.g. `memo.langgraph.node`):
#: that module decides, whatever the annotations.
INJECTS_MARK = "__memo_injects__"


def injected_parameters(fn: Callable[..., Any]) -> frozenset[str]:
    """Return the parameters of `fn` a framework injects, as its memo integration decides."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return frozenset()
    marked = getattr(inspect.unwrap(fn), INJECTS_MARK, None)
    rules = marked if marked in INJECTION_RULES.values() else None
    for param in params:
        rules = rules or _rules_for(_resolved(fn, param.annotation))
    if rules is None:
        return frozenset()
    try:
        module = importlib.import_module(rules)
    except ImportError:  # the integration's own dependencies are missing: nothing injects
        return frozenset()
    return frozenset(module.injected_parameters(fn))


def _resolved(fn: Callable[..., Any], annotation: Any) -> Any:
    """Return a string annotation evaluated in the function's module, or None if it cannot be."""
    if not isinstance(annotation, str):
        return annotation
    target = inspect.unwrap(fn)
    namespace = getattr(target, "__globals__", None)
    if namespace is None:
        return None
    try:
        return eval(annotation, dict(namespace))
    except Exception:
        return None


def _rules_for(annotation: Any, depth: int = 0) -> str | None:
    """Return the memo module deciding injection for a framework class this annotation names."""
    if annotation is None or depth > 8:
        return None
    module = getattr(annotation, "__module__", None)
    if isinstance(module, str) and isinstance(annotation, type):
        found = INJECTION_RULES.get(module.partition(".")[0])
        if found is not None:
            return found
    origin = typing.get_origin(annotation)
    for part in (origin, *typing.get_args(annotation)) if origin is not None else ():
        found = _rules_for(part, depth + 1)
        if found is not None:
            return found
    return None


def call_target(fn: Any) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """Return `(function, args, kwargs)`: calling `fn(*a, **k)` runs `function(*args, *a, **kwargs, **k)`.

    A `functools.partial` gives its function and arguments, a bound method its
    function and instance, a callable instance its class's `__call__` and itself.
    Anything else is its own function with nothing bound.
    """
    if isinstance(fn, functools.partial):
        function, args, kwargs = call_target(fn.func)
        return function, (*args, *fn.args), {**kwargs, **fn.keywords}
    if isinstance(fn, types.MethodType):
        function, args, kwargs = call_target(fn.__func__)
        return function, (fn.__self__, *args), kwargs
    if (
        not isinstance(fn, (type, types.FunctionType, types.BuiltinFunctionType))
        and callable(fn)
        and isinstance(getattr(fn, "__call__", None), types.MethodType)  # noqa: B004
    ):
        return call_target(fn.__call__)
    return fn, (), {}


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

    `ignore` may also name variables `fn` captures (a closure's free variables):
    `function_identity` leaves those out of the function's identity.
    """

    __slots__ = (
        "_defaults",
        "_index",
        "_keep",
        "_n",
        "_n_all_positional",
        "_names",
        "_need",
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
        code = getattr(fn, "__code__", None)
        captured = set(code.co_freevars) if isinstance(code, types.CodeType) else set()
        unknown = ignore - {p.name for p in params} - captured
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
        #: For each count of positional arguments: how many parameters without a default follow.
        self._need = tuple(
            sum(d is NOT_GIVEN for d in self._defaults[given:]) for given in range(len(params) + 1)
        )
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

    def pure(self, exact: frozenset[type]) -> bool:
        """Whether a call's arguments alone make its bound values: no `scope=` (a function that
        may read more than them) and every default of one of the `exact` (immutable) types."""
        return self._scope is None and all(d is NOT_GIVEN or type(d) in exact for d in self._defaults)

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
        defaults = self._defaults
        given = len(args)
        # Count the parameters without a default still to fill, never test `NOT_GIVEN in
        # values`: that would call an argument's own (maybe elementwise) __eq__.
        need = self._need[given]
        for name, value in kwargs.items():
            i = index.get(name, -1)
            if i < given:  # unknown, positional-only, or given twice: let Python word the error
                return self._bind_slow(args, kwargs)
            values[i] = value
            if defaults[i] is NOT_GIVEN:
                need -= 1
        if need:
            return self._bind_slow(args, kwargs)
        return tuple(values)

    def scope_of(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """Return `(scope value,)` for a call, or `()` without `scope=`."""
        return () if self._scope is None else (self.bind(args, kwargs)[-1],)

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
