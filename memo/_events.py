"""Events: what the cache did, handed to the `on_event=` hook of a `Cache`.

One `Event` per cache operation outcome (a hit, a miss, a store, an error...).
The hook is called synchronously, in the caller's thread or task, so it must be
quick: count, observe, enqueue. A hook that raises is logged once and never
breaks the call that emitted the event. When no hook is set, emitting costs
one attribute test.

The subscribers in `memo.prometheus` and `memo.otel` turn events into counters
and latency histograms; `memo.testing.record_events` collects them in tests.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable

__all__ = ["KINDS", "SOURCES", "Event", "EventHook", "Emitter", "combine_hooks"]

logger = logging.getLogger("memo")

#: Every event kind, in the order a reader meets them.
KINDS = (
    "hit",  # a stored value was returned
    "miss",  # nothing usable was stored: the value is computed (or the default returned)
    "stale",  # a value past its soft expiry was returned while it is refreshed
    "stale_on_error",  # the function raised: a recently expired value was returned instead
    "set",  # a value was stored
    "not_stored",  # the backend refused a value (too large, or a lease was lost before storing)
    "error",  # a backend operation failed (fail open: the call went on without the cache)
    "decode_error",  # stored bytes could not be read back: treated as a miss
    "lease_acquired",  # this caller won the right to fill a missing key
    "lease_wait",  # another process is filling the key: this caller waited for it
    "lease_lost",  # an invalidation or a write won over this caller's fill
    "forbidden",  # a value was refused by policy (e.g. a cache_if predicate), not stored
)

#: Where an event comes from.
SOURCES = ("cached", "values", "langgraph", "sessions")


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One outcome of a cache operation.

    Attributes:
        kind: what happened: one of `memo._events.KINDS` ("hit", "miss", "stale",
            "stale_on_error", "set", "not_stored", "error", "decode_error",
            "lease_acquired", "lease_wait", "lease_lost", "forbidden").
        ns: the namespace.
        function: the qualified name of the memoized function; None for
            value-level calls (`cache.get`...) and integrations.
        duration: seconds the backend operation took, where it was measured.
        error: the exception, for "error" and "decode_error" events.
        source: "cached" (`@cached`), "values" (`cache.get`/`set`/...),
            "langgraph" or "sessions".
    """

    kind: str
    ns: str
    function: str | None = None
    duration: float | None = None
    error: BaseException | None = None
    source: str = "cached"


_new = object.__new__
# The slots' own setters: the frozen dataclass's __init__ goes through object.__setattr__
# six times (about 3x slower); events are built on hot paths whenever a hook is set.
_SET_KIND, _SET_NS, _SET_FUNCTION, _SET_DURATION, _SET_ERROR, _SET_SOURCE = (
    getattr(Event, field.name).__set__ for field in dataclasses.fields(Event)
)


def make_event(
    kind: str,
    ns: str,
    function: str | None,
    duration: float | None,
    error: BaseException | None,
    source: str,
) -> Event:
    """Build an `Event` equal to `Event(kind, ns, function, duration, error, source)`, faster."""
    event: Event = _new(Event)
    _SET_KIND(event, kind)
    _SET_NS(event, ns)
    _SET_FUNCTION(event, function)
    _SET_DURATION(event, duration)
    _SET_ERROR(event, error)
    _SET_SOURCE(event, source)
    return event


#: What `on_event=` takes: a callable receiving one `Event`.
EventHook = Callable[[Event], object]


def combine_hooks(hooks: EventHook | Iterable[EventHook] | None) -> EventHook | None:
    """Return one hook calling each of `hooks` in turn (None when there is none)."""
    if hooks is None or callable(hooks):
        return hooks
    from ._errors import ConfigurationError

    if isinstance(hooks, (str, bytes)) or not hasattr(hooks, "__iter__"):
        raise ConfigurationError(f"on_event= takes a callable or a list of them, got {hooks!r}")
    listed = tuple(hooks)
    for hook in listed:
        if not callable(hook):
            raise ConfigurationError(f"on_event= takes callables, got {hook!r}")
    if not listed:
        return None
    if len(listed) == 1:
        return listed[0]

    def fan_out(event: Event) -> None:
        for hook in listed:
            hook(event)

    return fan_out


class Emitter:
    """Deliver events to a hook, shielding the caller from the hook's failures.

    `hook` may be replaced at any time (tests record events this way). A hook
    that raises is logged once per `Emitter` (with its traceback); later
    failures are dropped silently, so a broken metrics exporter cannot flood
    the log or fail the cached call.
    """

    __slots__ = ("_failed", "hook")

    def __init__(self, hook: EventHook | None = None) -> None:
        self.hook = hook
        self._failed = False

    def emit(
        self,
        kind: str,
        ns: str,
        function: str | None = None,
        duration: float | None = None,
        error: BaseException | None = None,
        source: str = "cached",
    ) -> None:
        """Build an `Event` and hand it to the hook, if there is one."""
        hook = self.hook
        if hook is None:
            return
        try:
            hook(make_event(kind, ns, function, duration, error, source))
        except Exception:
            if not self._failed:
                self._failed = True
                logger.exception("memo: the on_event hook %r raised; its later errors are not logged", hook)
