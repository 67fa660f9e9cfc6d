//! Email delivery through a durable outbox.
//!
//! An email is a row of `emails`, inserted in the same transaction as what
//! caused it (a notification, a digest), so it exists exactly when its cause
//! does. A worker on every node claims due rows with a lease, sends them
//! (SMTP via lettre, or `.eml` files when no SMTP server is configured),
//! logs every attempt, retries transient failures with exponential backoff
//! and jitter, and dead-letters an email after its last attempt.
//!
//! One email per cause: the `dedupe_key` column is unique (one per
//! notification and channel, one per user and digest period), and the
//! `Message-ID` is derived from the row id, so a send repeated after a crash
//! (the one case SMTP cannot rule out: the server accepted the message but
//! the node died before recording it) carries the same Message-ID and is
//! recognisable as the same message.

pub mod digest;
pub mod render;
pub mod routes;
pub mod transport;
pub mod worker;

use sqlx::{AnyConnection, AssertSqlSafe};

use crate::store::json_rows::{self, Column, backend_of};

/// What kind of email a row is.
pub mod kind {
    /// Sent at once (critical, or the recipient has no in-app copy).
    pub const NOTIFICATION: &str = "notification";
    /// Sent after a delay only if the notification is still unread.
    pub const FALLBACK: &str = "fallback";
    pub const DIGEST: &str = "digest";
}

/// An outbox row to insert.
#[derive(Debug, Clone)]
pub struct NewEmail {
    pub tenant: String,
    pub user: String,
    pub notification_id: Option<i64>,
    pub kind: &'static str,
    pub dedupe_key: String,
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub critical: bool,
    pub send_after: i64,
}

/// Inserts emails; a duplicate `dedupe_key` is skipped. Returns how many
/// rows were inserted.
pub async fn insert_many(
    conn: &mut AnyConnection,
    emails: &[NewEmail],
    now: i64,
) -> Result<u64, sqlx::Error> {
    if emails.is_empty() {
        return Ok(0);
    }
    type Row<'a> = (
        String,
        &'a str,
        &'a str,
        Option<i64>,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        i64,
        i64,
    );
    let rows: Vec<Row> = emails
        .iter()
        .map(|e| {
            (
                uuid::Uuid::now_v7().to_string(),
                e.tenant.as_str(),
                e.user.as_str(),
                e.notification_id,
                e.kind,
                e.dedupe_key.as_str(),
                e.to.as_str(),
                e.subject.as_str(),
                e.text.as_str(),
                e.html.as_str(),
                i64::from(e.critical),
                e.send_after,
            )
        })
        .collect();
    let rows_sql = json_rows::select(
        backend_of(conn),
        2,
        &[
            Column::Text("id"),
            Column::Text("tenant_id"),
            Column::Text("user_id"),
            Column::Int("notification_id"),
            Column::Text("kind"),
            Column::Text("dedupe_key"),
            Column::Text("to_address"),
            Column::Text("subject"),
            Column::Text("text_body"),
            Column::Text("html_body"),
            Column::Int("critical"),
            Column::Int("send_after"),
        ],
    );
    // `WHERE TRUE`: SQLite's grammar needs it before ON CONFLICT here.
    let sql = format!(
        "INSERT INTO emails (id, tenant_id, user_id, notification_id, kind, dedupe_key, to_address, subject, text_body, html_body, critical, send_after, status, attempts, lease_until, created_at, updated_at) \
         SELECT r.id, r.tenant_id, r.user_id, r.notification_id, r.kind, r.dedupe_key, r.to_address, r.subject, r.text_body, r.html_body, r.critical, r.send_after, 'pending', 0, 0, $1, $1 \
         FROM ({rows_sql}) r WHERE TRUE ON CONFLICT (dedupe_key) DO NOTHING"
    );
    let inserted = sqlx::query(AssertSqlSafe(sql))
        .bind(now)
        .bind(json_rows::encode(&rows)?)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(inserted)
}
