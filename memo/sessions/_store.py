"""The source of truth of sessions: the `SessionStore` protocol and a PostgreSQL store.

A store keeps one row per session: the keyed digest of its id (never the id a cookie
carries), the user it belongs to, its data (a JSON object whose values keep their types
through memo's codec) and its creation and expiry times. Every change is one atomic
statement that returns the new row, so concurrent requests that change different keys of
one session never lose each other's changes (no read-modify-write anywhere).

A record, what the store's methods return and what `SessionCache` caches, is a dict:
`{"user_id": str | None, "data": dict, "created": datetime, "expires_at": datetime}`, the
two datetimes in UTC (`datetime.timezone.utc`) whatever the connection's TimeZone is.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from .._codec import GLOBAL_TYPES, Codec, TypeRegistry
from .._errors import ConfigurationError

__all__ = ["KEEP", "PostgresStore", "Record", "SessionStore", "ddl"]

#: A session record: user_id, data, created, expires_at.
Record = dict[str, Any]

#: `user_id=KEEP` (the default of `update` and `rename`): leave the session's user as it is.
KEEP: Any = type("_Keep", (), {"__repr__": lambda self: "KEEP"})()

_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?")


@runtime_checkable
class SessionStore(Protocol):
    """What `SessionMiddleware` and `SessionCache.rotate`/`revoke_all` need from a database.

    Implement it for any database: every method is one atomic operation, and every
    method that changes a session returns its new record (None: no such live session).
    `sid` is the raw session id; a store keeps only a keyed digest of it. `max_age` is
    the session's lifetime from now, in seconds. Each method has an async twin
    (`aload`, `ainsert`, ...); a store may implement only the flavour it serves.
    """

    def load(self, sid: str) -> Record | None:
        """Return the live (unexpired) session `sid`, or None."""

    def insert(self, sid: str, data: Mapping[str, Any], *, user_id: Any = None, max_age: float) -> Record:
        """Create session `sid` holding `data`."""

    def update(
        self,
        sid: str,
        changes: Mapping[str, Any],
        *,
        remove: Sequence[str] = (),
        user_id: Any = KEEP,
        max_age: float | None = None,
    ) -> Record | None:
        """Merge `changes` into the session's data and drop the keys in `remove`, atomically."""

    def rename(
        self,
        sid: str,
        new_sid: str,
        changes: Mapping[str, Any] | None = None,
        *,
        remove: Sequence[str] = (),
        user_id: Any = KEEP,
        max_age: float | None = None,
    ) -> Record | None:
        """Move the session to `new_sid` (and apply the changes), atomically; the old id is gone."""

    def delete(self, sid: str) -> bool:
        """Delete the session; True if it existed."""

    def delete_user(self, user_id: Any) -> int:
        """Delete every session of `user_id`; return how many."""

    def purge_expired(self) -> int:
        """Delete the sessions whose expiry passed; return how many."""


def ddl(table: str = "memo_sessions") -> str:
    """Return the SQL that creates the sessions table and its indexes (idempotent)."""
    name = _check_table(table)
    index = name.replace(".", "_")
    return (
        f"CREATE TABLE IF NOT EXISTS {name} (\n"
        "    id       text        PRIMARY KEY,           -- keyed digest of the session id\n"
        "    user_id  text,                              -- NULL: an anonymous session\n"
        "    data     jsonb       NOT NULL DEFAULT '{}', -- values typed by memo's codec\n"
        "    created  timestamptz NOT NULL DEFAULT now(),\n"
        "    expires  timestamptz NOT NULL\n"
        ");\n"
        f"CREATE INDEX IF NOT EXISTS {index}_user_id ON {name} (user_id);\n"
        f"CREATE INDEX IF NOT EXISTS {index}_expires ON {name} (expires);\n"
    )


def _check_table(table: Any) -> str:
    if not isinstance(table, str) or not _TABLE.fullmatch(table):
        raise ConfigurationError(
            f"table must be a PostgreSQL name (letters, digits, _; optionally schema.table), got {table!r}"
        )
    return table


