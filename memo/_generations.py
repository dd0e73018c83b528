"""Namespace generations: how `clear()` makes entries unreachable without a scan.

Every key carries a generation: a digest of two tokens, the Cache's (the root,
renewed by `clear()`) and its namespace's (renewed by `clear(ns)`). A clear
writes a new token, so every older key of the namespace becomes unreachable
for every process that reads the new token; the old entries age out by TTL or
LRU. The rules that make a clear stick:

- Tokens order. A token is 10 base-32 digits of milliseconds since the epoch,
  then 6 random ones: comparing two tokens as strings compares their times. A
  clear writes a token newer than every one it can see (newer than the clock
  if the clock is behind), so a clear always moves forward.
- Tokens live on every server, not on the data ring. A clear writes its token
  to every server; a read asks every server (`get_all`), takes the newest token
  among those that answered and repairs the servers that lack it or hold an
  older one. A server that was away during a clear therefore cannot bring an
  older token back, and processes that know different (overlapping) server
  lists agree. One dead server costs only its own share of the data keys: the
  generation is read from the others.
- Records only grow. Clears and repairs append their token to the record
  (`append_all`: memcached's `add`, then `append`), and a record's token is the
  newest in it, so no write can hide a newer token: a repair holding the older
  token it read before a clear cannot undo the clear, whatever the order in
  which the writes land. A clear rewrites a record that grew long (eight
  tokens), then reads it back and appends its token again where a concurrent
  clear's rewrite replaced it.
- A process never goes back. It keeps the newest token it has seen for each
  record, so a read that started before this process's `clear()` (and so holds
  the older token) cannot install it afterwards, and a clear survives servers
  losing every token while the clearing process is alive (it repairs them).
- A token found nowhere is created. A new token only turns old entries into
  misses; it can never revive them.

Each process trusts the generations it has read for `ns_refresh` seconds, so
the hit path costs no extra round trip; the process that cleared sees its
clear at once, the others within `ns_refresh`.

The steps here are sans-I/O generators (see `memo._drive`): `Cache` drives them
with its backend, sync or async.
"""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from collections.abc import Generator, Iterable, Sequence
from typing import Any

from . import _clock
from ._drive import Op
from ._errors import BackendError, BackendUnavailable
from ._keys import safe_segment

__all__ = ["SCOPE", "Generations", "new_token", "scope_of"]

#: Separates a namespace from a function's id in a scope name (never in a namespace).
SCOPE = "\x00"


def scope_of(ns: str, function_id: str) -> str:
    """The generation name of one function's entries in namespace `ns`."""
    return f"{ns}{SCOPE}{function_id}"


_DIGITS = "0123456789abcdefghijklmnopqrstuv"  # ascending in ASCII: string order is number order
_TIME_DIGITS = 10  # 50 bits of milliseconds
_RANDOM_DIGITS = 6  # 30 bits that tell apart tokens made in the same millisecond
TOKEN_LENGTH = _TIME_DIGITS + _RANDOM_DIGITS
#: A clear rewrites (rather than appends to) a record this long, so records stay small.
_COMPACT_AT = 8 * TOKEN_LENGTH


def _base32(n: int, digits: int) -> str:
    return "".join(_DIGITS[(n >> shift) & 31] for shift in range(5 * (digits - 1), -1, -5))


def new_token(after: str | None = None) -> str:
    """Return a fresh token, newer than `after` (when given) even if the clock is behind."""
    ms = int(_clock.time() * 1000)
    if after is not None:
        ms = max(ms, int(after[:_TIME_DIGITS], 32) + 1)
    return _base32(ms, _TIME_DIGITS) + _base32(int.from_bytes(os.urandom(4), "big"), _RANDOM_DIGITS)


def parse_record(raw: bytes | None) -> str | None:
    """Return the newest token of a record (tokens appended one after another).

    None when the record is absent, or malformed (not written by this version:
    then it is replaced).
    """
    if not raw or len(raw) % TOKEN_LENGTH:
        return None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    if not all(c in _DIGITS for c in text):
        return None
    return max(text[i : i + TOKEN_LENGTH] for i in range(0, len(text), TOKEN_LENGTH))


def generation_of(root: str, token: str) -> str:
    """The generation part of keys: a short digest of the root and namespace tokens."""
    return hashlib.blake2b(f"{root}.{token}".encode(), digest_size=8).hexdigest()


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


