-- The chat-session service's tables. memo does not own them: the service's own
-- SQL (repo.py) reads and writes them, and memo caches what that SQL returns.
-- Unqualified names: the connection's search_path picks the schema.

CREATE TABLE IF NOT EXISTS chat_sessions (
    id            text        PRIMARY KEY,          -- SessionCache.new_id(): 256 random bits
    user_id       text        NOT NULL,
    title         text        NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,             -- the cache never keeps a session past it
    version       bigint      NOT NULL DEFAULT 1,   -- bumped by every change, in the same statement
    message_count integer     NOT NULL DEFAULT 0,
    last_message  text
);

CREATE INDEX IF NOT EXISTS chat_sessions_user_id ON chat_sessions (user_id);

CREATE TABLE IF NOT EXISTS chat_messages (
    id          bigserial   PRIMARY KEY,
    session_id  text        NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    role        text        NOT NULL,
    content     text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS chat_messages_session_id ON chat_messages (session_id, id);
