"""The exception tree: one root, each class saying what most likely went wrong."""

from __future__ import annotations

from typing import Any

__all__ = [
    "BackendError",
    "BackendProtocolError",
    "BackendTimeout",
    "BackendUnavailable",
    "ConfigurationError",
    "MemoError",
    "SerializationError",
    "UnkeyableArgumentError",
]


class MemoError(Exception):
    """Root of every error memo raises on purpose.

    Every memo error pickles with its fields (`PartialFailure.result`, ...), so one
    raised in a process-pool worker reaches the caller as itself.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception's own reduce calls `cls(*self.args)`, which fails for a subclass
        # whose __init__ takes other arguments (PartialFailure): rebuild without __init__.
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[MemoError], args: tuple[Any, ...], state: dict[str, Any]) -> MemoError:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class ConfigurationError(MemoError, ValueError):
    """A Cache or decorator was configured with a value memo cannot use.

    Likely causes: an unknown URL scheme, a malformed server list, `ttl <= 0`,
    or an option given to a backend that does not support it.
    """


class UnkeyableArgumentError(MemoError, TypeError):
    """An argument has no stable value-based identity, so it cannot be part of a key.

    Likely cause: an object whose only identity is its memory address (a class
    without `__repr__`, `__eq__` or `__cache_key__`). Two such objects created at
    different times can share an address, so keying them would return one
    object's result for another. Fix it with `ignore=("name",)`, a `key=` callable
    on the decorator, or a `__cache_key__()` method on the argument's class.
    """


class SerializationError(MemoError, TypeError):
    """A value could not be encoded for, or decoded from, the cache.

    Likely causes: a result of a type the codec does not know (register its class
    with `memo.register_type` or annotate the function's return type), or a
    float such as `nan` inside a key. Only raised with `strict=True`; otherwise
    the result is returned uncached and the failure is counted.
    """


class BackendError(MemoError):
    """The cache backend failed to answer.

    Only raised with `on_error="raise"`; by default memo fails open: the decorated
    function runs and the error is counted in `Cache.stats()`.
    """


class BackendUnavailable(BackendError):
    """The server refused the connection, closed it, or its circuit breaker is open.

    Likely causes: memcached is not running at the configured address, a firewall,
    or repeated failures that opened the breaker (it probes again after a cooldown).
    """


class BackendTimeout(BackendError):
    """The server did not answer within the configured timeout.

    Likely causes: the server is overloaded, hung (stopped process), or the
    network drops packets. Raise `timeout=` only if the server is known to be slow.
    """


class BackendProtocolError(BackendError):
    """The server answered with an error reply instead of a result.

    Memcached's `SERVER_ERROR`, `CLIENT_ERROR` or `ERROR`: the server is alive
    (so its circuit breaker does not count this), but refused the request.
    Likely causes: the server is out of memory, an item larger than its `-I`
    item size, or a proxy that does not forward the command.
    """
