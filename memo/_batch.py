"""`@cached_many`: batch memoization, computing only the items that are missing.

    @cache.cached_many(ns="users", ttl=60, each="ids")
    def get_users(ids: list[int], *, full: bool = False) -> dict[int, User]: ...

A call reads every item's entry in one multi-get, calls the function once with
only the missing items (the other arguments unchanged), stores each returned
item under its own key, and returns `{item: value}` for the items that have a
value, in the order asked.

Each item is keyed like a `@cached` call with the item in place of the list
(`KeyMaker.each_digests`): the function, the item and the other arguments,
type-exact. The key maker is seeded with the parameter's name, so these keys
never meet those of a `@cached` function of the same name. An entry holds a
one-element list (the item's value) or an empty one (`cache_absent=True`: the
function did not return the item), in memo's usual wire format with its exact
expiry.

Leases, per item, reuse the sans-I/O steps of `memo._leases` (`acquire`,
`store`, `acquire_or_wait`), run side by side by `together`, which turns the
items' `lease`, `cas`, `get` and `delete` steps into one `lease_many`,
`cas_many`, `get_many` or `delete_many` each. The order of a miss:

1. take the leases of all missing items (one round trip per server);
2. compute the items this call holds (one call of the function), store them
   with `cas` against their leases (an invalidate or a clear meanwhile voids
   an item's store, and only that item's), release the leases of items not
   stored;
3. only then wait, up to `lease_wait`, for the items another caller is
   computing: waiting while holding leases could keep two callers waiting on
   each other. Items whose holder delivers nothing in time (or whose lease
   this caller then takes) are computed in a second, last call.

Every path is one step generator, driven by `run_sync` or `run_async`.
"""

from __future__ import annotations

import contextlib
import inspect
import typing
from collections.abc import Callable, Coroutine, Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, cast, overload

import orjson
import wrapt

from . import _clock
from . import _leases as leases
from ._backend import PartialFailure
from ._binding import call_target
from ._codec import (
    GLOBAL_TYPES,
    PLAIN_EXPIRES_HEADER,
    Codec,
    DecodeError,
    TypeRegistry,
    Won,
    expires_ms,
    is_lease,
    is_placeholder,
)
from ._drive import Op, Steps, run_async, run_sync
from ._errors import BackendError, BackendUnavailable, ConfigurationError, SerializationError
from ._generations import SCOPE, scope_of
from ._keys import KeyMaker
from ._policy import OnError, check_on_error, check_seconds, check_ttl
from ._sentinels import NOT_GIVEN

if TYPE_CHECKING:
    from ._context import Context as Cache

__all__ = ["AsyncCachedMany", "BatchDecorator", "CachedMany", "together"]

P = ParamSpec("P")
K = TypeVar("K")
V = TypeVar("V")
_loads = orjson.loads
#: The greatest 11 bytes a plain entry with an exact expiry can start with.
_PLAIN_EXPIRES_LAST = PLAIN_EXPIRES_HEADER + b"\xff" * 8
_ABSENT: Any = object()
#: Item digests remembered per function before the memory is dropped and rebuilt.
_KNOWN_MAX = 10_000

# -- running many keys' steps side by side ------------------------------------------------


def _start(steps: Steps[Any], key: str, pending: dict[str, Op], results: dict[str, Any]) -> None:
    _resume(steps, key, None, None, pending, results)


def _resume(
    steps: Steps[Any],
    key: str,
    send: Any,
    error: BaseException | None,
    pending: dict[str, Op],
    results: dict[str, Any],
) -> None:
    """Advance one key's steps; a step that ends, or lets a backend error out, is done."""
    try:
        pending[key] = steps.send(send) if error is None else steps.throw(error)
    except StopIteration as stop:
        pending.pop(key, None)
        results[key] = stop.value
    except BackendError as exc:
        pending.pop(key, None)
        results[key] = exc


