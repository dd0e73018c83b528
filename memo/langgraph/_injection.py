"""Which parameters of a function LangGraph injects, so that `@cached` keys leave them out.

memo's binder asks this module (through `memo._binding.injected_parameters`)
about a function when one of its parameters is annotated with a LangGraph or
LangChain class, or when the function is marked with `node`. LangGraph injects
by name (`config`, `writer`, `store`, `runtime`, `previous`, `error`), with an
annotation check for some; its own table decides here, applied as LangGraph
applies it.
"""

from __future__ import annotations

import contextlib
import inspect
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from .._binding import INJECTS_MARK, call_target
from .._errors import ConfigurationError

__all__ = ["injected_parameters", "node"]

F = TypeVar("F", bound=Callable[..., Any])

#: Parameters LangGraph injects that are data the result depends on: `previous` (an
#: entrypoint's last return value) and `error` (what an error handler handles) stay in the key.
_KEPT_IN_KEY = frozenset({"previous", "error"})


def node(fn: F) -> F:
    """Mark a function as a LangGraph node or task, so `@cached` leaves out what LangGraph injects.

        @cache.cached(ns="answers", scope=by_context("user_id"))
        @node
        async def answer(state, *, runtime): ...

    LangGraph injects `config`, `writer`, `store` and `runtime` by name, annotated
    or not. Unmarked, memo leaves out only parameters whose annotation is
    LangGraph's own class (`config: RunnableConfig`, `runtime: Runtime[Ctx]`),
    because a plain function may take an argument called `config` that its result
    depends on. Marked, memo follows LangGraph's rule exactly, so
    `node(state, config)` and `node(state, *, runtime)` can be cached. `previous`
    and `error` stay in the key either way: the result depends on them.

    Put it under `@cached` (it marks the function `@cached` reads); the function
    is returned unchanged.

    Raises:
        memo.ConfigurationError: `fn` is already a `@cached` function (the mark
            would come too late) or is not a function.
    """
    if not callable(fn) or (hasattr(fn, "uncached") and hasattr(fn, "key_for")):
        raise ConfigurationError(
            f"node() marks the function @cached wraps: put @node under @cached, got {fn!r}"
        )
    target = inspect.unwrap(call_target(fn)[0])
    try:
        setattr(target, INJECTS_MARK, __name__.rpartition(".")[0])
    except (AttributeError, TypeError):
        raise ConfigurationError(f"node() cannot mark {fn!r}: decorate a plain function") from None
    return fn


def _langgraph_rules() -> tuple[tuple[tuple[str, tuple[Any, ...]], ...], Any, tuple[Any, ...]]:
    """Return LangGraph's own table of injected keyword arguments: `((name, annotations), ...)`."""
    try:
        from langgraph._internal._runnable import ANY_TYPE, KWARGS_CONFIG_KEYS, VALID_KINDS
    except ImportError:  # pragma: no cover - the table moved: the same rules, stated here
        from langchain_core.runnables import RunnableConfig
        from langgraph.store.base import BaseStore
        from langgraph.types import StreamWriter

        empty = inspect.Parameter.empty
        any_type = object()
        table = (
            ("config", (RunnableConfig, "RunnableConfig", RunnableConfig | None, empty)),
            ("writer", (StreamWriter, "StreamWriter", empty)),
            ("store", (BaseStore, "BaseStore", BaseStore | None, empty)),
            ("runtime", (any_type,)),
        )
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return table, any_type, kinds
    return tuple((name, types) for name, types, _, _ in KWARGS_CONFIG_KEYS), ANY_TYPE, VALID_KINDS


def _is_runtime(func: Callable[..., Any], annotation: Any) -> bool:
    """Whether an annotation names LangGraph's `Runtime` (a string is evaluated in the function's module)."""
    from langgraph.runtime import Runtime

    if isinstance(annotation, str):
        with contextlib.suppress(Exception):
            annotation = eval(annotation, dict(getattr(inspect.unwrap(func), "__globals__", {})))
    return (typing.get_origin(annotation) or annotation) is Runtime


def injected_parameters(func: Callable[..., Any]) -> set[str]:
    """Return the parameters of `func` LangGraph injects when it runs it as a node or task.

    LangGraph's own rule decides, read from its table and applied as LangGraph
    applies it (`inspect.signature`, the annotation compared as written, so
    `config: "RunnableConfig"` counts and `config: "RunnableConfig | None"` does
    not). For a function not marked with `node`, memo is stricter in two ways, so
    that a key never leaves out a value the result depends on: an unannotated
    parameter is kept (nothing proves LangGraph is the caller), and `runtime`
    counts only when annotated with LangGraph's `Runtime`. `previous` and
    `error` are always kept.
    """
    marked = getattr(inspect.unwrap(func), INJECTS_MARK, None) is not None
    table, any_type, kinds = _langgraph_rules()
    params = inspect.signature(func).parameters
    found = set()
    for name, accepted in table:
        param = params.get(name)
        if param is None or param.kind not in kinds or name in _KEPT_IN_KEY:
            continue
        annotation = param.annotation
        if marked and (accepted == (any_type,) or annotation in accepted):
            found.add(name)  # LangGraph's rule, as it is: it injects these by name
        elif annotation is inspect.Parameter.empty:
            continue
        elif accepted == (any_type,):
            if _is_runtime(func, annotation):
                found.add(name)
        elif annotation in accepted:
            found.add(name)
    return found
