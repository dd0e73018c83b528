"""The I/O edge: what a backend must do, and how a URL picks one.

A backend speaks bytes. It knows nothing of functions, keys' meaning or the
codec; the engine hands it ready-made ASCII keys (at most 250 bytes, no
whitespace or control characters) and encoded values. Every backend offers a
sync and an async flavour of each operation (`get`/`aget`, ...), so one object
serves both kinds of caller and the two share whatever state the backend has
(one routing table, one set of statistics).

Errors are translated at this edge: a backend raises only `memo.BackendError`
subclasses for I/O failures. Fail-open policy is not the backend's business;
the engine applies it.
"""

from __future__ import annotations

import abc
import enum
import importlib
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar
from urllib.parse import SplitResult, parse_qsl, urlsplit

from ._errors import BackendError, ConfigurationError

__all__ = [
    "Backend",
    "Capability",
    "CasItem",
    "LeaseResult",
    "PartialFailure",
    "SetItem",
    "backend_from_url",
    "register_backend",
]

#: One write: (key, value, ttl in seconds or None for "never expires").
SetItem = tuple[str, bytes, "float | None"]
#: One store against a version: (key, value, ttl, cas unique).
CasItem = tuple[str, bytes, "float | None", int]
#: What a lease returns: (added, (value, cas unique) stored now, or None).
LeaseResult = tuple[bool, "tuple[bytes, int] | None"]


class PartialFailure(BackendError):
    """A batch reached some servers but not all; `result` holds what did arrive."""

    def __init__(self, message: str, result: Any, errors: Sequence[BaseException]) -> None:
        super().__init__(message)
        self.result = result
        self.errors = list(errors)


class Capability(str, enum.Enum):
    """What a backend can do beyond the core (get, set, delete and their batches)."""

    #: `add`, `gets` and `cas` (and so `lease`): misses are filled under a lease, so an
    #: invalidate in any process wins over a fill, and one caller per key computes.
    #: Without it memo fills with a plain `set`.
    LEASES = "leases"
    #: `touch`: give a key a new lifetime without reading it.
    TOUCH = "touch"
    #: `get_or_lease`: a read that takes the key's lease when it misses, in the same round
    #: trip (memcached's meta `mg <key> N<ttl>`), so a miss and its fill cost two round trips.
    LEASED_READS = "leased_reads"


