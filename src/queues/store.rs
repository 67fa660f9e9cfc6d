//! Every query on `queue_items`, `queue_item_events` and `queue_counts`.
//!
//! A change of an item is one transaction that updates the item only if it
//! is still in the status it was read in (compare-and-set), appends the
//! audit line and moves the counters. The write comes first in the
//! transaction: SQLite then takes its write lock at once (waiting under the
//! busy timeout) instead of failing to upgrade a read, and PostgreSQL
//! re-checks the condition against the latest committed row. A lost race is
//! retried from a fresh read, where the state machine may now refuse it.

use std::collections::BTreeMap;

use serde_json::value::RawValue;
use sqlx::{Any, AssertSqlSafe, Row, Transaction, any::AnyRow};

use super::{Event, Item, QueueError, Status, Transition};
use crate::{
    ids::now_millis,
    store::{Store, is_unique_violation},
};

const ITEM_COLUMNS: &str = "id, queue, external_ref, title, submitter, payload, status, assignee, reason, version, created_at, updated_at";

/// Adds `delta` to the count of `status` in `queue`.
const BUMP: &str = "INSERT INTO queue_counts (tenant_id, queue, status, n) VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, queue, status) DO UPDATE SET n = queue_counts.n + excluded.n";

const EVENT: &str = "INSERT INTO queue_item_events (item_id, version, from_status, to_status, actor, assignee, reason, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

fn status_of(raw: &str) -> Result<Status, sqlx::Error> {
    Status::parse(raw).ok_or_else(|| sqlx::Error::Decode(format!("unknown status `{raw}`").into()))
}

fn item_from_row(row: &AnyRow) -> Result<Item, sqlx::Error> {
    let payload: String = row.try_get("payload")?;
    Ok(Item {
        id: row.try_get("id")?,
        queue: row.try_get("queue")?,
        external_ref: row.try_get("external_ref")?,
        title: row.try_get("title")?,
        submitter: row.try_get("submitter")?,
        payload: RawValue::from_string(payload).map_err(|e| sqlx::Error::Decode(e.into()))?,
        status: status_of(row.try_get::<&str, _>("status")?)?,
        assignee: row.try_get("assignee")?,
        reason: row.try_get("reason")?,
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// What a new item holds.
pub struct NewItem<'a> {
    pub queue: &'a str,
    pub external_ref: &'a str,
    pub title: &'a str,
    pub submitter: Option<&'a str>,
    pub payload: &'a RawValue,
}

/// Creates a pending item, or returns the one with the same reference when
/// its content is the same (`false`: nothing was created). Another content
/// under a taken reference is [`QueueError::Exists`].
pub async fn create(
    store: &Store,
    tenant: &str,
    new: &NewItem<'_>,
    actor: &str,
) -> Result<(Item, bool), QueueError> {
    let id = uuid::Uuid::now_v7().to_string();
    let now = now_millis();
    let mut tx = store.pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO queue_items (id, tenant_id, queue, external_ref, title, submitter, payload, status, version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 1, $8, $8)",
    )
    .bind(&id)
    .bind(tenant)
    .bind(new.queue)
    .bind(new.external_ref)
    .bind(new.title)
    .bind(new.submitter)
    .bind(new.payload.get())
    .bind(now)
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => {
            drop(tx);
            let existing = by_ref(store, tenant, new.queue, new.external_ref).await?;
            let same = existing.title == new.title
                && existing.submitter.as_deref() == new.submitter
                && same_json(existing.payload.get(), new.payload.get());
            return if same {
                Ok((existing, false))
            } else {
                Err(QueueError::Exists(existing.id))
            };
        }
        Err(e) => return Err(e.into()),
    }
    sqlx::query(EVENT)
        .bind(&id)
        .bind(1i64)
        .bind(None::<&str>)
        .bind(Status::Pending.as_str())
        .bind(actor)
        .bind(None::<&str>)
        .bind(None::<&str>)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    bump(&mut tx, tenant, new.queue, Status::Pending, 1).await?;
    tx.commit().await?;
    Ok((load(store, tenant, new.queue, &id).await?, true))
}

