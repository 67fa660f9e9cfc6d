//! Unread/read/archived/unseen counters per user and category.
//!
//! Counting rows on every badge refresh would cost a scan of the user's
//! inbox; these counters are updated in the same transaction as the rows
//! they count, so they are exact and read in one indexed lookup.
//!
//! There is one row per user and category; the user's totals are their sum
//! when read. (A separate total row doubled the rows every fan-out page
//! upserts.) Each row's `version` goes up by one whenever the row changes,
//! so their sum, the user's `version`, goes up with every change: live
//! updates carry it so a client keeps the newest counts even if two updates
//! cross on the wire.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, AssertSqlSafe, Row, any::AnyRow};

use crate::store::json_rows::{self, Column, backend_of};

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
    pub fn add(&mut self, other: Delta) {
        self.unread += other.unread;
        self.read += other.read;
        self.archived += other.archived;
        self.unseen += other.unseen;
    }

    pub fn is_zero(&self) -> bool {
        *self == Delta::default()
    }
}

/// One stored counter row; deserializes from a JSON array in column order.
#[derive(Debug, Deserialize)]
struct Stored {
    user_id: String,
    category: String,
    unread: i64,
    read: i64,
    archived: i64,
    unseen: i64,
    version: i64,
}

impl Stored {
    fn from_row(row: &AnyRow) -> Result<Stored, sqlx::Error> {
        Ok(Stored {
            user_id: row.try_get("user_id")?,
            category: row.try_get("category")?,
            unread: row.try_get("unread")?,
            read: row.try_get("read")?,
            archived: row.try_get("archived")?,
            unseen: row.try_get("unseen")?,
            version: row.try_get("version")?,
        })
    }

    /// Adds this category to the user's totals, and lists it if not empty.
    fn fill(self, counts: &mut Counts) {
        counts.unread += self.unread;
        counts.read += self.read;
        counts.archived += self.archived;
        counts.unseen += self.unseen;
        counts.version += self.version;
        if self.unread != 0 || self.read != 0 || self.archived != 0 {
            counts.categories.insert(
                self.category,
                CategoryCounts {
                    unread: self.unread,
                    read: self.read,
                    archived: self.archived,
                },
            );
        }
    }
}

/// The columns [`Stored`] reads, in its field order.
const COLUMNS: [&str; 7] = [
    "user_id", "category", "unread", "read", "archived", "unseen", "version",
];

/// One user's counters.
pub async fn snapshot(
    conn: &mut AnyConnection,
    tenant: &str,
    user: &str,
) -> Result<Counts, sqlx::Error> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {} FROM notification_counts WHERE tenant_id = $1 AND user_id = $2",
        COLUMNS.join(", ")
    )))
    .bind(tenant)
    .bind(user)
    .fetch_all(conn)
    .await?;
    let mut counts = Counts::default();
    for row in &rows {
        Stored::from_row(row)?.fill(&mut counts);
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
    let backend = backend_of(conn);
    let sql = format!(
        "SELECT {} FROM notification_counts WHERE tenant_id = $1 AND user_id IN ({})",
        json_rows::aggregate(backend, &COLUMNS),
        json_rows::strings(backend, 2)
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(tenant)
        .bind(json_rows::encode(users)?)
        .fetch_one(conn)
        .await?;
    for stored in json_rows::decode::<Stored>(&row)? {
        let counts = out.entry(stored.user_id.clone()).or_default();
        stored.fill(counts);
    }
    Ok(out)
}

/// Applies per-(user, category) deltas in one statement. Rows are written
/// in key order so concurrent transactions lock them in the same order.
pub async fn apply(
    conn: &mut AnyConnection,
    tenant: &str,
    deltas: &BTreeMap<(String, String), Delta>,
) -> Result<(), sqlx::Error> {
    let rows: Vec<(&str, &str, i64, i64, i64, i64)> = deltas
        .iter()
        .filter(|(_, d)| !d.is_zero())
        .map(|((user, category), d)| {
            (
                user.as_str(),
                category.as_str(),
                d.unread,
                d.read,
                d.archived,
                d.unseen,
            )
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
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
