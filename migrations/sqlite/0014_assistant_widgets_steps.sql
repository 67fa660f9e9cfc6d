-- Anonymous visitor sessions: a visitor of a web page (an embedded
-- assistant widget) holds a token bound to the page's origin. The issuer
-- (e.g. 'widget:<id>') ends them all at once.
CREATE TABLE visitor_sessions (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    issuer      TEXT NOT NULL,
    origin      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX visitor_sessions_issuer ON visitor_sessions (tenant_id, issuer, created_at);

-- Embeddable widgets: one public key per site, scoped to one assistant,
-- usable only from the listed origins, with limits per visitor.
CREATE TABLE assistant_widgets (
    id                   TEXT PRIMARY KEY,
    tenant_id            TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    assistant_id         TEXT NOT NULL REFERENCES assistants(id) ON DELETE CASCADE,
    name                 TEXT NOT NULL,
    public_key           TEXT NOT NULL UNIQUE,
    -- JSON array of origins (scheme://host[:port]).
    origins              TEXT NOT NULL,
    messages_per_visitor INTEGER NOT NULL,
    visitors_per_hour    INTEGER NOT NULL,
    disabled             INTEGER NOT NULL DEFAULT 0,
    created_at           INTEGER NOT NULL
);
CREATE INDEX assistant_widgets_tenant ON assistant_widgets (tenant_id, created_at);

-- Guided steps: the step a conversation is at (an index into the
-- assistant's steps; NULL when it has none or they are done), the answer
-- saved for each step (a JSON object by step key), and the step a message
-- asks or answers.
ALTER TABLE assistant_conversations ADD COLUMN step INTEGER;
ALTER TABLE assistant_conversations ADD COLUMN answers TEXT NOT NULL DEFAULT '{}';
ALTER TABLE assistant_conversations ADD COLUMN widget_id TEXT;
ALTER TABLE assistant_messages ADD COLUMN step TEXT;
