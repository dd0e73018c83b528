"""`Cache.touch`: give a stored value a new lifetime, only if it is a live, current value.

memo keeps each value's exact expiry in its header (memcached's clock ticks in
whole seconds), so memcached's own `touch` cannot extend a value: the header
would still say when it expires. A touch here reads the entry with its cas
unique (`gets`), writes the same bytes under a new header, and stores them with
`cas`, so that:

* only a value is extended: never a lease marker, an expired value (it stays
  expired: a touch does not bring back what a reader would already miss), or
  bytes that are not a value of this format;
* only the entry read is extended: a write, delete or clear that came in
  between makes the `cas` fail, and nothing older is put back;
* the key is the one `get` would read, under the namespace's current
  generation, so a cleared namespace's old entries are never touched.

Written once as sans-I/O steps, driven sync or async.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from . import _clock
from ._backend import Capability
from ._codec import read_header, with_expiry
from ._drive import Steps, Verb, run_async, run_sync
from ._errors import BackendError

if TYPE_CHECKING:
    from ._values import Values

__all__ = ["atouch", "restamp", "touch"]


def restamp(raw: bytes, ttl: float | None, now: float) -> bytes | None:
    """Return `raw` with a header expiring `ttl` seconds after `now` (None: never), or None.

    None when `raw` is not a live value of this format. Pure.
    """
    header = read_header(raw)
    if header is None or (header.expires_ms is not None and header.expires_ms <= now * 1000.0):
        return None
    return with_expiry(raw, None if ttl is None else int((now + ttl) * 1000.0))


def _steps(values: Values, ns: str, key: str, ttl: float | None) -> Steps[bool]:
    if Capability.LEASES not in values.cache.backend.capabilities:
        return False  # no gets/cas on this backend: nothing can be extended safely
    started = time.perf_counter()
    try:
        got = yield (Verb.GETS, (key,))
        if got is None:
            return False
        raw, unique = got
        fresh = restamp(raw, ttl, _clock.time())
        if fresh is None:
            return False
        return bool((yield (Verb.CAS, (key, fresh, values.hard_ttl(ttl), unique))))
    except BackendError as exc:
        values.failed(ns, "a touch", exc, started)
        return False


def touch(values: Values, key: str, ttl: Any, ns: str) -> bool:
    """See `Cache.touch`."""
    ttl = values.ttl(ttl)
    gen = values.cache.generation(ns)
    if gen is None:
        return False
    return run_sync(values.cache.backend, _steps(values, ns, values.key(ns, gen, key), ttl))


async def atouch(values: Values, key: str, ttl: Any, ns: str) -> bool:
    """See `Cache.atouch`."""
    ttl = values.ttl(ttl)
    gen = await values.cache.ageneration(ns)
    if gen is None:
        return False
    return await run_async(values.cache.backend, _steps(values, ns, values.key(ns, gen, key), ttl))
