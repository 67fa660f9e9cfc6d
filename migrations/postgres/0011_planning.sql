-- Broadcast planning: stations (each in its own time zone) and the slots
-- planned on them. No two non-cancelled slots of a station overlap: an
-- exclusion constraint refuses it, so concurrent writers cannot both
-- succeed (btree_gist is a trusted extension: the database owner may
-- create it).

CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE planning_stations (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    time_zone     TEXT NOT NULL,
    external_ref  TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    UNIQUE (tenant_id, external_ref)
);
CREATE INDEX planning_stations_tenant ON planning_stations (tenant_id, id);

CREATE TABLE planning_slots (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    station_id       TEXT NOT NULL REFERENCES planning_stations(id) ON DELETE CASCADE,
    starts_ms        BIGINT NOT NULL,
    ends_ms          BIGINT NOT NULL,
    spot_ref         TEXT,
    campaign_ref     TEXT,
    advertiser_user  TEXT,
    advertiser_ref   TEXT,
    title            TEXT,
    status           TEXT NOT NULL,
    notes            TEXT,
    version          BIGINT NOT NULL,
    aired_ms         BIGINT,
    cancel_reason    TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    CHECK (ends_ms - starts_ms BETWEEN 1 AND 86400000),
    CHECK (status IN ('planned', 'confirmed', 'aired', 'cancelled', 'missed')),
    CONSTRAINT planning_slots_no_overlap EXCLUDE USING gist (
        station_id WITH =,
        int8range(starts_ms, ends_ms) WITH &&
    ) WHERE (status <> 'cancelled')
);
CREATE INDEX planning_slots_station_start ON planning_slots (station_id, starts_ms);
CREATE INDEX planning_slots_advertiser ON planning_slots (tenant_id, advertiser_user);
