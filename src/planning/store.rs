//! Every query on `planning_stations` and `planning_slots`. The overlap rule
//! and the version check are the store's: an insert or update that would
//! overlap fails in the database ([`PlanningError::Overlap`]), and an update
//! applies only if the slot still has the version it was read at.

use sqlx::{Acquire, AssertSqlSafe, Row, any::AnyRow};

use super::{PlanningError, Slot, Station, Status, rfc3339};
use crate::{
    ids::now_millis,
    store::{Store, is_unique_violation},
};

const STATION_COLUMNS: &str = "id, name, time_zone, external_ref, created_at, updated_at";

const SLOT_COLUMNS: &str = "id, station_id, starts_ms, ends_ms, spot_ref, campaign_ref, advertiser_user, advertiser_ref, title, status, notes, version, aired_ms, cancel_reason, created_at, updated_at";

fn station_from_row(row: &AnyRow) -> Result<Station, sqlx::Error> {
    Ok(Station {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        time_zone: row.try_get("time_zone")?,
        external_ref: row.try_get("external_ref")?,
        created_at: rfc3339(row.try_get("created_at")?),
        updated_at: rfc3339(row.try_get("updated_at")?),
    })
}

fn slot_from_row(row: &AnyRow) -> Result<Slot, sqlx::Error> {
    let starts_ms: i64 = row.try_get("starts_ms")?;
    let ends_ms: i64 = row.try_get("ends_ms")?;
    let aired_ms: Option<i64> = row.try_get("aired_ms")?;
    let status: String = row.try_get("status")?;
    Ok(Slot {
        id: row.try_get("id")?,
        station_id: row.try_get("station_id")?,
        starts_at: rfc3339(starts_ms),
        ends_at: rfc3339(ends_ms),
        duration: (ends_ms - starts_ms) / 1000,
        spot_ref: row.try_get("spot_ref")?,
        campaign_ref: row.try_get("campaign_ref")?,
        advertiser_user: row.try_get("advertiser_user")?,
        advertiser_ref: row.try_get("advertiser_ref")?,
        title: row.try_get("title")?,
        status: Status::parse(&status)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown slot status `{status}`").into()))?,
        notes: row.try_get("notes")?,
        version: row.try_get("version")?,
        aired_at: aired_ms.map(rfc3339),
        cancel_reason: row.try_get("cancel_reason")?,
        created_at: rfc3339(row.try_get("created_at")?),
        updated_at: rfc3339(row.try_get("updated_at")?),
        starts_ms,
        ends_ms,
        aired_ms,
    })
}

/// `true` when `e` is the overlap rule refusing a write: the exclusion
/// constraint on PostgreSQL (SQLSTATE 23P01), the trigger on SQLite.
pub fn is_overlap(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db)
        if db.code().as_deref() == Some("23P01") || db.message().contains("slot_overlap"))
}

/// `true` when PostgreSQL aborted the write to break a deadlock (40P01).
/// Two concurrent writers of colliding slots can each wait, in the
/// exclusion check, for the other's uncommitted row; one is aborted. The
/// write is then simply tried again: it now meets the other's committed row
/// (an overlap) or nothing (the other failed).
fn is_deadlock(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("40P01"))
}

/// Times a write aborted by a deadlock is tried again.
const DEADLOCK_RETRIES: usize = 5;

// ---- stations

/// A station of `tenant`; [`PlanningError::StationNotFound`] otherwise.
pub async fn station(store: &Store, tenant: &str, id: &str) -> Result<Station, PlanningError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {STATION_COLUMNS} FROM planning_stations WHERE tenant_id = $1 AND id = $2"
    )))
    .bind(tenant)
    .bind(id)
    .fetch_optional(&store.pool)
    .await?
    .ok_or(PlanningError::StationNotFound)?;
    Ok(station_from_row(&row)?)
}

