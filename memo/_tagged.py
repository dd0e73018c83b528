"""The engine of a function memoized with `tags=`: its entries depend on tag versions.

Chosen once, when the function is decorated (`Decorator` builds a `TaggedMemo`
instead of a `Memo`), so untagged functions pay nothing for tags. A hit reads the
entry and its tags' versions in one `get_many` (see `memo._tags` for the rules).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from ._binding import Binder
from ._context import Context
from ._drive import Steps, Verb, run_async, run_sync
from ._errors import BackendError, ConfigurationError
from ._fill import Filled, Outcome, fill, fill_plain
from ._memo import _HIT, Memo, _Fill, _perf
from ._sentinels import MISS, NOT_GIVEN
from ._tags import ENVELOPE, ensure_versions, param_tag, tag_key, unwrap, wrap

__all__ = ["TaggedMemo"]

Tags = Iterable[str] | Callable[..., Iterable[str]]


class _TaggedFill(_Fill):
    """A tagged function's fill: what it stores carries the versions read before computing."""

    __slots__ = ("versions",)

    def __init__(
        self, memo: TaggedMemo, cache: Context, key: str, bad: bytes | None, versions: list[bytes]
    ) -> None:
        super().__init__(memo, cache, key, bad, None)
        self.versions = versions

    def usable(self, raw: bytes) -> bool:
        if raw == self.bad:
            return False
        inner = unwrap(raw, self.versions)
        return inner is not None and self.memo._usable(self.found, None, inner)

    def encode(self, value: Any) -> bytes | None:
        data = super().encode(value)
        return None if data is None else wrap(self.versions, data)


