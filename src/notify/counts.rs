//! Unread/read/archived/unseen counters per user and category.
//!
//! Counting rows on every badge refresh would cost a scan of the user's
//! inbox; these counters are updated in the same transaction as the rows
//! they count, so they are exact and read in one indexed lookup. The row
//! with category `''` is the user's total and carries `version`, which
//! increases with every change: live updates carry it so a client keeps
//! the newest counts even if two updates cross on the wire.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use sqlx::{AnyConnection, AssertSqlSafe, Row, any::AnyRow};

use crate::store::json_rows::{self, Column, backend_of};

pub const TOTAL: &str = "";

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CategoryCounts {
    pub unread: i64,
    pub read: i64,
    pub archived: i64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub unread: i64,
    pub unseen: i64,
    pub read: i64,
    pub archived: i64,
    pub version: i64,
    pub categories: BTreeMap<String, CategoryCounts>,
}

/// A change of counters in one category.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta {
    pub unread: i64,
    pub read: i64,
    pub archived: i64,
    pub unseen: i64,
}

impl Delta {
    fn add(&mut self, other: Delta) {
        self.unread += other.unread;
        self.read += other.read;
        self.archived += other.archived;
        self.unseen += other.unseen;
    }

    pub fn is_zero(&self) -> bool {
        *self == Delta::default()
    }
}

fn fill(counts: &mut Counts, row: &AnyRow) -> Result<(), sqlx::Error> {
    let category: String = row.try_get("category")?;
    let (unread, read, archived) = (
        row.try_get::<i64, _>("unread")?,
        row.try_get::<i64, _>("read")?,
        row.try_get::<i64, _>("archived")?,
    );
    if category == TOTAL {
        counts.unread = unread;
        counts.read = read;
        counts.archived = archived;
        counts.unseen = row.try_get("unseen")?;
        counts.version = row.try_get("version")?;
    } else if unread != 0 || read != 0 || archived != 0 {
        counts.categories.insert(
            category,
            CategoryCounts {
                unread,
                read,
                archived,
            },
        );
    }
    Ok(())
}

const COLUMNS: &str = "user_id, category, unread, read, archived, unseen, version";

/// One user's counters.
pub async fn snapshot(
    conn: &mut AnyConnection,
    tenant: &str,
    user: &str,
) -> Result<Counts, sqlx::Error> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM notification_counts WHERE tenant_id = $1 AND user_id = $2"
    )))
    .bind(tenant)
    .bind(user)
    .fetch_all(conn)
    .await?;
    let mut counts = Counts::default();
    for row in &rows {
        fill(&mut counts, row)?;
    }
    Ok(counts)
}

/// Counters of many users in one query.
pub async fn snapshots(
    conn: &mut AnyConnection,
    tenant: &str,
    users: &[&str],
) -> Result<HashMap<String, Counts>, sqlx::Error> {
    let mut out: HashMap<String, Counts> = HashMap::with_capacity(users.len());
    if users.is_empty() {
        return Ok(out);
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM notification_counts WHERE tenant_id = $1 AND user_id IN ({})",
        json_rows::strings(backend_of(conn), 2)
    );
    let q = sqlx::query(AssertSqlSafe(sql))
        .bind(tenant)
        .bind(json_rows::encode(users)?);
    for row in q.fetch_all(conn).await? {
        let user: String = row.try_get("user_id")?;
        fill(out.entry(user).or_default(), &row)?;
    }
    Ok(out)
}

/// Applies per-(user, category) deltas, and their sums to each user's total
/// row, in one statement. Rows are written in key order so concurrent
/// transactions lock them in the same order.
pub async fn apply(
    conn: &mut AnyConnection,
    tenant: &str,
    deltas: &BTreeMap<(String, String), Delta>,
) -> Result<(), sqlx::Error> {
    let mut all: BTreeMap<(&str, &str), Delta> = BTreeMap::new();
    for ((user, category), d) in deltas {
        if d.is_zero() {
            continue;
        }
        all.entry((user.as_str(), category.as_str()))
            .or_default()
            .add(*d);
        all.entry((user.as_str(), TOTAL)).or_default().add(*d);
    }
    if all.is_empty() {
        return Ok(());
    }
    let rows: Vec<(&str, &str, i64, i64, i64, i64)> = all
        .into_iter()
        .map(|((user, category), d)| (user, category, d.unread, d.read, d.archived, d.unseen))
        .collect();
    let rows_sql = json_rows::select(
        backend_of(conn),
        2,
        &[
            Column::Text("user_id"),
            Column::Text("category"),
            Column::Int("unread"),
            Column::Int("read"),
            Column::Int("archived"),
            Column::Int("unseen"),
        ],
    );
    // `WHERE TRUE`: SQLite's grammar needs a WHERE before an upsert's ON
    // CONFLICT when the rows come from a SELECT.
    let sql = format!(
        "INSERT INTO notification_counts (tenant_id, user_id, category, unread, read, archived, unseen, version) \
         SELECT $1, r.user_id, r.category, r.unread, r.read, r.archived, r.unseen, 1 FROM ({rows_sql}) r WHERE TRUE \
         ON CONFLICT (tenant_id, user_id, category) DO UPDATE SET \
         unread = notification_counts.unread + excluded.unread, \
         read = notification_counts.read + excluded.read, \
         archived = notification_counts.archived + excluded.archived, \
         unseen = notification_counts.unseen + excluded.unseen, \
         version = notification_counts.version + 1"
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(tenant)
        .bind(json_rows::encode(&rows)?)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
