"""Sessions: a cache in front of the database, a PostgreSQL store, and ASGI middleware.

    from memo.sessions import PostgresStore, SessionCache, SessionMiddleware

    store = PostgresStore(pool)                                  # psycopg 3 pool
    app.add_middleware(SessionMiddleware, sessions=SessionCache(cache), store=store)

- `SessionCache` (`memo.sessions._cache`): read-through / write-through caching of
  sessions under leases, with the owner checked on every read, `rotate` and `revoke_all`.
- `SessionStore` and `PostgresStore` (`memo.sessions._store`): the source of truth.
- `SessionMiddleware` and `Session` (`memo.sessions._middleware`): the cookie and
  `request.session`.

`PostgresStore` needs psycopg and psycopg-pool, the middleware nothing but an ASGI server:
`pip install "memo-memcached[sessions]"` installs the first two and Starlette.
"""

from ._cache import MIN_ID_BITS, SessionCache
from ._middleware import Session, SessionMiddleware
from ._store import KEEP, PostgresStore, Record, SessionStore, ddl

__all__ = [
    "SessionCache",
    "SessionStore",
    "PostgresStore",
    "SessionMiddleware",
    "Session",
    "Record",
    "KEEP",
    "MIN_ID_BITS",
    "ddl",
]
