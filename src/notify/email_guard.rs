//! The notification engine's emails, as the outbox sees them: their kinds,
//! and the rules the outbox worker applies to each one when it falls due.
//!
//! These emails are rendered and committed when a trigger fans out (or a
//! digest is built), but two rules can only be decided at send time, since
//! the user may act in between: a fallback is dropped if its notification
//! was read meanwhile, and a non-critical email waits for the end of the
//! recipient's quiet hours. The outbox is generic, so it asks: [`guards`]
//! gives it one [`SendGuard`] for every kind below.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use sqlx::Row;

use super::{Notify, inbox::UNREAD};
use crate::email::guard::{Due, Guards, SendGuard, Verdict};

/// What kind of email a row is (`emails.kind`).
pub mod kind {
    /// Sent at once (critical, or the recipient has no in-app copy).
    pub const NOTIFICATION: &str = "notification";
    /// Sent after a delay only if the notification is still unread.
    pub const FALLBACK: &str = "fallback";
    pub const DIGEST: &str = "digest";
}

/// The guards of the notification emails, for the outbox worker.
pub fn guards(notify: &Arc<Notify>) -> Guards {
    let guard: Arc<dyn SendGuard> = Arc::new(NotificationEmails {
        notify: notify.clone(),
    });
    let mut guards = Guards::default();
    for k in [kind::NOTIFICATION, kind::FALLBACK, kind::DIGEST] {
        guards.register(k, guard.clone());
    }
    guards
}

struct NotificationEmails {
    notify: Arc<Notify>,
}

impl SendGuard for NotificationEmails {
    fn check<'a>(&'a self, email: Due<'a>) -> BoxFuture<'a, anyhow::Result<Verdict>> {
        Box::pin(self.verdict(email))
    }
}

impl NotificationEmails {
    async fn verdict(&self, email: Due<'_>) -> anyhow::Result<Verdict> {
        if email.kind == kind::FALLBACK && !self.still_unread(email.cause_id).await? {
            return Ok(Verdict::Cancel(
                "the notification was read before the fallback delay".into(),
            ));
        }
        if !email.critical {
            let prefs = self.notify.preferences(email.tenant, email.user).await?;
            if let Some(until) = prefs.quiet_until(email.now) {
                return Ok(Verdict::Defer {
                    until,
                    reason: "quiet hours".into(),
                });
            }
        }
        Ok(Verdict::Send)
    }

    /// Whether the notification an email is about is still unread (`true`
    /// when the email names none).
    async fn still_unread(&self, notification: Option<i64>) -> anyhow::Result<bool> {
        let Some(id) = notification else {
            return Ok(true);
        };
        let status: Option<i64> = sqlx::query("SELECT status FROM notifications WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.notify.store.pool)
            .await?
            .map(|r| r.try_get("status"))
            .transpose()?;
        Ok(status == Some(UNREAD))
    }
}
