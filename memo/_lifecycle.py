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
import time
from types import TracebackType
from typing import Any

from ._cache import Cache
from ._defaults import default_cache
from ._errors import BackendError

__all__ = ["Lifespan", "ahealth", "health", "is_available", "lifespan"]

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


# -- readiness (`Cache.is_available`, `Cache.health`) ---------------------------------------


def _disabled(cache: Cache) -> bool:
    return cache.url.lower().startswith("null:")


def _probe_key(cache: Cache) -> str:
    return f"{cache.prefix}~health"


def is_available(cache: Cache) -> bool:
    """See `Cache.is_available`."""
    if _disabled(cache):
        return False
    states = getattr(cache.backend, "server_states", None)
    return states is None or any(state.state != "open" for state in states().values())


def health(cache: Cache) -> dict[str, Any]:
    """See `Cache.health`."""
    if _disabled(cache):
        return _report(cache, None, 0.0)
    start = time.perf_counter()
    try:
        answered: dict[str, bytes | None] | None = cache.backend.get_all(_probe_key(cache))
    except BackendError:
        answered = None
    return _report(cache, answered, time.perf_counter() - start)


async def ahealth(cache: Cache) -> dict[str, Any]:
    """See `Cache.ahealth`."""
    if _disabled(cache):
        return _report(cache, None, 0.0)
    start = time.perf_counter()
    try:
        answered: dict[str, bytes | None] | None = await cache.backend.aget_all(_probe_key(cache))
    except BackendError:
        answered = None
    return _report(cache, answered, time.perf_counter() - start)


def _report(cache: Cache, answered: dict[str, bytes | None] | None, took: float) -> dict[str, Any]:
    if _disabled(cache):
        return {"status": "disabled", "servers": {}, "latency_ms": 0.0}
    names = getattr(cache.backend, "servers", None) or tuple(answered or ("default",))
    servers = {name: "up" if answered is not None and name in answered else "down" for name in names}
    up = sum(state == "up" for state in servers.values())
    status = "ok" if up == len(servers) else "degraded" if up else "down"
    return {"status": status, "servers": servers, "latency_ms": round(took * 1000, 3)}
