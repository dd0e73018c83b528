"""Scopes for `@cached` LangGraph nodes: key a node by who is asking, from its config or run context.

LangGraph's own node key is the node's input alone, and `@cached` leaves the
injected `config` and `runtime` out of its keys; a `scope=` puts back the part
of them the result depends on (a user id, a tenant).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .._errors import ConfigurationError
from .._sentinels import NOT_GIVEN

__all__ = ["by_configurable", "by_context"]


def _pick(source: Any, names: tuple[str, ...], default: Any, where: str) -> Any:
    values = []
    for name in names:
        if isinstance(source, Mapping):
            value = source.get(name, NOT_GIVEN)
        else:
            value = getattr(source, name, NOT_GIVEN)
        if value is NOT_GIVEN:
            if default is NOT_GIVEN:
                raise KeyError(
                    f"{where} has no {name!r}, which this node's cache key is scoped by; "
                    f"pass it, or give the scope a default= for calls without it"
                )
            value = default
        values.append(value)
    return values[0] if len(values) == 1 else tuple(values)


def by_configurable(*names: str, default: Any = NOT_GIVEN) -> Callable[[Any], Any]:
    """Return a `scope=` that keys a node by entries of `config["configurable"]`.

        @cached(ns="answers", scope=by_configurable("user_id"))
        def answer(state: State, config: RunnableConfig) -> dict: ...

    The node must take `config`. A call whose configurable lacks a name raises
    `KeyError` (one user's entry is never served to a caller who gave no user),
    unless `default=` is given.
    """
    if not names:
        raise ConfigurationError("by_configurable needs at least one configurable key")

    def scope(config: Any) -> Any:
        configurable = (config or {}).get("configurable") or {}
        return _pick(configurable, names, default, 'config["configurable"]')

    return scope


def by_context(*names: str, default: Any = NOT_GIVEN) -> Callable[[Any], Any]:
    """Return a `scope=` that keys a node by fields of the run context, `runtime.context`.

        @cached(ns="answers", scope=by_context("user_id"))
        def answer(state: State, runtime: Runtime[Context]) -> dict: ...

    The node must take `runtime`; the context may be a dataclass, a pydantic
    model or a dict. A missing field raises `KeyError` unless `default=` is given.
    """
    if not names:
        raise ConfigurationError("by_context needs at least one context field")

    def scope(runtime: Any) -> Any:
        return _pick(getattr(runtime, "context", None), names, default, "runtime.context")

    return scope
