"""memo: memoization on Memcached for sync and async Python.

    import memo

    cache = memo.Cache("memcached://127.0.0.1:11211")

    @cache.cached(ns="users", ttl=60)
    def get_user(user_id: int) -> User: ...

Everything public is re-exported here; the modules behind it are private.
"""

from ._backend import Backend, Capability, PartialFailure
from ._batch import AsyncCachedMany, CachedMany
from ._cache import Cache
from ._canonical import register_key_type
from ._codec import Codec, DecodeError, register_type
from ._decorator import AsyncCached, Cached
from ._defaults import cached, cached_many, configure, default_cache
from ._errors import (
    BackendError,
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
    ConfigurationError,
    MemoError,
    SerializationError,
    UnkeyableArgumentError,
)
from ._events import Event
from ._lifecycle import Lifespan, cache_lifespan, lifespan
from ._sentinels import MISS
from ._sentinels import NOT_GIVEN as UNSET  # the name users know for "not given"

__all__ = [
    "Cache",
    "cached",
    "cached_many",
    "configure",
    "default_cache",
    "lifespan",
    "cache_lifespan",
    "Lifespan",
    "Cached",
    "AsyncCached",
    "CachedMany",
    "AsyncCachedMany",
    "Codec",
    "DecodeError",
    "register_type",
    "register_key_type",
    "Backend",
    "Capability",
    "PartialFailure",
    "Event",
    "UNSET",
    "MISS",
    "MemoError",
    "ConfigurationError",
    "UnkeyableArgumentError",
    "SerializationError",
    "BackendError",
    "BackendUnavailable",
    "BackendTimeout",
    "BackendProtocolError",
]

__version__ = "0.2.0"
