-- Collaboration chat: rooms, their members (group and direct rooms only:
-- the general room follows the tenant's users and a project room its
-- project's members), persisted messages with a per-room sequence, read
-- markers, mutes and the tenant's retention setting.

CREATE TABLE chat_rooms (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    name        TEXT NOT NULL,
    -- 'general', 'project:<id>' or 'direct:<a>:<b>' (a < b); NULL for groups.
    unique_key  TEXT,
    project_id  TEXT REFERENCES projects(id) ON DELETE CASCADE,
    created_by  TEXT,
    last_seq    INTEGER NOT NULL DEFAULT 0,
    archived_at INTEGER,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (tenant_id, unique_key)
);
CREATE INDEX chat_rooms_tenant ON chat_rooms (tenant_id, kind);

CREATE TABLE chat_members (
    room_id    TEXT NOT NULL REFERENCES chat_rooms(id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    tenant_id  TEXT NOT NULL,
    role       TEXT NOT NULL,
    joined_at  INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX chat_members_user ON chat_members (tenant_id, user_id);

CREATE TABLE chat_messages (
    id         TEXT PRIMARY KEY,
    room_id    TEXT NOT NULL REFERENCES chat_rooms(id) ON DELETE CASCADE,
    tenant_id  TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    -- NULL for system messages.
    author     TEXT,
    kind       TEXT NOT NULL,
    -- For system messages: what happened ('joined', 'left', 'connected',
    -- 'disconnected', 'renamed', 'archived') and to whom.
    event      TEXT,
    subject    TEXT,
    text       TEXT NOT NULL,
    reply_to   TEXT,
    mentions   TEXT NOT NULL,
    client_id  TEXT,
    created_at INTEGER NOT NULL,
    edited_at  INTEGER,
    deleted_at INTEGER,
    UNIQUE (room_id, seq),
    UNIQUE (room_id, author, client_id)
);
CREATE INDEX chat_messages_subject ON chat_messages (room_id, subject, seq);
CREATE INDEX chat_messages_age ON chat_messages (tenant_id, created_at);

CREATE TABLE chat_reads (
    room_id    TEXT NOT NULL REFERENCES chat_rooms(id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL,
    tenant_id  TEXT NOT NULL,
    last_seq   INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

CREATE TABLE chat_mutes (
    room_id    TEXT NOT NULL REFERENCES chat_rooms(id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL,
    tenant_id  TEXT NOT NULL,
    muted_by   TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

CREATE TABLE chat_settings (
    tenant_id      TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    retention_days INTEGER,
    updated_at     INTEGER NOT NULL
);
