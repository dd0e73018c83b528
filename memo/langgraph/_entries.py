"""Entries of the graph cache: a value in a small envelope, and a batch read back.

The serializer's `(type, bytes)` in `b"mlg" | version | flags | len(type) | type | body`,
the body zlib-compressed above the Cache's `compress_threshold`, and, when the
entry has a ttl, its exact expiry (uint64 Unix ms) at the end: memcached's
clock ticks in whole seconds, so a CachePolicy's ttl is held to the
millisecond by the reader. Anything that does not decode (another format,
corruption, an entry written with another serializer) is a miss, counted in
`decode_errors`.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Mapping
from typing import Any

from langgraph.cache.base import FullKey
from langgraph.checkpoint.serde.base import SerializerProtocol

from .. import _clock
from .._backend import SetItem
from .._cache import Cache
from .._policy import ErrorLog, Stats
from .._sentinels import MISS

__all__ = ["Entries"]

logger = logging.getLogger("memo")

_MAGIC = b"mlg"
_VERSION = 2
_ZLIB = 1
_EXPIRES = 2
_HEADER = len(_MAGIC) + 3  # magic, version, flags, length of the type name


class Entries:
    """Encode and decode the entries of one graph cache; count what fails in its stats.

    Args:
        cache: the memo Cache (its compression threshold and event hook).
        name: the graph cache's memo namespace, for events.
        serde: the graph cache's serializer.
    """

    def __init__(self, cache: Cache, name: str, serde: SerializerProtocol) -> None:
        self.cache = cache
        self.name = name
        self.serde = serde
        self.stats: Stats = cache.ns_stats(name)
        self._errors = ErrorLog(logger)
        #: The header of the last uncompressed entry decoded and its type name, as one tuple
        #: (threads share it: a header never meets another header's type name).
        self._last: tuple[bytes, str] = (b"", "")

    def encode(self, value: Any, ttl: float | None = None) -> bytes | None:
        """Return the entry of `value`, or None (counted, logged) when the serializer refuses it."""
        try:
            kind, body = self.serde.dumps_typed(value)
            tag = kind.encode("ascii")
            if len(tag) > 255:
                raise ValueError(f"serializer type name {kind!r} is longer than 255 bytes")
        except Exception as exc:  # a value that cannot be stored is not cached; the run goes on
            self.stats.encode_errors += 1
            self._errors.report(f"encoding a {type(value).__name__} for the graph cache", exc)
            return None
        flags = 0
        threshold = self.cache.compress_threshold
        if threshold is not None and len(body) > threshold:
            packed = zlib.compress(body, 3)
            if len(packed) < len(body):
                body, flags = packed, _ZLIB
        if ttl is None:
            return b"".join((_MAGIC, bytes((_VERSION, flags, len(tag))), tag, body))
        expires = int(_clock.time() * 1000.0 + ttl * 1000.0).to_bytes(8, "big")
        return b"".join((_MAGIC, bytes((_VERSION, flags | _EXPIRES, len(tag))), tag, body, expires))

    def decode(self, raw: bytes) -> Any:
        """Decode one entry, reading its header (`collect` does the common case inline)."""
        try:
            if raw[:3] != _MAGIC or raw[3] != _VERSION or raw[4] & ~(_ZLIB | _EXPIRES):
                raise ValueError("not a memo.langgraph entry of a known version")
            end = _HEADER + raw[5]
            kind = raw[_HEADER:end].decode("ascii")
            if len(kind) != raw[5]:
                raise ValueError("truncated entry")
            body = raw[end:]
            if raw[4] & _EXPIRES:
                if len(body) < 8:
                    raise ValueError("truncated entry")
                if int.from_bytes(body[-8:], "big") <= _clock.time() * 1000.0:
                    return MISS  # expired: a miss, not a decode error
                body = body[:-8]
            if raw[4] & _ZLIB:
                return self.serde.loads_typed((kind, zlib.decompress(body)))
            self._last = (raw[:end], kind)
            return self.serde.loads_typed((kind, body))
        except Exception:  # corrupt, foreign or another serializer's bytes: a miss, never an error
            self.stats.decode_errors += 1
            return MISS

    def collect(
        self, asked: int, storage: Mapping[FullKey, str], found: Mapping[str, bytes]
    ) -> dict[FullKey, Any]:
        """Decode what a batch read found; count hits and misses of the `asked` keys."""
        values: dict[FullKey, Any] = {}
        if found:
            # The common case inlined: every entry has the header of the last one decoded
            # (one serializer type, uncompressed), so only the body is handed to the serde.
            header, kind = self._last
            start = len(header)
            timed = start and header[4] & _EXPIRES
            now_ms = _clock.time() * 1000.0
            loads = self.serde.loads_typed
            for full, key in storage.items():
                raw = found.get(key)
                if raw is None:
                    continue
                if start and raw.startswith(header):
                    try:
                        if not timed:
                            values[full] = loads((kind, raw[start:]))
                            continue
                        if len(raw) >= start + 8 and int.from_bytes(raw[-8:], "big") > now_ms:
                            values[full] = loads((kind, raw[start:-8]))
                            continue
                    except Exception:
                        pass  # counted by decode below, which fails the same way
                value = self.decode(raw)
                if value is not MISS:
                    values[full] = value
        self._count(asked, len(values))
        return values

    def _count(self, asked: int, hits: int) -> None:
        self.stats.hits += hits
        self.stats.misses += asked - hits
        if self.cache.event_hook is not None:
            for kind, n in (("hit", hits), ("miss", asked - hits)):
                for _ in range(n):
                    self.cache.emit(kind, self.name, None, None, None, "langgraph")

    def items(
        self,
        pairs: Mapping[FullKey, tuple[Any, int | None]],
        storage: Mapping[FullKey, str],
        default: float | None,
    ) -> list[SetItem]:
        """The memcached items of `pairs` that have a storage key; `default`: the ttl of pairs giving none."""
        items: list[SetItem] = []
        for full, key in storage.items():
            value, given = pairs[full]
            ttl: float | None = default if given is None else given
            # LangGraph's ttl is whole seconds or None; memcached would read 0 as "never expires".
            if ttl is not None and ttl <= 0:
                continue
            data = self.encode(value, ttl)
            if data is not None:
                # memcached keeps it a second longer; the reader holds the exact expiry.
                items.append((key, data, None if ttl is None else ttl + 1))
        return items
