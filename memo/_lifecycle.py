"""`lifespan`: open nothing that can fail at startup, close every pool at shutdown; readiness.

An ASGI lifespan (`FastAPI(lifespan=memo.lifespan(cache))`) that is also an
async context manager, so it nests inside an application's own lifespan::

    @asynccontextmanager
    async def app_lifespan(app):
        async with db_pool, memo.lifespan(cache):
            yield
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

from ._cache import Cache
from ._defaults import default_cache

__all__ = ["Lifespan", "cache_lifespan", "lifespan"]

logger = logging.getLogger("memo")


class Lifespan:
    """What `lifespan()` returns: an ASGI lifespan function and an async context manager."""

    def __init__(self, caches: tuple[Cache, ...], check: bool) -> None:
        self.caches = caches
        self.check = check

    def __call__(self, app: Any = None) -> Lifespan:
        """The ASGI/Starlette lifespan protocol: `lifespan(app)` is an async context manager."""
        return self  # no state per run: an app started twice (tests) reuses it

    async def __aenter__(self) -> None:
        await _startup(self)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await _shutdown(self)


def lifespan(*caches: Cache, check: bool = True) -> Lifespan:
    """Return a lifespan for `caches` (default: `memo.default_cache()`).

    Startup opens no connection that could fail it: with `check=True` it probes
    each cache once (`ahealth()`, bounded by the timeouts) and logs a warning
    when a cache is down; the application starts either way and fails open.
    Shutdown closes every sync and async connection of every cache.
    """
    return Lifespan(caches, check)


async def _startup(owner: Lifespan) -> None:
    if not owner.check:
        return
    for cache in owner.caches or (default_cache(),):
        health = await cache.ahealth()
        if health["status"] not in ("ok", "disabled"):
            logger.warning(
                "memo: cache %r is %s at startup (%s); continuing without it where it fails",
                cache.url,
                health["status"],
                ", ".join(f"{name} {state}" for name, state in health["servers"].items()),
            )


async def _shutdown(owner: Lifespan) -> None:
    for cache in owner.caches or (default_cache(),):
        await cache.aclose()


#: `lifespan` under the name FastAPI services often give it: `FastAPI(lifespan=memo.cache_lifespan(cache))`.
cache_lifespan = lifespan