# -- JSONB holds no NUL character: memo's type tags start with one ------------------------


def _escape(s: str) -> str:
    return s.replace("~", "~~").replace("\x00", "~0") if ("~" in s or "\x00" in s) else s


_UNESCAPE = re.compile("~(~|0)")


def _unescape(s: str) -> str:
    return _UNESCAPE.sub(lambda m: "~" if m.group(1) == "~" else "\x00", s) if "~" in s else s


def _to_json(tree: Any) -> Any:
    if isinstance(tree, str):
        return _escape(tree)
    if isinstance(tree, list):
        return [_to_json(x) for x in tree]
    if isinstance(tree, dict):
        return {_escape(k): _to_json(v) for k, v in tree.items()}
    return tree


def _from_json(tree: Any) -> Any:
    if isinstance(tree, str):
        return _unescape(tree)
    if isinstance(tree, list):
        return [_from_json(x) for x in tree]
    if isinstance(tree, dict):
        return {_unescape(k): _from_json(v) for k, v in tree.items()}
    return tree


class PostgresStore:
    """Sessions in a PostgreSQL table, on psycopg 3 (`ConnectionPool` or `AsyncConnectionPool`).

    Args:
        pool: a `psycopg_pool.ConnectionPool` (the sync methods) or
            `AsyncConnectionPool` (the async ones, `aload`, `ainsert`, ...).
        table: the table's name (`schema.table` allowed); `create_table()` makes it,
            `memo sessions sql` prints its DDL for migration tools.
        secret: key of the digest that turns session ids into row ids (default: a
            fixed key). Only digests reach the database, so its rows and backups
            hold no usable session id.
        types: classes the codec may rebuild from session data beyond the global
            registry (`memo.register_type`).
    """

    def __init__(
        self,
        pool: Any,
        table: str = "memo_sessions",
        *,
        secret: bytes | str | None = None,
        types: Sequence[type] = (),
    ) -> None:
        self.table = _check_table(table)
        if not hasattr(pool, "connection"):
            raise ConfigurationError(f"pool must be a psycopg_pool pool, got {pool!r}")
        self.pool = pool
        self.is_async = _is_async_pool(pool)
        material = (secret.encode() if isinstance(secret, str) else secret) or b"memo.sessions.store"
        self._key = hashlib.blake2b(material, digest_size=32, person=b"memo.store").digest()
        self.codec = Codec(TypeRegistry(types, parent=GLOBAL_TYPES), None)
        cols = "user_id, data, created, expires"
        change = (
            "data = (data - %s::text[]) || %s::jsonb, user_id = CASE WHEN %s THEN %s::text ELSE user_id END, "
            "expires = COALESCE(now() + %s::interval, expires)"
        )
        t = self.table
        self._sql = {
            "load": f"SELECT {cols} FROM {t} WHERE id = %s AND expires > now()",
            "insert": f"INSERT INTO {t} (id, user_id, data, expires) "
            f"VALUES (%s, %s, %s, now() + %s::interval) RETURNING {cols}",
            # One statement each: the merge (`||`), the removals (`-`), the user and the
            # expiry change together, never read-modify-write.
            "update": f"UPDATE {t} SET {change} WHERE id = %s AND expires > now() RETURNING {cols}",
            "rename": f"UPDATE {t} SET id = %s, {change} WHERE id = %s AND expires > now() RETURNING {cols}",
            "delete": f"DELETE FROM {t} WHERE id = %s",
            "delete_user": f"DELETE FROM {t} WHERE user_id = %s",
            "purge_expired": f"DELETE FROM {t} WHERE expires <= now()",
        }

    def __repr__(self) -> str:
        return f"PostgresStore(table={self.table!r})"

    def digest(self, sid: str) -> str:
        """Return the row id of session `sid`: a keyed digest, never the id itself."""
        return hashlib.blake2b(
            sid.encode("utf-8", "surrogatepass"), key=self._key, digest_size=24
        ).hexdigest()

    # -- statements and rows (no I/O) -----------------------------------------------------

    def _json(self, data: Mapping[str, Any] | None) -> Any:
        from psycopg.types.json import Jsonb

        if data is None:
            return Jsonb({})
        for k in data:
            if type(k) is not str:
                raise TypeError(f"session data keys must be str, got {k!r}")
        return Jsonb({_escape(k): _to_json(self.codec.to_tree(v)) for k, v in data.items()})

    def _record(self, row: Any) -> Record | None:
        if row is None:
            return None
        user_id, data, created, expires = row
        # psycopg gives timestamptz in the connection's TimeZone (a ZoneInfo): the same instant
        # in UTC makes a record that does not depend on the server's settings, and one that
        # `SessionCache` decodes on every hit about twice as fast (ISO text, no zone to rebuild).
        return {
            "user_id": user_id,
            "data": {_unescape(k): self.codec.from_tree(_from_json(v)) for k, v in data.items()},
            "created": created.astimezone(_dt.timezone.utc),
            "expires_at": expires.astimezone(_dt.timezone.utc),
        }

    def _change(
        self,
        changes: Mapping[str, Any] | None,
        remove: Sequence[str],
        user_id: Any,
        max_age: float | None,
    ) -> tuple[Any, ...]:
        keep = user_id is KEEP
        return (
            [_escape(k) for k in remove],
            self._json(changes),
            not keep,
            None if keep or user_id is None else str(user_id),
            None if max_age is None else _dt.timedelta(seconds=max_age),
        )

    def _args(self, op: str, *a: Any, **kw: Any) -> tuple[str, tuple[Any, ...]]:
        if op == "load":
            return self._sql[op], (self.digest(a[0]),)
        if op == "insert":
            sid, data = a
            user = kw.get("user_id")
            lifetime = _dt.timedelta(seconds=kw["max_age"])
            return self._sql[op], (
                self.digest(sid),
                None if user is None else str(user),
                self._json(data),
                lifetime,
            )
        if op == "update":
            sid, changes = a
            return self._sql[op], (
                *self._change(changes, kw.get("remove", ()), kw.get("user_id", KEEP), kw.get("max_age")),
                self.digest(sid),
            )
        if op == "rename":
            sid, new_sid, changes = (*a, None)[:3]
            change = self._change(changes, kw.get("remove", ()), kw.get("user_id", KEEP), kw.get("max_age"))
            return self._sql[op], (self.digest(new_sid), *change, self.digest(sid))
        if op == "delete":
            return self._sql[op], (self.digest(a[0]),)
        if op == "delete_user":
            return self._sql[op], (str(a[0]),)
        return self._sql[op], ()

    def _run(self, op: str, *a: Any, **kw: Any) -> Any:
        if self.is_async:
            raise TypeError(f"PostgresStore on an AsyncConnectionPool: use a{op}()")
        sql, params = self._args(op, *a, **kw)
        with self.pool.connection() as conn:
            cur = conn.execute(sql, params)
            return cur.rowcount if op in _COUNTS else self._record(cur.fetchone())

    async def _arun(self, op: str, *a: Any, **kw: Any) -> Any:
        if not self.is_async:
            raise TypeError(f"PostgresStore on a (sync) ConnectionPool: use {op}()")
        sql, params = self._args(op, *a, **kw)
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql, params)
            return cur.rowcount if op in _COUNTS else self._record(await cur.fetchone())

    # -- sync ---------------------------------------------------------------------------

    def create_table(self) -> None:
        """Create the table and its indexes if they do not exist (`ddl(table)`)."""
        if self.is_async:
            raise TypeError("PostgresStore on an AsyncConnectionPool: use acreate_table()")
        with self.pool.connection() as conn:
            conn.execute(ddl(self.table))

    def load(self, sid: str) -> Record | None:
        """Return the live session `sid`, or None (absent or expired)."""
        return self._run("load", sid)  # type: ignore[no-any-return]

    def insert(self, sid: str, data: Mapping[str, Any], *, user_id: Any = None, max_age: float) -> Record:
        """Create session `sid` with `data`, living `max_age` seconds."""
        return self._run("insert", sid, data, user_id=user_id, max_age=max_age)  # type: ignore[no-any-return]

    def update(
        self,
        sid: str,
        changes: Mapping[str, Any],
        *,
        remove: Sequence[str] = (),
        user_id: Any = KEEP,
        max_age: float | None = None,
    ) -> Record | None:
        """Merge `changes` into the stored data (JSONB `||`) and drop `remove`, in one statement.

        Also sets the user (unless `KEEP`) and, given `max_age`, a new expiry.
        Returns the new record, or None when the session is absent or expired.
        """
        return self._run(  # type: ignore[no-any-return]
            "update", sid, changes, remove=remove, user_id=user_id, max_age=max_age
        )

    def rename(
        self,
        sid: str,
        new_sid: str,
        changes: Mapping[str, Any] | None = None,
        *,
        remove: Sequence[str] = (),
        user_id: Any = KEEP,
        max_age: float | None = None,
    ) -> Record | None:
        """Move the session to `new_sid`, applying the changes, in one statement."""
        return self._run(  # type: ignore[no-any-return]
            "rename", sid, new_sid, changes, remove=remove, user_id=user_id, max_age=max_age
        )

    def delete(self, sid: str) -> bool:
        """Delete session `sid`; True if it existed."""
        return bool(self._run("delete", sid))

    def delete_user(self, user_id: Any) -> int:
        """Delete every session of `user_id`; return how many."""
        return int(self._run("delete_user", user_id))

    def purge_expired(self) -> int:
        """Delete expired sessions; return how many (run it from a periodic job)."""
        return int(self._run("purge_expired"))

    # -- async --------------------------------------------------------------------------

    async def acreate_table(self) -> None:
        """Async `create_table`."""
        if not self.is_async:
            raise TypeError("PostgresStore on a (sync) ConnectionPool: use create_table()")
        async with self.pool.connection() as conn:
            await conn.execute(ddl(self.table))

    async def aload(self, sid: str) -> Record | None:
        """Async `load`."""
        return await self._arun("load", sid)  # type: ignore[no-any-return]

    async def ainsert(
        self, sid: str, data: Mapping[str, Any], *, user_id: Any = None, max_age: float
    ) -> Record:
        """Async `insert`."""
        return await self._arun(  # type: ignore[no-any-return]
            "insert", sid, data, user_id=user_id, max_age=max_age
        )

    async def aupdate(
        self,
        sid: str,
        changes: Mapping[str, Any],
        *,
        remove: Sequence[str] = (),
        user_id: Any = KEEP,
        max_age: float | None = None,
    ) -> Record | None:
        """Async `update`."""
        return await self._arun(  # type: ignore[no-any-return]
            "update", sid, changes, remove=remove, user_id=user_id, max_age=max_age
        )

    async def arename(
        self,
        sid: str,
        new_sid: str,
        changes: Mapping[str, Any] | None = None,
        *,
        remove: Sequence[str] = (),
        user_id: Any = KEEP,
        max_age: float | None = None,
    ) -> Record | None:
        """Async `rename`."""
        return await self._arun(  # type: ignore[no-any-return]
            "rename", sid, new_sid, changes, remove=remove, user_id=user_id, max_age=max_age
        )

    async def adelete(self, sid: str) -> bool:
        """Async `delete`."""
        return bool(await self._arun("delete", sid))

    async def adelete_user(self, user_id: Any) -> int:
        """Async `delete_user`."""
        return int(await self._arun("delete_user", user_id))

    async def apurge_expired(self) -> int:
        """Async `purge_expired`."""
        return int(await self._arun("purge_expired"))


_COUNTS = frozenset({"delete", "delete_user", "purge_expired"})


def _is_async_pool(pool: Any) -> bool:
    try:
        from psycopg_pool import AsyncConnectionPool
    except ImportError:  # pragma: no cover - the sessions extra installs it
        return False
    return isinstance(pool, AsyncConnectionPool)