def together(all_steps: dict[str, Steps[Any]]) -> Steps[dict[str, Any]]:
    """Run the step generators of several keys side by side; return `{key: result}`.

    At each turn the keys' pending operations are sent together: every `get`
    as one `get_many`, `lease` as `lease_many`, `cas` as `cas_many`, `delete`
    as `delete_many`, `sleep` as one sleep (the shortest asked: a poll that
    comes early is harmless); anything else one by one. A backend error is
    thrown into the steps of the keys it concerns; a key whose steps let it
    out has that error as its result.
    """
    pending: dict[str, Op] = {}
    results: dict[str, Any] = {}
    for key, steps in all_steps.items():
        _start(steps, key, pending, results)
    while pending:
        by_name: dict[str, list[str]] = {}
        for key, (name, _) in pending.items():
            by_name.setdefault(name, []).append(key)
        for name, keys in by_name.items():
            ops = {key: pending[key][1] for key in keys}
            try:
                replies = yield from _batched(name, ops)
            except BackendError as exc:
                replies = dict.fromkeys(keys, exc)
            for key in keys:
                reply = replies[key]
                if isinstance(reply, BackendError):
                    _resume(all_steps[key], key, None, reply, pending, results)
                else:
                    _resume(all_steps[key], key, reply, None, pending, results)
    return results


def _batched(name: str, ops: dict[str, tuple[Any, ...]]) -> Steps[dict[str, Any]]:
    """One batch operation for the same step of several keys: `{key: its reply or error}`."""
    keys = list(ops)
    if name == "get":
        try:
            found = yield ("get_many", (keys,))
        except PartialFailure as exc:
            found = exc.result  # a key of a failed server reads as absent: a miss
        return {key: found.get(key) for key in keys}
    if name == "lease":
        try:
            leased: dict[str, Any] = yield ("lease_many", ([ops[key] for key in keys],))
        except PartialFailure as exc:
            leased = exc.result
            if len(leased) < len(keys):
                # The keys of the servers that failed: their error is thrown into their steps.
                return {key: leased.get(key) or exc.errors[0] for key in keys}
        return leased
    if name == "cas":
        try:
            refused = yield ("cas_many", ([ops[key] for key in keys],))
        except PartialFailure as exc:
            refused = exc.result
        refused = set(refused)
        return {key: key not in refused for key in keys}
    if name == "delete":
        try:
            yield ("delete_many", (keys,))
        except PartialFailure as exc:
            return {key: key not in exc.result for key in keys}
        return dict.fromkeys(keys, True)
    if name == "sleep":
        yield ("sleep", (min(args[0] for args in ops.values()),))
        return dict.fromkeys(keys)
    replies: dict[str, Any] = {}
    for key in keys:
        try:
            replies[key] = yield (name, ops[key])
        except BackendError as exc:
            replies[key] = exc
    return replies


# -- the engine of one decorated function ---------------------------------------------