class Backend(abc.ABC):
    """A bytes-in, bytes-out store with sync and async flavours of each operation.

    The core every backend implements: `get`, `get_many`, `set`, `set_many`,
    `delete`, `delete_many`, `close` and their async twins. A backend that can do
    more declares it once, in `capabilities`, and implements those methods too;
    memo uses what is declared and does without the rest.

    `ttl` is a relative lifetime in seconds (int or float, > 0) or None for no
    expiry; converting it to the server's representation is the backend's job.
    """

    #: What this backend can do beyond the core (see `Capability`).
    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    #: Options a URL may set, name -> type; `backend_from_url` checks and converts them.
    OPTIONS: ClassVar[dict[str, type]] = {}

    @classmethod
    def from_url(cls, parts: SplitResult, options: dict[str, Any]) -> Backend:
        """Build from a parsed URL that names no host or path; networked backends override this."""
        if parts.netloc or parts.path not in ("", "/"):
            raise ConfigurationError(f"{parts.scheme}:// takes no host or path, got {parts.geturl()!r}")
        return cls(**options)

    #: Largest value (in bytes) the backend will store; larger values are refused.
    max_value_size: int

    # -- sync -------------------------------------------------------------

    @abc.abstractmethod
    def get(self, key: str) -> bytes | None:
        """Return the value stored under `key`, or None when absent."""

    @abc.abstractmethod
    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        """Return the stored values of `keys`; absent keys are left out."""

    @abc.abstractmethod
    def set(self, key: str, value: bytes, ttl: float | None) -> bool:
        """Store `value`; return True only when the server confirmed it stored it."""

    @abc.abstractmethod
    def set_many(self, items: Iterable[SetItem]) -> list[str]:
        """Store every item; return the keys that were not stored."""

    def add(self, key: str, value: bytes, ttl: float | None) -> bool:
        """Store `value` only if `key` is absent; return True if it was stored.

        This default reads, then writes: it is not atomic, which is enough for the
        generation records (a race there only makes entries misses). A backend that
        declares `Capability.LEASES` must make it atomic.
        """
        if self.get(key) is not None:
            return False
        return self.set(key, value, ttl)

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Remove `key`; return True if it existed."""

    @abc.abstractmethod
    def delete_many(self, keys: Sequence[str]) -> None:
        """Remove every key of `keys` that exists."""

    def gets(self, key: str) -> tuple[bytes, int] | None:
        """Return `(value, cas unique)` stored under `key`, or None when absent. (`Capability.LEASES`)"""
        raise _lacks(self, Capability.LEASES, "gets")

    def cas(self, key: str, value: bytes, ttl: float | None, unique: int) -> bool | None:
        """Store `value` only if `key` still holds the version `unique` names (`Capability.LEASES`).

        True when stored. A backend may return None instead of False when the server
        refused the value itself (too large): the engine then counts it as not stored,
        not as a lost lease.
        """
        raise _lacks(self, Capability.LEASES, "cas")

    def touch(self, key: str, ttl: float | None) -> bool:
        """Give `key` a new lifetime without reading it; True if it existed. (`Capability.TOUCH`)"""
        raise _lacks(self, Capability.TOUCH, "touch")

    def get_or_lease(self, key: str, lease_ttl: float) -> bytes | None:
        """`get`, taking the key's lease for `lease_ttl` seconds when it misses. (`Capability.LEASED_READS`)

        Returns the stored bytes; a `Won` (this caller took the lease: store the value
        with `cas(key, ..., won.unique)`, or release it); `NATIVE_LEASE` when another
        caller holds it; None for a miss with no lease taken (a server that speaks
        only the classic commands: lease with `lease`).
        """
        raise _lacks(self, Capability.LEASED_READS, "get_or_lease")

    def get_or_lease_many(self, keys: Sequence[str], lease_ttl: float) -> dict[str, bytes | None]:
        """`get_or_lease` of several keys: `{key: its answer}`. (`Capability.LEASED_READS`)

        Keys of a server that failed are left out; raises the first error when all
        failed, `PartialFailure` (its `result` the dict) when some did. Backends that
        can should send one round trip per server (memcached pipelines `mg … N`).
        """
        found: dict[str, bytes | None] = {}
        errors: list[BaseException] = []
        for key in keys:
            try:
                found[key] = self.get_or_lease(key, lease_ttl)
            except BackendError as exc:
                errors.append(exc)
        _finish_many("get_or_lease_many", found, errors, len(keys))
        return found

    def lease(self, key: str, marker: bytes, ttl: float | None) -> tuple[bool, tuple[bytes, int] | None]:
        """`add` the marker under `key`, then `gets` it: `(added, what is stored now)`.

        Backends that can should do both in one round trip (memcached pipelines them).
        """
        added = self.add(key, marker, ttl)
        return added, self.gets(key)

    def lease_many(self, items: Sequence[SetItem]) -> dict[str, LeaseResult]:
        """`lease` of several keys, `items` being (key, marker, ttl): `{key: (added, found)}`.

        Keys whose lease failed are left out; raises the first error when all
        failed, `PartialFailure` (its `result` the dict) when some did. Backends
        that can should send one round trip per server (memcached pipelines them).
        """
        found: dict[str, LeaseResult] = {}
        errors: list[BaseException] = []
        for key, marker, ttl in items:
            try:
                found[key] = self.lease(key, marker, ttl)
            except BackendError as exc:
                errors.append(exc)
        _finish_many("lease_many", found, errors, len(items))
        return found

    def cas_many(self, items: Sequence[CasItem]) -> list[str]:
        """`cas` of several keys; return the keys not stored (refused or failed).

        Raises the first error when all failed, `PartialFailure` (its `result`
        the list) when some did.
        """
        not_stored: list[str] = []
        errors: list[BaseException] = []
        for key, value, ttl, unique in items:
            try:
                if not self.cas(key, value, ttl, unique):
                    not_stored.append(key)
            except BackendError as exc:
                not_stored.append(key)
                errors.append(exc)
        _finish_many("cas_many", not_stored, errors, len(items))
        return not_stored

    def get_all(self, key: str) -> dict[str, bytes | None]:
        """Read a small control record from every server: `{server: value or None}`.

        Servers that fail are left out; raises only when every server failed. A
        backend with one store returns one entry.
        """
        return {"default": self.get(key)}

    def get_all_many(self, keys: Sequence[str]) -> dict[str, dict[str, bytes]]:
        """`get_all` of several control records: `{server: {key: value}}`, absent keys left out.

        Servers that fail are left out; raises only when every server failed.
        Backends with several servers should read each server in one round trip.
        """
        out: dict[str, dict[str, bytes]] = {}
        for key in keys:
            for server, value in self.get_all(key).items():
                found = out.setdefault(server, {})
                if value is not None:
                    found[key] = value
        return out

    def set_all(self, key: str, value: bytes, ttl: float | None) -> int:
        """Write a small control record to every server; return how many stored it.

        Raises only when every server failed.
        """
        return int(self.set(key, value, ttl))

    def append_all(self, key: str, value: bytes, ttl: float | None) -> int:
        """Append `value` to a control record on every server, creating it where absent.

        Unlike `set_all`, it never removes what another writer stored (memcached's
        `add`, then `append`), so records that only grow can be merged without a
        compare-and-set. Returns how many servers stored it; raises only when
        every server failed. This default is for a single store: read, then write.
        """
        return int(self.set(key, (self.get(key) or b"") + value, ttl))

    @abc.abstractmethod
    def close(self) -> None:
        """Release every connection the sync side holds."""

    # -- async ------------------------------------------------------------

    @abc.abstractmethod
    async def aget(self, key: str) -> bytes | None:
        """Async `get`."""

    @abc.abstractmethod
    async def aget_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        """Async `get_many`."""

    @abc.abstractmethod
    async def aset(self, key: str, value: bytes, ttl: float | None) -> bool:
        """Async `set`."""

    @abc.abstractmethod
    async def aset_many(self, items: Iterable[SetItem]) -> list[str]:
        """Async `set_many`."""

    async def aadd(self, key: str, value: bytes, ttl: float | None) -> bool:
        """Async `add`."""
        if await self.aget(key) is not None:
            return False
        return await self.aset(key, value, ttl)

    @abc.abstractmethod
    async def adelete(self, key: str) -> bool:
        """Async `delete`."""

    @abc.abstractmethod
    async def adelete_many(self, keys: Sequence[str]) -> None:
        """Async `delete_many`."""

    async def agets(self, key: str) -> tuple[bytes, int] | None:
        """Async `gets`."""
        raise _lacks(self, Capability.LEASES, "agets")

    async def acas(self, key: str, value: bytes, ttl: float | None, unique: int) -> bool | None:
        """Async `cas`."""
        raise _lacks(self, Capability.LEASES, "acas")

    async def atouch(self, key: str, ttl: float | None) -> bool:
        """Async `touch`."""
        raise _lacks(self, Capability.TOUCH, "atouch")

    async def aget_or_lease(self, key: str, lease_ttl: float) -> bytes | None:
        """Async `get_or_lease`."""
        raise _lacks(self, Capability.LEASED_READS, "aget_or_lease")

    async def aget_or_lease_many(self, keys: Sequence[str], lease_ttl: float) -> dict[str, bytes | None]:
        """Async `get_or_lease_many`."""
        found: dict[str, bytes | None] = {}
        errors: list[BaseException] = []
        for key in keys:
            try:
                found[key] = await self.aget_or_lease(key, lease_ttl)
            except BackendError as exc:
                errors.append(exc)
        _finish_many("get_or_lease_many", found, errors, len(keys))
        return found

    async def alease(
        self, key: str, marker: bytes, ttl: float | None
    ) -> tuple[bool, tuple[bytes, int] | None]:
        """Async `lease`."""
        added = await self.aadd(key, marker, ttl)
        return added, await self.agets(key)

    async def alease_many(self, items: Sequence[SetItem]) -> dict[str, LeaseResult]:
        """Async `lease_many`."""
        found: dict[str, LeaseResult] = {}
        errors: list[BaseException] = []
        for key, marker, ttl in items:
            try:
                found[key] = await self.alease(key, marker, ttl)
            except BackendError as exc:
                errors.append(exc)
        _finish_many("lease_many", found, errors, len(items))
        return found

    async def acas_many(self, items: Sequence[CasItem]) -> list[str]:
        """Async `cas_many`."""
        not_stored: list[str] = []
        errors: list[BaseException] = []
        for key, value, ttl, unique in items:
            try:
                if not await self.acas(key, value, ttl, unique):
                    not_stored.append(key)
            except BackendError as exc:
                not_stored.append(key)
                errors.append(exc)
        _finish_many("cas_many", not_stored, errors, len(items))
        return not_stored

    async def aget_all(self, key: str) -> dict[str, bytes | None]:
        """Async `get_all`."""
        return {"default": await self.aget(key)}

    async def aget_all_many(self, keys: Sequence[str]) -> dict[str, dict[str, bytes]]:
        """Async `get_all_many`."""
        out: dict[str, dict[str, bytes]] = {}
        for key in keys:
            for server, value in (await self.aget_all(key)).items():
                found = out.setdefault(server, {})
                if value is not None:
                    found[key] = value
        return out

    async def aset_all(self, key: str, value: bytes, ttl: float | None) -> int:
        """Async `set_all`."""
        return int(await self.aset(key, value, ttl))

    async def aappend_all(self, key: str, value: bytes, ttl: float | None) -> int:
        """Async `append_all`."""
        return int(await self.aset(key, (await self.aget(key) or b"") + value, ttl))

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release every connection the async side holds (in every event loop)."""


