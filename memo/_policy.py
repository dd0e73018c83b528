"""Policy: validated settings and the small rules the engine applies. Pure."""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Literal

from ._errors import ConfigurationError

__all__ = [
    "ErrorLog",
    "OnError",
    "Stats",
    "check_flag",
    "check_on_error",
    "check_seconds",
    "check_size",
    "check_ttl",
]

OnError = Literal["ignore", "raise"]


#: The longest lifetime memo accepts: ten years. memcached reads lifetimes past 30 days as
#: absolute times in a signed 32-bit field; anything longer is "never expire" (None).
MAX_TTL = 10 * 365 * 86_400


def check_ttl(ttl: Any, where: str = "ttl") -> float | None:
    """Return a valid ttl: seconds in (0, `MAX_TTL`] (int or float), or None for no expiry."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise ConfigurationError(f"{where} must be a number of seconds or None, got {ttl!r}")
    if not math.isfinite(ttl) or ttl <= 0:
        raise ConfigurationError(f"{where} must be > 0 seconds (None: never expire), got {ttl!r}")
    if ttl > MAX_TTL:
        raise ConfigurationError(
            f"{where} must be at most {MAX_TTL} seconds (ten years; None: never expire), got {ttl!r}"
        )
    return ttl


def check_size(value: Any, where: str, *, none: bool = False) -> int | None:
    """Return a whole number of bytes >= 0 (or None when `none`), or raise naming `where`."""
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        allowed = "a whole number of bytes >= 0" + (" or None" if none else "")
        raise ConfigurationError(f"{where} must be {allowed}, got {value!r}")
    return value


def check_seconds(value: Any, where: str, *, zero: bool = False) -> float:
    """Return a finite number of seconds > 0 (>= 0 with `zero`), or raise naming `where`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigurationError(f"{where} must be a number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not zero):
        raise ConfigurationError(f"{where} must be {'>=' if zero else '>'} 0 seconds, got {value!r}")
    return float(value)


def check_flag(value: Any, where: str) -> bool:
    """Return `value` if it is a bool, or raise naming `where` (no truthy strings: "false" is true)."""
    if not isinstance(value, bool):
        raise ConfigurationError(f"{where} must be True or False, got {value!r}")
    return value


def check_on_error(value: Any) -> OnError:
    if value not in ("ignore", "raise"):
        raise ConfigurationError(f'on_error must be "ignore" (fail open) or "raise", got {value!r}')
    return value  # type: ignore[no-any-return]


class Stats:
    """Counters of one namespace. Increments are not locked: figures, not ledgers."""

    __slots__ = (
        "decode_errors",
        "encode_errors",
        "errors",
        "hits",
        "lease_lost",
        "lease_waits",
        "local_evictions",
        "local_hits",
        "misses",
        "not_stored",
        "sets",
        "stale",
        "stale_on_error",
    )

    def __init__(self) -> None:
        self.hits = self.misses = self.sets = self.errors = 0
        self.decode_errors = self.encode_errors = self.not_stored = 0
        self.stale = self.lease_lost = self.lease_waits = self.stale_on_error = 0
        self.local_hits = self.local_evictions = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class ErrorLog:
    """Log backend failures at most once per `interval` seconds per kind of error."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self._logger = logger
        self._interval = interval
        self._last: dict[str, tuple[float, int]] = {}

    def report(self, what: str, exc: BaseException) -> None:
        kind = f"{what}:{type(exc).__name__}"
        now = time.monotonic()
        last, suppressed = self._last.get(kind, (-math.inf, 0))
        if now - last < self._interval:
            self._last[kind] = (last, suppressed + 1)
            return
        self._last[kind] = (now, 0)
        more = f" ({suppressed} similar errors not logged)" if suppressed else ""
        self._logger.warning("memo: %s failed, continuing without the cache: %s%s", what, exc, more)