class Batch:
    """The engine of one `@cached_many` function: keys, codec, settings, the fill steps."""

    def __init__(
        self,
        cache: Cache | None,
        fn: Any,
        ns: str,
        ttl: Any,
        *,
        each: str,
        version: str | int | None = None,
        ignore: Iterable[str] = (),
        scope: Callable[..., Any] | None = None,
        types: Iterable[type] = (),
        strict: bool | None = None,
        on_error: OnError | None = None,
        lease_ttl: float | None = None,
        lease_wait: float | None = None,
        cache_absent: bool = False,
        default_cache: Callable[[], Cache] | None = None,
    ) -> None:
        target, pre_args, pre_kwargs = call_target(fn)
        if not inspect.isfunction(target) or pre_args or pre_kwargs or target is not fn:
            raise ConfigurationError(f"@cached_many needs a plain function, got {fn!r}")
        if not isinstance(ns, str) or SCOPE in ns:
            raise ConfigurationError(f"ns must be a str without NUL characters, got {ns!r}")
        params = inspect.signature(target).parameters
        param = params.get(each)
        if param is None or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or each in set(ignore):
            raise ConfigurationError(
                f"each={each!r} must name a parameter of {target.__qualname__} that takes the items "
                f"(not *args, **kwargs or an ignored one); its parameters are {list(params)}"
            )
        self.each = each
        # The parameter's name in the seed: these keys never meet a @cached function's.
        self.keys = KeyMaker.for_callable(
            target, ns, cast(Any, ["each", each, version]), ignore=ignore, scope=scope
        )
        self.signature = inspect.signature(target)
        self.cache = cache
        self.default_cache: Callable[[], Cache] = default_cache or (lambda: cast("Cache", cache))
        if (cache is None) == (default_cache is None):
            raise TypeError("Batch needs exactly one of: a Cache, a default_cache callable")
        self.ns = ns
        self.ttl = ttl if ttl is NOT_GIVEN else check_ttl(ttl)
        self.lease_ttl = None if lease_ttl is None else check_seconds(lease_ttl, "lease_ttl")
        self.lease_wait = None if lease_wait is None else check_seconds(lease_wait, "lease_wait", zero=True)
        self.strict = strict
        self.on_error = None if on_error is None else check_on_error(on_error)
        self.cache_absent = bool(cache_absent)
        self.is_async = inspect.iscoroutinefunction(target)
        self.name = target.__qualname__
        registry = TypeRegistry(types, parent=GLOBAL_TYPES)
        with contextlib.suppress(Exception):
            registry.add_annotation(typing.get_type_hints(target).get("return"))
        self.codec = Codec(registry)
        self.scope = scope_of(ns, self.keys.function_id)
        self._bound: Cache | None = None
        #: Keys (digests in mixed lists) of recent int and str items, at most _KNOWN_MAX: `item_keys`.
        self._known_keys: dict[tuple[str, bytes, type], dict[Any, str]] = {}
        self._known: dict[Any, str] = {}
        self._known_count = 0

    def bound_cache(self) -> Cache:
        cache = self.cache or self.default_cache()
        if cache is not self._bound:
            self._static = f"{cache.prefix}{self.keys.readable}:"
            self._stats = cache.function_stats(self.ns)
            ttl = cache.ttl if self.ttl is NOT_GIVEN else self.ttl
            self._ttl_ms = None if ttl is None else ttl * 1000.0
            # memcached's clock ticks in whole seconds: the header holds the exact expiry.
            self._hard_ttl = None if ttl is None else ttl + 1.0
            self._on_error: OnError = self.on_error or cache.on_error
            self._strict = cache.strict if self.strict is None else self.strict
            self._lease_ttl = cache.lease_ttl if self.lease_ttl is None else self.lease_ttl
            self._lease_wait = cache.lease_wait if self.lease_wait is None else self.lease_wait
            self.codec.compress_threshold = cache.compress_threshold
            self._bound = cache
        return cache

    # -- pure parts ---------------------------------------------------------------

    def split(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[inspect.BoundArguments, list[Any]]:
        """Bind a call; return it and its distinct items, in the order given."""
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        items = bound.arguments[self.each]
        if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
            raise TypeError(f"{self.name}: {self.each}= must be a collection of items, got {items!r}")
        return bound, list(dict.fromkeys(items))

    def item_keys(self, gen: str, bound: inspect.BoundArguments, items: list[Any]) -> dict[str, Any]:
        """`{key: item}` for the items of a bound call.

        The usual call (items all ints or all strs, many of them seen before) finds its
        keys remembered, looked up all at once: a hundred items cost about a third of
        hashing each, or of even remembering each one's digest.
        """
        static = f"{self._static}{gen}:"
        kinds = set(map(type, items))
        kind = kinds.pop() if len(kinds) == 1 else None
        if kind is int or kind is str:
            context = self.keys.each_context(bound.args, bound.kwargs, self.each)
            known = self._known_keys.get((static, context, kind))
            if known is None or self._known_count > _KNOWN_MAX:
                known = self._remember_keys(static, context, kind)
            try:
                keys = list(map(known.__getitem__, items))
            except KeyError:
                new = [item for item in items if item not in known]
                digests = self.keys.each_digests(bound.args, bound.kwargs, self.each, new)
                known.update(zip(new, [static + digest for digest in digests], strict=True))
                self._known_count += len(new)
                keys = list(map(known.__getitem__, items))
            return dict(zip(keys, items, strict=True))
        if len(self._known) > _KNOWN_MAX:
            self._known.clear()
        digests = self.keys.each_digests(bound.args, bound.kwargs, self.each, items, self._known)
        return {static + digest: item for digest, item in zip(digests, items, strict=True)}

    def _remember_keys(self, static: str, context: bytes, kind: type) -> dict[Any, str]:
        """A new memory of item keys for these arguments (all of them forgotten when full)."""
        if self._known_count > _KNOWN_MAX:
            self._known_keys.clear()
            self._known_count = 0
        known: dict[Any, str] = {}
        self._known_keys[(static, context, kind)] = known
        return known

    def read(self, raw: bytes | None) -> list[Any] | None:
        """A stored entry: `[value]`, `[_ABSENT]` (cached as absent), or None (a miss)."""
        if raw is None or is_placeholder(raw):
            return None
        expires = expires_ms(raw)
        if expires is not None and expires <= _clock.time() * 1000.0:
            return None
        try:
            box = self.codec.decode(raw)
        except DecodeError:
            box = None
        if type(box) is not list or len(box) > 1:
            self._stats.decode_errors += 1
            return None
        return box if box else [_ABSENT]

    def _read_all(
        self, keys: dict[str, Any], raws: dict[str, bytes], values: dict[Any, Any], missing: dict[str, Any]
    ) -> None:
        """Sort a multi-get's entries into `values` (item: value) and `missing` (key: what was read).

        The common entry (plain JSON, an exact expiry not yet passed) is read
        inline; anything else goes through `read`. Each body is decoded on its
        own: bodies joined into one JSON array would let a corrupt body shift
        its neighbours' values.
        """
        # Header bytes 0:3, expiry 3:11, body from 11: the layout in memo._codec. Big-endian
        # milliseconds compare as bytes (expiry > floor(now) iff expiry > now), so one
        # comparison of the first 11 bytes says both: the header is the plain one, and
        # the expiry is still ahead.
        now = PLAIN_EXPIRES_HEADER + int(_clock.time() * 1000.0).to_bytes(8, "big")
        get, last, loads, read = raws.get, _PLAIN_EXPIRES_LAST, _loads, self.read
        for key, item in keys.items():
            raw = get(key)
            if raw is not None and now < raw[:11] <= last and raw[-1:] == b"\n":
                try:
                    box = loads(raw[11:])
                except ValueError:
                    box = None
                if type(box) is list and len(box) == 1:
                    values[item] = box[0]
                    continue
            box = read(raw)
            if box is None:
                missing[key] = raw
            else:
                values[item] = box[0]

    def encode(self, value: Any) -> bytes | None:
        """The entry for an item's value (`_ABSENT`: cached as absent), or None: not stored."""
        if value is _ABSENT and not self.cache_absent:
            return None
        ttl_ms = self._ttl_ms
        try:
            return self.codec.encode(
                [] if value is _ABSENT else [value],
                None if ttl_ms is None else int(_clock.time() * 1000.0 + ttl_ms),
            )
        except SerializationError as exc:
            self._stats.encode_errors += 1
            if self._strict:
                raise
            self._failed_quietly(exc)
            return None

    def encode_all(self, values: list[Any]) -> list[bytes | None]:
        """`encode` of each value; the usual ones (plain JSON, a ttl) all at once (`Codec.encode_many`)."""
        ttl_ms = self._ttl_ms
        kept = [i for i, value in enumerate(values) if value is not _ABSENT or self.cache_absent]
        if ttl_ms is not None and kept:
            boxes = [[] if values[i] is _ABSENT else [values[i]] for i in kept]
            datas = self.codec.encode_many(boxes, int(_clock.time() * 1000.0 + ttl_ms))
            if datas is not None:
                out: list[bytes | None] = [None] * len(values)
                for i, data in zip(kept, datas, strict=True):
                    out[i] = data
                return out
        return [self.encode(value) for value in values]

    def _failed_quietly(self, exc: Exception) -> None:
        import logging

        logging.getLogger("memo").warning("memo: an item of %s is not cached: %s", self.name, exc)

    def _failed(self, cache: Cache, what: str, exc: BackendError) -> None:
        cache.emit("error", self.ns, self.name, None, exc, "cached")
        cache.record_error(self.ns, what, exc, self._on_error, self._stats)

    def _current(self, cache: Cache, gen: str) -> bool:
        entry = cache.known_generations.get(self.scope)
        return entry is not None and entry[0] == gen

    # -- the steps -------------------------------------------------------------------

    def steps(
        self, cache: Cache, gen: str, keys: dict[str, Any], compute: Callable[[list[Any]], Any]
    ) -> Steps[dict[Any, Any]]:
        """A call: read every item, fill the missing ones; `{item: value or _ABSENT}`."""
        values: dict[Any, Any] = {}
        try:
            raws: dict[str, bytes] = yield ("get_many", (list(keys),))
        except PartialFailure as exc:
            self._failed(cache, "a read", exc)
            raws = exc.result
        except BackendError as exc:
            self._failed(cache, "a read", exc)
            computed = yield ("compute", (compute, list(keys.values())))
            return self._results(computed, list(keys.values()))
        missing: dict[str, bytes | None] = {}
        self._read_all(keys, raws, values, missing)
        self._stats.hits += len(values)
        self._stats.misses += len(missing)
        if missing:
            fill = self._fill if cache.leases else self._fill_plain
            values.update((yield from fill(cache, gen, keys, missing, compute)))
        return values

    def _fill_plain(
        self, cache: Cache, gen: str, keys: dict[str, Any], missing: dict[str, bytes | None], compute: Any
    ) -> Steps[dict[Any, Any]]:
        items = {key: keys[key] for key in missing}
        computed = yield ("compute", (compute, list(items.values())))
        values = self._results(computed, list(items.values()))
        datas = self.encode_all([values.get(item, _ABSENT) for item in items.values()])
        writes = [
            (key, data, self._hard_ttl) for key, data in zip(items, datas, strict=True) if data is not None
        ]
        if writes and self._current(cache, gen):
            try:
                refused = yield ("set_many", (writes,))
            except BackendError as exc:
                self._failed(cache, "a write", exc)
            else:
                self._stats.sets += len(writes) - len(refused)
                self._stats.not_stored += len(refused)
        return values

    def _fill(
        self, cache: Cache, gen: str, keys: dict[str, Any], missing: dict[str, bytes | None], compute: Any
    ) -> Steps[dict[Any, Any]]:
        """Take the leases, compute what this caller holds, then wait for the others'."""
        values: dict[Any, Any] = {}
        mine: dict[str, int | None] = {}  # key -> lease unique (None: compute, do not store)
        held: list[str] = []
        rest = list(missing)
        if cache.leased_reads:
            rest = yield from self._leased_reads(cache, keys, missing, values, mine, held)
        found: dict[str, list[Any]] = {key: [] for key in (*rest, *held)}
        usable = {key: partial(self._usable, found[key], missing[key]) for key in found}
        if rest:
            try:
                outcomes = yield from together(
                    {key: leases.acquire(key, self._lease_ttl, usable[key]) for key in rest}
                )
            except BaseException:  # interrupted: the leases the read granted go back too
                yield from _release([key for key, unique in mine.items() if unique is not None])
                raise
            for key, outcome in outcomes.items():
                if isinstance(outcome, leases.Acquired):
                    mine[key] = outcome.unique
                elif isinstance(outcome, leases.Found):
                    values[keys[key]] = found[key][-1]
                elif isinstance(outcome, BackendError):
                    self._failed(cache, "taking a lease", outcome)
                    mine[key] = None
                else:
                    held.append(key)
        if mine:
            values.update((yield from self._compute_and_store(cache, gen, keys, mine, compute)))
        if held:
            self._stats.lease_waits += len(held)
            waited = yield from together(
                {
                    key: leases.acquire_or_wait(key, self._lease_ttl, self._lease_wait, usable[key])
                    for key in held
                }
            )
            late: dict[str, int | None] = {}
            for key, outcome in waited.items():
                if isinstance(outcome, BackendError):
                    self._failed(cache, "taking a lease", outcome)
                if isinstance(outcome, leases.Found):
                    values[keys[key]] = found[key][-1]
                else:  # taken now, holder slow or gone (None), or the backend failed
                    late[key] = outcome.unique if isinstance(outcome, leases.Acquired) else None
            if late:
                values.update((yield from self._compute_and_store(cache, gen, keys, late, compute)))
        return values

    def _leased_reads(
        self,
        cache: Cache,
        keys: dict[str, Any],
        missing: dict[str, bytes | None],
        values: dict[Any, Any],
        mine: dict[str, int | None],
        held: list[str],
    ) -> Steps[list[str]]:
        """Read the missing items again, taking the lease of each still missing in that read.

        One round trip per server (`Backend.get_or_lease_many`: meta `mg <key> v c N<ttl>`)
        instead of an `add` and a `gets` per key; on a classic server the placeholders are
        added and read back in one pipeline. Sorts each key into `mine` (leased, or its
        server failed: compute, do not store), `held` (another caller's lease) or `values`
        (filled meanwhile); returns the keys left to lease with `acquire`: those read as a
        plain miss (no lease taken) and entries that are not usable (replaced under a lease
        of this caller's).
        """
        error: BackendError | None = None
        try:
            got: dict[str, bytes | None] = yield ("get_or_lease_many", (list(missing), self._lease_ttl))
        except PartialFailure as exc:
            got, error = exc.result, cast(BackendError, exc.errors[0])
        except BackendError as exc:
            got, error = {}, exc
        rest: list[str] = []
        for key, bad in missing.items():
            raw = got.get(key, _ABSENT)
            if type(raw) is Won:
                mine[key] = raw.unique
            elif raw is _ABSENT:
                self._failed(cache, "taking a lease", cast(BackendError, error))
                mine[key] = None
            elif raw is None:
                rest.append(key)
            elif is_lease(raw):
                held.append(key)
            else:
                box = None if raw == bad else self.read(raw)
                if box is None:
                    rest.append(key)
                else:
                    values[keys[key]] = box[0]
        return rest

    def _usable(self, found: list[Any], bad: bytes | None, raw: bytes) -> bool:
        if raw == bad:
            return False
        box = self.read(raw)
        if box is None:
            return False
        found.append(box[0])
        return True

    def _compute_and_store(
        self, cache: Cache, gen: str, keys: dict[str, Any], mine: dict[str, int | None], compute: Any
    ) -> Steps[dict[Any, Any]]:
        """One call of the function for `mine`'s items; store those whose lease this caller holds."""
        items = [keys[key] for key in mine]
        held = [key for key, unique in mine.items() if unique is not None]
        try:
            computed = yield ("compute", (compute, items))
            values = self._results(computed, items)
        except BaseException:
            # Release the leases, so that others compute now instead of waiting for nothing.
            yield from _release(held)
            raise
        stores: list[tuple[str, bytes, float | None, int]] = []
        release: list[str] = []
        current = self._current(cache, gen)
        limit = cache.backend.max_value_size
        datas = self.encode_all([values.get(keys[key], _ABSENT) for key in held])
        for key, data in zip(held, datas, strict=True):
            if data is None or not current:
                release.append(key)
            elif len(data) > limit:
                self._stats.not_stored += 1
                release.append(key)
            else:
                stores.append((key, data, self._hard_ttl, cast(int, mine[key])))
        if not current and held:
            self._stats.lease_lost += len(held)
        try:
            if stores:
                yield from self._store_all(cache, stores)
        except BaseException:  # interrupted while storing: the leases of values not stored go back
            yield from _release(release)
            raise
        yield from _release(release)
        return values

    def _store_all(self, cache: Cache, stores: list[tuple[str, bytes, float | None, int]]) -> Steps[None]:
        """Store each value with `cas` against its lease (one round trip per server); count the outcomes.

        A store refused (the key changed or went: an invalidate, a clear) is a lost lease.
        """
        try:
            refused = set((yield ("cas_many", (stores,))))
        except PartialFailure as exc:
            for error in exc.errors:
                if isinstance(error, BackendError):  # what each failed server raised
                    self._failed(cache, "a write", error)
            refused = set(exc.result)  # the keys of a failed server too: not stored, as a lost lease
        except BackendError as exc:
            for _ in stores:
                self._failed(cache, "a write", exc)
            return
        lost = sum(1 for key, _, _, _ in stores if key in refused)
        self._stats.sets += len(stores) - lost
        self._stats.lease_lost += lost

    def _results(self, computed: Any, items: list[Any]) -> dict[Any, Any]:
        """The function's answer for `items`: `{item: value or _ABSENT}`; a non-mapping is a TypeError."""
        if not isinstance(computed, Mapping):
            raise TypeError(
                f"{self.name} must return a mapping of item to value, got {type(computed).__name__}"
            )
        return {item: computed.get(item, _ABSENT) for item in items}

    # -- the call paths ---------------------------------------------------------------

    def call(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        cache = self.bound_cache()
        bound, items = self.split((instance, *args) if instance is not None else args, kwargs)
        compute = partial(_with_items, self.keys.target, bound, self.each)
        if not items:
            return {}
        gen = cache.generation(self.scope, self._on_error)
        if gen is None:
            return _ordered(self._results(compute(items), items), items)
        keys = self.item_keys(gen, bound, items)
        values = run_sync(cache.backend, self.steps(cache, gen, keys, compute))
        return _ordered(values, items)

    async def acall(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        cache = self.bound_cache()
        bound, items = self.split((instance, *args) if instance is not None else args, kwargs)
        compute = partial(_with_items, self.keys.target, bound, self.each)
        if not items:
            return {}
        gen = await cache.ageneration(self.scope, self._on_error)
        if gen is None:
            return _ordered(self._results(await compute(items), items), items)
        keys = self.item_keys(gen, bound, items)
        values = await run_async(cache.backend, self.steps(cache, gen, keys, compute))
        return _ordered(values, items)

    def key_for(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
        gen = self.bound_cache().generation(self.scope, self._on_error)
        if gen is None:
            raise BackendUnavailable("the namespace generation could not be read; see Cache.stats()")
        bound, items = self.split(args, kwargs)
        return list(self.item_keys(gen, bound, items))

    async def akey_for(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
        gen = await self.bound_cache().ageneration(self.scope, self._on_error)
        if gen is None:
            raise BackendUnavailable("the namespace generation could not be read; see Cache.stats()")
        bound, items = self.split(args, kwargs)
        return list(self.item_keys(gen, bound, items))

    def invalidate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        cache = self.bound_cache()
        gen = cache.generation(self.scope, self._on_error)
        if gen is None:
            return False
        bound, items = self.split(args, kwargs)
        try:
            cache.backend.delete_many(list(self.item_keys(gen, bound, items)))
        except BackendError as exc:
            self._failed(cache, "a delete", exc)
            return False
        return True

    async def ainvalidate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        cache = self.bound_cache()
        gen = await cache.ageneration(self.scope, self._on_error)
        if gen is None:
            return False
        bound, items = self.split(args, kwargs)
        try:
            await cache.backend.adelete_many(list(self.item_keys(gen, bound, items)))
        except BackendError as exc:
            self._failed(cache, "a delete", exc)
            return False
        return True


def _with_items(
    wrapped: Callable[..., Any], bound: inspect.BoundArguments, each: str, items: list[Any]
) -> Any:
    """Call the function as it was called, with only `items` for the `each` parameter."""
    call = inspect.BoundArguments(bound.signature, bound.arguments.copy())
    call.arguments[each] = items
    return wrapped(*call.args, **call.kwargs)


def _release(keys: list[str]) -> Steps[None]:
    """Give back the leases of `keys` this caller holds (delete them), or nothing when it fails."""
    if keys:
        with contextlib.suppress(BackendError):
            yield ("delete_many", (keys,))


def _ordered(values: dict[Any, Any], items: list[Any]) -> dict[Any, Any]:
    """`{item: value}` in the order asked, without the items that have no value."""
    get = values.get
    return {item: value for item in items if (value := get(item, _ABSENT)) is not _ABSENT}


# -- the decorated function ---------------------------------------------------------------


class CachedMany(Protocol[P, K, V]):
    """A sync function memoized item by item with `cached_many`."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> dict[K, V]: ...
    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool: ...
    async def ainvalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool: ...
    def key_for(self, *args: P.args, **kwargs: P.kwargs) -> list[str]: ...
    async def akey_for(self, *args: P.args, **kwargs: P.kwargs) -> list[str]: ...
    def cache_info(self) -> dict[str, int]: ...
    @property
    def uncached(self) -> Callable[P, dict[K, V]]: ...


class AsyncCachedMany(Protocol[P, K, V]):
    """An async function memoized item by item with `cached_many`."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, dict[K, V]]: ...
    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool: ...
    async def ainvalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool: ...
    def key_for(self, *args: P.args, **kwargs: P.kwargs) -> list[str]: ...
    async def akey_for(self, *args: P.args, **kwargs: P.kwargs) -> list[str]: ...
    def cache_info(self) -> dict[str, int]: ...
    @property
    def uncached(self) -> Callable[P, Coroutine[Any, Any, dict[K, V]]]: ...


class _BatchFunction(wrapt.FunctionWrapper[..., Any]):
    """The wrapper `cached_many` returns: the function, plus its controls."""

    def __init__(self, wrapped: Any, batch: Batch) -> None:
        super().__init__(wrapped, batch.acall if batch.is_async else batch.call)
        self._self_batch = batch

    def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        """Drop exactly the entries of the items these arguments name (and nothing else)."""
        return self._self_batch.invalidate(args, kwargs)

    async def ainvalidate(self, *args: Any, **kwargs: Any) -> bool:
        """Async `invalidate`."""
        return await self._self_batch.ainvalidate(args, kwargs)

    def key_for(self, *args: Any, **kwargs: Any) -> list[str]:
        """Return the backend keys of the items these arguments name, in their order."""
        return self._self_batch.key_for(args, kwargs)

    async def akey_for(self, *args: Any, **kwargs: Any) -> list[str]:
        """Async `key_for`."""
        return await self._self_batch.akey_for(args, kwargs)

    def cache_info(self) -> dict[str, int]:
        """This function's counters in this process, counted per item."""
        batch = self._self_batch
        batch.bound_cache()
        return batch._stats.as_dict()

    @property
    def uncached(self) -> Callable[..., Any]:
        """The original function, bypassing the cache."""
        return self.__wrapped__

    def __repr__(self) -> str:
        batch = self._self_batch
        return f"<memoized per item {batch.name} ns={batch.ns!r} each={batch.each!r}>"


class BatchDecorator:
    """What `cached_many(...)` returns: apply it to a sync or async function."""

    def __init__(self, cache: Cache | None, ns: str, ttl: Any, **options: Any) -> None:
        if ttl is not NOT_GIVEN:
            check_ttl(ttl)
        if not isinstance(options.get("each"), str):
            raise ConfigurationError(
                "cached_many needs each=<the name of the parameter taking the items>, "
                f"got {options.get('each')!r}"
            )
        self._cache, self._ns, self._ttl, self._options = cache, ns, ttl, options

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, Mapping[K, V]]]) -> AsyncCachedMany[P, K, V]: ...
    @overload
    def __call__(self, fn: Callable[P, Mapping[K, V]]) -> CachedMany[P, K, V]: ...
    def __call__(self, fn: Any) -> Any:
        return _BatchFunction(fn, Batch(self._cache, fn, self._ns, self._ttl, **self._options))
