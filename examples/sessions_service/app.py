"""A chat-session service: FastAPI, PostgreSQL (psycopg 3 async pool), memo's SessionCache.

Run it (the user comes from the X-User-Id header; a real service takes it from its auth):

    DATABASE_URL=postgresql://127.0.0.1:5432/test MEMCACHED_HOSTS=127.0.0.1:11211 \\
        uvicorn --factory examples.sessions_service.app:create_app

Settings: DATABASE_URL, DATABASE_SCHEMA (search_path; the tables are created there at
startup), SESSION_LIFETIME (seconds), and memcached through `memo.Cache.from_env("MEMCACHED_")`:
MEMCACHED_ENABLED, MEMCACHED_HOSTS, MEMCACHED_TTL, MEMCACHED_FALLBACK, MEMCACHED_POOL_SIZE,
MEMCACHED_TIMEOUT.
"""

import datetime as dt
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

import memo
from memo.sessions import SessionCache

from .repo import Message, Repo, Session


class NewSession(BaseModel):
    title: str = ""


class NewMessage(BaseModel):
    role: str = "user"
    content: str


def create_app(
    database_url: str | None = None,
    schema: str | None = None,
    cache: memo.Cache | None = None,
    session_lifetime: float | None = None,
) -> FastAPI:
    """Build the service; arguments default to the environment variables above."""
    database_url = database_url or os.environ.get("DATABASE_URL", "postgresql://127.0.0.1:5432/test")
    schema = schema or os.environ.get("DATABASE_SCHEMA", "public")
    lifetime = dt.timedelta(seconds=session_lifetime or float(os.environ.get("SESSION_LIFETIME", "1800")))
    cache = cache or memo.Cache.from_env("MEMCACHED_")
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        database_url, open=False, min_size=1, max_size=8, kwargs={"options": f"-c search_path={schema}"}
    )
    repo = Repo(pool, lifetime)
    sessions: SessionCache[Session] = SessionCache(
        cache, ns="chat", ttl=lifetime.total_seconds(), owner="user_id", expires="expires_at", types=[Session]
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # memo's lifespan nests inside the app's own: it opens nothing that could fail
        # startup when memcached is down, and closes every memcached connection at the end.
        async with pool, memo.lifespan(cache):
            await repo.create_schema()
            yield

    app = FastAPI(title="chat sessions", lifespan=lifespan)
    app.state.repo, app.state.sessions, app.state.cache = repo, sessions, cache

    def current_user(x_user_id: Annotated[str, Header()]) -> str:
        return x_user_id

    User = Annotated[str, Depends(current_user)]

    async def owned_session(sid: str, user: User) -> Session:
        session = await sessions.aget(sid, user_id=user, load=repo.fetch)
        if session is None:  # absent, expired, or another user's: the same answer
            raise HTTPException(404, "no such session")
        return session

    Owned = Annotated[Session, Depends(owned_session)]

    @app.post("/sessions", status_code=201)
    async def create_session(body: NewSession, user: User) -> Session:
        sid = sessions.new_id()
        return await sessions.acreate(sid, insert=lambda: repo.insert(sid, user, body.title))

    @app.get("/sessions/{sid}")
    async def get_session(session: Owned) -> Session:
        return session

    @app.post("/sessions/{sid}/messages")
    async def add_message(sid: str, body: NewMessage, user: User, session: Owned) -> Session:
        updated = await sessions.awrite(
            sid, write=lambda: repo.add_message(sid, user, body.role, body.content)
        )
        if updated is None:  # deleted meanwhile
            raise HTTPException(404, "no such session")
        return updated

    @app.get("/sessions/{sid}/messages")
    async def list_messages(sid: str, session: Owned) -> list[Message]:
        return await repo.messages(sid)

    @app.delete("/sessions/{sid}", status_code=204)
    async def delete_session(sid: str, user: User, session: Owned) -> Response:
        await sessions.adelete(sid, delete=lambda: repo.delete(sid, user))
        return Response(status_code=204)

    @app.post("/logout-everywhere")
    async def logout_everywhere(user: User) -> dict[str, int]:
        ids = await repo.delete_all_of(user)
        await sessions.arevoke(ids)
        return {"revoked": len(ids)}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        # Ready even when memcached is down: requests fail open to PostgreSQL.
        return {"status": "ok", "cache": await cache.ahealth()}

    @app.get("/metrics")
    async def metrics(request: Request) -> dict[str, Any]:
        return {"sessions": sessions.stats(), "db_queries": repo.queries, "cache": cache.stats()["total"]}

    return app