class TaggedMemo(Memo):
    """A `Memo` whose entries are invalidated by their tags too (`invalidate_tags`)."""

    def __init__(
        self,
        cache: Context | None,
        fn: Any,
        ns: str = "default",
        ttl: Any = NOT_GIVEN,
        *,
        tags: Tags,
        **options: Any,
    ) -> None:
        super().__init__(cache, fn, ns, ttl, **options)
        if self.stale_ttl is not None or self.stale_if_error is not None or self.early_refresh is not None:
            raise ConfigurationError("tags= does not combine with stale_ttl, stale_if_error or early_refresh")
        self._binder = Binder(self.keys.target)
        self._tags_fn: Callable[..., Iterable[str]] | None = None
        self._tag_params: tuple[tuple[str, int], ...] = ()
        if callable(tags):
            self._tags_fn = tags
            return
        names = (tags,) if isinstance(tags, str) else tuple(tags)
        unknown = [n for n in names if not isinstance(n, str) or n not in self._binder.names]
        if unknown or not names:
            raise ConfigurationError(
                f"tags= takes parameter names of {self.name} (it has {list(self._binder.names)}) "
                f"or a callable returning tag strings; got {tags!r}"
            )
        self._tag_params = tuple((n, self._binder.names.index(n)) for n in names)

    # -- tags of a call ------------------------------------------------------------------

    def tags_of(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
        """The tags a call's entry depends on."""
        full = (instance, *args) if instance is not None and self.prepend else args
        values = self._binder.bind(full, kwargs)
        if self._tags_fn is None:
            return [param_tag(name, values[i]) for name, i in self._tag_params]
        tags = list(self._tags_fn(**dict(zip(self._binder.names, values, strict=True))))
        if not all(isinstance(tag, str) for tag in tags):
            raise TypeError(f"the tags= callable of {self.name} must return strings, got {tags!r}")
        return tags

    def tags_where(self, params: dict[str, Any]) -> list[str]:
        """The tags `invalidate_where(**params)` names (the parameter form only)."""
        if self._tags_fn is not None:
            raise TypeError(f"{self.name} computes its tags with a callable: use cache.invalidate_tags(...)")
        tagged = {name for name, _ in self._tag_params}
        if not params or set(params) - tagged:
            raise TypeError(f"invalidate_where takes the tagged parameters of {self.name}: {sorted(tagged)}")
        return [param_tag(name, value) for name, value in params.items()]

    def decode(self, raw: bytes) -> Any:
        # Followers copy from the bytes their leader stored: strip the envelope it added.
        inner = unwrap(raw, None) if raw.startswith(ENVELOPE) else raw
        return MISS if inner is None else super().decode(inner)

    # -- the steps ---------------------------------------------------------------------------

    def _fill_tagged(
        self, cache: Context, key: str, tag_keys: list[str], seen: list[bytes | None], bad: bytes | None
    ) -> Steps[Filled]:
        try:
            versions = yield from ensure_versions(tag_keys, seen)
        except BackendError as exc:
            self._failed(cache, "reading tag versions", exc)
            value = yield (Verb.COMPUTE, ())
            return Filled(value, None, Outcome.UNLEASED)
        target = _TaggedFill(self, cache, key, bad, versions)
        if not self._leases:
            return (yield from fill_plain(key, target, bad))
        return (yield from fill(key, target))

    def _found(
        self, cache: Context, key: str, tag_keys: list[str], found: dict[str, bytes], t0: float
    ) -> Any:
        """The value of a tagged read, or `MISS` (counted either way)."""
        raw = found.get(key)
        inner = None if raw is None else unwrap(raw, [found.get(k) for k in tag_keys])
        if inner is not None:
            state, value = self._classify(inner)
            if state is _HIT:
                self._stats.hits += 1
                if t0:
                    self._observed(cache, "hit", t0)
                return value
        self._stats.misses += 1
        if t0:
            self._observed(cache, "miss", t0)
        return MISS

    def _key_and_tags(
        self, cache: Context, gen: str, instance: Any, args: Any, kwargs: Any
    ) -> tuple[str, list[str]]:
        key = self.make_key(gen, instance, args, kwargs)
        return key, [tag_key(cache.prefix, tag) for tag in self.tags_of(instance, args, kwargs)]

    # -- sync ----------------------------------------------------------------------------------

    def call(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        cache = self.bound_cache()
        gen = cache.generation(self.scope, self._on_error)
        if gen is None:
            return wrapped(*args, **kwargs)
        key, tag_keys = self._key_and_tags(cache, gen, instance, args, kwargs)
        t0 = _perf() if cache.event_hook is not None else 0.0
        try:
            found = cache.backend.get_many([key, *tag_keys])
        except BackendError as exc:
            self._failed(cache, "a read", exc)
            return wrapped(*args, **kwargs)
        value = self._found(cache, key, tag_keys, found, t0)
        if value is not MISS:
            return value
        seen = [found.get(k) for k in tag_keys]
        steps = partial(self._fill_tagged, cache, key, tag_keys, seen)
        return self._fill_once(cache, key, found.get(key), wrapped, args, kwargs, steps)

    def peek(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        cache = self.bound_cache()
        gen = cache.generation(self.scope, self._on_error)
        if gen is None:
            return MISS
        key, tag_keys = self._key_and_tags(cache, gen, instance, args, kwargs)
        try:
            found = cache.backend.get_many([key, *tag_keys])
        except BackendError as exc:
            self._failed(cache, "a read", exc)
            return MISS
        raw = found.get(key)
        inner = None if raw is None else unwrap(raw, [found.get(k) for k in tag_keys])
        state, value = (MISS, None) if inner is None else self._classify(inner)
        return value if state is _HIT else MISS

    def _store_now(self, compute: Callable[[], Any], instance: Any, args: Any, kwargs: Any) -> Any:
        """`refresh` and `set`: drop the entry, then fill it with `compute` under a new lease."""
        self.invalidate(instance, args, kwargs)
        cache = self.bound_cache()
        gen = cache.generation(self.scope, self._on_error)
        if gen is None:
            return compute()
        key, tag_keys = self._key_and_tags(cache, gen, instance, args, kwargs)
        seen: list[bytes | None] = [None] * len(tag_keys)
        try:
            found = cache.backend.get_many(tag_keys)
            seen = [found.get(k) for k in tag_keys]
        except BackendError as exc:
            self._failed(cache, "reading tag versions", exc)
        return run_sync(cache.backend, self._fill_tagged(cache, key, tag_keys, seen, None), compute).value

    def refresh(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: Any) -> Any:
        return self._store_now(partial(wrapped, *args, **kwargs), instance, args, kwargs)

    def prime(self, value: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._store_now(lambda: value, instance, args, kwargs)

    # -- async ---------------------------------------------------------------------------------

    async def acall(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: Any
    ) -> Any:
        cache = self.bound_cache()
        gen = await cache.ageneration(self.scope, self._on_error)
        if gen is None:
            return await wrapped(*args, **kwargs)
        key, tag_keys = self._key_and_tags(cache, gen, instance, args, kwargs)
        t0 = _perf() if cache.event_hook is not None else 0.0
        try:
            found = await cache.backend.aget_many([key, *tag_keys])
        except BackendError as exc:
            self._failed(cache, "a read", exc)
            return await wrapped(*args, **kwargs)
        value = self._found(cache, key, tag_keys, found, t0)
        if value is not MISS:
            return value
        seen = [found.get(k) for k in tag_keys]
        steps = partial(self._fill_tagged, cache, key, tag_keys, seen)
        return await self._afill_once(cache, key, found.get(key), wrapped, args, kwargs, steps)

    async def apeek(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        cache = self.bound_cache()
        gen = await cache.ageneration(self.scope, self._on_error)
        if gen is None:
            return MISS
        key, tag_keys = self._key_and_tags(cache, gen, instance, args, kwargs)
        try:
            found = await cache.backend.aget_many([key, *tag_keys])
        except BackendError as exc:
            self._failed(cache, "a read", exc)
            return MISS
        raw = found.get(key)
        inner = None if raw is None else unwrap(raw, [found.get(k) for k in tag_keys])
        state, value = (MISS, None) if inner is None else self._classify(inner)
        return value if state is _HIT else MISS

    async def _astore_now(self, compute: Callable[[], Any], instance: Any, args: Any, kwargs: Any) -> Any:
        await self.ainvalidate(instance, args, kwargs)
        cache = self.bound_cache()
        gen = await cache.ageneration(self.scope, self._on_error)
        if gen is None:
            return await compute()
        key, tag_keys = self._key_and_tags(cache, gen, instance, args, kwargs)
        seen: list[bytes | None] = [None] * len(tag_keys)
        try:
            found = await cache.backend.aget_many(tag_keys)
            seen = [found.get(k) for k in tag_keys]
        except BackendError as exc:
            self._failed(cache, "reading tag versions", exc)
        filled = await run_async(cache.backend, self._fill_tagged(cache, key, tag_keys, seen, None), compute)
        return filled.value

    async def arefresh(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: Any
    ) -> Any:
        return await self._astore_now(partial(wrapped, *args, **kwargs), instance, args, kwargs)

    async def aprime(self, value: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        async def constant() -> Any:
            return value

        await self._astore_now(constant, instance, args, kwargs)