/// Compares two JSON texts by value, so key order and spacing of a retried
/// submission do not matter.
fn same_json(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

async fn bump(
    tx: &mut Transaction<'static, Any>,
    tenant: &str,
    queue: &str,
    status: Status,
    delta: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(BUMP)
        .bind(tenant)
        .bind(queue)
        .bind(status.as_str())
        .bind(delta)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn by_ref(
    store: &Store,
    tenant: &str,
    queue: &str,
    external_ref: &str,
) -> Result<Item, QueueError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {ITEM_COLUMNS} FROM queue_items WHERE tenant_id = $1 AND queue = $2 AND external_ref = $3"
    )))
    .bind(tenant)
    .bind(queue)
    .bind(external_ref)
    .fetch_optional(&store.pool)
    .await?
    .ok_or(QueueError::NotFound)?;
    Ok(item_from_row(&row)?)
}

/// The item `id` of `queue`; [`QueueError::NotFound`] in another tenant or queue.
pub async fn load(store: &Store, tenant: &str, queue: &str, id: &str) -> Result<Item, QueueError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {ITEM_COLUMNS} FROM queue_items WHERE tenant_id = $1 AND queue = $2 AND id = $3"
    )))
    .bind(tenant)
    .bind(queue)
    .bind(id)
    .fetch_optional(&store.pool)
    .await?
    .ok_or(QueueError::NotFound)?;
    Ok(item_from_row(&row)?)
}

/// How often a transition is retried after losing a race; each retry reads
/// the item again, so the state machine decides against the newest status.
const RACE_RETRIES: usize = 16;

/// Applies `change` to an item and returns it as it now is, with the status
/// it left. `assignee` is the reviewer already resolved by the caller (for
/// `in_review`); leaving review clears it.
pub async fn transition(
    store: &Store,
    tenant: &str,
    queue: &str,
    id: &str,
    change: &Transition,
    assignee: Option<&str>,
    actor: &str,
) -> Result<(Item, Status), QueueError> {
    let reason = change
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    for _ in 0..RACE_RETRIES {
        let current = load(store, tenant, queue, id).await?;
        let from = current.status;
        if !from.can_become(change.to) {
            return Err(QueueError::InvalidTransition {
                from,
                to: change.to,
            });
        }
        let assignee = if change.to == Status::InReview {
            assignee
        } else {
            None
        };
        let now = now_millis();
        let version = current.version + 1;
        let mut tx = store.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE queue_items SET status = $1, assignee = $2, reason = $3, version = $4, updated_at = $5 WHERE tenant_id = $6 AND id = $7 AND status = $8 AND version = $9",
        )
        .bind(change.to.as_str())
        .bind(assignee)
        .bind(reason)
        .bind(version)
        .bind(now)
        .bind(tenant)
        .bind(id)
        .bind(from.as_str())
        .bind(current.version)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            // Someone else changed it first: decide again on what it is now.
            tx.rollback().await?;
            continue;
        }
        sqlx::query(EVENT)
            .bind(id)
            .bind(version)
            .bind(from.as_str())
            .bind(change.to.as_str())
            .bind(actor)
            .bind(assignee)
            .bind(reason)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        // Counter rows are always locked in the same order (by status name)
        // so that two transitions never wait on each other in a cycle.
        let mut deltas = [(from, -1i64), (change.to, 1i64)];
        deltas.sort_by_key(|(s, _)| s.as_str());
        for (status, delta) in deltas {
            bump(&mut tx, tenant, queue, status, delta).await?;
        }
        tx.commit().await?;
        let item = Item {
            status: change.to,
            assignee: assignee.map(Into::into),
            reason: reason.map(Into::into),
            version,
            updated_at: now,
            ..current
        };
        return Ok((item, from));
    }
    // The item changed under us every time: report what it is now.
    let current = load(store, tenant, queue, id).await?;
    Err(QueueError::InvalidTransition {
        from: current.status,
        to: change.to,
    })
}

