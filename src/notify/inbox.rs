//! A user's inbox: listing with filters and cursor pagination, and the state
//! changes (read, unread, archive, unarchive, seen) with their counters.
//!
//! Every query is scoped by tenant and user, so a user can neither see nor
//! change another user's notifications: a foreign id simply matches nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sqlx::{AnyConnection, AssertSqlSafe, Row, any::AnyRow};

use super::{
    counts::{self, Counts, Delta},
    types::Priority,
};
use crate::error::ApiError;

/// Why an inbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// The status filter names no status.
    #[error("status `{0}`: expected unread, read or archived")]
    InvalidStatus(String),
    /// The priority filter names an unknown priority.
    #[error("{0}")]
    InvalidPriority(String),
    /// The cursor is not one a page returned.
    #[error("cursor is not one this API returned")]
    InvalidCursor,
    /// The user has no notification with this id.
    #[error("notification not found")]
    NotFound,
    /// An action names no known action.
    #[error("action: read, unread, archive, unarchive or seen")]
    InvalidAction,
    /// An action on ids was given none, or too many.
    #[error("ids: 1 to 500 notification ids")]
    InvalidIds,
    #[error("internal error")]
    Store(#[from] sqlx::Error),
}

impl InboxError {
    /// The stable code clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            InboxError::InvalidStatus(_) | InboxError::InvalidPriority(_) => "invalid_filter",
            InboxError::InvalidCursor => "invalid_cursor",
            InboxError::NotFound => "not_found",
            InboxError::InvalidAction => "invalid_action",
            InboxError::InvalidIds => "invalid_ids",
            InboxError::Store(_) => "internal",
        }
    }
}

impl From<InboxError> for ApiError {
    fn from(e: InboxError) -> Self {
        let code = e.code();
        match e {
            InboxError::InvalidStatus(_)
            | InboxError::InvalidPriority(_)
            | InboxError::InvalidCursor
            | InboxError::InvalidAction
            | InboxError::InvalidIds => ApiError::invalid(code, e.to_string()),
            InboxError::NotFound => ApiError::NotFound("notification"),
            InboxError::Store(e) => e.into(),
        }
    }
}

pub const UNREAD: i64 = 0;
pub const READ: i64 = 1;
pub const ARCHIVED: i64 = 2;

pub fn status_name(status: i64) -> &'static str {
    match status {
        UNREAD => "unread",
        READ => "read",
        _ => "archived",
    }
}

fn parse_status(s: &str) -> Result<i64, InboxError> {
    match s {
        "unread" => Ok(UNREAD),
        "read" => Ok(READ),
        "archived" => Ok(ARCHIVED),
        _ => Err(InboxError::InvalidStatus(s.to_owned())),
    }
}

/// One notification as the API and live events show it.
#[derive(Debug, Serialize)]
pub struct Item {
    pub id: i64,
    #[serde(rename = "type")]
    pub type_key: String,
    pub category: String,
    pub priority: Priority,
    pub title: String,
    pub body: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub data: Box<RawValue>,
    pub status: &'static str,
    pub seen_at: Option<i64>,
    pub read_at: Option<i64>,
    pub archived_at: Option<i64>,
    pub created_at: i64,
}

pub const ITEM_COLUMNS: &str = "id, type_key, category, priority, title, body, url, payload, status, seen_at, read_at, archived_at, created_at";