def _lacks(backend: Backend, capability: Capability, method: str) -> NotImplementedError:
    return NotImplementedError(
        f"{type(backend).__name__}.{method}: the backend does not declare {capability} "
        "in its capabilities, so memo does not call it"
    )


#: URL scheme -> "module:Class", imported when a URL first uses it (as dogpile.cache
#: registers its backends). Backends import this module, never the reverse: no import circle.
_REGISTRY: dict[str, str] = {
    "memory": "memo._memory:MemoryBackend",
    # A cache switched off by configuration: the same code paths, no server calls.
    "null": "memo._null:NullBackend",
    "memcached": "memo._memcached:MemcachedBackend",
    "memcached+tls": "memo._memcached:MemcachedBackend",
    "memcached+discovery": "memo._memcached:MemcachedBackend",
    "memcached+discovery+tls": "memo._memcached:MemcachedBackend",
}


def _finish_many(operation: str, result: Any, errors: Sequence[BaseException], attempted: int) -> None:
    """Raise the first error when every key failed, `PartialFailure` when some did."""
    if not errors:
        return
    if len(errors) == attempted:
        raise errors[0]
    raise PartialFailure(
        f"{operation}: {len(errors)} of {attempted} keys failed: {errors[0]}", result, errors
    )


def register_backend(scheme: str, target: str) -> None:
    """Make URLs with `scheme` build the backend class `target`, "module:Class", imported on first use.

    The class must subclass `Backend`, list its options in `OPTIONS` and build
    itself in `from_url(parts, options)`.
    """
    module, colon, name = target.partition(":")
    if not (module and colon and name):
        raise ValueError(f"backend target must be 'module:Class', got {target!r}")
    _REGISTRY[scheme.lower()] = target


