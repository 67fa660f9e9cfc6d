//! A durable email outbox, for any part of the hub that sends email.
//!
//! An email is a row of `emails`, inserted with [`insert_many`] in the same
//! transaction as what caused it, so it exists exactly when its cause does.
//! A worker on every node claims due rows with a lease, asks the guard of
//! the email's kind whether it should still go ([`guard`]), sends it (SMTP
//! via lettre, or `.eml` files when no SMTP server is configured), logs
//! every attempt, retries transient failures with exponential backoff and
//! jitter, and dead-letters an email after its last attempt.
//!
//! One email per cause: the `dedupe_key` column is unique (the queuing
//! domain derives it from the cause), and the `Message-ID` is derived from
//! the row id, so a send repeated after a crash (the one case SMTP cannot
//! rule out: the server accepted the message but the node died before
//! recording it) carries the same Message-ID and is recognisable as the
//! same message.
//!
//! The outbox knows nothing of what its emails are about: texts arrive
//! rendered, and the rules of each kind (cancel, defer) come from the
//! domain that queued them. The notification engine is its first user.
//!
//! - [`worker`]: claims, asks the guard, sends, records.
//! - [`transport`]: SMTP or files, and the retry backoff.
//! - [`guard`]: the per-kind seam the queuing domains plug into.
//! - [`routes`]: the tenant admin's view of the outbox, and retries;
//!   [`store`]: the queries behind it.

pub mod guard;
pub mod routes;
pub mod store;
pub mod transport;
pub mod worker;

use std::{sync::Arc, time::Duration};

use sqlx::{AnyConnection, AssertSqlSafe};

use crate::{
    config::EmailConfig,
    metrics::Metrics,
    store::{
        Store,
        json_rows::{self, Column, backend_of},
    },
};

/// What the worker and the admin routes share: the store, the settings,
/// the clock, and the bell that wakes the worker.
pub struct Outbox {
    pub store: Store,
    pub config: EmailConfig,
    /// How long a node owns an email it claimed (real time).
    pub lease: Duration,
    /// How often the worker looks for due emails when nobody wakes it.
    pub poll_interval: Duration,
    pub metrics: Arc<Metrics>,
    wake: tokio::sync::Notify,
    now: Box<dyn Fn() -> i64 + Send + Sync>,
}

impl Outbox {
    /// `now` is the clock `send_after` is compared with, in milliseconds
    /// since the Unix epoch; the queuing domains must use the same one.
    pub fn new(
        store: Store,
        config: EmailConfig,
        lease: Duration,
        poll_interval: Duration,
        metrics: Arc<Metrics>,
        now: impl Fn() -> i64 + Send + Sync + 'static,
    ) -> Self {
        Outbox {
            store,
            config,
            lease,
            poll_interval,
            metrics,
            wake: tokio::sync::Notify::new(),
            now: Box::new(now),
        }
    }

    pub fn now_millis(&self) -> i64 {
        (self.now)()
    }

    /// Tells the worker an email is due now (after the commit that queued it).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    async fn woken(&self) {
        self.wake.notified().await
    }
}

/// An outbox row to insert.
#[derive(Debug, Clone)]
pub struct NewEmail {
    pub tenant: String,
    pub user: String,
    /// The id of what caused the email, for its kind's guard (stored in
    /// the `notification_id` column, the name the admin view reports).
    pub cause_id: Option<i64>,
    /// Selects the guard consulted before sending ([`guard::Guards`]).
    pub kind: &'static str,
    /// Unique: a second email with the same key is not inserted.
    pub dedupe_key: String,
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub critical: bool,
    pub send_after: i64,
    /// Where the recipient stops emails like this one (an absolute
    /// `http(s)` address): sent as `List-Unsubscribe`. `None` for emails
    /// the recipient cannot opt out of.
    pub list_unsubscribe: Option<String>,
    /// An `https` address that stops emails like this one on a bare POST
    /// (RFC 8058): sent first in `List-Unsubscribe`, with
    /// `List-Unsubscribe-Post: List-Unsubscribe=One-Click`. `None` when
    /// there is none.
    pub one_click_unsubscribe: Option<String>,
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
        Option<&'a str>,
        Option<&'a str>,
    );
    let rows: Vec<Row> = emails
        .iter()
        .map(|e| {
            (
                uuid::Uuid::now_v7().to_string(),
                e.tenant.as_str(),
                e.user.as_str(),
                e.cause_id,
                e.kind,
                e.dedupe_key.as_str(),
                e.to.as_str(),
                e.subject.as_str(),
                e.text.as_str(),
                e.html.as_str(),
                i64::from(e.critical),
                e.send_after,
                e.list_unsubscribe.as_deref(),
                e.one_click_unsubscribe.as_deref(),
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
            Column::Text("list_unsubscribe"),
            Column::Text("one_click_unsubscribe"),
        ],
    );
    // `WHERE TRUE`: SQLite's grammar needs it before ON CONFLICT here.
    let sql = format!(
        "INSERT INTO emails (id, tenant_id, user_id, notification_id, kind, dedupe_key, to_address, subject, text_body, html_body, critical, send_after, list_unsubscribe, one_click_unsubscribe, status, attempts, lease_until, created_at, updated_at) \
         SELECT r.id, r.tenant_id, r.user_id, r.notification_id, r.kind, r.dedupe_key, r.to_address, r.subject, r.text_body, r.html_body, r.critical, r.send_after, r.list_unsubscribe, r.one_click_unsubscribe, 'pending', 0, 0, $1, $1 \
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
