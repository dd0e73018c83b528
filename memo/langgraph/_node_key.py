"""`node_key`: a LangGraph `CachePolicy.key_func` that keys a node by the exact value of its input."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import orjson

from .._canonical import canonical as _canonical  # the canonical key forms node_key is built on
from .._errors import UnkeyableArgumentError

__all__ = ["node_key"]

_NODE_KEY_TAG = "memo.langgraph.node_key/1"


def node_key(*args: Any, **kwargs: Any) -> bytes:
    """Key a cached node or task by the exact value of its input: `CachePolicy(key_func=node_key)`.

        from langgraph.types import CachePolicy
        from memo.langgraph import node_key

        builder.add_node("summarize", summarize, cache_policy=CachePolicy(key_func=node_key, ttl=300))

        @task(cache_policy=CachePolicy(key_func=node_key))
        def expand(point: str, *, style: dict[str, str]) -> str: ...

    LangGraph calls the key function with a node's input (its state, or a
    `Send` payload), or with a `@task`'s arguments, and hashes the bytes it
    returns. Its default, `default_cache_key`, pickles the input after a shallow
    freeze, which gets three things wrong that this key gets right:

    - dict key order: `{"a": 1, "b": 2}` and `{"b": 2, "a": 1}` are one input
      and get one key (the default gives two: misses);
    - sets and frozensets key by their members in a canonical order, so every
      process computes the same key whatever its `PYTHONHASHSEED` (the default
      pickles iteration order, which differs between processes for strings:
      workers sharing memcached miss each other's entries forever);
    - types: `[1, 2]` and `(1, 2)`, `1`, `1.0`, `True` and `"1"` get different
      keys (the default gives `@task` keyword arguments `[1, 2]` and `(1, 2)`
      one entry), and dicts whose keys mix types (`{1: "a", "b": 2}`) are keyed,
      where the default raises `TypeError` from `sorted`.

    Values are keyed by memo's canonical forms, the ones `@cached` uses:
    built-in values and containers, dataclasses, pydantic models (LangChain
    messages included), enums, named tuples, datetimes, UUIDs, Decimals, paths,
    and any class with a `__cache_key__()` method. What has no value-based
    identity (an object whose repr is its address, a lambda) is refused with
    `memo.UnkeyableArgumentError` naming where in the input it sits: the run
    fails rather than cache under a key that does not identify the input.

    Use it for every node and task whose input holds dicts built in varying
    order, sets, or values whose types matter, and always when several
    processes share one `MemcachedCache`. It walks the input in Python, several
    times the cost of the default's pickling: nothing beside a model call, but
    noticeable for inputs of thousands of items. Entries keyed one way are not
    found the other way: switching a node to `node_key` starts it from empty
    entries.

    Returns:
        The canonical bytes of `(args, kwargs)`; LangGraph hashes them.

    Raises:
        memo.UnkeyableArgumentError: a part of the input cannot be keyed.
    """
    try:
        tree = [_NODE_KEY_TAG, [_canonical(value) for value in args], _canonical(kwargs)]
    except Exception as exc:  # the canonical forms refuse what they cannot key
        raise _node_key_error(args, kwargs, exc) from None
    return orjson.dumps(tree)


def _node_key_error(args: tuple[Any, ...], kwargs: dict[str, Any], exc: Exception) -> UnkeyableArgumentError:
    """Name the first part of a node's input that cannot be keyed, and the ways out."""
    found: tuple[str, Any] | None = None
    if len(args) == 1 and not kwargs:
        found = _unkeyable_part(args[0], "the node input")
    else:
        parts = [(f"argument {i}", value) for i, value in enumerate(args)]
        parts += [(f"keyword argument {name!r}", value) for name, value in kwargs.items()]
        for where, value in parts:
            found = _unkeyable_part(value, where)
            if found is not None:
                break
    where, value = found if found is not None else ("the node input", args)
    why = getattr(exc, "why", None) or str(exc)
    cls = type(value)
    return UnkeyableArgumentError(
        f"memo.langgraph.node_key cannot key {where}: {why}. Give "
        f"{cls.__module__}.{cls.__qualname__} a __cache_key__() method returning the values that "
        "identify it, keep it out of the cached node's input, or give this node a "
        "CachePolicy(key_func=...) of its own that picks the fields that matter"
    )


def _unkeyable_part(value: Any, where: str) -> tuple[str, Any] | None:
    """Return (path, value) of the innermost part of `value` that cannot be keyed, or None."""
    try:
        _canonical(value)
        return None
    except Exception:
        pass
    children: list[tuple[str, Any]] = []
    if isinstance(value, Mapping):
        children = [(f"a key of {where}", key) for key in value]
        children += [(f"{where}[{key!r}]", item) for key, item in value.items()]
    elif isinstance(value, (list, tuple, set, frozenset)):
        children = [(f"{where}[{i}]", item) for i, item in enumerate(value)]
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        children = [(f"{where}.{f.name}", getattr(value, f.name)) for f in dataclasses.fields(value)]
    for path, item in children:
        found = _unkeyable_part(item, path)
        if found is not None:
            return found
    return where, value