def backend_from_url(url: str, options: dict[str, Any]) -> Backend:
    """Build the backend a URL names; `options` are keyword settings for it.

    Query parameters in the URL (`memory://?max_entries=100`) are merged under
    explicit options. Client libraries are imported only for the scheme used.

    Raises:
        ConfigurationError: the URL or an option is not one the backend accepts;
            the message names it and what is allowed.
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"a cache URL is a str, got {type(url).__name__} {url!r}")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed "[" of an IPv6 address
        raise ConfigurationError(f"malformed cache URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    target = _REGISTRY.get(scheme)
    if target is None:
        raise ConfigurationError(
            f"unknown cache URL scheme {parts.scheme!r} in {url!r}; use memory://, "
            "memcached://host:port[,host:port...], memcached+discovery://config-endpoint:port "
            "or null:// (a disabled cache)"
        )
    if parts.fragment:
        raise ConfigurationError(f"cache URLs take no #fragment, got {url!r}")
    module, _, name = target.partition(":")
    backend_class: type[Backend] = getattr(importlib.import_module(module), name)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = dict(pairs)
    if len(query) != len(pairs):
        twice = sorted({k for k, _ in pairs if [p[0] for p in pairs].count(k) > 1})
        raise ConfigurationError(f"option {', '.join(twice)} given twice in {url!r}")
    merged: dict[str, Any] = {**query, **options}
    if scheme == "memory":
        from ._settings import warn_if_per_process

        warn_if_per_process(url)
    return backend_class.from_url(parts, _coerce(backend_class.OPTIONS, merged, url))


def _coerce(accepted: dict[str, type], options: dict[str, Any], url: str) -> dict[str, Any]:
    """Check option names and types against what the backend accepts; convert strings from URLs."""
    out: dict[str, Any] = {}
    for name, value in options.items():
        kind = accepted.get(name)
        if kind is None:
            raise ConfigurationError(
                f"option {name!r} is not understood by the backend of {url!r}; "
                f"it accepts: {', '.join(sorted(accepted)) or 'nothing'}"
            )
        if isinstance(value, str) and kind is not str and kind is not object:
            try:
                value = kind(value)
            except ValueError:
                raise ConfigurationError(
                    f"option {name}={value!r} in {url!r} is not a valid {kind.__name__}"
                ) from None
        if not _is_a(value, kind):
            raise ConfigurationError(
                f"option {name}={value!r} of {url!r} is not a {kind.__name__} (got {type(value).__name__})"
            )
        out[name] = value
    return out


def _is_a(value: Any, kind: type) -> bool:
    """Whether `value` fits an option of type `kind` (an int is a float; a bool is neither)."""
    if kind is object:
        return True
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)
