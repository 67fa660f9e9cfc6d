//! The outbox worker: claims due emails with a lease, asks the guard of
//! each email's kind whether to send, cancel or defer it, sends, and
//! records the outcome; transient failures are retried with backoff until
//! the last attempt, then dead-lettered.

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use lettre::message::Mailbox;
use sqlx::{Row, any::AnyRow};
use tokio_util::sync::CancellationToken;

use super::{
    Outbox,
    guard::{Due, Guards, Verdict},
    transport::{Outcome, Outgoing, Transport, backoff},
};
use crate::ids::now_millis;

pub struct Mailer {
    pub outbox: Arc<Outbox>,
    pub transport: Transport,
    pub from: Mailbox,
    /// The queuing domains' say over their emails, by kind.
    pub guards: Guards,
}

struct Claimed {
    id: String,
    tenant: String,
    user: String,
    cause_id: Option<i64>,
    kind: String,
    to: String,
    subject: String,
    text: String,
    html: String,
    critical: bool,
    list_unsubscribe: Option<String>,
    one_click_unsubscribe: Option<String>,
    attempts: i64,
    /// The lease this node took; every update checks it is still ours.
    lease: i64,
}

fn claimed(row: &AnyRow) -> Result<Claimed, sqlx::Error> {
    Ok(Claimed {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant_id")?,
        user: row.try_get("user_id")?,
        cause_id: row.try_get("notification_id")?,
        kind: row.try_get("kind")?,
        to: row.try_get("to_address")?,
        subject: row.try_get("subject")?,
        text: row.try_get("text_body")?,
        html: row.try_get("html_body")?,
        critical: row.try_get::<i64, _>("critical")? != 0,
        list_unsubscribe: row.try_get("list_unsubscribe")?,
        one_click_unsubscribe: row.try_get("one_click_unsubscribe")?,
        attempts: row.try_get("attempts")?,
        lease: row.try_get("lease_until")?,
    })
}

impl Mailer {
    pub fn new(
        outbox: Arc<Outbox>,
        transport: Transport,
        guards: Guards,
    ) -> anyhow::Result<Mailer> {
        let from: Mailbox = outbox
            .config
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("RELAIS_EMAIL_FROM is not an address: {e}"))?;
        Ok(Mailer {
            outbox,
            transport,
            from,
            guards,
        })
    }

    /// Claims up to `limit` due emails. The lease is taken in the same
    /// statement, and re-checked on each row, so two nodes never both send.
    async fn claim(&self, limit: usize) -> anyhow::Result<Vec<Claimed>> {
        let real_now = now_millis();
        let lease_until = real_now + self.outbox.lease.as_millis() as i64;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE emails SET lease_until = $1, attempts = attempts + 1, updated_at = $3 \
             WHERE id IN (SELECT id FROM emails WHERE status = 'pending' AND send_after <= $3 AND lease_until < $2 ORDER BY critical DESC, send_after LIMIT {limit}) \
             AND status = 'pending' AND lease_until < $2 \
             RETURNING id, tenant_id, user_id, notification_id, kind, to_address, subject, text_body, html_body, critical, list_unsubscribe, one_click_unsubscribe, attempts, lease_until"
        )))
        .bind(lease_until)
        .bind(real_now)
        .bind(self.outbox.now_millis())
        .fetch_all(&self.outbox.store.pool)
        .await?;
        Ok(rows.iter().map(claimed).collect::<Result<_, _>>()?)
    }

    /// Handles one claimed email to the end; errors leave it to the lease.
    async fn handle(&self, email: Claimed) -> anyhow::Result<()> {
        let outbox = &self.outbox;
        let now = outbox.now_millis();
        let due = Due {
            id: &email.id,
            tenant: &email.tenant,
            user: &email.user,
            kind: &email.kind,
            cause_id: email.cause_id,
            critical: email.critical,
            now,
        };
        match self.guards.check(due).await? {
            Verdict::Send => {}
            Verdict::Cancel(reason) => {
                self.settle(&email, "cancelled", "cancelled", None, &reason, None)
                    .await?;
                outbox.metrics.emails_cancelled.inc();
                return Ok(());
            }
            Verdict::Defer { until, reason } => {
                self.reschedule(&email, until, "deferred", None, &reason, false)
                    .await?;
                outbox.metrics.emails_deferred.inc();
                return Ok(());
            }
        }
        let outgoing = Outgoing {
            id: &email.id,
            to: &email.to,
            subject: &email.subject,
            text: &email.text,
            html: &email.html,
            list_unsubscribe: email.list_unsubscribe.as_deref(),
            one_click_unsubscribe: email.one_click_unsubscribe.as_deref(),
            date: std::time::UNIX_EPOCH + Duration::from_millis(now.max(0) as u64),
        };
        // lettre's timeout is per command; bound the whole attempt too, well
        // inside the lease, so no other node takes over a send in progress.
        let limit = outbox.lease / 2;
        let outcome =
            match tokio::time::timeout(limit, self.transport.send(&self.from, &outgoing)).await {
                Ok(outcome) => outcome,
                Err(_) => Outcome::Transient {
                    code: None,
                    reply: format!("no answer within {limit:?}"),
                },
            };
        let max = i64::from(outbox.config.max_attempts);
        match outcome {
            Outcome::Sent { code, reply } => {
                self.settle(&email, "sent", "sent", code, &reply, Some(now))
                    .await?;
                outbox.metrics.emails_sent.inc();
            }
            Outcome::Permanent { code, reply } => {
                self.settle(&email, "dead", "failed", code, &reply, None)
                    .await?;
                outbox.metrics.emails_dead.inc();
                tracing::warn!(email = %email.id, reply, "email refused permanently; dead-lettered");
            }
            Outcome::Transient { code, reply } if email.attempts >= max => {
                self.settle(&email, "dead", "failed", code, &reply, None)
                    .await?;
                outbox.metrics.emails_dead.inc();
                tracing::warn!(email = %email.id, attempts = email.attempts, reply, "email dead-lettered after its last attempt");
            }
            Outcome::Transient { code, reply } => {
                let delay = backoff(
                    outbox.config.retry_base,
                    outbox.config.retry_max,
                    email.attempts as u32,
                );
                self.reschedule(
                    &email,
                    now + delay.as_millis() as i64,
                    "retry",
                    code,
                    &reply,
                    true,
                )
                .await?;
                outbox.metrics.email_retries.inc();
                tracing::info!(email = %email.id, attempt = email.attempts, reply, retry_in = ?delay, "email attempt failed; will retry");
            }
        }
        Ok(())
    }

    /// Ends an email (sent, dead or cancelled) and logs why, in one transaction.
    async fn settle(
        &self,
        email: &Claimed,
        status: &str,
        outcome: &str,
        code: Option<u16>,
        detail: &str,
        sent_at: Option<i64>,
    ) -> anyhow::Result<()> {
        let now = self.outbox.now_millis();
        let counted = outcome != "cancelled";
        let mut tx = self.outbox.store.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE emails SET status = $2, sent_at = $3, last_error = $4, lease_until = 0, updated_at = $5, attempts = attempts - $6 WHERE id = $1 AND lease_until = $7",
        )
        .bind(&email.id)
        .bind(status)
        .bind(sent_at)
        .bind((status != "sent").then_some(detail))
        .bind(now)
        .bind(i64::from(!counted))
        .bind(email.lease)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return lost_lease(email);
        }
        log_attempt(&mut tx, email, outcome, code, detail, now, counted).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Puts an email back in the queue for `at`.
    async fn reschedule(
        &self,
        email: &Claimed,
        at: i64,
        outcome: &str,
        code: Option<u16>,
        detail: &str,
        counted: bool,
    ) -> anyhow::Result<()> {
        let now = self.outbox.now_millis();
        let mut tx = self.outbox.store.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE emails SET send_after = $2, last_error = $3, lease_until = 0, updated_at = $4, attempts = attempts - $5 WHERE id = $1 AND lease_until = $6",
        )
        .bind(&email.id)
        .bind(at)
        .bind(counted.then_some(detail))
        .bind(now)
        .bind(i64::from(!counted))
        .bind(email.lease)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return lost_lease(email);
        }
        let detail = if counted {
            detail.to_owned()
        } else {
            format!("{detail}; next try at {at}")
        };
        log_attempt(&mut tx, email, outcome, code, &detail, now, counted).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Another node took the email over (this one was too slow): leave it the record.
