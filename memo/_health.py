"""Readiness: `Cache.is_available` (no I/O) and `Cache.health` (one probe per server).

Apart from `_lifecycle.py`, whose lifespan needs the default Cache, so that
`Cache` can use these without an import circle (`Cache` is only a type here).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ._errors import BackendError
from ._null import NullBackend

if TYPE_CHECKING:
    from ._cache import Cache

__all__ = ["aconnect", "ahealth", "connect", "health", "is_available"]


def _disabled(cache: Cache) -> bool:
    # By the backend, not the URL: `Cache(backend=NullBackend())` is disabled too.
    return isinstance(cache.backend, NullBackend)


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


def connect(cache: Cache) -> bool:
    """See `Cache.connect`: the health probe opens one connection per server."""
    return health(cache)["status"] in ("ok", "disabled")


async def aconnect(cache: Cache) -> bool:
    """See `Cache.aconnect`."""
    return (await ahealth(cache))["status"] in ("ok", "disabled")