pub fn item_from_row(row: &AnyRow) -> Result<Item, sqlx::Error> {
    let payload: String = row.try_get("payload")?;
    Ok(Item {
        id: row.try_get("id")?,
        type_key: row.try_get("type_key")?,
        category: row.try_get("category")?,
        priority: Priority::from_rank(row.try_get("priority")?),
        title: row.try_get("title")?,
        body: row.try_get("body")?,
        url: row.try_get("url")?,
        data: RawValue::from_string(payload)
            .unwrap_or_else(|_| RawValue::from_string("{}".into()).expect("valid JSON")),
        status: status_name(row.try_get("status")?),
        seen_at: row.try_get("seen_at")?,
        read_at: row.try_get("read_at")?,
        archived_at: row.try_get("archived_at")?,
        created_at: row.try_get("created_at")?,
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `unread`, `read` or `archived`; default: unread and read.
    pub status: Option<String>,
    pub category: Option<String>,
    /// Comma-separated priorities, e.g. `high,critical`.
    pub priority: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

#[derive(Serialize)]
pub struct Page {
    pub items: Vec<Item>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

pub async fn list(
    conn: &mut AnyConnection,
    tenant: &str,
    user: &str,
    q: &ListQuery,
) -> Result<Page, InboxError> {
    let limit = q.limit.unwrap_or(20).clamp(1, 100) as usize;
    // The filters other than status, as ` AND ...` clauses.
    let mut sql = String::new();
    let mut binds: Vec<String> = Vec::new();
    let mut ints: Vec<(usize, i64)> = Vec::new();
    let mut n = 2;
    let status = q.status.as_deref().map(parse_status).transpose()?;
    if let Some(category) = &q.category {
        n += 1;
        binds.push(category.clone());
        sql.push_str(&format!(" AND category = ${n}"));
    }
    if let Some(priorities) = &q.priority {
        let mut list = Vec::new();
        for p in priorities
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let p: Priority = p.parse().map_err(InboxError::InvalidPriority)?;
            n += 1;
            ints.push((n, p.rank()));
            list.push(format!("${n}"));
        }
        if !list.is_empty() {
            sql.push_str(&format!(" AND priority IN ({})", list.join(", ")));
        }
    }
    if let Some(cursor) = &q.cursor {
        let before: i64 = cursor.parse().map_err(|_| InboxError::InvalidCursor)?;
        n += 1;
        ints.push((n, before));
        sql.push_str(&format!(" AND id < ${n}"));
    }
    let sql = page_sql(status, &sql, limit + 1);

    // Bind in placeholder order: $3.. are a mix of strings and integers.
    let mut query = sqlx::query(AssertSqlSafe(sql)).bind(tenant).bind(user);
    let mut strings = binds.into_iter();
    let mut ints = ints.into_iter().peekable();
    for i in 3..=n {
        if ints.peek().is_some_and(|(at, _)| *at == i) {
            query = query.bind(ints.next().map(|(_, v)| v).unwrap_or_default());
        } else {
            query = query.bind(strings.next().unwrap_or_default());
        }
    }
    let rows = query.fetch_all(conn).await?;
    let mut items = rows
        .iter()
        .map(item_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|i| i.id.to_string())
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// The newest `take` items of the user matching `filters`, with the given
/// status or, without one, unread and read ones.
///
/// Both cases read only `notifications_status` or `notifications_category`,
/// which lead with (user, [category,] status) and end with the id. Unread
/// and read items are two ranges of them: each is read newest first for at
/// most `take` rows, and only those `2 × take` rows are merged. (Partial
/// indexes of the unread and read items would serve the list in one range,
/// but every fan-out row would write two more index entries, scattered
/// over the users: on a large table they made a fan-out 1.6 (SQLite) to 2
/// (PostgreSQL) times slower.)
fn page_sql(status: Option<i64>, filters: &str, take: usize) -> String {
    let one = |status: i64| {
        format!(
            "SELECT {ITEM_COLUMNS} FROM notifications WHERE tenant_id = $1 AND user_id = $2 \
             AND status = {status}{filters} ORDER BY id DESC LIMIT {take}"
        )
    };
    match status {
        Some(status) => one(status),
        None => format!(
            "SELECT {ITEM_COLUMNS} FROM (\
             SELECT * FROM ({}) unread UNION ALL SELECT * FROM ({}) read_items\
             ) inbox ORDER BY id DESC LIMIT {take}",
            one(UNREAD),
            one(READ)
        ),
    }
}

pub async fn get(
    conn: &mut AnyConnection,
    tenant: &str,
    user: &str,
    id: i64,
) -> Result<Item, InboxError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {ITEM_COLUMNS} FROM notifications WHERE tenant_id = $1 AND user_id = $2 AND id = $3"
    )))
    .bind(tenant)
    .bind(user)
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(InboxError::NotFound)?;
    Ok(item_from_row(&row)?)
}

/// A state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    Unread,
    Archive,
    Unarchive,
    Seen,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "read" => Action::Read,
            "unread" => Action::Unread,
            "archive" => Action::Archive,
            "unarchive" => Action::Unarchive,
            "seen" => Action::Seen,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Unread => "unread",
            Action::Archive => "archive",
            Action::Unarchive => "unarchive",
            Action::Seen => "seen",
        }
    }
}

/// Which items an action applies to.
pub enum Target<'a> {
    Ids(&'a [i64]),
    /// All of the user's items, optionally of one category.
    All {
        category: Option<&'a str>,
    },
}

/// What changed.
pub struct Changed {
    pub ids: Vec<i64>,
    pub counts: Option<Counts>,
    /// Fallback emails cancelled because their notification was read.
    pub cancelled_emails: u64,
}

/// One `UPDATE … RETURNING id, category` step of an action, with the
/// counter change each returned row implies.
struct Step {
    set: &'static str,
    when: &'static str,
    delta: Delta,
}

