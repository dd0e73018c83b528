"""Sessions: read-through / write-through caching in front of the application's database.

    from memo.sessions import SessionCache

    sessions = SessionCache(cache, ns="sessions", ttl=1800, owner="user_id")
    sid = sessions.new_id()
    s = await sessions.acreate(sid, insert=lambda: repo.insert(sid, user_id))
    s = await sessions.aget(sid, user_id=uid, load=repo.fetch)   # None: absent or not uid's
    s = await sessions.awrite(sid, write=lambda: repo.add_message(sid, msg))
    await sessions.adelete(sid, delete=lambda: repo.delete(sid))

The database is the truth; memo never owns the table. `load`, `insert`,
`write` and `delete` are the application's own functions (any driver, any
ORM, sync or async), and a session is whatever they return, stored with
memo's typed codec (never pickle).

How stale state is kept out (the leases of "Scaling Memcache at Facebook"):

- A read that misses takes a lease (an `add`ed marker) before it loads, and
  installs what it loaded only with `cas` against that lease. Anything that
  touched the key in between (a write's lock, a delete) voids the lease, so a
  fill that loaded before a write can never install its older state after it.
- A write first locks the key (overwrites it with its own marker), then runs
  the database write, then installs the state the write returned with `cas`
  against its lock, or deletes the key if anything else changed it meanwhile.
  Readers that meet a marker wait briefly, then read the database without
  installing anything.
- Nothing is ever installed but by `cas` against the installer's own marker,
  so even a command that reaches memcached late (its client timed out and moved
  on) cannot put an older state over a newer one; `set` only ever writes markers.
- memo never reads, modifies and writes back a cached session: every change is
  the application's atomic database operation, and the cache receives the
  state that operation returned.

When memcached cannot be reached after the lock, the key keeps the write's
lock marker (reads go to the database until it expires, `lease_ttl` seconds).
When it cannot be reached before the write, it may still hold the state from
before: the process remembers the key before the database write, reads that
session from the database, and deletes the key before its next use of
memcached. The README's "Sessions" section states the bound that leaves for
other processes.

Rotate and revoke-all. `rotate(sid)` moves the session to a new id in the
database (`store.rename`), deletes the old key and installs the new one.
`revoke_all(user_id)` deletes the user's rows, then writes the user a new
*generation* (a random token under a key of its own). Ids from `new_id_for(user)`
carry a keyed tag of the user, so a read fetches the session and its user's
generation in one `get_many`; every cached copy records the generation it was
installed under (read before its database load or write), and a copy whose
generation is not the current one (changed, or lost with an evicted key or a
restarted server) is a miss, never served. (Concurrent async reads join one
coalesced multi-key get; one cut into several gets, when it is very large, may read
the two keys one after the other. Either order keeps the rule: a read that starts
after `revoke_all` returned finds the new generation.)

Everything that talks to memcached is written once, as generators of
backend operations (sans-I/O steps); `_run` and `_arun` drive them with the
backend's sync and async methods and call the application's functions.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import inspect
import itertools
import logging
import math
import os
import secrets
import threading
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from typing import Any, Generic, TypeVar

from .. import _clock
from .._cache import Cache
from .._codec import GLOBAL_TYPES, Codec, DecodeError, TypeRegistry, expires_ms, is_lease
from .._drive import Op, run_async, run_sync
from .._errors import BackendError, ConfigurationError, SerializationError
from .._keys import safe_segment
from .._leases import HELD, Acquired, Found, acquire, invalidate, lock, store, wait
from .._policy import OnError, check_on_error, check_ttl
from .._sentinels import NOT_GIVEN
from ._store import KEEP

__all__ = ["MIN_ID_BITS", "SessionCache"]

logger = logging.getLogger("memo")

S = TypeVar("S")
Steps = Generator[Op, Any, Any]

#: Step op: run the application's function (args: the callable). Not a backend method.
#: What a guarded backend step returns when the backend failed (the error is counted).
_FAILED: Any = type("_Failed", (), {"__repr__": lambda self: "<backend failed>"})()
#: What decoding returns for bytes that are not a session (a marker, garbage, expired).
_NOT_A_SESSION: Any = type("_NotASession", (), {"__repr__": lambda self: "<not a session>"})()
#: `user_id` not given: allowed only when the SessionCache checks no owner.
_UNCHECKED: Any = type("_Unchecked", (), {"__repr__": lambda self: "<no user given>"})()

_URL_SAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
#: Characters a session id may hold: cookie-safe, never whitespace, `;` or `,`.
_ID_CHARS = frozenset(_URL_SAFE + ".~+/=")
#: The entropy floor of a session id an application brings (bits; OWASP asks for 64 at least).
MIN_ID_BITS = 64
_MAX_ID_LENGTH = 512
_TAG_LENGTH = 12  # 9 bytes of keyed digest, URL-safe base64
_MAX_PENDING = 100_000


# -- the session cache ----------------------------------------------------------------


class SessionCache(Generic[S]):
    """Sessions cached in front of the database, checked against their owner on every read.

    Args:
        cache: the `memo.Cache` to store in (its backend, key prefix, `on_error`).
        ns: a name for these sessions; part of every key.
        ttl: the longest a session stays cached (seconds); never longer than the
            session's own expiry (see `expires`). Default: the Cache's `ttl`
            (`MEMCACHED_TTL` with `Cache.from_env`), else 1800.
        owner: how to find a session's owner: an attribute or key name
            (`"user_id"`), or a callable taking the session. Every read compares
            it with the `user_id` the caller gives; a session of another user is
            reported as absent (`None`) and counted as `forbidden`. None: no
            ownership check (then `get` takes no `user_id`).
        expires: the session's expiry: an attribute or key name, or a callable,
            giving a datetime (naive means UTC) or Unix time, or None. A session
            past it is absent to `get`, and the cache never keeps it longer.
            None: sessions have no expiry of their own.
        types: classes the codec may rebuild beyond those `load`/`write` returned
            in this process (e.g. a dataclass only ever read here).
        secret: key for the digest that turns session ids into cache keys
            (default: derived from `ns`). Raw ids, bearer secrets, never reach
            memcached; with a secret of its own, nobody holding an id can even
            find its key.
        lease_ttl: seconds a fill's lease or a write's lock lives at most (its
            holder may have died); make it longer than your slowest write.
        wait: seconds a read waits for another fill or write to finish before
            reading the database itself.
        on_error: overrides the Cache's: "ignore" (fail open to the database) or "raise".
        store: the `SessionStore` that `rotate` and `revoke_all` change (the
            database side of those two operations); `SessionMiddleware` sets its own.
    """

    def __init__(
        self,
        cache: Cache,
        ns: str = "sessions",
        ttl: float = NOT_GIVEN,
        owner: str | Callable[[Any], Any] | None = "user_id",
        *,
        expires: str | Callable[[Any], Any] | None = "expires_at",
        types: Iterable[type] = (),
        secret: bytes | str | None = None,
        lease_ttl: float = 5.0,
        wait: float = 0.05,
        on_error: OnError | None = None,
        store: Any = None,
    ) -> None:
        if not isinstance(cache, Cache):
            raise ConfigurationError(f"SessionCache needs a memo.Cache, got {cache!r}")
        if ttl is NOT_GIVEN:
            ttl = cache.ttl if cache.ttl is not None else 1800
        checked_ttl = check_ttl(ttl, "ttl")
        if checked_ttl is None:
            raise ConfigurationError(
                "a session cache needs a ttl in seconds (None would keep sessions forever)"
            )
        if not (isinstance(lease_ttl, (int, float)) and lease_ttl > 0):
            raise ConfigurationError(f"lease_ttl must be > 0 seconds, got {lease_ttl!r}")
        if not (isinstance(wait, (int, float)) and wait >= 0):
            raise ConfigurationError(f"wait must be >= 0 seconds, got {wait!r}")
        self.cache = cache
        self.ns = ns
        self.store = store
        self.ttl = checked_ttl
        self.lease_ttl = float(lease_ttl)
        self.wait = float(wait)
        self.on_error: OnError = check_on_error(on_error) if on_error is not None else cache.on_error
        self._owner = _getter(owner, "owner")
        self._expires = _getter(expires, "expires")
        self.codec = Codec(TypeRegistry(types, parent=GLOBAL_TYPES), cache.compress_threshold)
        material = (secret.encode() if isinstance(secret, str) else secret) or b"memo.sessions"
        # The namespace is part of the digest key: namespaces whose readable segments
        # coincide ("a b", "a_b") still never share a key.
        self._secret = hashlib.blake2b(
            material,
            digest_size=32,
            person=b"memo.sessions",
            salt=hashlib.blake2b(ns.encode(), digest_size=16).digest(),
        ).digest()
        self._key_head = f"{cache.prefix}~s:{safe_segment(ns, 48)}:"
        # The keyed digest of ids with its key block already hashed: each id costs a copy and
        # its own block (`key_for` runs on every read).
        self._id_digest = hashlib.blake2b(key=self._secret, digest_size=16)
        # Keys to delete before the next use of memcached, each with the ticket of its
        # latest failure: a flush forgets a key only if no failure came after its snapshot.
        self._pending: dict[str, int] = {}
        self._pending_lock = threading.Lock()
        self._tickets = itertools.count()
        self._warned_encode = False
        self._stats = dict.fromkeys(_COUNTERS, 0)
        self._ns_stats = cache.ns_stats(ns)

    def __repr__(self) -> str:
        return f"SessionCache({self.cache!r}, ns={self.ns!r}, ttl={self.ttl!r})"

    @classmethod
    def from_env(
        cls, prefix: str = "MEMCACHED_", *, environ: Mapping[str, str] | None = None, **options: Any
    ) -> SessionCache[Any]:
        """Build on `memo.Cache.from_env(prefix)`: `<prefix>TTL` becomes the sessions' `ttl`.

        Keyword `options` are those of `SessionCache` (`ns=`, `owner=`, `ttl=`, ...).
        """
        return cls(Cache.from_env(prefix, environ=environ), **options)

    # -- pure helpers ---------------------------------------------------------------------

    @staticmethod
    def new_id() -> str:
        """Return a new session id: 256 random bits from the OS CSPRNG, 43 URL-safe characters."""
        return secrets.token_urlsafe(32)

    def new_id_for(self, user_id: Any) -> str:
        """Return a new id for a session of `user_id`, which `revoke_all(user_id)` reaches.

        256 random bits, then `.` and a 12-character keyed digest of the user id
        (it tells nothing about the user to anyone without this cache's secret).
        """
        return f"{secrets.token_urlsafe(32)}.{self._user_tag(user_id)}"

    def _user_tag(self, user_id: Any) -> str:
        digest = hashlib.blake2b(
            b"user\x00" + str(user_id).encode(), key=self._secret, digest_size=9
        ).digest()
        return base64.urlsafe_b64encode(digest).decode("ascii")

    def _gen_key(self, sid: str) -> str | None:
        """The memcached key of the generation of the user whose tag `sid` carries, if any."""
        if len(sid) > _TAG_LENGTH + 22 and sid[-_TAG_LENGTH - 1] == ".":
            return f"{self._key_head}u:{sid[-_TAG_LENGTH:]}"
        return None

    def key_for(self, sid: str) -> str:
        """Return the memcached key of session `sid`: a keyed digest, never the id itself."""
        digest = self._id_digest.copy()
        digest.update(sid.encode("utf-8", "surrogatepass"))
        return self._key_head + digest.hexdigest()

    def stats(self) -> dict[str, int]:
        """Return counters: hits, misses, forbidden, expired, fills, writes, lease_lost,
        lease_waits, bypassed (calls served by the database alone because the
        cache failed), invalidations, pending (keys waiting to be invalidated),
        decode_errors, encode_errors, revoked (copies refused because their
        user's generation changed or was lost), rotations, revocations
        (`revoke_all` calls); backend errors are in `cache.stats(ns)`, which
        also counts hits, misses, sets and leases.
        """
        return {**self._stats, "pending": len(self._pending)}

    def _count(self, name: str) -> None:
        self._stats[name] += 1
        shared = _CACHE_COUNTERS.get(name)
        if shared is not None:  # the Cache's totals (`cache.stats()`) count sessions too
            stats = self._ns_stats
            setattr(stats, shared, getattr(stats, shared) + 1)
        kind = _EVENT_KINDS.get(name)
        if kind is not None:  # to the Cache's `on_event=` hook (nothing when it has none)
            self.cache.emit(kind, self.ns, None, None, None, "sessions")

    def _decode(self, raw: bytes, generation: str | None = None) -> Any:
        """The session cached in `raw`, if installed under `generation` (its user's current one)."""
        if is_lease(raw):
            return _NOT_A_SESSION
        until = expires_ms(raw)
        if until is not None and until <= _clock.time() * 1000:
            return _NOT_A_SESSION  # the cached copy's own lifetime is over (memcached rounds up)
        try:
            entry = self.codec.decode(raw)
        except DecodeError:
            self._count("decode_errors")
            return _NOT_A_SESSION
        if type(entry) is not list or len(entry) != 2:
            self._count("decode_errors")
            return _NOT_A_SESSION
        if entry[0] != generation:
            # revoke_all changed the user's generation, or it was lost (evicted, restarted
            # server): the copy is never served again; the store decides.
            self._count("revoked")
            return _NOT_A_SESSION
        return entry[1]

    def _encode(self, value: Any, generation: str | None = None) -> tuple[bytes, float] | None:
        """Return (bytes, cache ttl) to install, or None when the value must not be cached."""
        ttl = self._ttl_for(value)
        if ttl is None:
            return None
        try:
            return self.codec.encode([generation, value], int((_clock.time() + ttl) * 1000)), ttl
        except SerializationError as exc:
            self._count("encode_errors")
            if not self._warned_encode:
                self._warned_encode = True
                logger.warning("memo: sessions of %r are not cached: %s", self.ns, exc)
            return None

    def _expiry(self, value: Any) -> float | None:
        if self._expires is None:
            return None
        found = self._expires(value)
        if found is None:
            return None
        if isinstance(found, _dt.datetime):
            if found.tzinfo is None:
                found = found.replace(tzinfo=_dt.timezone.utc)
            return found.timestamp()
        if isinstance(found, (int, float)) and not isinstance(found, bool):
            return float(found)
        raise TypeError(
            f"the expiry of a session must be a datetime or a Unix time, got {type(found).__name__}; "
            "set SessionCache(expires=...) to the right attribute, a callable, or None"
        )

    def _ttl_for(self, value: Any) -> float | None:
        """Seconds to cache `value`: at most `ttl`, never past its expiry; None if expired."""
        expiry = self._expiry(value)
        if expiry is None:
            return self.ttl
        left = expiry - _clock.time()
        return min(self.ttl, left) if left > 0 else None

    def _answer(self, value: Any, user_id: Any) -> Any:
        """What `get` returns for a session found or loaded: None if absent, expired or not the user's."""
        if value is None or value is _NOT_A_SESSION:
            return None
        expiry = self._expiry(value)  # `_ttl_for(value) is None`, without its min()
        if expiry is not None and expiry <= _clock.time():
            self._count("expired")
            return None
        if self._owner is not None and user_id is not _UNCHECKED and self._owner(value) != user_id:
            self._count("forbidden")
            return None
        return value

    def _check_user(self, user_id: Any) -> None:
        if self._owner is not None and user_id is _UNCHECKED:
            raise TypeError("user_id is required: this SessionCache checks every session's owner")
        if self._owner is None and user_id is not _UNCHECKED:
            raise TypeError("user_id given, but this SessionCache has owner=None and checks no owner")

    # -- guarded steps (fail open) --------------------------------------------------------

    def _guard(self, what: str, steps: Generator[Op, Any, Any]) -> Steps:
        """Run backend steps; on a backend failure count it (or raise) and return `_FAILED`."""
        try:
            return (yield from steps)
        except BackendError as exc:
            self.cache.record_error(self.ns, what, exc, self.on_error)
            return _FAILED

    def _one(self, name: str, *args: Any) -> Steps:
        return (yield (name, args))

    def _call(self, fn: Callable[..., Any], args: tuple[Any, ...], release: str | None) -> Steps:
        """Run the application's function; if it raises, drop the key (`release`) first."""
        try:
            result = yield ("compute", (fn, *args))
            if inspect.isawaitable(result):  # only the sync driver hands one back
                _refuse_awaitable(result, fn)
            return result
        except BaseException:
            if release is not None:
                yield from self._invalidate(release)
            raise

    def _invalidate(self, key: str) -> Steps:
        """Delete `key`; when that fails remember it, bypass it, and retry on later calls."""
        self._count("invalidations")
        try:
            yield from invalidate(key)
        except BackendError as exc:
            self._remember(key)
            self.cache.record_error(self.ns, "invalidating a session", exc, self.on_error)

    def _remember(self, key: str) -> None:
        with self._pending_lock:
            if len(self._pending) < _MAX_PENDING or key in self._pending:
                self._pending[key] = next(self._tickets)
                return
        logger.error("memo: %d session keys wait to be invalidated; dropping %s", _MAX_PENDING, key)

    def _flush_pending(self) -> Steps:
        """Delete the keys earlier writes could not update, before anything reads the cache.

        Returns False when memcached cannot be used now: the call then leaves it alone
        (one timeout per call at most).
        """
        if not self._pending:
            return True
        if not self.cache.is_available:
            return False
        with self._pending_lock:
            snapshot = dict(self._pending)
        done = yield from self._guard("invalidating sessions", self._one("delete_many", list(snapshot)))
        if done is _FAILED:
            return False
        with self._pending_lock:
            for key, ticket in snapshot.items():
                if self._pending.get(key) == ticket:
                    del self._pending[key]
        return True

    def _unreachable(self, key: str, fn: Callable[[], Any]) -> Steps:
        """A change while memcached cannot be reached: remember the key first, then run it.

        From then on this process reads the session from the database, and it deletes
        the key before its next use of memcached.
        """
        self._remember(key)
        self._count("bypassed")
        return (yield from self._call(fn, (), None))

    # -- the protocols ----------------------------------------------------------------------

    def _generation(self, gkey: str | None) -> Steps:
        """The current generation of a user (made when absent); None for an untagged id.

        `_FAILED` when it cannot be read: the caller then installs nothing.
        """
        if gkey is None:
            return None
        token = os.urandom(12).hex().encode("ascii")
        got = yield from self._guard("reading a user's generation", self._one("lease", gkey, token, None))
        if got is _FAILED or got[1] is None:
            return _FAILED
        return _text(got[1][0])

    def _lookup(self, key: str, gkey: str | None) -> Steps:
        """One round trip: the cached bytes of `key` and its user's generation (or `_FAILED`)."""
        if gkey is None:
            raw = yield from self._guard("a session read", self._one("get", key))
            return _FAILED if raw is _FAILED else (raw, None)
        got = yield from self._guard("a session read", self._one("get_many", [key, gkey]))
        if got is _FAILED:
            return _FAILED
        generation = got.get(gkey)
        return got.get(key), None if generation is None else _text(generation)

    def _read(self, sid: str, user_id: Any, load: Callable[[str], Any]) -> Steps:
        key, gkey = self.key_for(sid), self._gen_key(sid)
        if not (yield from self._flush_pending()) or key in self._pending or gkey in self._pending:
            return (yield from self._bypass(load, sid, user_id))
        found = yield from self._lookup(key, gkey)
        if found is _FAILED:
            return (yield from self._bypass(load, sid, user_id))
        raw, generation = found
        if raw is not None:
            value = self._decode(raw, generation)
            if value is not _NOT_A_SESSION:
                self._count("hits")
                return self._answer(value, user_id)
        return (yield from self._miss(key, sid, user_id, load, generation, raw))

    def _miss(
        self,
        key: str,
        sid: str,
        user_id: Any,
        load: Callable[[str], Any],
        generation: str | None = None,
        refused: bytes | None = None,
    ) -> Steps:
        """Fill `key` under a lease; `refused`: the copy the read found and refused (not
        decoded, nor counted, again)."""
        self._count("misses")
        gkey = self._gen_key(sid)
        if gkey is not None and generation is None:
            generation = yield from self._generation(gkey)  # read before the load, never after
            if generation is _FAILED:
                return (yield from self._bypass(load, sid, user_id))
        decoded: list[Any] = [None, _NOT_A_SESSION]  # what `usable` decoded last: not decoded twice

        def usable(found: bytes) -> bool:
            decoded[:] = [found, _NOT_A_SESSION if found == refused else self._decode(found, generation)]
            return decoded[1] is not _NOT_A_SESSION

        got = yield from self._guard("a session lease", acquire(key, self.lease_ttl, usable))
        if got is _FAILED:
            return (yield from self._bypass(load, sid, user_id))
        if got is HELD:
            self._count("lease_waits")
            deadline = _clock.monotonic() + self.wait
            raw = yield from self._guard("waiting for a session", wait(key, deadline, usable))
            got = Found(raw) if isinstance(raw, bytes) else None
        if isinstance(got, Found):
            value = decoded[1] if decoded[0] is got.raw else self._decode(got.raw, generation)
            return self._answer(value, user_id)
        if not isinstance(got, Acquired):
            # Someone else's marker stayed: read the database, install nothing.
            return self._answer((yield from self._call(load, (sid,), None)), user_id)
        value = yield from self._call(load, (sid,), key)
        install = None if value is None else self._encode(value, generation)
        if install is None:
            yield from self._invalidate(key)  # our marker; an absent or expired session is not cached
        else:
            stored = yield from self._guard("storing a session", store(key, *install, got.unique))
            if stored is True:
                self._count("fills")
            elif stored is False:
                self._count("lease_lost")
        return self._answer(value, user_id)

    def _bypass(self, load: Callable[[str], Any], sid: str, user_id: Any) -> Steps:
        self._count("bypassed")
        return self._answer((yield from self._call(load, (sid,), None)), user_id)

    def _write(self, sid: str, fn: Callable[[], Any]) -> Steps:
        key, gkey = self.key_for(sid), self._gen_key(sid)
        reachable = yield from self._flush_pending()
        unique = generation = _FAILED
        if reachable:
            unique = yield from self._guard("locking a session", lock(key, self.lease_ttl))
        if unique is _FAILED:
            return (yield from self._unreachable(key, fn))
        # The generation is read before the database change: a revoke_all that comes after
        # it voids what this write installs. Unreadable: install nothing.
        generation = yield from self._generation(gkey)
        state = yield from self._call(fn, (), key)
        install = None if state is None or generation is _FAILED else self._encode(state, generation)
        if unique is None or install is None:
            yield from self._invalidate(key)
            return state
        stored = yield from self._guard("storing a session", store(key, *install, unique))
        if stored is True:
            self._count("writes")
        elif stored is False:  # voided by a concurrent write or delete: whatever is there must go
            self._count("lease_lost")
            yield from self._invalidate(key)
        else:  # memcached went away after the lock: delete at the first contact
            self._remember(key)
        return state

    def _create(self, sid: str, insert: Callable[[], Any]) -> Steps:
        _check_new_id(sid)
        # The write path, not a plain `add`: every install is a `cas` against this caller's
        # own marker, so a command that reaches memcached late (its client timed out and
        # moved on) can never install an older state over a newer one.
        return (yield from self._write(sid, insert))

    def _delete(self, sid: str, fn: Callable[[], Any]) -> Steps:
        key = self.key_for(sid)
        reachable = yield from self._flush_pending()
        # Lock first: if memcached goes away during the delete, the marker (not the
        # deleted session) is what it holds until lease_ttl.
        locked = _FAILED
        if reachable:
            locked = yield from self._guard("locking a session", lock(key, self.lease_ttl))
        if locked is _FAILED:
            return (yield from self._unreachable(key, fn))
        result = yield from self._call(fn, (), key)
        yield from self._invalidate(key)
        return result

    def _touch(self, sid: str) -> Steps:
        key, gkey = self.key_for(sid), self._gen_key(sid)
        # A key whose delete is pending holds a copy that must go, not live longer.
        if not (yield from self._flush_pending()) or key in self._pending or gkey in self._pending:
            return False
        got = yield from self._guard("a session read", self._one("gets", key))
        if got is _FAILED or got is None:
            return False
        generation = None
        if gkey is not None:
            current = yield from self._guard("reading a user's generation", self._one("get", gkey))
            if current is _FAILED or current is None:
                return False
            generation = _text(current)
        raw, unique = got
        value = self._decode(raw, generation)
        if value is _NOT_A_SESSION:
            return False  # a lease, a lock, or a revoked copy: never prolong one
        install = self._encode(value, generation)  # the exact lifetime travels in the header
        if install is None:
            yield from self._invalidate(key)
            return False
        # cas, not touch: only the exact entry read gets the new lifetime, never a marker.
        touched = yield from self._guard("touching a session", self._one("cas", key, *install, unique))
        return touched is True

    def _revoke(self, ids: Iterable[str]) -> Steps:
        keys = [self.key_for(sid) for sid in ids]
        if not keys:
            return
        self._stats["invalidations"] += len(keys)
        done = yield from self._guard("revoking sessions", self._one("delete_many", keys))
        if done is _FAILED:
            for key in keys:
                self._remember(key)

    def _rotate(self, sid: str, new_sid: str, move: Callable[[str], Any]) -> Steps:
        """Move the session to `new_sid` in the database, drop the old key, cache the new one."""
        state = yield from self._delete(sid, lambda: move(new_sid))
        if state is None:
            return None
        yield from self._write(new_sid, lambda: state)
        self._count("rotations")
        return new_sid

    def _revoke_all(self, user_id: Any, delete: Callable[[], Any]) -> Steps:
        """Delete the user's rows, then give the user a new generation: every copy is void."""
        result = yield from self._call(delete, (), None)
        gkey = f"{self._key_head}u:{self._user_tag(user_id)}"
        token = os.urandom(12).hex().encode("ascii")
        done = yield from self._guard("revoking a user's sessions", self._one("set", gkey, token, None))
        if done is not True:
            # A lost generation is a void one: deleting it at the next contact voids every copy.
            self._remember(gkey)
        self._count("revocations")
        return result

    # -- drivers -------------------------------------------------------------------------------

    def _run(self, steps: Steps) -> Any:
        return run_sync(self.cache.backend, steps)

    async def _arun(self, steps: Steps) -> Any:
        return await run_async(self.cache.backend, steps)

    # -- public API: sync ---------------------------------------------------------------------

    def get(self, sid: str, *, user_id: Any = _UNCHECKED, load: Callable[[str], S | None]) -> S | None:
        """Return session `sid` if it exists, has not expired and belongs to `user_id`; else None.

        Read-through: a miss calls `load(sid)` (the database) and caches what it
        returns. A session of another user looks exactly like a missing one. For an
        id from `new_id_for`, the user's generation is read in the same round trip.
        """
        self._check_user(user_id)
        return self._get(sid, user_id, load)

    def _get(self, sid: str, user_id: Any, load: Callable[[str], S | None]) -> S | None:
        if not _plausible_id(sid):
            self._count("misses")
            return None
        if self._pending:
            return self._run(self._read(sid, user_id, load))  # type: ignore[no-any-return]
        # The hit path, kept flat (one backend call, no step generators): it runs on every
        # request. It is `_read` without the pending invalidations, which are none here.
        key, gkey = self.key_for(sid), self._gen_key(sid)
        try:
            if gkey is None:
                raw, generation = self.cache.backend.get(key), None
            else:
                raw, generation = _split(self.cache.backend.get_many([key, gkey]), key, gkey)
        except BackendError as exc:
            self.cache.record_error(self.ns, "a session read", exc, self.on_error)
            return self._run(self._bypass(load, sid, user_id))  # type: ignore[no-any-return]
        if raw is not None:
            value = self._decode(raw, generation)
            if value is not _NOT_A_SESSION:
                self._count("hits")
                return self._answer(value, user_id)  # type: ignore[no-any-return]
        return self._run(self._miss(key, sid, user_id, load, generation, raw))  # type: ignore[no-any-return]

    def create(self, sid: str, *, insert: Callable[[], S]) -> S:
        """Run `insert()` (the database first), then cache the session it returns.

        `sid` must come from `new_id()`/`new_id_for()`, or from the application's
        own scheme with at least `MIN_ID_BITS` (64) bits by its format: `ValueError`
        otherwise, before the database is touched.
        """
        return self._run(self._create(sid, insert))  # type: ignore[no-any-return]

    def write(self, sid: str, *, write: Callable[[], S | None]) -> S | None:
        """Lock the session's key, run `write()` (the database), then cache the state it returns.

        `write` must be the application's atomic database change and return the
        session's new state (None: the session is gone; the key is dropped).
        """
        return self._run(self._write(sid, write))  # type: ignore[no-any-return]

    def delete(self, sid: str, *, delete: Callable[[], Any]) -> Any:
        """Run `delete()` (the database), then drop the cached session; return what `delete` returned."""
        return self._run(self._delete(sid, delete))

    def touch(self, sid: str) -> bool:
        """Give a cached session a fresh `ttl` (never past its expiry); False if it was not cached.

        Only a live, current copy is extended: never a lease or lock, a copy whose
        delete is still pending, or one a `revoke_all` voided.
        """
        return self._run(self._touch(sid))  # type: ignore[no-any-return]

    def revoke(self, ids: Iterable[str]) -> None:
        """Drop these sessions from the cache, after the application deleted them in the database."""
        self._run(self._revoke(ids))

    def rotate(
        self, sid: str, *, user_id: Any = KEEP, move: Callable[[str], S | None] | None = None
    ) -> str | None:
        """Give session `sid` a new id (same data) and return it; the old id is invalid at once.

        Use it at login and on every change of privilege (session fixation). With
        `user_id`, the session passes to that user and the new id is one
        `revoke_all(user_id)` reaches. `move(new_sid)` is the database's atomic
        rename returning the new state (default: `store.rename`). None: no such session.
        """
        new_sid = self._rotated_id(sid, user_id)
        return self._run(self._rotate(sid, new_sid, move or self._mover(sid, user_id)))  # type: ignore[no-any-return]

    def revoke_all(self, user_id: Any, *, delete: Callable[[], Any] | None = None) -> Any:
        """Refuse every session of `user_id` in every process ("log out everywhere").

        Runs `delete()` (default: `store.delete_user(user_id)`), then gives the
        user a new generation in memcached: every cached copy is void from then on,
        in O(1) cache work. Returns what `delete` returned (the store: a count).
        """
        return self._run(self._revoke_all(user_id, delete or self._deleter(user_id)))

    # -- public API: async -----------------------------------------------------------------------

    async def aget(
        self, sid: str, *, user_id: Any = _UNCHECKED, load: Callable[[str], Awaitable[S | None] | S | None]
    ) -> S | None:
        """Async `get`; `load` may be a coroutine function."""
        self._check_user(user_id)
        return await self._aget(sid, user_id, load)

    async def _aget(
        self, sid: str, user_id: Any, load: Callable[[str], Awaitable[S | None] | S | None]
    ) -> S | None:
        if not _plausible_id(sid):
            self._count("misses")
            return None
        if self._pending:
            return await self._arun(self._read(sid, user_id, load))  # type: ignore[no-any-return]
        key, gkey = self.key_for(sid), self._gen_key(sid)  # the flat hit path, as in `get`
        try:
            if gkey is None:
                raw, generation = await self.cache.backend.aget(key), None
            else:  # the session and its user's generation in one round trip
                raw, generation = _split(await self.cache.backend.aget_many([key, gkey]), key, gkey)
        except BackendError as exc:
            self.cache.record_error(self.ns, "a session read", exc, self.on_error)
            return await self._arun(self._bypass(load, sid, user_id))  # type: ignore[no-any-return]
        if raw is not None:
            value = self._decode(raw, generation)
            if value is not _NOT_A_SESSION:
                self._count("hits")
                return self._answer(value, user_id)  # type: ignore[no-any-return]
        return await self._arun(self._miss(key, sid, user_id, load, generation, raw))  # type: ignore[no-any-return]

    async def acreate(self, sid: str, *, insert: Callable[[], Awaitable[S] | S]) -> S:
        """Async `create`."""
        return await self._arun(self._create(sid, insert))  # type: ignore[no-any-return]

    async def awrite(self, sid: str, *, write: Callable[[], Awaitable[S | None] | S | None]) -> S | None:
        """Async `write`."""
        return await self._arun(self._write(sid, write))  # type: ignore[no-any-return]

    async def adelete(self, sid: str, *, delete: Callable[[], Any]) -> Any:
        """Async `delete`."""
        return await self._arun(self._delete(sid, delete))

    async def atouch(self, sid: str) -> bool:
        """Async `touch`."""
        return await self._arun(self._touch(sid))  # type: ignore[no-any-return]

    async def arevoke(self, ids: Iterable[str]) -> None:
        """Async `revoke`."""
        await self._arun(self._revoke(ids))

    async def arotate(
        self,
        sid: str,
        *,
        user_id: Any = KEEP,
        move: Callable[[str], Awaitable[S | None] | S | None] | None = None,
    ) -> str | None:
        """Async `rotate` (default `move`: `store.arename`)."""
        new_sid = self._rotated_id(sid, user_id)
        mover = move or self._mover(sid, user_id, asynchronous=True)
        return await self._arun(self._rotate(sid, new_sid, mover))  # type: ignore[no-any-return]

    async def arevoke_all(self, user_id: Any, *, delete: Callable[[], Any] | None = None) -> Any:
        """Async `revoke_all` (default `delete`: `store.adelete_user`)."""
        return await self._arun(
            self._revoke_all(user_id, delete or self._deleter(user_id, asynchronous=True))
        )

    # -- rotate and revoke_all: the store's side ------------------------------------------------

    def _rotated_id(self, sid: str, user_id: Any) -> str:
        if user_id is not KEEP and user_id is not None:
            return self.new_id_for(user_id)
        if user_id is KEEP and self._gen_key(sid) is not None:
            return f"{self.new_id()}.{sid[-_TAG_LENGTH:]}"  # the same user: the same tag
        return self.new_id()

    def _needs_store(self, what: str) -> Any:
        if self.store is None:
            raise TypeError(f"{what} needs the database's side: give SessionCache(store=...) or {what}(...)")
        return self.store

    def _mover(self, sid: str, user_id: Any, asynchronous: bool = False) -> Callable[[str], Any]:
        store = self._needs_store("move=")
        rename = store.arename if asynchronous else store.rename
        return lambda new_sid: rename(sid, new_sid, user_id=user_id)

    def _deleter(self, user_id: Any, asynchronous: bool = False) -> Callable[[], Any]:
        store = self._needs_store("delete=")
        delete_user = store.adelete_user if asynchronous else store.delete_user
        return lambda: delete_user(user_id)


_COUNTERS = (
    "hits",
    "misses",
    "forbidden",
    "expired",
    "fills",
    "writes",
    "lease_lost",
    "lease_waits",
    "bypassed",
    "invalidations",
    "decode_errors",
    "encode_errors",
    "revoked",
    "rotations",
    "revocations",
)


#: Counters that are also the Cache's counters of the namespace (`Cache.stats`).
_CACHE_COUNTERS = {
    "hits": "hits",
    "misses": "misses",
    "fills": "sets",
    "writes": "sets",
    "lease_lost": "lease_lost",
    "lease_waits": "lease_waits",
    "decode_errors": "decode_errors",
    "encode_errors": "encode_errors",
}

#: Counters that are also `memo.Event` kinds (source "sessions").
_EVENT_KINDS = {
    "hits": "hit",
    "misses": "miss",
    "forbidden": "forbidden",
    "fills": "set",
    "writes": "set",
    "lease_lost": "lease_lost",
    "lease_waits": "lease_wait",
    "decode_errors": "decode_error",
}


def _getter(spec: str | Callable[[Any], Any] | None, what: str) -> Callable[[Any], Any] | None:
    """Turn an attribute/key name into a function of the session (a callable stays as it is)."""
    if spec is None or callable(spec):
        return spec
    if not isinstance(spec, str) or not spec:
        raise ConfigurationError(f"{what} must be an attribute or key name, a callable or None, got {spec!r}")

    def get(value: Any) -> Any:
        if type(value) is dict or isinstance(value, Mapping):  # a record: a dict, on every hit
            return value.get(spec)
        return getattr(value, spec, None)

    return get


def _text(raw: bytes) -> str:
    return raw.decode("ascii", "replace")


def _split(got: Mapping[str, bytes], key: str, gkey: str) -> tuple[bytes | None, str | None]:
    """(the session's bytes, its user's generation) from one `get_many`."""
    generation = got.get(gkey)
    return got.get(key), None if generation is None else _text(generation)


def _plausible_id(sid: Any) -> bool:
    return isinstance(sid, str) and 0 < len(sid) <= _MAX_ID_LENGTH


def id_bits(sid: str) -> float:
    """The entropy an id's format can carry: its length × log2 of the alphabet its characters use."""
    chars = set(sid)
    if chars <= set("0123456789"):
        alphabet = 10
    elif chars <= set("0123456789abcdef") or chars <= set("0123456789ABCDEF"):
        alphabet = 16
    elif chars <= set("0123456789abcdefghijklmnopqrstuvwxyz") or chars <= set(
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    ):
        alphabet = 36
    else:
        alphabet = 64
    return len(sid) * math.log2(alphabet)


def _check_new_id(sid: Any) -> None:
    if not (
        isinstance(sid, str)
        and len(sid) <= _MAX_ID_LENGTH
        and _ID_CHARS.issuperset(sid)
        and id_bits(sid) >= MIN_ID_BITS
        and len(set(sid)) >= 4  # "xxxx…" is no random id whatever its length
    ):
        raise ValueError(
            f"a new session id needs at least {MIN_ID_BITS} bits by its format (e.g. 16 hex or 11 "
            "URL-safe characters; letters, digits and - _ . ~ + / = only) from a CSPRNG: use "
            "SessionCache.new_id(); never accept an id the client chose"
        )


def _refuse_awaitable(result: Any, fn: Callable[..., Any]) -> None:
    if inspect.iscoroutine(result):
        result.close()
    raise TypeError(
        f"{getattr(fn, '__qualname__', fn)!r} returned an awaitable: use the async methods "
        "(aget, acreate, awrite, adelete) with async database functions"
    )
