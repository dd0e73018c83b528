"""The default Cache, used by the module-level `memo.cached`, and how it is configured.

It lives apart from `Cache` and the decorator so that neither imports the
other's module in a circle: `_decorator` knows `Cache` only as a type,
`_cache` builds decorators, and this module sits on top of both.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any, Literal

from ._batch import BatchDecorator
from ._cache import Cache
from ._decorator import Decorator
from ._policy import OnError
from ._sentinels import NOT_GIVEN

__all__ = ["cached", "cached_many", "configure", "default_cache"]

_default: Cache | None = None
_default_lock = threading.Lock()


def configure(url: str | None = None, **options: Any) -> Cache:
    """Set the Cache used by `memo.cached`; `url` defaults to `$MEMO_URL`, then memory://."""
    global _default
    cache = Cache(url or os.environ.get("MEMO_URL") or "memory://", **options)
    with _default_lock:
        _default = cache
    return cache


def default_cache() -> Cache:
    """Return the default Cache, creating it from `$MEMO_URL` (or memory://) on first use."""
    global _default
    cache = _default
    if cache is None:
        with _default_lock:
            if _default is None:
                _default = Cache(os.environ.get("MEMO_URL") or "memory://")
            cache = _default
    return cache


def cached(
    ns: str = "default",
    ttl: float | None = NOT_GIVEN,
    *,
    version: str | int | None = None,
    ignore: Iterable[str] = (),
    key: Callable[..., Any] | None = None,
    scope: Callable[..., Any] | None = None,
    types: Iterable[type] = (),
    strict: bool | None = None,
    on_error: OnError | None = None,
    stale_ttl: float | None = None,
    stale_if_error: float | None = None,
    lease_ttl: float | None = None,
    lease_wait: float | None = None,
    cache_if: Callable[[Any], bool] | None = None,
    tags: Iterable[str] | Callable[..., Iterable[str]] | None = None,
    local_ttl: float | None = None,
    early_refresh: float | Literal["xfetch"] | None = None,
) -> Decorator:
    """Memoize a function in the default Cache (see `memo.configure` and `$MEMO_URL`).

    The default Cache is looked up when the function is called, so decorating at
    import time before `memo.configure(...)` is fine. Arguments as `Cache.cached`.
    """
    return Decorator(
        None,
        ns,
        ttl,
        version=version,
        ignore=ignore,
        key=key,
        scope=scope,
        types=types,
        strict=strict,
        on_error=on_error,
        stale_ttl=stale_ttl,
        stale_if_error=stale_if_error,
        lease_ttl=lease_ttl,
        lease_wait=lease_wait,
        cache_if=cache_if,
        tags=tags,
        local_ttl=local_ttl,
        early_refresh=early_refresh,
        default_cache=default_cache,
    )


def cached_many(
    ns: str = "default",
    ttl: float | None = NOT_GIVEN,
    *,
    each: str,
    version: str | int | None = None,
    ignore: Iterable[str] = (),
    scope: Callable[..., Any] | None = None,
    types: Iterable[type] = (),
    strict: bool | None = None,
    on_error: OnError | None = None,
    lease_ttl: float | None = None,
    lease_wait: float | None = None,
    cache_absent: bool = False,
) -> BatchDecorator:
    """Memoize a function of many items, item by item, in the default Cache.

    Arguments as `Cache.cached_many`; the default Cache is looked up at each call.
    """
    return BatchDecorator(
        None,
        ns,
        ttl,
        each=each,
        version=version,
        ignore=ignore,
        scope=scope,
        types=types,
        strict=strict,
        on_error=on_error,
        lease_ttl=lease_ttl,
        lease_wait=lease_wait,
        cache_absent=cache_absent,
        default_cache=default_cache,
    )
