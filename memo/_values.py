"""The value API: `cache.get(key)`, `set`, `delete`, `get_or_set` and their batches.

Values go through the same typed codec as `@cached` results and live under the
same namespace generations, so `cache.clear(ns)` drops them too. User keys are
strings; each becomes a memcached-safe key with a readable part and a digest:

    <prefix><namespace>:=<readable key>:<generation>:<blake2b-128 of namespace and key>

The readable parts are sanitised like function keys (`safe_segment`); the `=`
that starts the second part can never start a function key's second part (a
sanitised function name), so a value key and a function key cannot collide,
whatever the user's strings.

Each operation is written once, as a generator of backend operations
(`("get", (key,))`...), and driven by a sync or an async driver, like the
engine's other cold paths. A backend failure is thrown back into the generator
at the `yield` that asked for it, so the fail-open handling is written once too.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ._codec import GLOBAL_TYPES, Codec, DecodeError, TypeRegistry
from ._errors import BackendError, SerializationError
from ._flight import AsyncFlight, Flight
from ._keys import safe_segment
from ._policy import UNSET, check_ttl

if TYPE_CHECKING:
    from ._cache import Cache

__all__ = ["Values", "value_key"]

logger = logging.getLogger("memo")
_perf = time.perf_counter

#: A step's request to its driver: (backend method name, arguments), or
#: ("compute", ()) to run the caller's function.
Op = tuple[str, tuple[Any, ...]]
Steps = Generator[Op, Any, Any]

_SEED = b"memo/value/1\x00"
_MISS: Any = object()


def value_key(prefix: str, ns: str, generation: str, key: str) -> str:
    """Return the backend key of the user's `key` in namespace `ns`. Pure."""
    if not isinstance(key, str):
        raise TypeError(f"cache keys are strings, got {type(key).__name__} {key!r}")
    ns_bytes = ns.encode("utf-8", "surrogatepass")
    h = hashlib.blake2b(_SEED, digest_size=16)
    # Length-prefixed, so ("a:b", "c") and ("a", "b:c") hash apart.
    h.update(b"%d:" % len(ns_bytes) + ns_bytes + key.encode("utf-8", "surrogatepass"))
    return f"{prefix}{safe_segment(ns, 48)}:={safe_segment(key, 64)}:{generation}:{h.hexdigest()}"