fn steps(action: Action) -> Vec<Step> {
    let d = |unread, read, archived, unseen| Delta {
        unread,
        read,
        archived,
        unseen,
    };
    match action {
        Action::Seen => vec![Step {
            set: "seen_at = $T",
            when: "seen_at IS NULL AND status < 2",
            delta: d(0, 0, 0, -1),
        }],
        Action::Read => vec![
            Step {
                set: "seen_at = $T",
                when: "seen_at IS NULL AND status = 0",
                delta: d(0, 0, 0, -1),
            },
            Step {
                set: "status = 1, read_at = $T",
                when: "status = 0",
                delta: d(-1, 1, 0, 0),
            },
        ],
        Action::Unread => vec![Step {
            set: "status = 0, read_at = NULL",
            when: "status = 1",
            delta: d(1, -1, 0, 0),
        }],
        Action::Archive => vec![
            Step {
                set: "seen_at = $T",
                when: "seen_at IS NULL AND status < 2",
                delta: d(0, 0, 0, -1),
            },
            Step {
                set: "status = 2, archived_at = $T",
                when: "status = 0",
                delta: d(-1, 0, 1, 0),
            },
            Step {
                set: "status = 2, archived_at = $T",
                when: "status = 1",
                delta: d(0, -1, 1, 0),
            },
        ],
        Action::Unarchive => vec![Step {
            set: "status = 1, archived_at = NULL, read_at = COALESCE(read_at, $T)",
            when: "status = 2",
            delta: d(0, 1, -1, 0),
        }],
    }
}

/// Applies `action` in one transaction (the caller's), updating counters;
/// returns the ids that changed and, if any did, the counters after.
pub async fn transition(
    conn: &mut AnyConnection,
    tenant: &str,
    user: &str,
    action: Action,
    target: &Target<'_>,
    now: i64,
) -> Result<Changed, InboxError> {
    // $1 tenant, $2 user, $3 now, then the target's binds.
    let (target_sql, ids, category) = match target {
        Target::Ids(ids) => {
            if ids.is_empty() || ids.len() > 500 {
                return Err(InboxError::InvalidIds);
            }
            let list: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 4)).collect();
            (format!(" AND id IN ({})", list.join(", ")), *ids, None)
        }
        Target::All { category: Some(c) } => (" AND category = $4".to_owned(), &[][..], Some(*c)),
        Target::All { category: None } => (String::new(), &[][..], None),
    };
    let mut deltas: BTreeMap<(String, String), Delta> = BTreeMap::new();
    let mut changed: Vec<i64> = Vec::new();
    for step in steps(action) {
        let sql = format!(
            "UPDATE notifications SET {} WHERE tenant_id = $1 AND user_id = $2 AND $3 = $3 AND {}{} RETURNING id, category",
            step.set.replace("$T", "$3"),
            step.when,
            target_sql
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(user)
            .bind(now);
        for id in ids {
            q = q.bind(*id);
        }
        if let Some(c) = category {
            q = q.bind(c);
        }
        for row in q.fetch_all(&mut *conn).await? {
            let category: String = row.try_get("category")?;
            let d = deltas.entry((user.to_owned(), category)).or_default();
            d.add(step.delta);
            changed.push(row.try_get("id")?);
        }
    }
    changed.sort_unstable();
    changed.dedup();
    if changed.is_empty() {
        return Ok(Changed {
            ids: changed,
            counts: None,
            cancelled_emails: 0,
        });
    }
    counts::apply(conn, tenant, &deltas).await?;
    let mut cancelled_emails = 0;
    if matches!(action, Action::Read | Action::Archive) {
        // A fallback email is only for what stays unread.
        cancelled_emails = sqlx::query(
            "UPDATE emails SET status = 'cancelled', updated_at = $3 WHERE tenant_id = $1 AND user_id = $2 AND status = 'pending' AND kind = 'fallback' \
             AND notification_id IN (SELECT id FROM notifications WHERE tenant_id = $1 AND user_id = $2 AND status <> 0)",
        )
        .bind(tenant)
        .bind(user)
        .bind(now)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    }
    let counts = counts::snapshot(conn, tenant, user).await?;
    Ok(Changed {
        ids: changed,
        counts: Some(counts),
        cancelled_emails,
    })
}

#[cfg(test)]
mod tests {
    use super::InboxError;

    #[test]
    fn each_inbox_error_keeps_its_status_code_and_message() {
        let cases = [
            (
                InboxError::InvalidStatus("done".into()),
                422,
                "invalid_filter",
                "status `done`: expected unread, read or archived",
            ),
            (
                InboxError::InvalidPriority("unknown priority `urgent`".into()),
                422,
                "invalid_filter",
                "unknown priority `urgent`",
            ),
            (
                InboxError::InvalidCursor,
                422,
                "invalid_cursor",
                "cursor is not one this API returned",
            ),
            (
                InboxError::NotFound,
                404,
                "not_found",
                "notification not found",
            ),
            (
                InboxError::InvalidAction,
                422,
                "invalid_action",
                "action: read, unread, archive, unarchive or seen",
            ),
            (
                InboxError::InvalidIds,
                422,
                "invalid_ids",
                "ids: 1 to 500 notification ids",
            ),
            (
                InboxError::Store(sqlx::Error::RowNotFound),
                500,
                "internal",
                "internal error",
            ),
        ];
        crate::error::assert_maps_to(cases, |e| e.code());
    }
}