/// Creates a station; a second one with the same `external_ref` is
/// [`PlanningError::StationExists`].
pub async fn create_station(
    store: &Store,
    tenant: &str,
    name: &str,
    time_zone: &str,
    external_ref: Option<&str>,
) -> Result<Station, PlanningError> {
    let id = uuid::Uuid::now_v7().to_string();
    let inserted = sqlx::query(
        "INSERT INTO planning_stations (id, tenant_id, name, time_zone, external_ref, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(&id)
    .bind(tenant)
    .bind(name)
    .bind(time_zone)
    .bind(external_ref)
    .bind(now_millis())
    .execute(&store.pool)
    .await;
    match inserted {
        Ok(_) => station(store, tenant, &id).await,
        Err(e) if is_unique_violation(&e) => Err(PlanningError::StationExists),
        Err(e) => Err(e.into()),
    }
}

/// Writes a station's fields (the caller merged the change into `s`).
pub async fn update_station(
    store: &Store,
    tenant: &str,
    s: &Station,
) -> Result<Station, PlanningError> {
    let done = sqlx::query(
        "UPDATE planning_stations SET name = $3, time_zone = $4, external_ref = $5, updated_at = $6 WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant)
    .bind(&s.id)
    .bind(&s.name)
    .bind(&s.time_zone)
    .bind(s.external_ref.as_deref())
    .bind(now_millis())
    .execute(&store.pool)
    .await;
    match done {
        Ok(d) if d.rows_affected() == 0 => Err(PlanningError::StationNotFound),
        Ok(_) => station(store, tenant, &s.id).await,
        Err(e) if is_unique_violation(&e) => Err(PlanningError::StationExists),
        Err(e) => Err(e.into()),
    }
}

/// One page of stations, by id.
pub struct StationPage {
    pub stations: Vec<Station>,
    pub next_cursor: Option<String>,
}

/// Up to `limit` of the tenant's stations by id, after `after` when given.
pub async fn stations(
    store: &Store,
    tenant: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<StationPage, PlanningError> {
    let filter = if after.is_some() { " AND id > $2" } else { "" };
    let sql = format!(
        "SELECT {STATION_COLUMNS} FROM planning_stations WHERE tenant_id = $1{filter} ORDER BY id LIMIT {}",
        limit + 1
    );
    let mut query = sqlx::query(AssertSqlSafe(sql)).bind(tenant);
    if let Some(after) = after {
        query = query.bind(after);
    }
    let rows = query.fetch_all(&store.pool).await?;
    let mut stations = rows
        .iter()
        .map(station_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if stations.len() > limit {
        stations.truncate(limit);
        stations.last().map(|s| s.id.clone())
    } else {
        None
    };
    Ok(StationPage {
        stations,
        next_cursor,
    })
}

/// `true` when `user` is a user of `tenant`.
pub async fn user_exists(store: &Store, tenant: &str, user: &str) -> Result<bool, PlanningError> {
    Ok(
        sqlx::query("SELECT 1 AS x FROM users WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(user)
            .fetch_optional(&store.pool)
            .await?
            .is_some(),
    )
}

// ---- slots

/// A slot to insert (always `planned`, version 1).
#[derive(Debug, Clone)]
pub struct NewSlot {
    pub station_id: String,
    pub starts_ms: i64,
    pub ends_ms: i64,
    pub spot_ref: Option<String>,
    pub campaign_ref: Option<String>,
    pub advertiser_user: Option<String>,
    pub advertiser_ref: Option<String>,
    pub title: Option<String>,
    pub notes: Option<String>,
}

/// A slot of `tenant`; [`PlanningError::SlotNotFound`] otherwise.
pub async fn slot(store: &Store, tenant: &str, id: &str) -> Result<Slot, PlanningError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {SLOT_COLUMNS} FROM planning_slots WHERE tenant_id = $1 AND id = $2"
    )))
    .bind(tenant)
    .bind(id)
    .fetch_optional(&store.pool)
    .await?
    .ok_or(PlanningError::SlotNotFound)?;
    Ok(slot_from_row(&row)?)
}

async fn insert_one<'e, E>(executor: E, tenant: &str, new: &NewSlot) -> Result<Slot, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let now = now_millis();
    let row = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO planning_slots (id, tenant_id, station_id, starts_ms, ends_ms, spot_ref, campaign_ref, advertiser_user, advertiser_ref, title, status, notes, version, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'planned', $11, 1, $12, $12) RETURNING {SLOT_COLUMNS}"
    )))
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(tenant)
    .bind(&new.station_id)
    .bind(new.starts_ms)
    .bind(new.ends_ms)
    .bind(new.spot_ref.as_deref())
    .bind(new.campaign_ref.as_deref())
    .bind(new.advertiser_user.as_deref())
    .bind(new.advertiser_ref.as_deref())
    .bind(new.title.as_deref())
    .bind(new.notes.as_deref())
    .bind(now)
    .fetch_one(executor)
    .await?;
    slot_from_row(&row)
}