class Values:
    """The value API of one `Cache` (its `get`, `set`, ... methods delegate here)."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self.codec = Codec(TypeRegistry(parent=GLOBAL_TYPES), compress_threshold=cache.compress_threshold)
        self._flight: Flight[Any] = Flight()
        self._aflight: AsyncFlight[Any] = AsyncFlight()
        self._warned = False

    # -- drivers -----------------------------------------------------------------

    def run(self, steps: Steps, compute: Callable[[], Any] | None = None) -> Any:
        """Drive `steps` with the backend's sync methods."""
        backend = self.cache.backend
        reply: Any = None
        failure: BackendError | None = None
        while True:
            try:
                method, args = steps.throw(failure) if failure is not None else steps.send(reply)
            except StopIteration as stop:
                return stop.value
            failure = None
            if method == "compute":
                assert compute is not None
                reply = compute()  # the caller's errors are the caller's: not thrown back
            elif method == "sleep":
                time.sleep(*args)
                reply = None
            else:
                try:
                    reply = getattr(backend, method)(*args)
                except BackendError as exc:
                    failure, reply = exc, None

    async def arun(self, steps: Steps, compute: Callable[[], Any] | None = None) -> Any:
        """Drive `steps` with the backend's async methods; `compute` may be sync or async."""
        backend = self.cache.backend
        reply: Any = None
        failure: BackendError | None = None
        while True:
            try:
                method, args = steps.throw(failure) if failure is not None else steps.send(reply)
            except StopIteration as stop:
                return stop.value
            failure = None
            if method == "compute":
                assert compute is not None
                reply = compute()
                if inspect.isawaitable(reply):
                    reply = await reply
            elif method == "sleep":
                await asyncio.sleep(*args)
                reply = None
            else:
                try:
                    reply = await getattr(backend, "a" + method)(*args)
                except BackendError as exc:
                    failure, reply = exc, None

    # -- the pure parts --------------------------------------------------------------

    def key(self, ns: str, generation: str, key: str) -> str:
        return value_key(self.cache.prefix, ns, generation, key)

    def ttl(self, ttl: Any) -> float | None:
        return self.cache.ttl if ttl is UNSET else check_ttl(ttl)

    def decode(self, ns: str, raw: bytes, duration: float | None) -> Any:
        """Return the value `raw` holds, or `_MISS` (counted) when it cannot be read."""
        try:
            return self.codec.decode(raw)
        except DecodeError as exc:
            self.cache.ns_stats(ns).decode_errors += 1
            self.cache._emit("decode_error", ns, None, duration, exc, "values")
            return _MISS

    def encode(self, ns: str, value: Any) -> bytes | None:
        """Return the wire bytes of `value`, or None (counted, logged once) if it cannot be stored."""
        try:
            return self.codec.encode(value)
        except SerializationError as exc:
            self.cache.ns_stats(ns).encode_errors += 1
            if self.cache.strict:
                raise
            if not self._warned:
                self._warned = True
                logger.warning("memo: a value was not cached: %s", exc)
            return None

    def failed(self, ns: str, what: str, exc: BackendError, started: float) -> None:
        self.cache._emit("error", ns, None, _perf() - started, exc, "values")
        self.cache.record_error(ns, what, exc)

    def found(self, ns: str, raw: bytes | None, started: float) -> Any:
        """Count and report a read's outcome; return the value or `_MISS`."""
        duration = _perf() - started
        value = _MISS if raw is None else self.decode(ns, raw, duration)
        stats = self.cache.ns_stats(ns)
        if value is _MISS:
            stats.misses += 1
            self.cache._emit("miss", ns, None, duration, None, "values")
        else:
            stats.hits += 1
            self.cache._emit("hit", ns, None, duration, None, "values")
        return value

    def stored(self, ns: str, ok: bool, started: float | None) -> None:
        duration = None if started is None else _perf() - started
        stats = self.cache.ns_stats(ns)
        if ok:
            stats.sets += 1
        else:
            stats.not_stored += 1
        self.cache._emit("set" if ok else "not_stored", ns, None, duration, None, "values")

    # -- steps: each operation written once ---------------------------------------------

    def get_steps(self, ns: str, key: str) -> Generator[Op, Any, tuple[Any, bytes | None]]:
        """Read one key: (value or `_MISS`, the raw bytes read)."""
        started = _perf()
        try:
            raw = yield ("get", (key,))
        except BackendError as exc:
            self.failed(ns, "a read", exc, started)
            return _MISS, None
        return self.found(ns, raw, started), raw

    def set_steps(self, ns: str, key: str, data: bytes, ttl: float | None) -> Generator[Op, Any, bool]:
        started = _perf()
        try:
            ok = bool((yield ("set", (key, data, ttl))))
        except BackendError as exc:
            self.failed(ns, "a write", exc, started)
            return False
        self.stored(ns, ok, started)
        return ok

    def delete_steps(self, ns: str, key: str) -> Generator[Op, Any, bool]:
        started = _perf()
        try:
            return bool((yield ("delete", (key,))))
        except BackendError as exc:
            self.failed(ns, "a delete", exc, started)
            return False

    def fill_steps(
        self, ns: str, key: str, bad: bytes | None, ttl: float | None
    ) -> Generator[Op, Any, tuple[Any, bytes | None]]:
        """The miss path of `get_or_set`: re-read, compute, store; return (value, stored bytes)."""
        # Re-read first: a caller that missed just before another finished its fill
        # would otherwise compute a second time. `bad` (undecodable) is not decoded twice.
        started = _perf()
        try:
            raw = yield ("get", (key,))
        except BackendError as exc:
            self.failed(ns, "a read", exc, started)
            raw = bad
        if raw is not None and raw != bad:
            value = self.decode(ns, raw, None)
            if value is not _MISS:
                return value, raw
        value = yield ("compute", ())
        data = self.encode(ns, value)
        if data is not None:
            yield from self.set_steps(ns, key, data, ttl)
        return value, data

    def get_many_steps(self, ns: str, keys: dict[str, str]) -> Generator[Op, Any, dict[str, Any]]:
        started = _perf()
        try:
            found: dict[str, bytes] = yield ("get_many", (list(keys.values()),))
        except BackendError as exc:
            self.failed(ns, "a batch read", exc, started)
            found = getattr(exc, "result", None) or {}
        out: dict[str, Any] = {}
        for user_key, key in keys.items():
            value = self.found(ns, found.get(key), started)
            if value is not _MISS:
                out[user_key] = value
        return out

    def set_many_steps(
        self, ns: str, items: list[tuple[str, bytes, float | None]]
    ) -> Generator[Op, Any, int]:
        started = _perf()
        try:
            refused: list[str] = yield ("set_many", (items,))
        except BackendError as exc:
            self.failed(ns, "a batch write", exc, started)
            return 0
        refused_set = set(refused)
        for key, _, _ in items:
            self.stored(ns, key not in refused_set, None)
        return len(items) - len(refused_set)

    # -- sync ----------------------------------------------------------------------

    def get(self, key: str, default: Any, ns: str) -> Any:
        gen = self.cache.generation(ns)
        if gen is None:
            return default
        value, _ = self.run(self.get_steps(ns, self.key(ns, gen, key)))
        return default if value is _MISS else value

    def set(self, key: str, value: Any, ns: str, ttl: Any) -> bool:
        ttl = self.ttl(ttl)
        data = self.encode(ns, value)
        gen = self.cache.generation(ns)
        if gen is None or data is None:
            return False
        return bool(self.run(self.set_steps(ns, self.key(ns, gen, key), data, ttl)))

    def delete(self, key: str, ns: str) -> bool:
        gen = self.cache.generation(ns)
        if gen is None:
            return False
        return bool(self.run(self.delete_steps(ns, self.key(ns, gen, key))))

    def get_or_set(self, key: str, fn: Callable[[], Any], ns: str, ttl: Any) -> Any:
        ttl = self.ttl(ttl)
        gen = self.cache.generation(ns)
        if gen is None:
            return fn()
        full = self.key(ns, gen, key)
        value, raw = self.run(self.get_steps(ns, full))
        if value is not _MISS:
            return value
        outcome, led = self._flight.run(full, lambda: self.run(self.fill_steps(ns, full, raw, ttl), fn))
        return self.shared(ns, outcome, led)

    def get_many(self, keys: Iterable[str], ns: str) -> dict[str, Any]:
        gen = self.cache.generation(ns)
        if gen is None:
            return {}
        return self.run(self.get_many_steps(ns, {k: self.key(ns, gen, k) for k in keys}))  # type: ignore[no-any-return]

    def set_many(self, mapping: Mapping[str, Any], ns: str, ttl: Any) -> int:
        items = self.items(mapping, ns, ttl, self.cache.generation(ns))
        return int(self.run(self.set_many_steps(ns, items))) if items else 0

    # -- async -------------------------------------------------------------------------

    async def aget(self, key: str, default: Any, ns: str) -> Any:
        gen = await self.cache.ageneration(ns)
        if gen is None:
            return default
        value, _ = await self.arun(self.get_steps(ns, self.key(ns, gen, key)))
        return default if value is _MISS else value

    async def aset(self, key: str, value: Any, ns: str, ttl: Any) -> bool:
        ttl = self.ttl(ttl)
        data = self.encode(ns, value)
        gen = await self.cache.ageneration(ns)
        if gen is None or data is None:
            return False
        return bool(await self.arun(self.set_steps(ns, self.key(ns, gen, key), data, ttl)))

    async def adelete(self, key: str, ns: str) -> bool:
        gen = await self.cache.ageneration(ns)
        if gen is None:
            return False
        return bool(await self.arun(self.delete_steps(ns, self.key(ns, gen, key))))

    async def aget_or_set(self, key: str, fn: Callable[[], Any], ns: str, ttl: Any) -> Any:
        ttl = self.ttl(ttl)
        gen = await self.cache.ageneration(ns)
        if gen is None:
            result = fn()
            return (await result) if inspect.isawaitable(result) else result
        full = self.key(ns, gen, key)
        value, raw = await self.arun(self.get_steps(ns, full))
        if value is not _MISS:
            return value
        outcome, led = await self._aflight.run(
            full, lambda: self.arun(self.fill_steps(ns, full, raw, ttl), fn)
        )
        return self.shared(ns, outcome, led)

    async def aget_many(self, keys: Iterable[str], ns: str) -> dict[str, Any]:
        gen = await self.cache.ageneration(ns)
        if gen is None:
            return {}
        return await self.arun(self.get_many_steps(ns, {k: self.key(ns, gen, k) for k in keys}))  # type: ignore[no-any-return]

    async def aset_many(self, mapping: Mapping[str, Any], ns: str, ttl: Any) -> int:
        items = self.items(mapping, ns, ttl, await self.cache.ageneration(ns))
        return int(await self.arun(self.set_many_steps(ns, items))) if items else 0

    # -- shared by both flavours -----------------------------------------------------------

    def items(
        self, mapping: Mapping[str, Any], ns: str, ttl: Any, gen: str | None
    ) -> list[tuple[str, bytes, float | None]]:
        ttl = self.ttl(ttl)
        if gen is None:
            return []
        items = []
        for key, value in mapping.items():
            data = self.encode(ns, value)
            if data is not None:
                items.append((self.key(ns, gen, key), data, ttl))
        return items

    def shared(self, ns: str, outcome: tuple[Any, bytes | None], led: bool) -> Any:
        # A follower gets its own copy, decoded from the bytes the leader stored.
        value, data = outcome
        if led or data is None:
            return value
        copy = self.decode(ns, data, None)
        return value if copy is _MISS else copy