/// An item's audit trail, oldest first.
pub async fn events(
    store: &Store,
    tenant: &str,
    queue: &str,
    id: &str,
) -> Result<Vec<Event>, QueueError> {
    load(store, tenant, queue, id).await?;
    let rows = sqlx::query(
        "SELECT version, from_status, to_status, actor, assignee, reason, at FROM queue_item_events WHERE item_id = $1 ORDER BY version",
    )
    .bind(id)
    .fetch_all(&store.pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let from: Option<String> = row.try_get("from_status")?;
        out.push(Event {
            version: row.try_get("version")?,
            from: from.as_deref().map(status_of).transpose()?,
            to: status_of(row.try_get::<&str, _>("to_status")?)?,
            actor: row.try_get("actor")?,
            assignee: row.try_get("assignee")?,
            reason: row.try_get("reason")?,
            at: row.try_get("at")?,
        });
    }
    Ok(out)
}

/// Which items a list shows.
#[derive(Default)]
pub struct Filter<'a> {
    pub statuses: Vec<Status>,
    pub assignee: Option<&'a str>,
    pub submitter: Option<&'a str>,
}

/// Up to `limit` items of `queue` matching `filter`, oldest first (the order
/// a moderator works in), after the item `after` when given; and the cursor
/// of the next page.
pub async fn list(
    store: &Store,
    tenant: &str,
    queue: &str,
    filter: &Filter<'_>,
    after: Option<&str>,
    limit: usize,
) -> Result<(Vec<Item>, Option<String>), QueueError> {
    let mut sql =
        format!("SELECT {ITEM_COLUMNS} FROM queue_items WHERE tenant_id = $1 AND queue = $2");
    let mut binds: Vec<String> = vec![tenant.into(), queue.into()];
    let param = |binds: &mut Vec<String>, value: &str| {
        binds.push(value.into());
        format!("${}", binds.len())
    };
    if !filter.statuses.is_empty() {
        let mut placeholders = Vec::new();
        for s in &filter.statuses {
            placeholders.push(param(&mut binds, s.as_str()));
        }
        sql.push_str(&format!(" AND status IN ({})", placeholders.join(", ")));
    }
    if let Some(a) = filter.assignee {
        let p = param(&mut binds, a);
        sql.push_str(&format!(" AND assignee = {p}"));
    }
    if let Some(s) = filter.submitter {
        let p = param(&mut binds, s);
        sql.push_str(&format!(" AND submitter = {p}"));
    }
    if let Some(after) = after {
        let p = param(&mut binds, after);
        sql.push_str(&format!(" AND id > {p}"));
    }
    sql.push_str(&format!(" ORDER BY id LIMIT {}", limit + 1));
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for b in &binds {
        query = query.bind(b.as_str());
    }
    let rows = query.fetch_all(&store.pool).await?;
    let mut items = rows
        .iter()
        .map(item_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|i| i.id.clone())
    } else {
        None
    };
    Ok((items, next))
}

/// Items per status, every status present (zero when none).
pub type Counts = BTreeMap<&'static str, i64>;

fn zero_counts() -> Counts {
    Status::ALL.into_iter().map(|s| (s.as_str(), 0)).collect()
}

/// The counts of every queue of the tenant (`queue` = None) or of one.
pub async fn counts(
    store: &Store,
    tenant: &str,
    queue: Option<&str>,
) -> Result<BTreeMap<String, Counts>, sqlx::Error> {
    let rows = match queue {
        Some(q) => {
            sqlx::query(
                "SELECT queue, status, n FROM queue_counts WHERE tenant_id = $1 AND queue = $2",
            )
            .bind(tenant)
            .bind(q)
            .fetch_all(&store.pool)
            .await?
        }
        None => {
            sqlx::query("SELECT queue, status, n FROM queue_counts WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_all(&store.pool)
                .await?
        }
    };
    let mut out: BTreeMap<String, Counts> = BTreeMap::new();
    if let Some(q) = queue {
        out.insert(q.to_owned(), zero_counts());
    }
    for row in &rows {
        let status = status_of(row.try_get::<&str, _>("status")?)?;
        out.entry(row.try_get("queue")?)
            .or_insert_with(zero_counts)
            .insert(status.as_str(), row.try_get("n")?);
    }
    Ok(out)
}

/// Whether `user` is an active user of `tenant`.
pub async fn is_user(store: &Store, tenant: &str, user: &str) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("SELECT 1 FROM users WHERE tenant_id = $1 AND id = $2 AND disabled_at IS NULL")
            .bind(tenant)
            .bind(user)
            .fetch_optional(&store.pool)
            .await?
            .is_some(),
    )
}
