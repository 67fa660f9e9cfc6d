//! The fan-out worker: claims open triggers (new, or abandoned by a
//! crashed node once their lease lapsed) and paces them page by page,
//! writing up to [`write_window`] pages at once and publishing each
//! page's live events in order once it committed. What one page reads and
//! writes is [`super::fanout_page`]'s; accepting a trigger is
//! [`super::trigger`]'s.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use futures_util::StreamExt;
use serde_json::Value;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use super::{
    Notify,
    counts::{self, Counts},
    fanout_page::{read_page, write_page},
    inbox::Item,
    live,
    recipients::RecipientSpec,
    types::{CompiledType, TypeDef},
};
use crate::{
    ids::{TenantId, now_millis},
    store::Backend,
};

/// Accepting triggers is [`super::trigger`]'s; these stay reachable here
/// for the callers that name them by this path.
pub use super::trigger::{Recipients, TriggerRequest};

/// Live events published at once after a page commits.
const PUBLISH_CONCURRENCY: usize = 64;

/// A trigger claimed by this node.
pub(super) struct Claimed {
    pub(super) id: String,
    pub(super) tenant: TenantId,
    pub(super) ty: CompiledType,
    pub(super) payload: String,
    pub(super) payload_value: Value,
    pub(super) spec: RecipientSpec,
    pub(super) actor: Option<String>,
    pub(super) resume_after: String,
}

