-- The assistant: per-tenant providers (OpenAI-compatible endpoints whose
-- API keys are stored encrypted), assistants with their fallback chain,
-- conversations and their messages (the answer being streamed included,
-- with the text so far), and the tenant's retention setting.

CREATE TABLE assistant_providers (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    base_url    TEXT NOT NULL,
    -- base64(nonce || AES-256-GCM ciphertext); never the key in clear.
    api_key_enc TEXT,
    created_at  INTEGER NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE assistants (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    instructions TEXT NOT NULL,
    model        TEXT NOT NULL,
    -- JSON array of provider ids, in the order they are tried.
    providers    TEXT NOT NULL,
    -- Hundredths (70 = 0.7); NULL for the provider's default.
    temperature  INTEGER,
    max_tokens   INTEGER,
    -- JSON array of guided steps, or NULL.
    steps        TEXT,
    created_at   INTEGER NOT NULL
);
CREATE INDEX assistants_tenant ON assistants (tenant_id, created_at);

CREATE TABLE assistant_conversations (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL,
    assistant_id TEXT NOT NULL REFERENCES assistants(id) ON DELETE CASCADE,
    title        TEXT NOT NULL,
    last_seq     INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX assistant_conversations_user ON assistant_conversations (tenant_id, user_id, updated_at);
CREATE INDEX assistant_conversations_age ON assistant_conversations (updated_at);

CREATE TABLE assistant_messages (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL,
    conversation_id   TEXT NOT NULL REFERENCES assistant_conversations(id) ON DELETE CASCADE,
    user_id           TEXT NOT NULL,
    assistant_id      TEXT NOT NULL,
    seq               INTEGER NOT NULL,
    role              TEXT NOT NULL,
    content           TEXT NOT NULL,
    -- 'complete', 'streaming', 'incomplete' or 'cancelled'.
    status            TEXT NOT NULL,
    -- Frames published so far for an answer (resume: apply seq > this).
    delta_seq         INTEGER NOT NULL DEFAULT 0,
    provider_id       TEXT,
    fallbacks         INTEGER NOT NULL DEFAULT 0,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    usage_estimated   INTEGER NOT NULL DEFAULT 0,
    error             TEXT,
    -- Days since the Unix epoch (UTC), for the analytics.
    day               INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    -- Last saved progress: an answer silent for long lost its server.
    updated_at        INTEGER NOT NULL,
    UNIQUE (conversation_id, seq)
);
CREATE INDEX assistant_messages_day ON assistant_messages (tenant_id, day);
CREATE INDEX assistant_messages_streaming ON assistant_messages (tenant_id, status, user_id);

CREATE TABLE assistant_settings (
    tenant_id      TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    retention_days INTEGER NOT NULL
);
