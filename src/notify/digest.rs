//! Daily and weekly digests: at each user's local digest hour, one email
//! grouping the unread notifications of the categories they asked to
//! receive that way, created since the previous digest.
//!
//! Claiming a period is a compare-and-set on the user's preferences row in
//! the same transaction as the email, and the email's dedupe key names the
//! period, so two nodes (or a restart) never produce two digests for one
//! user and period.

use std::sync::Arc;

use sqlx::{AssertSqlSafe, Row};
use tokio_util::sync::CancellationToken;

use super::{
    Notify,
    email_guard::kind,
    email_render::{self, DigestItem},
    parse_stored,
    prefs::{Frequency, Preferences},
    unsubscribe::Stop,
};
use crate::email::{self, NewEmail};

/// Items listed in one digest; the rest are counted.
const MAX_ITEMS: usize = 50;

pub async fn run(notify: Arc<Notify>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(notify.email.digest_tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                match run_once(&notify).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(digests = n, "digests queued");
                        notify.outbox.wake();
                    }
                    Err(e) => tracing::warn!(error = %e, "digest pass failed"),
                }
            }
        }
    }
}

/// One pass over the users with digest preferences; returns the digests queued.
pub async fn run_once(notify: &Notify) -> anyhow::Result<usize> {
    let now = notify.clock.now_millis();
    let rows = sqlx::query(
        "SELECT p.tenant_id, p.user_id, p.settings, p.daily_period, p.daily_cutoff, p.weekly_period, p.weekly_cutoff, u.email \
         FROM notification_preferences p JOIN users u ON u.id = p.user_id \
         WHERE p.has_digest = 1 AND u.disabled_at IS NULL",
    )
    .fetch_all(&notify.store.pool)
    .await?;
    let mut queued = 0;
    for row in rows {
        let tenant: String = row.try_get("tenant_id")?;
        let user: String = row.try_get("user_id")?;
        let email: String = row.try_get("email")?;
        let prefs = parse_stored(&row.try_get::<String, _>("settings")?);
        for (frequency, period_col, cutoff_col) in [
            (Frequency::Daily, "daily_period", "daily_cutoff"),
            (Frequency::Weekly, "weekly_period", "weekly_cutoff"),
        ] {
            let last: Option<String> = row.try_get(period_col)?;
            let Some(period) = prefs.digest_due(frequency, now, last.as_deref()) else {
                continue;
            };
            let cutoff: Option<i64> = row.try_get(cutoff_col)?;
            let span = match frequency {
                Frequency::Weekly => 7 * 24 * 3600 * 1000,
                _ => 24 * 3600 * 1000,
            };
            let since = cutoff.unwrap_or(now - span);
            let job = Job {
                tenant: &tenant,
                user: &user,
                email: &email,
                prefs: &prefs,
                frequency,
                period: &period,
                last: last.as_deref(),
                since,
                now,
                period_col,
                cutoff_col,
            };
            match one(notify, &job).await {
                Ok(true) => queued += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(%user, error = %e, "digest failed; retried next pass"),
            }
        }
    }
    Ok(queued)
}

struct Job<'a> {
    tenant: &'a str,
    user: &'a str,
    email: &'a str,
    prefs: &'a Preferences,
    frequency: Frequency,
    period: &'a str,
    last: Option<&'a str>,
    since: i64,
    now: i64,
    period_col: &'static str,
    cutoff_col: &'static str,
}

/// Claims the period and queues the digest (if anything is unread); `true`
/// when an email was queued.
async fn one(notify: &Notify, job: &Job<'_>) -> anyhow::Result<bool> {
    let categories: Vec<&str> = job
        .prefs
        .categories
        .iter()
        .filter(|(_, c)| c.email && c.frequency == job.frequency)
        .map(|(name, _)| name.as_str())
        .collect();
    let mut tx = notify.store.pool.begin().await?;
    let claimed = sqlx::query(AssertSqlSafe(format!(
        "UPDATE notification_preferences SET {p} = $3, {c} = $4 WHERE tenant_id = $1 AND user_id = $2 AND ({p} IS NULL OR {p} = $5)",
        p = job.period_col,
        c = job.cutoff_col
    )))
    .bind(job.tenant)
    .bind(job.user)
    .bind(job.period)
    .bind(job.now)
    .bind(job.last.unwrap_or(""))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if claimed == 0 || categories.is_empty() {
        tx.commit().await?;
        return Ok(false);
    }
    let list: Vec<String> = (0..categories.len())
        .map(|i| format!("${}", i + 5))
        .collect();
    let sql = format!(
        "SELECT category, title, body, url FROM notifications WHERE tenant_id = $1 AND user_id = $2 AND status = 0 \
         AND created_at > $3 AND created_at <= $4 AND priority < 3 AND category IN ({}) ORDER BY category, id DESC",
        list.join(", ")
    );
    let mut q = sqlx::query(AssertSqlSafe(sql))
        .bind(job.tenant)
        .bind(job.user)
        .bind(job.since)
        .bind(job.now);
    for c in &categories {
        q = q.bind(*c);
    }
    let rows = q.fetch_all(&mut *tx).await?;
    if rows.is_empty() {
        tx.commit().await?;
        return Ok(false);
    }
    let total = rows.len();
    let items = rows
        .iter()
        .take(MAX_ITEMS)
        .map(|r| {
            Ok(DigestItem {
                category: r.try_get("category")?,
                title: r.try_get("title")?,
                body: r.try_get("body")?,
                link: r
                    .try_get::<Option<String>, _>("url")?
                    .map(|u| notify.absolute(&u)),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let locale = job.prefs.locale.unwrap_or(notify.default_locale());
    let preferences = notify.preferences_link();
    let rendered = email_render::digest(
        locale,
        job.frequency == Frequency::Weekly,
        &items,
        total,
        preferences.as_deref(),
    );
    let email = NewEmail {
        tenant: job.tenant.to_owned(),
        user: job.user.to_owned(),
        cause_id: None,
        kind: kind::DIGEST,
        dedupe_key: format!(
            "digest:{}:{}:{}:{}",
            job.tenant,
            job.user,
            job.frequency.as_str(),
            job.period
        ),
        to: job.email.to_owned(),
        subject: rendered.subject,
        text: rendered.text,
        html: rendered.html,
        critical: false,
        send_after: job.now,
        one_click_unsubscribe: preferences
            .as_ref()
            .and_then(|_| notify.one_click_link(job.tenant, job.user, Stop::Digest(job.frequency))),
        list_unsubscribe: preferences,
    };
    let inserted = email::insert_many(&mut tx, &[email], job.now).await?;
    tx.commit().await?;
    Ok(inserted > 0)
}
