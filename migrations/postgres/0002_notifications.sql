-- Notifications: types, projects, triggers, inboxes, counters, preferences,
-- and the email outbox with its attempt log.
-- Times are milliseconds since the Unix epoch.

-- Recipient resolution walks a tenant's users in id order.
CREATE INDEX users_tenant_id ON users (tenant_id, id);

-- A tenant's own types; a row with a built-in's key overrides the built-in.
CREATE TABLE notification_types (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    key         TEXT NOT NULL,
    definition  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

CREATE TABLE projects (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    external_ref  TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    UNIQUE (tenant_id, external_ref)
);
CREATE INDEX projects_tenant ON projects (tenant_id, id);

CREATE TABLE project_members (
    project_id  TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    tenant_id   TEXT NOT NULL,
    role        TEXT NOT NULL,
    added_at    BIGINT NOT NULL,
    PRIMARY KEY (project_id, user_id)
);
CREATE INDEX project_members_user ON project_members (tenant_id, user_id);

-- One row per accepted trigger: the durable record the fan-out resumes from.
CREATE TABLE notification_triggers (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    type_key         TEXT NOT NULL,
    type_def         TEXT NOT NULL,
    payload          TEXT NOT NULL,
    recipients       TEXT NOT NULL,
    actor_id         TEXT,
    idempotency_key  TEXT,
    fingerprint      TEXT,
    status           TEXT NOT NULL,
    total            BIGINT NOT NULL,
    processed        BIGINT NOT NULL DEFAULT 0,
    created_count    BIGINT NOT NULL DEFAULT 0,
    resume_after     TEXT NOT NULL DEFAULT '',
    lease_until      BIGINT NOT NULL DEFAULT 0,
    error            TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    completed_at     BIGINT,
    UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX notification_triggers_open ON notification_triggers (status, lease_until);

-- status: 0 unread, 1 read, 2 archived.
CREATE TABLE notifications (
    id           BIGSERIAL PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    trigger_id   TEXT NOT NULL,
    type_key     TEXT NOT NULL,
    category     TEXT NOT NULL,
    priority     BIGINT NOT NULL,
    title        TEXT NOT NULL,
    body         TEXT NOT NULL,
    url          TEXT,
    payload      TEXT NOT NULL,
    status       BIGINT NOT NULL DEFAULT 0,
    seen_at      BIGINT,
    read_at      BIGINT,
    archived_at  BIGINT,
    created_at   BIGINT NOT NULL,
    UNIQUE (trigger_id, user_id)
);
-- Filtered by status, newest first.
CREATE INDEX notifications_status ON notifications (tenant_id, user_id, status, id);
-- The default list (unread and read), newest first.
CREATE INDEX notifications_active ON notifications (tenant_id, user_id, id) WHERE status < 2;
-- Filtered by category (and status).
CREATE INDEX notifications_category ON notifications (tenant_id, user_id, category, status, id);

-- Per user and category ('' is the user's total row, which also carries the
-- version that orders live count updates).
CREATE TABLE notification_counts (
    tenant_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    category   TEXT NOT NULL,
    unread     BIGINT NOT NULL DEFAULT 0,
    read       BIGINT NOT NULL DEFAULT 0,
    archived   BIGINT NOT NULL DEFAULT 0,
    unseen     BIGINT NOT NULL DEFAULT 0,
    version    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, user_id, category)
);

CREATE TABLE notification_preferences (
    tenant_id       TEXT NOT NULL,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    settings        TEXT NOT NULL,
    has_digest      BIGINT NOT NULL DEFAULT 0,
    daily_period    TEXT,
    daily_cutoff    BIGINT,
    weekly_period   TEXT,
    weekly_cutoff   BIGINT,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX notification_preferences_digest ON notification_preferences (has_digest);

-- The outbox. status: pending, sent, cancelled, dead.
CREATE TABLE emails (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    notification_id  BIGINT,
    kind             TEXT NOT NULL,
    dedupe_key       TEXT NOT NULL UNIQUE,
    to_address       TEXT NOT NULL,
    subject          TEXT NOT NULL,
    text_body        TEXT NOT NULL,
    html_body        TEXT NOT NULL,
    critical         BIGINT NOT NULL DEFAULT 0,
    status           TEXT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    send_after       BIGINT NOT NULL,
    lease_until      BIGINT NOT NULL DEFAULT 0,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    sent_at          BIGINT
);
CREATE INDEX emails_due ON emails (status, send_after);
CREATE INDEX emails_tenant ON emails (tenant_id, status, created_at);
CREATE INDEX emails_notification ON emails (notification_id);

CREATE TABLE email_attempts (
    id           BIGSERIAL PRIMARY KEY,
    email_id     TEXT NOT NULL REFERENCES emails(id) ON DELETE CASCADE,
    tenant_id    TEXT NOT NULL,
    attempt      BIGINT NOT NULL,
    started_at   BIGINT NOT NULL,
    finished_at  BIGINT NOT NULL,
    outcome      TEXT NOT NULL,
    smtp_code    BIGINT,
    detail       TEXT NOT NULL
);
CREATE INDEX email_attempts_email ON email_attempts (email_id, id);
