"""The service's database access: psycopg 3 with its async pool, one atomic statement per change.

Every change is a single transaction that returns the session's new state, which is what
`SessionCache.awrite` installs in the cache. Nothing here reads a session, changes it in
Python and writes it back, so concurrent requests cannot lose each other's updates.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from psycopg.rows import class_row, dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

SCHEMA_SQL = (Path(__file__).parent / "schema.sql").read_text()
SESSION_COLUMNS = "id, user_id, title, created_at, expires_at, version, message_count, last_message"


class Session(BaseModel):
    """A chat session as the database returns it (and as memo caches it)."""

    id: str
    user_id: str
    title: str
    created_at: dt.datetime
    expires_at: dt.datetime
    version: int
    message_count: int
    last_message: str | None = None


class Message(BaseModel):
    id: int
    role: str
    content: str
    created_at: dt.datetime


class Repo:
    """The chat tables. `queries` counts statements sent (the tests read it)."""

    def __init__(self, pool: AsyncConnectionPool[Any], session_lifetime: dt.timedelta) -> None:
        self.pool = pool
        self.lifetime = session_lifetime
        self.queries = 0

    async def create_schema(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(SCHEMA_SQL)

    async def insert(self, sid: str, user_id: str, title: str) -> Session:
        self.queries += 1
        async with self.pool.connection() as conn, conn.cursor(row_factory=class_row(Session)) as cur:
            await cur.execute(
                f"INSERT INTO chat_sessions (id, user_id, title, expires_at) "
                f"VALUES (%s, %s, %s, now() + %s) RETURNING {SESSION_COLUMNS}",
                (sid, user_id, title, self.lifetime),
            )
            return await _one(cur)

    async def fetch(self, sid: str) -> Session | None:
        """The session, whoever owns it (memo checks the owner); None if absent."""
        self.queries += 1
        async with self.pool.connection() as conn, conn.cursor(row_factory=class_row(Session)) as cur:
            await cur.execute(f"SELECT {SESSION_COLUMNS} FROM chat_sessions WHERE id = %s", (sid,))
            return await cur.fetchone()

    async def add_message(self, sid: str, user_id: str, role: str, content: str) -> Session | None:
        """Insert a message and bump the session in one statement; return the new state."""
        self.queries += 1
        async with self.pool.connection() as conn, conn.cursor(row_factory=class_row(Session)) as cur:
            await cur.execute(
                f"""
                WITH s AS (
                    UPDATE chat_sessions
                       SET version = version + 1, message_count = message_count + 1,
                           last_message = %(content)s, expires_at = now() + %(lifetime)s
                     WHERE id = %(sid)s AND user_id = %(user)s
                 RETURNING {SESSION_COLUMNS}
                ), m AS (
                    INSERT INTO chat_messages (session_id, role, content)
                    SELECT id, %(role)s, %(content)s FROM s
                )
                SELECT * FROM s
                """,
                {"sid": sid, "user": user_id, "role": role, "content": content, "lifetime": self.lifetime},
            )
            return await cur.fetchone()

    async def messages(self, sid: str) -> list[Message]:
        self.queries += 1
        async with self.pool.connection() as conn, conn.cursor(row_factory=class_row(Message)) as cur:
            await cur.execute(
                "SELECT id, role, content, created_at FROM chat_messages WHERE session_id = %s ORDER BY id",
                (sid,),
            )
            return await cur.fetchall()

    async def delete(self, sid: str, user_id: str) -> bool:
        self.queries += 1
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM chat_sessions WHERE id = %s AND user_id = %s", (sid, user_id)
            )
            return cur.rowcount > 0

    async def delete_all_of(self, user_id: str) -> list[str]:
        """Delete every session of a user; return their ids (to revoke from the cache)."""
        self.queries += 1
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("DELETE FROM chat_sessions WHERE user_id = %s RETURNING id", (user_id,))
            return [row["id"] for row in await cur.fetchall()]


async def _one(cur: Any) -> Any:
    row = await cur.fetchone()
    assert row is not None
    return row
