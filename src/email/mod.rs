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
    let mut inserted = 0;
    const COLS: usize = 13;
    for chunk in emails.chunks(1000) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| {
                let b = i * COLS;
                let p: Vec<String> = (1..=COLS).map(|k| format!("${}", b + k)).collect();
                format!(
                    "({0}, 'pending', 0, 0, {1}, {1})",
                    p[..12].join(", "),
                    p[12]
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO emails (id, tenant_id, user_id, notification_id, kind, dedupe_key, to_address, subject, text_body, html_body, critical, send_after, status, attempts, lease_until, created_at, updated_at) \
             VALUES {} ON CONFLICT (dedupe_key) DO NOTHING",
            values.join(", ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for e in chunk {
            q = q
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(&e.tenant)
                .bind(&e.user)
                .bind(e.notification_id)
                .bind(e.kind)
                .bind(&e.dedupe_key)
                .bind(&e.to)
                .bind(&e.subject)
                .bind(&e.text)
                .bind(&e.html)
                .bind(i64::from(e.critical))
                .bind(e.send_after)
                .bind(now);
        }
        inserted += q.execute(&mut *conn).await?.rows_affected();
    }
    Ok(inserted)
}