/// A non-cancelled slot of `station` overlapping `[starts, ends)`, other
/// than `except`: the one a refused write collided with.
async fn overlapping<'e, E>(
    executor: E,
    station: &str,
    starts: i64,
    ends: i64,
    except: &str,
) -> Result<Option<Slot>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {SLOT_COLUMNS} FROM planning_slots WHERE station_id = $1 AND status <> 'cancelled' \
         AND starts_ms > $2 - 86400000 AND starts_ms < $3 AND ends_ms > $2 AND id <> $4 ORDER BY starts_ms LIMIT 1"
    )))
    .bind(station)
    .bind(starts)
    .bind(ends)
    .bind(except)
    .fetch_optional(executor)
    .await?;
    row.as_ref().map(slot_from_row).transpose()
}

/// Inserts a slot; [`PlanningError::Overlap`] (with the slot it collides
/// with, when still there) if the store refuses it.
pub async fn insert_slot(
    store: &Store,
    tenant: &str,
    new: &NewSlot,
) -> Result<Slot, PlanningError> {
    let mut retries = 0;
    let inserted = loop {
        match insert_one(&store.pool, tenant, new).await {
            Err(e) if is_deadlock(&e) && retries < DEADLOCK_RETRIES => retries += 1,
            other => break other,
        }
    };
    match inserted {
        Ok(slot) => Ok(slot),
        Err(e) if is_overlap(&e) => {
            let other =
                overlapping(&store.pool, &new.station_id, new.starts_ms, new.ends_ms, "").await?;
            Err(PlanningError::Overlap(other.map(Box::new)))
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes `next` over the slot if it still has version `expected`; the
/// version becomes `expected + 1`. `None` when the slot is gone or its
/// version moved on (the caller reads it again to tell which).
pub async fn compare_and_set(
    store: &Store,
    tenant: &str,
    expected: i64,
    next: &Slot,
) -> Result<Option<Slot>, PlanningError> {
    let attempt = || {
        sqlx::query(AssertSqlSafe(format!(
        "UPDATE planning_slots SET starts_ms = $4, ends_ms = $5, spot_ref = $6, campaign_ref = $7, advertiser_user = $8, advertiser_ref = $9, \
         title = $10, status = $11, notes = $12, aired_ms = $13, cancel_reason = $14, version = version + 1, updated_at = $15 \
         WHERE tenant_id = $1 AND id = $2 AND version = $3 RETURNING {SLOT_COLUMNS}"
    )))
    .bind(tenant)
    .bind(&next.id)
    .bind(expected)
    .bind(next.starts_ms)
    .bind(next.ends_ms)
    .bind(next.spot_ref.as_deref())
    .bind(next.campaign_ref.as_deref())
    .bind(next.advertiser_user.as_deref())
    .bind(next.advertiser_ref.as_deref())
    .bind(next.title.as_deref())
    .bind(next.status.as_str())
    .bind(next.notes.as_deref())
    .bind(next.aired_ms)
    .bind(next.cancel_reason.as_deref())
    .bind(now_millis())
        .fetch_optional(&store.pool)
    };
    let mut retries = 0;
    let done = loop {
        match attempt().await {
            Err(e) if is_deadlock(&e) && retries < DEADLOCK_RETRIES => retries += 1,
            other => break other,
        }
    };
    match done {
        Ok(row) => Ok(row.as_ref().map(slot_from_row).transpose()?),
        Err(e) if is_overlap(&e) => {
            let other = overlapping(
                &store.pool,
                &next.station_id,
                next.starts_ms,
                next.ends_ms,
                &next.id,
            )
            .await?;
            Err(PlanningError::Overlap(other.map(Box::new)))
        }
        Err(e) => Err(e.into()),
    }
}

/// Which slots of a station to list.
pub struct SlotQuery<'a> {
    pub tenant: &'a str,
    pub station: &'a str,
    /// Slots overlapping `[from, to)`, in milliseconds.
    pub from: i64,
    pub to: i64,
    pub status: Option<&'a [Status]>,
    /// The cursor of the previous page: its last slot's start and id.
    pub after: Option<(i64, &'a str)>,
    pub limit: usize,
}

/// One page of slots, by start then id.
pub struct SlotPage {
    pub slots: Vec<Slot>,
    pub next_cursor: Option<String>,
}

/// The slots of a station overlapping a window, by start.
pub async fn slots(store: &Store, q: &SlotQuery<'_>) -> Result<SlotPage, PlanningError> {
    let mut filter = String::new();
    if let Some(statuses) = q.status {
        // Status names are the enum's own: no user text reaches the SQL.
        let list = statuses
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        filter.push_str(&format!(" AND status IN ({list})"));
    }
    if q.after.is_some() {
        filter.push_str(" AND (starts_ms > $5 OR (starts_ms = $5 AND id > $6))");
    }
    let sql = format!(
        "SELECT {SLOT_COLUMNS} FROM planning_slots WHERE tenant_id = $1 AND station_id = $2 \
         AND starts_ms > $3 - 86400000 AND starts_ms < $4 AND ends_ms > $3{filter} ORDER BY starts_ms, id LIMIT {}",
        q.limit + 1
    );
    let mut query = sqlx::query(AssertSqlSafe(sql))
        .bind(q.tenant)
        .bind(q.station)
        .bind(q.from)
        .bind(q.to);
    if let Some((start, id)) = q.after {
        query = query.bind(start).bind(id);
    }
    let rows = query.fetch_all(&store.pool).await?;
    let mut slots = rows
        .iter()
        .map(slot_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if slots.len() > q.limit {
        slots.truncate(q.limit);
        slots.last().map(|s| format!("{}.{}", s.starts_ms, s.id))
    } else {
        None
    };
    Ok(SlotPage { slots, next_cursor })
}

/// One refused row of an import.
#[derive(Debug, serde::Serialize)]
pub struct RowError {
    /// 1-based, in the order of the request.
    pub row: usize,
    pub code: &'static str,
    pub message: String,
    /// The slot it collides with, for `slot_overlap`: a stored slot's id, or
    /// `row:<n>` for an earlier row of the same plan.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflicts_with: Option<String>,
}

/// What an import wrote: the slots it created and those it cancelled.
pub struct Imported {
    pub created: Vec<Slot>,
    pub cancelled: Vec<Slot>,
}

/// Writes a day's plan in one transaction: all rows or none. With
/// `replace`, the `planned` slots starting in `[day_from, day_to)` are
/// cancelled first. Every row that collides (with a stored slot or an
/// earlier row) is reported; any report rolls everything back, and so does
/// `commit: false` (the caller refused rows before: the others are still
/// checked against the store, so that every refusal is reported at once).
pub async fn import(
    store: &Store,
    tenant: &str,
    station: &str,
    rows: &[(usize, NewSlot)],
    replace: Option<(i64, i64)>,
    commit: bool,
) -> Result<Result<Imported, Vec<RowError>>, PlanningError> {
    let mut tx = store.pool.begin().await?;
    let mut cancelled = Vec::new();
    if let Some((from, to)) = replace {
        let done = sqlx::query(AssertSqlSafe(format!(
            "UPDATE planning_slots SET status = 'cancelled', cancel_reason = 'replaced by a new plan', version = version + 1, updated_at = $5 \
             WHERE tenant_id = $1 AND station_id = $2 AND status = 'planned' AND starts_ms >= $3 AND starts_ms < $4 RETURNING {SLOT_COLUMNS}"
        )))
        .bind(tenant)
        .bind(station)
        .bind(from)
        .bind(to)
        .bind(now_millis())
        .fetch_all(&mut *tx)
        .await?;
        cancelled = done
            .iter()
            .map(slot_from_row)
            .collect::<Result<Vec<_>, _>>()?;
    }
    let mut created: Vec<Slot> = Vec::with_capacity(rows.len());
    let mut created_rows: Vec<usize> = Vec::with_capacity(rows.len());
    let mut errors = Vec::new();
    for (row, new) in rows {
        // A savepoint per row: a refused row is rolled back alone so that
        // the next rows are still checked, and all are reported at once.
        let mut savepoint = (&mut tx).begin().await?;
        match insert_one(&mut *savepoint, tenant, new).await {
            Ok(slot) => {
                savepoint.commit().await?;
                created.push(slot);
                created_rows.push(*row);
            }
            Err(e) if is_overlap(&e) => {
                savepoint.rollback().await?;
                let other = overlapping(&mut *tx, station, new.starts_ms, new.ends_ms, "").await?;
                let conflicts_with =
                    other.map(|o| match created.iter().position(|c| c.id == o.id) {
                        Some(i) => format!("row:{}", created_rows[i]),
                        None => o.id,
                    });
                errors.push(RowError {
                    row: *row,
                    code: "slot_overlap",
                    message: match &conflicts_with {
                        Some(c) if c.starts_with("row:") => {
                            format!("overlaps {} of this plan", c.replace(':', " "))
                        }
                        Some(c) => format!("overlaps the slot {c} of the station"),
                        None => "overlaps another slot of the station".into(),
                    },
                    conflicts_with,
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
    if !errors.is_empty() || !commit {
        tx.rollback().await?;
        return Ok(Err(errors));
    }
    tx.commit().await?;
    Ok(Ok(Imported { created, cancelled }))
}