class Generations:
    """The generation tokens of one Cache: what this process knows, and the steps to read and renew them.

    Args:
        prefix: the Cache's key prefix; tokens are stored under `<prefix>~gen...`.
        ns_refresh: seconds a generation read from the backend is trusted.
    """

    def __init__(self, prefix: str, ns_refresh: float) -> None:
        self.root_key = f"{prefix}~gen"
        self._prefix = prefix
        self.ns_refresh = ns_refresh
        #: ns -> (generation, trusted until): the hit path reads this dict directly.
        self.known: dict[str, tuple[str, float]] = {}
        #: record key -> the newest token this process has seen there (never goes back).
        self._tokens: dict[str, str] = {}
        #: namespace -> the names in `known` that are made of its record: itself and
        #: its functions' scopes. A clear(ns) touches these alone, so its cost does not
        #: grow with the number of namespaces the process knows (many tenants).
        self._members: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        _ALL.add(self)

    def ns_key(self, ns: str) -> str:
        """The record key of namespace `ns`'s token."""
        return f"{self._prefix}~gen:{safe_segment(ns, 48)}:{_digest(ns)}"

    def record_keys(self, name: str) -> list[str]:
        """The token records a generation is made of, besides the root's.

        `name` is a namespace, or a function's scope in it (`scope_of(ns, function_id)`):
        then its own token follows the namespace's, so `clear(ns)` and a clear of the
        scope alone both renew its generation.
        """
        ns, sep, function_id = name.partition(SCOPE)
        ns_key = self.ns_key(ns)
        return [ns_key, f"{ns_key}:{function_id}"] if sep else [ns_key]

    def fresh(self, ns: str) -> str | None:
        """The generation of `ns` if it is still trusted, else None."""
        entry = self.known.get(ns)
        return entry[0] if entry is not None and entry[1] > _clock.monotonic() else None

    def split_stale(self, names: Iterable[str]) -> tuple[dict[str, str | None], list[str]]:
        """Split `names` into trusted generations and namespaces to read (in order, once each)."""
        now = _clock.monotonic()
        known: dict[str, str | None] = {}
        stale: list[str] = []
        for ns in names:
            entry = self.known.get(ns)
            if entry is not None and entry[1] > now:
                known[ns] = entry[0]
            elif ns not in stale:
                stale.append(ns)
        return known, stale

    def keep_last(self, stale: Sequence[str]) -> dict[str, str | None]:
        """After a failed read: trust the last known generations one more interval (None: never known)."""
        until = _clock.monotonic() + self.ns_refresh
        out: dict[str, str | None] = {}
        with self._lock:
            for ns in stale:
                entry = self.known.get(ns)
                if entry is None:
                    out[ns] = None
                else:
                    self.known[ns] = (entry[0], until)
                    out[ns] = entry[0]
        return out

    # -- steps -------------------------------------------------------------------

    def read(self, stale: Sequence[str], errors: list[BackendError]) -> Generator[Op, Any, dict[str, str]]:
        """Read the tokens of the root and of `stale` namespaces; install and return their generations.

        A server that fails is left out (the others decide); a failed repair
        is appended to `errors`; a read that every server failed raises `BackendError`.
        """
        records = {name: self.record_keys(name) for name in stale}
        keys = list(dict.fromkeys([self.root_key, *(k for ks in records.values() for k in ks)]))
        found: dict[str, dict[str, bytes]] = yield ("get_all_many", (keys,))
        newest: dict[str, str] = {}
        for key in keys:
            newest[key] = yield from self._settle(key, [got.get(key) for got in found.values()], errors)
        until = _clock.monotonic() + self.ns_refresh
        out: dict[str, str] = {}
        with self._lock:
            root = self._keep(self.root_key, newest[self.root_key])
            for name, record in records.items():
                token = ".".join([self._keep(key, newest[key]) for key in record])
                generation = generation_of(root, token)
                self._install(name, (generation, until))
                out[name] = generation
        return out

    def clear(self, ns: str | None, errors: list[BackendError]) -> Generator[Op, Any, None]:
        """Write a token newer than every one seen to every server; install it here at once.

        Raises:
            BackendUnavailable: no server stored it (a clear that did not happen
                must not look done).
        """
        key = self.root_key if ns is None else self.record_keys(ns)[-1]
        try:
            raws = yield from self._get_all(key)
        except BackendError as exc:  # unreadable: a token from the clock is newer than any in use
            errors.append(exc)
            raws = []
        seen = [parse_record(raw) for raw in raws]
        token = new_token(after=self._newest(key, seen))
        # Appended, the token can never hide a newer one a concurrent clear wrote. A long
        # (or foreign) record is rewritten instead, then read back: a clear racing that
        # rewrite gets its token appended again.
        compact = any(raw and (len(raw) >= _COMPACT_AT or parse_record(raw) is None) for raw in raws)
        stored = yield from self._write(key, token, errors, replace=compact)
        if not stored:
            raise BackendUnavailable(f"no server stored the new generation of {ns!r}")
        self._install_cleared(key, ns, token)
        if compact:
            try:
                raws = yield from self._get_all(key)
            except BackendError as exc:
                errors.append(exc)
                return
            newest = self._tokens[key]
            if any((parse_record(raw) or "") < newest for raw in raws):
                yield from self._write(key, newest, errors)

    def _install_cleared(self, key: str, ns: str | None, token: str) -> None:
        # Every generation made of the renewed record changes: recompute it from the
        # tokens this process holds (no read needed), or forget it when one is unknown.
        with self._lock:
            self._keep(key, token)
            root = self._tokens.get(self.root_key)
            until = _clock.monotonic() + self.ns_refresh
            if ns is None:
                names: Iterable[str] = list(self.known)  # the root: every generation changes
            elif SCOPE in ns:
                names = (ns,)  # one function's own record: only its scope
            else:
                names = {ns, *self._members.get(ns, ())}
            for name in names:
                record = self.record_keys(name)
                if key != self.root_key and key not in record:
                    continue
                tokens = [self._tokens.get(k) for k in record]
                if root is None or None in tokens:
                    self._forget(name)
                else:
                    self._install(name, (generation_of(root, ".".join(tokens)), until))  # type: ignore[arg-type]

    def _install(self, name: str, entry: tuple[str, float]) -> None:
        # Caller holds the lock.
        self.known[name] = entry
        self._members.setdefault(name.partition(SCOPE)[0], set()).add(name)

    def _forget(self, name: str) -> None:
        # Caller holds the lock.
        if self.known.pop(name, None) is not None:
            ns = name.partition(SCOPE)[0]
            members = self._members[ns]
            members.discard(name)
            if not members:
                del self._members[ns]

    def _settle(
        self, key: str, raws: list[bytes | None], errors: list[BackendError]
    ) -> Generator[Op, Any, str]:
        """The newest token of one record (one entry per server that answered); repair the others.

        Servers that lack it or hold an older one get it appended: an append never
        hides a newer token a concurrent clear wrote, so a repair cannot undo a clear.
        """
        seen = [parse_record(raw) for raw in raws]
        newest = self._newest(key, seen)
        if newest is None:
            newest = yield from self._create(key, errors)
        if any(raw and token is None for raw, token in zip(raws, seen, strict=True)):
            yield from self._write(key, newest, errors, replace=True)  # not a record of ours
        elif any(token != newest for token in seen):
            yield from self._write(key, newest, errors)
        return newest

    def _create(self, key: str, errors: list[BackendError]) -> Generator[Op, Any, str]:
        """A token for a record found nowhere: a new one, unless a racing reader created one first.

        Racing creators (threads, tasks, processes) meet on the server that
        `key` routes to: the first `add` wins and the others take its token. A
        new token only turns old entries into misses; it cannot revive them.
        """
        token = new_token()
        try:
            if not (yield ("add", (key, token.encode(), None))):
                found = parse_record((yield ("get", (key,))))
                if found is not None:
                    token = found
        except BackendError as exc:  # that server is away: the other servers decide
            errors.append(exc)
        return token

    def _newest(self, key: str, seen: list[str | None]) -> str | None:
        candidates = [token for token in seen if token is not None]
        local = self._tokens.get(key)
        if local is not None:
            candidates.append(local)
        return max(candidates, default=None)

    def _get_all(self, key: str) -> Generator[Op, Any, list[bytes | None]]:
        """The record on every server that answered (None where it is missing).

        Servers that failed are left out (`get_all` raises only when all failed).
        """
        found: dict[str, bytes | None] = yield ("get_all", (key,))
        return list(found.values())

    def _write(
        self, key: str, token: str, errors: list[BackendError], replace: bool = False
    ) -> Generator[Op, Any, int]:
        """Append `token` to the record on every server (or replace the record); how many stored it."""
        try:
            stored: int = yield ("set_all" if replace else "append_all", (key, token.encode(), None))
        except BackendError as exc:
            errors.append(exc)
            return 0
        return stored

    def _keep(self, key: str, token: str) -> str:
        # Caller holds the lock. The newest token wins, here as on the servers.
        old = self._tokens.get(key)
        if old is not None and old >= token:
            return old
        self._tokens[key] = token
        return token


_ALL: weakref.WeakSet[Generations] = weakref.WeakSet()


def _after_fork() -> None:
    # A thread of the parent may have held a lock at fork time; it does not exist here.
    for generations in list(_ALL):
        generations._lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork)
