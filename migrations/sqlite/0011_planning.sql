-- Broadcast planning: stations (each in its own time zone) and the slots
-- planned on them. No two non-cancelled slots of a station overlap: the
-- triggers below refuse it inside the write itself, under SQLite's single
-- write lock, so concurrent writers cannot both succeed.

CREATE TABLE planning_stations (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    time_zone     TEXT NOT NULL,
    external_ref  TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    UNIQUE (tenant_id, external_ref)
);
CREATE INDEX planning_stations_tenant ON planning_stations (tenant_id, id);

CREATE TABLE planning_slots (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    station_id       TEXT NOT NULL REFERENCES planning_stations(id) ON DELETE CASCADE,
    starts_ms        INTEGER NOT NULL,
    ends_ms          INTEGER NOT NULL,
    spot_ref         TEXT,
    campaign_ref     TEXT,
    advertiser_user  TEXT,
    advertiser_ref   TEXT,
    title            TEXT,
    status           TEXT NOT NULL,
    notes            TEXT,
    version          INTEGER NOT NULL,
    aired_ms         INTEGER,
    cancel_reason    TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    -- At most a day long: the overlap triggers look back one day.
    CHECK (ends_ms - starts_ms BETWEEN 1 AND 86400000),
    CHECK (status IN ('planned', 'confirmed', 'aired', 'cancelled', 'missed'))
);
CREATE INDEX planning_slots_station_start ON planning_slots (station_id, starts_ms);
CREATE INDEX planning_slots_advertiser ON planning_slots (tenant_id, advertiser_user);

CREATE TRIGGER planning_slots_no_overlap_insert
BEFORE INSERT ON planning_slots
WHEN NEW.status <> 'cancelled'
BEGIN
    SELECT RAISE(ABORT, 'slot_overlap')
    WHERE EXISTS (
        SELECT 1 FROM planning_slots
        WHERE station_id = NEW.station_id
          AND status <> 'cancelled'
          AND starts_ms > NEW.starts_ms - 86400000
          AND starts_ms < NEW.ends_ms
          AND ends_ms > NEW.starts_ms
    );
END;

CREATE TRIGGER planning_slots_no_overlap_update
BEFORE UPDATE OF station_id, starts_ms, ends_ms, status ON planning_slots
WHEN NEW.status <> 'cancelled'
BEGIN
    SELECT RAISE(ABORT, 'slot_overlap')
    WHERE EXISTS (
        SELECT 1 FROM planning_slots
        WHERE station_id = NEW.station_id
          AND id <> NEW.id
          AND status <> 'cancelled'
          AND starts_ms > NEW.starts_ms - 86400000
          AND starts_ms < NEW.ends_ms
          AND ends_ms > NEW.starts_ms
    );
END;
