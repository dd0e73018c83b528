"""A FastAPI service with memo's sessions: a cookie, PostgreSQL as the truth, memcached in front.

Run it from this folder (see README.md):

    DATABASE_URL=postgresql://127.0.0.1:5432/test MEMCACHED_ENABLED=true \\
        MEMCACHED_HOSTS=127.0.0.1:11211 uvicorn app:create_app --factory

Settings: DATABASE_URL, SESSION_TABLE (default memo_sessions, created at startup),
SESSION_MAX_AGE (seconds, default 1800), SESSION_COOKIE_SECURE (default true; false for
plain-HTTP local runs), and memcached through
`SessionCache.from_env("MEMCACHED_")`: MEMCACHED_ENABLED, MEMCACHED_HOSTS, MEMCACHED_TTL, ...
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

import memo
from memo.sessions import PostgresStore, SessionCache, SessionMiddleware


class Login(BaseModel):
    user: str  # a real service checks a password or a token here


class Item(BaseModel):
    name: str


def create_app(
    database_url: str | None = None,
    table: str | None = None,
    cache: memo.Cache | None = None,
    max_age: int | None = None,
    secure: bool | None = None,
) -> FastAPI:
    """Build the service; arguments default to the environment variables above."""
    database_url = database_url or os.environ.get("DATABASE_URL", "postgresql://127.0.0.1:5432/test")
    max_age = max_age or int(os.environ.get("SESSION_MAX_AGE", "1800"))
    if secure is None:
        secure = os.environ.get("SESSION_COOKIE_SECURE", "true").lower() not in ("0", "false", "no", "off")
    pool = AsyncConnectionPool(database_url, open=False, min_size=1, max_size=8)
    store = PostgresStore(pool, table or os.environ.get("SESSION_TABLE", "memo_sessions"))
    sessions = SessionCache(cache) if cache is not None else SessionCache.from_env("MEMCACHED_")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # memo.lifespan opens nothing that could fail startup while memcached is down, and
        # closes every memcached connection at the end.
        async with pool, memo.lifespan(sessions.cache):
            await store.acreate_table()
            yield

    app = FastAPI(title="memo sessions", lifespan=lifespan)
    app.add_middleware(SessionMiddleware, sessions=sessions, store=store, max_age=max_age, secure=secure)
    app.state.sessions = sessions

    @app.post("/login")
    async def login(body: Login, request: Request) -> dict[str, Any]:
        request.session.login(body.user)  # binds the user and rotates the id
        return {"user": body.user}

    @app.get("/me")
    async def me(request: Request) -> dict[str, Any]:
        if request.session.user_id is None:
            raise HTTPException(401, "not logged in")
        return {"user": request.session.user_id, "cart": request.session.get("cart", [])}

    @app.post("/cart")
    async def add_to_cart(body: Item, request: Request) -> dict[str, Any]:
        request.session["cart"] = [*request.session.get("cart", []), body.name]
        return {"cart": request.session["cart"]}

    @app.post("/logout")
    async def logout(request: Request) -> dict[str, bool]:
        request.session.logout()
        return {"ok": True}

    @app.post("/logout-everywhere")
    async def logout_everywhere(request: Request) -> dict[str, Any]:
        if request.session.user_id is None:
            raise HTTPException(401, "not logged in")
        return {"revoked": await request.session.revoke_all()}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        # Ready even when memcached is down: sessions fail open to PostgreSQL.
        return {"status": "ok", "cache": await sessions.cache.ahealth()}

    @app.get("/metrics")
    async def metrics() -> dict[str, Any]:
        return {"sessions": sessions.stats(), "cache": sessions.cache.stats()["total"]}

    return app
