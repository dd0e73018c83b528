"""ASGI session middleware: a cookie with a server-made id, the data in a `SessionStore`.

    app.add_middleware(SessionMiddleware, sessions=SessionCache(cache), store=PostgresStore(pool))

`request.session` (Starlette and FastAPI) and `scope["session"]` are a `Session`: a dict
of the session's data that records which keys changed. At the start of the response the
middleware writes back only those keys (one atomic merge in the store, the new state
into the cache), and sends `Set-Cookie` only when the id is new, rotated or cleared, or
when less than half of its lifetime is left (then the lifetime is renewed).
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

from .. import _clock
from .._errors import ConfigurationError
from ._cache import _ID_CHARS, _MAX_ID_LENGTH, _UNCHECKED, SessionCache
from ._store import KEEP

__all__ = ["Session", "SessionMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_SAMESITE = ("lax", "strict", "none")
#: What can be a session id at all: 1 to 512 of `_ID_CHARS` (one regex: twice as fast as a set).
_SID = re.compile(f"[{re.escape(''.join(sorted(_ID_CHARS)))}]{{1,{_MAX_ID_LENGTH}}}")


class Session(dict[str, Any]):
    """`request.session`: the session's data, a dict that remembers what changed.

    Keys are str and values anything memo's codec keeps (datetimes, UUIDs, dataclasses,
    ...). A change inside a value (`session["cart"].append(x)`) is not seen: assign the
    key again, or set `modified = True` to write every key back.

    Attributes:
        sid: the session's id, None while it has none (nothing stored yet).
        user_id: the user the session belongs to (None: anonymous).
        expires_at: when the session expires in the store (None: not stored yet).
        modified: set True to write every key back.
    """

    # What a request may change, at rest (one made per request: only a change sets its own).
    modified = False
    new_user: Any = KEEP
    rotating = False
    cleared = False
    _revoke_all: Callable[[Any], Awaitable[Any]] | None = None

    def __init__(
        self,
        data: Mapping[str, Any] | None = None,
        sid: str | None = None,
        user_id: Any = None,
        expires_at: _dt.datetime | None = None,
    ) -> None:
        dict.__init__(self, data or {})
        self.sid = sid
        self.user_id = user_id
        self.expires_at = expires_at
        self.changed: set[str] = set()
        self.removed: set[str] = set()

    # -- changes are recorded -----------------------------------------------------------

    def __setitem__(self, key: str, value: Any) -> None:
        if type(key) is not str:
            raise TypeError(f"session keys are str, got {key!r}")
        super().__setitem__(key, value)
        self.changed.add(key)
        self.removed.discard(key)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.changed.discard(key)
        self.removed.add(key)

    def pop(self, key: str, *default: Any) -> Any:
        if key in self:
            value = self[key]
            del self[key]
            return value
        if default:
            return default[0]
        raise KeyError(key)

    def popitem(self) -> tuple[str, Any]:
        key = next(reversed(self))
        return key, self.pop(key)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __ior__(self, other: Any) -> Session:  # type: ignore[override,misc]
        self.update(other)
        return self

    def clear(self) -> None:
        """Log out: the session is deleted and its cookie cleared (Starlette's habit).

        Keys set after `clear()` in the same request go to a new session.
        """
        super().clear()
        self.changed.clear()
        self.removed.clear()
        self.cleared = True
        self.rotating = False
        self.new_user = KEEP
        self.user_id = None

    # -- identity ------------------------------------------------------------------------

    def rotate(self) -> None:
        """Give the session a new id at the end of this request (same data); the old id dies."""
        self.rotating = True

    def login(self, user_id: Any) -> None:
        """Bind the session to `user_id` and rotate its id (session fixation cannot follow)."""
        if user_id is None:
            raise ValueError("login(None): use logout() to end a session")
        self.new_user = self.user_id = user_id
        self.rotating = True

    def logout(self) -> None:
        """End the session: deleted in the store and the cache, its cookie cleared."""
        self.clear()

    async def revoke_all(self) -> Any:
        """Log this session's user out everywhere (`SessionCache.arevoke_all`), this session included."""
        user = self.user_id
        if user is None or self._revoke_all is None:
            raise ValueError("revoke_all(): this session belongs to no user")
        self.clear()
        return await self._revoke_all(user)

    def _touched(self) -> bool:
        """Whether anything was changed, removed, rotated, cleared or logged in (else no write-back)."""
        return bool(self.changed or self.removed or self.modified or self.rotating or self.cleared) or (
            self.new_user is not KEEP
        )

    def _delta(self) -> tuple[dict[str, Any], list[str]]:
        keys: Iterable[str] = self.keys() if self.modified else self.changed
        return {k: self[k] for k in keys}, sorted(self.removed)


class SessionMiddleware:
    """Sessions for ASGI apps (Starlette, FastAPI): cookie, `SessionCache` and `SessionStore`.

    Args:
        app: the ASGI app.
        sessions: the `SessionCache` in front of the store (build it with
            `owner="user_id", expires="expires_at"`, its defaults). The middleware
            sets its `store` when it has none.
        store: the `SessionStore` (e.g. `PostgresStore` on an `AsyncConnectionPool`).
        cookie: the cookie's name.
        max_age: the session's lifetime in seconds (cookie and store alike),
            renewed when less than half of it is left.
        secure: send the cookie over HTTPS only (keep it, behind TLS).
        httponly: hide the cookie from JavaScript.
        samesite: "lax", "strict" or "none".
        path: the cookie's path.
        domain: the cookie's domain (None: this host only).
    """

    def __init__(
        self,
        app: ASGIApp,
        sessions: SessionCache[Any],
        store: Any,
        cookie: str = "session",
        max_age: int = 1800,
        secure: bool = True,
        httponly: bool = True,
        samesite: str = "lax",
        path: str = "/",
        domain: str | None = None,
    ) -> None:
        if not isinstance(sessions, SessionCache):
            raise ConfigurationError(f"sessions must be a memo.sessions.SessionCache, got {sessions!r}")
        if sessions.store is None:
            sessions.store = store
        elif sessions.store is not store:
            raise ConfigurationError("sessions has another store than the middleware's store=")
        if not (isinstance(max_age, int) and max_age > 0):
            raise ConfigurationError(f"max_age must be a positive int (seconds), got {max_age!r}")
        if samesite.lower() not in _SAMESITE:
            raise ConfigurationError(f"samesite must be one of {_SAMESITE}, got {samesite!r}")
        if not cookie or not set(cookie) <= _ID_CHARS:
            raise ConfigurationError(f"cookie must be a plain token, got {cookie!r}")
        self.app, self.sessions, self.store = app, sessions, store
        self.cookie, self.max_age = cookie, max_age
        self._prefix = cookie + "="
        flags = f"; Path={path}" + (f"; Domain={domain}" if domain else "")
        flags += "; HttpOnly" * httponly + "; Secure" * secure + f"; SameSite={samesite.lower()}"
        self._flags = flags

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        # The read, inline: it runs on every request (a hit is one round trip and a decode).
        sid = _cookie(scope, self._prefix)
        record = None if sid is None else await self.sessions._aget(sid, _UNCHECKED, self.store.aload)
        if record is None:
            session = Session()
        else:
            session = Session(record["data"], sid, record["user_id"], record["expires_at"])
        session._revoke_all = self.sessions.arevoke_all
        scope["session"] = session
        if kind == "websocket":
            await self.app(scope, receive, send)
            return
        sent_dead = sid is not None and record is None  # an unknown, expired or forged id

        def send_with_cookie(message: Message) -> Awaitable[None]:
            # A plain function returning what to await: most messages pass straight through.
            if message["type"] == "http.response.start" and (
                sent_dead or session._touched() or self._renew_due(session)
            ):
                return self._start(message, send, session, sent_dead)
            return send(message)

        await self.app(scope, receive, send_with_cookie)

    async def _start(self, message: Message, send: Send, session: Session, sent_dead: bool) -> None:
        """Send the response's start, after writing back and with the Set-Cookie it needs, if any."""
        header = await self._commit(session, sent_dead)
        if header is not None:
            message.setdefault("headers", [])
            message["headers"] = [*message["headers"], (b"set-cookie", header.encode("latin-1"))]
        await send(message)

    async def _commit(self, session: Session, sent_dead: bool) -> str | None:
        """Write back what changed; return the Set-Cookie value to send, if any.

        Called only when there may be something to do: the id was dead, the session was
        touched (`Session._touched`), or its renewal is due; otherwise it would return None.
        """
        sid, header = session.sid, None
        if sid is not None and session.cleared:
            await self.sessions.adelete(sid, delete=lambda: self.store.adelete(sid))
            sid, header = None, self._clear()
        elif sent_dead:
            header = self._clear()  # stop the browser sending an id that leads nowhere
        if sid is None:
            if session or session.new_user not in (KEEP, None):
                header = self._set(await self._create(session))
            return header
        changes, remove = session._delta()
        renew = self._renew_due(session)
        if session.rotating:
            new_sid = await self.sessions.arotate(
                sid,
                user_id=session.new_user,
                move=lambda n: self.store.arename(
                    sid, n, changes, remove=remove, user_id=session.new_user, max_age=self.max_age
                ),
            )
            return self._set(new_sid) if new_sid is not None else self._clear()
        if changes or remove or renew:
            max_age = self.max_age if renew else None
            state = await self.sessions.awrite(
                sid, write=lambda: self.store.aupdate(sid, changes, remove=remove, max_age=max_age)
            )
            if state is None:
                return self._clear()
            if renew:
                return self._set(sid)
        return None

    async def _create(self, session: Session) -> str:
        user = None if session.new_user is KEEP else session.new_user
        new_sid = self.sessions.new_id() if user is None else self.sessions.new_id_for(user)
        data = dict(session)
        await self.sessions.acreate(
            new_sid, insert=lambda: self.store.ainsert(new_sid, data, user_id=user, max_age=self.max_age)
        )
        session.sid = new_sid
        return new_sid

    def _renew_due(self, session: Session) -> bool:
        expires = session.expires_at
        if expires is None:
            return False
        if expires.tzinfo is None:  # a store's naive datetime is UTC, as SessionCache reads it
            expires = expires.replace(tzinfo=_dt.timezone.utc)
        return expires.timestamp() - _clock.time() < self.max_age / 2

    def _set(self, sid: str) -> str:
        return f"{self.cookie}={sid}; Max-Age={self.max_age}{self._flags}"

    def _clear(self) -> str:
        return f"{self.cookie}=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT{self._flags}"


def _cookie(scope: Scope, prefix: str) -> str | None:
    """The value of the first cookie starting `prefix` ("name="), if it can be a session id at all."""
    for key, value in scope.get("headers", ()):
        if key != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            part = part.strip()
            if part.startswith(prefix):
                sid: str = part[len(prefix) :].strip('"')
                return sid if _SID.fullmatch(sid) else None
    return None
