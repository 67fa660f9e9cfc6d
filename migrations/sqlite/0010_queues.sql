-- Moderation queues: items awaiting a decision, the audit trail of every
-- transition, and the counts per queue and status that consoles watch.

CREATE TABLE queue_items (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    queue         TEXT NOT NULL,
    -- The item's id in the app's own database; creating it again is idempotent.
    external_ref  TEXT NOT NULL,
    title         TEXT NOT NULL,
    -- The user who submitted it and hears of the decision; NULL when the
    -- app did not say (nobody is notified then).
    submitter     TEXT REFERENCES users(id) ON DELETE SET NULL,
    payload       TEXT NOT NULL,
    status        TEXT NOT NULL,
    assignee      TEXT REFERENCES users(id) ON DELETE SET NULL,
    reason        TEXT,
    version       INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    UNIQUE (tenant_id, queue, external_ref)
);
-- Lists filter by queue and status and page by id (time-ordered).
CREATE INDEX queue_items_by_status ON queue_items (tenant_id, queue, status, id);
CREATE INDEX queue_items_by_submitter ON queue_items (tenant_id, submitter, id);

-- One row per change of an item, creation included (version 1).
CREATE TABLE queue_item_events (
    item_id      TEXT NOT NULL REFERENCES queue_items(id) ON DELETE CASCADE,
    version      INTEGER NOT NULL,
    from_status  TEXT,
    to_status    TEXT NOT NULL,
    -- `user:<id>` or `key:<id>`.
    actor        TEXT NOT NULL,
    assignee     TEXT,
    reason       TEXT,
    at           INTEGER NOT NULL,
    PRIMARY KEY (item_id, version)
);

-- Items per queue and status, changed in the transaction of each change so
-- they are exact under concurrent writers; read in O(queues) by consoles.
CREATE TABLE queue_counts (
    tenant_id  TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    queue      TEXT NOT NULL,
    status     TEXT NOT NULL,
    n          INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, queue, status)
);