fn lost_lease(email: &Claimed) -> anyhow::Result<()> {
    tracing::warn!(email = %email.id, "lease lost before the outcome was recorded");
    Ok(())
}

async fn log_attempt(
    conn: &mut sqlx::AnyConnection,
    email: &Claimed,
    outcome: &str,
    code: Option<u16>,
    detail: &str,
    now: i64,
    counted: bool,
) -> Result<(), sqlx::Error> {
    let attempt = if counted {
        email.attempts
    } else {
        email.attempts - 1
    };
    sqlx::query(
        "INSERT INTO email_attempts (email_id, tenant_id, attempt, started_at, finished_at, outcome, smtp_code, detail) VALUES ($1, $2, $3, $4, $4, $5, $6, $7)",
    )
    .bind(&email.id)
    .bind(&email.tenant)
    .bind(attempt)
    .bind(now)
    .bind(outcome)
    .bind(code.map(i64::from))
    .bind(detail.chars().take(2000).collect::<String>())
    .execute(conn)
    .await?;
    Ok(())
}

/// Sends due emails until `stop`; woken early when an email is due now.
pub async fn run(mailer: Arc<Mailer>, stop: CancellationToken) {
    let concurrency = mailer.outbox.config.concurrency;
    let poll = mailer.outbox.poll_interval;
    tracing::info!(transport = %mailer.transport.describe(), "email outbox worker started");
    let mut counted: Option<tokio::time::Instant> = None;
    loop {
        // The backlog gauge, at most once per poll interval.
        if counted.is_none_or(|at| at.elapsed() >= poll) {
            counted = Some(tokio::time::Instant::now());
            let outbox = &mailer.outbox;
            match super::store::backlog(&outbox.store, outbox.now_millis()).await {
                Ok((due, scheduled)) => outbox.metrics.backlog.set_email_outbox(due, scheduled),
                Err(e) => tracing::debug!(error = %e, "counting the email backlog failed"),
            }
        }
        // One wave at a time: every claimed email starts at once, so each
        // finishes within its lease (an attempt is bounded by half of it).
        match mailer.claim(concurrency).await {
            Ok(batch) if !batch.is_empty() => {
                futures_util::stream::iter(batch)
                    .for_each_concurrent(concurrency, |email| {
                        let mailer = &mailer;
                        async move {
                            let id = email.id.clone();
                            if let Err(e) = mailer.handle(email).await {
                                tracing::warn!(email = %id, error = %e, "email not settled; it is retried after its lease");
                            }
                        }
                    })
                    .await;
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "claiming emails failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = mailer.outbox.woken() => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
}