/// The fan-out worker: claims open triggers (new, or abandoned by a crashed
/// node once their lease lapsed) and processes them page by page.
pub async fn run(notify: Arc<Notify>, stop: CancellationToken) {
    let mut counted: Option<tokio::time::Instant> = None;
    loop {
        // The backlog gauge, at most once per poll interval.
        if counted.is_none_or(|at| at.elapsed() >= notify.config.poll_interval) {
            counted = Some(tokio::time::Instant::now());
            match super::trigger::backlog(&notify.store).await {
                Ok((pending, processing)) => notify
                    .metrics
                    .backlog
                    .set_notification_triggers(pending, processing),
                Err(e) => tracing::debug!(error = %e, "counting the trigger backlog failed"),
            }
        }
        match claim(&notify).await {
            Ok(Some(trigger)) => {
                let id = trigger.id.clone();
                if let Err(e) = process(&notify, trigger, &stop).await {
                    tracing::warn!(trigger = %id, error = %e, "fan-out interrupted; it resumes after its lease");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(notify.config.poll_interval) => {}
                    }
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "claiming triggers failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = notify.fanout_wake.notified() => {}
            _ = tokio::time::sleep(notify.config.poll_interval) => {}
        }
    }
}

async fn claim(notify: &Notify) -> anyhow::Result<Option<Claimed>> {
    let now = now_millis();
    let lease_until = now + notify.config.lease.as_millis() as i64;
    let row = sqlx::query(
        "UPDATE notification_triggers SET status = 'processing', lease_until = $1, updated_at = $2 \
         WHERE id = (SELECT id FROM notification_triggers WHERE status IN ('pending', 'processing') AND lease_until < $2 ORDER BY created_at LIMIT 1) \
         AND status IN ('pending', 'processing') AND lease_until < $2 \
         RETURNING id, tenant_id, type_def, payload, recipients, actor_id, resume_after",
    )
    .bind(lease_until)
    .bind(now)
    .fetch_optional(&notify.store.pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let id: String = row.try_get("id")?;
    let parsed = (|| -> anyhow::Result<Claimed> {
        let def: TypeDef = serde_json::from_str(&row.try_get::<String, _>("type_def")?)?;
        let payload: String = row.try_get("payload")?;
        Ok(Claimed {
            id: id.clone(),
            tenant: TenantId::from(row.try_get::<String, _>("tenant_id")?),
            ty: CompiledType::compile(def)?,
            payload_value: serde_json::from_str(&payload)?,
            payload,
            spec: serde_json::from_str(&row.try_get::<String, _>("recipients")?)?,
            actor: row.try_get("actor_id")?,
            resume_after: row.try_get("resume_after")?,
        })
    })();
    match parsed {
        Ok(claimed) => Ok(Some(claimed)),
        Err(e) => {
            // Cannot happen for rows this version wrote; never retry it forever.
            sqlx::query("UPDATE notification_triggers SET status = 'failed', error = $2, completed_at = $3 WHERE id = $1")
                .bind(&id)
                .bind(e.to_string())
                .bind(now)
                .execute(&notify.store.pool)
                .await?;
            Ok(None)
        }
    }
}

/// One live event to publish after a page commits.
pub(super) struct Event {
    pub(super) user: String,
    pub(super) item: Item,
}

/// Pages of one trigger written at once. PostgreSQL writes a page on one
/// backend, one core: two pages in flight use a second one. SQLite has a
/// single writer, so a second page would only wait for the first.
fn write_window(notify: &Notify) -> usize {
    match notify.store.backend {
        Backend::Postgres => 2,
        Backend::Sqlite => 1,
    }
}

/// A page being written by its own task.
struct InFlight {
    write: tokio::task::JoinHandle<anyhow::Result<(Vec<Event>, u64)>>,
    last: String,
    recipients: usize,
    started: std::time::Instant,
}

/// Fans a claimed trigger out: reads pages ahead, writes up to
/// [`write_window`] of them concurrently, and publishes each page's live
/// events in page order once it committed.
///
/// Crash safety: a page records as its resume point only the end of the
/// newest page already known committed, so a node that takes over after the
/// lease resumes at or before the first uncommitted page; the pages it
/// redoes are idempotent.
async fn process(
    notify: &Arc<Notify>,
    trigger: Claimed,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let trigger = Arc::new(trigger);
    let window = write_window(notify);
    let mut committed = trigger.resume_after.clone();
    let mut after = trigger.resume_after.clone();
    let mut exhausted = false;
    let mut in_flight: VecDeque<InFlight> = VecDeque::with_capacity(window);
    let mut publishing: Option<tokio::task::JoinHandle<()>> = None;
    let mut failure: Option<anyhow::Error> = None;
    loop {
        // Start writes until the window is full; reading the next page
        // overlaps the writes already running.
        while failure.is_none() && !exhausted && in_flight.len() < window && !stop.is_cancelled() {
            match read_page(notify, &trigger, &after).await {
                Ok(Some(page)) => {
                    after = page.last.clone();
                    let (notify, trigger, resume_to) =
                        (notify.clone(), trigger.clone(), committed.clone());
                    in_flight.push_back(InFlight {
                        last: page.last.clone(),
                        recipients: page.recipients,
                        started: std::time::Instant::now(),
                        write: tokio::spawn(async move {
                            write_page(&notify, &trigger, &page, &resume_to).await
                        }),
                    });
                }
                Ok(None) => exhausted = true,
                Err(e) => failure = Some(e),
            }
        }
        let Some(oldest) = in_flight.pop_front() else {
            break;
        };
        let (events, emails) = match oldest.write.await {
            Ok(Ok(written)) => written,
            Ok(Err(e)) => {
                // Let the other writes finish; the node that resumes redoes
                // whatever is after `committed`.
                failure.get_or_insert(e);
                continue;
            }
            Err(e) => {
                failure.get_or_insert(e.into());
                continue;
            }
        };
        if failure.is_some() {
            continue;
        }
        committed = oldest.last;
        tracing::debug!(trigger = %trigger.id, recipients = oldest.recipients, ms = oldest.started.elapsed().as_millis() as u64, "fan-out page written");
        if emails > 0 {
            notify.outbox.wake();
        }
        // Publish this page while the next ones are written, but never more
        // than one page behind.
        if let Some(previous) = publishing.take() {
            let _ = previous.await;
        }
        publishing = Some(tokio::spawn(publish_page(
            notify.clone(),
            trigger.tenant.clone(),
            events,
        )));
    }
    if let Some(previous) = publishing.take() {
        let _ = previous.await;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    if exhausted {
        sqlx::query("UPDATE notification_triggers SET status = 'done', completed_at = $2, updated_at = $2, lease_until = 0 WHERE id = $1")
            .bind(&trigger.id)
            .bind(notify.clock.now_millis())
            .execute(&notify.store.pool)
            .await?;
    }
    // Otherwise stopping early: the rest is left to whichever node claims
    // the trigger after its lease.
    Ok(())
}

/// Publishes one committed page's `notification.created` events, each with
/// its recipient's counters.
async fn publish_page(notify: Arc<Notify>, tenant: TenantId, events: Vec<Event>) {
    let started = std::time::Instant::now();
    let n = events.len();
    let counts = match page_counts(&notify, &tenant, &events).await {
        Ok(counts) => counts,
        Err(e) => {
            // The rows are committed and the inbox serves them; live events
            // are best effort, and an event with wrong counters would be
            // worse than none.
            tracing::warn!(error = %e, "reading counters for live events failed; events not published");
            return;
        }
    };
    let empty = Counts::default();
    futures_util::stream::iter(events)
        .for_each_concurrent(PUBLISH_CONCURRENCY, |event| {
            let (notify, tenant) = (&notify, &tenant);
            let counts = counts.get(&event.user).unwrap_or(&empty);
            async move {
                let created = live::Created {
                    kind: "notification.created",
                    notification: &event.item,
                    counts,
                };
                live::publish(&notify.gateway, tenant, &event.user, &created).await;
            }
        })
        .await;
    tracing::debug!(
        events = n,
        ms = started.elapsed().as_millis() as u64,
        "fan-out page published"
    );
}

/// The counters of a page's recipients, read after its commit. Reading
/// them later than the commit is harmless: each snapshot carries its
/// `version`, and clients keep the newest. Reading them outside the write
/// transaction keeps it short, and overlaps the read with the next page.
async fn page_counts(
    notify: &Notify,
    tenant: &TenantId,
    events: &[Event],
) -> anyhow::Result<HashMap<String, Counts>> {
    let users: Vec<&str> = events.iter().map(|e| e.user.as_str()).collect();
    let mut conn = notify.store.pool.acquire().await?;
    Ok(counts::snapshots(&mut conn, tenant.as_str(), &users).await?)
}
