//! Triggers: accepting one (checked, durable, idempotent) and fanning it out
//! in the background.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, value::RawValue};
use sqlx::{AnyConnection, AssertSqlSafe, Row, any::AnyRow};
use tokio_util::sync::CancellationToken;

use super::{
    Notify,
    counts::{self, Counts, Delta},
    email_guard::kind,
    email_render,
    inbox::Item,
    live, parse_stored,
    prefs::{EmailPlan, Preferences, plan},
    recipients::{Recipient, RecipientSpec},
    template::{Context, lookup},
    type_store,
    types::{CompiledType, Locale, TypeDef},
};
use crate::{
    auth::tokens::sha256_hex,
    email::{self, NewEmail},
    error::{ApiError, ApiResult},
    ids::{TenantId, now_millis},
    store::{
        Backend, is_unique_violation,
        json_rows::{self, Column, backend_of},
    },
};

/// Largest trigger payload, in bytes of JSON.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;
/// Live events published at once after a page commits.
const PUBLISH_CONCURRENCY: usize = 64;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    #[serde(rename = "type")]
    pub type_key: String,
    #[serde(default = "empty_object")]
    pub payload: Value,
    pub recipients: RecipientSpec,
    /// The user who caused the event: never notified of their own action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// A trigger as the API reports it.
#[derive(Debug, Serialize)]
pub struct TriggerView {
    pub id: String,
    #[serde(rename = "type")]
    pub type_key: String,
    /// `pending`, `processing`, `done` or `failed`.
    pub status: String,
    /// Users the recipients resolved to when the trigger was accepted.
    pub recipients: i64,
    /// Recipients handled so far.
    pub processed: i64,
    /// Inbox notifications created.
    pub created: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: i64,
    pub completed_at: Option<i64>,
}

const VIEW_COLUMNS: &str = "id, type_key, status, total, processed, created_count, error, created_at, completed_at, fingerprint";

fn view_from_row(row: &AnyRow) -> Result<TriggerView, sqlx::Error> {
    Ok(TriggerView {
        id: row.try_get("id")?,
        type_key: row.try_get("type_key")?,
        status: row.try_get("status")?,
        recipients: row.try_get("total")?,
        processed: row.try_get("processed")?,
        created: row.try_get("created_count")?,
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        completed_at: row.try_get("completed_at")?,
    })
}

/// Checks the payload against the type: an object with every variable.
pub fn check_payload(def: &TypeDef, payload: &Value) -> ApiResult<()> {
    if !payload.is_object() {
        return Err(ApiError::invalid(
            "invalid_payload",
            "payload must be a JSON object",
        ));
    }
    let size = serde_json::to_string(payload)
        .map(|s| s.len())
        .unwrap_or(usize::MAX);
    if size > MAX_PAYLOAD_BYTES {
        return Err(ApiError::invalid(
            "invalid_payload",
            format!("payload is {size} bytes; the limit is {MAX_PAYLOAD_BYTES}"),
        ));
    }
    let missing: Vec<&str> = def
        .variables
        .iter()
        .filter(|v| lookup(payload, v).is_none())
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::invalid(
            "payload_incomplete",
            format!(
                "payload does not fill the templates of `{}`: missing {}",
                def.key,
                missing.join(", ")
            ),
        ));
    }
    Ok(())
}

impl Notify {
    pub async fn trigger_view(&self, tenant: &str, id: &str) -> ApiResult<TriggerView> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {VIEW_COLUMNS} FROM notification_triggers WHERE tenant_id = $1 AND id = $2"
        )))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&self.store.pool)
        .await?
        .ok_or(ApiError::NotFound("trigger"))?;
        Ok(view_from_row(&row)?)
    }

    /// A previous trigger under the same idempotency key: its view if the
    /// request is the same, an error if it differs.
    async fn replay(
        &self,
        tenant: &str,
        key: &str,
        fingerprint: &str,
    ) -> ApiResult<Option<TriggerView>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {VIEW_COLUMNS} FROM notification_triggers WHERE tenant_id = $1 AND idempotency_key = $2"
        )))
        .bind(tenant)
        .bind(key)
        .fetch_optional(&self.store.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        if row.try_get::<Option<String>, _>("fingerprint")?.as_deref() != Some(fingerprint) {
            return Err(ApiError::invalid(
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different trigger",
            ));
        }
        Ok(Some(view_from_row(&row)?))
    }

    /// Accepts a trigger: checks it, stores it, wakes the fan-out. Returns
    /// the trigger and whether it is a replay of an earlier identical one.
    ///
    /// With `Recipients::MayBeNone`, recipients that resolve to nobody are
    /// not an error: the trigger is stored as done, for its idempotency key.
    pub async fn trigger(
        &self,
        tenant: &TenantId,
        mut req: TriggerRequest,
        idempotency_key: Option<&str>,
        expected: Recipients,
    ) -> ApiResult<(TriggerView, bool)> {
        let fingerprint = sha256_hex(&serde_json::to_string(&req).map_err(anyhow::Error::from)?);
        if let Some(key) = idempotency_key
            && let Some(view) = self.replay(tenant.as_str(), key, &fingerprint).await?
        {
            return Ok((view, true));
        }
        let def = type_store::get(&self.store, tenant.as_str(), &req.type_key)
            .await?
            .ok_or_else(|| {
                ApiError::invalid(
                    "unknown_type",
                    format!("no notification type `{}` in this tenant", req.type_key),
                )
            })?;
        check_payload(&def, &req.payload)?;
        req.recipients.validate(&self.store, tenant).await?;
        let total = req
            .recipients
            .count(&self.store, tenant, req.actor.as_deref())
            .await?;
        if total == 0 && expected == Recipients::AtLeastOne {
            return Err(ApiError::invalid(
                "no_recipients",
                "the recipients resolve to no active user",
            ));
        }
        let id = uuid::Uuid::now_v7().to_string();
        let now = self.clock.now_millis();
        // Nobody to notify: nothing for the fan-out to do.
        let (status, completed_at) = if total == 0 {
            ("done", Some(now))
        } else {
            ("pending", None)
        };
        let inserted = sqlx::query(
            "INSERT INTO notification_triggers (id, tenant_id, type_key, type_def, payload, recipients, actor_id, idempotency_key, fingerprint, status, total, created_at, updated_at, completed_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $12, $10, $11, $11, $13)",
        )
        .bind(&id)
        .bind(tenant.as_str())
        .bind(&req.type_key)
        .bind(serde_json::to_string(&def).map_err(anyhow::Error::from)?)
        .bind(serde_json::to_string(&req.payload).map_err(anyhow::Error::from)?)
        .bind(serde_json::to_string(&req.recipients).map_err(anyhow::Error::from)?)
        .bind(req.actor.as_deref())
        .bind(idempotency_key)
        .bind(&fingerprint)
        .bind(total)
        .bind(now)
        .bind(status)
        .bind(completed_at)
        .execute(&self.store.pool)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                // A concurrent duplicate won the race.
                let key = idempotency_key.unwrap_or_default();
                return match self.replay(tenant.as_str(), key, &fingerprint).await? {
                    Some(view) => Ok((view, true)),
                    None => Err(e.into()),
                };
            }
            Err(e) => return Err(e.into()),
        }
        self.metrics.notification_triggers.inc();
        if total > 0 {
            self.fanout_wake.notify_one();
        }
        Ok((
            TriggerView {
                id,
                type_key: req.type_key,
                status: status.into(),
                recipients: total,
                processed: 0,
                created: 0,
                error: None,
                created_at: now,
                completed_at,
            },
            false,
        ))
    }
}

/// Whether a trigger that resolves to no recipient is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipients {
    /// The caller named who to notify: nobody is a mistake (`no_recipients`).
    AtLeastOne,
    /// An event reported for its own sake (a project's), which may concern
    /// nobody but its actor.
    MayBeNone,
}

/// A trigger claimed by this node.
struct Claimed {
    id: String,
    tenant: TenantId,
    ty: CompiledType,
    payload: String,
    payload_value: Value,
    spec: RecipientSpec,
    actor: Option<String>,
    resume_after: String,
}

/// The fan-out worker: claims open triggers (new, or abandoned by a crashed
/// node once their lease lapsed) and processes them page by page.
pub async fn run(notify: Arc<Notify>, stop: CancellationToken) {
    loop {
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
struct Event {
    user: String,
    item: Item,
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

/// Preferences of many users in one query (defaults for those without).
pub async fn load_preferences(
    conn: &mut AnyConnection,
    tenant: &str,
    users: &[&str],
) -> Result<HashMap<String, Preferences>, sqlx::Error> {
    let mut out = HashMap::new();
    if users.is_empty() {
        return Ok(out);
    }
    let backend = backend_of(conn);
    let sql = format!(
        "SELECT {} FROM notification_preferences WHERE tenant_id = $1 AND user_id IN ({})",
        json_rows::aggregate(backend, &["user_id", "settings"]),
        json_rows::strings(backend, 2)
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(tenant)
        .bind(json_rows::encode(users)?)
        .fetch_one(conn)
        .await?;
    for (user, settings) in json_rows::decode::<(String, String)>(&row)? {
        out.insert(user, parse_stored(&settings));
    }
    Ok(out)
}

/// One recipient of a page, with what the preferences decided and the
/// texts rendered in their locale.
struct Planned {
    recipient: Recipient,
    locale: Locale,
    email: EmailPlan,
    in_app: bool,
    title: String,
    body: String,
    url: Option<String>,
}

/// The next page of recipients after `after`, planned and rendered, or
/// `None` when the trigger has reached its last recipient. Reads only.
struct Page {
    planned: Vec<Planned>,
    /// Recipients on the page, delivered to or not.
    recipients: usize,
    /// The greatest user id of the page: where the next one starts.
    last: String,
}

async fn read_page(
    notify: &Notify,
    trigger: &Claimed,
    after: &str,
) -> anyhow::Result<Option<Page>> {
    let tenant = trigger.tenant.as_str();
    let Some((recipients, last)) = trigger
        .spec
        .page(
            &notify.store,
            tenant,
            trigger.actor.as_deref(),
            after,
            notify.config.fanout_batch,
        )
        .await?
    else {
        return Ok(None);
    };
    let ty = &trigger.ty;
    let mut conn = notify.store.pool.acquire().await?;
    let ids: Vec<&str> = recipients.iter().map(|r| r.id.as_str()).collect();
    let prefs = load_preferences(&mut conn, tenant, &ids).await?;
    drop(conn);
    let default_prefs = Preferences::default();
    let default_locale = notify.default_locale();
    let count = recipients.len();
    let mut planned = Vec::with_capacity(count);
    for r in recipients {
        let p = prefs.get(&r.id).unwrap_or(&default_prefs);
        let decision = plan(&ty.def, p);
        if !decision.delivers() {
            continue;
        }
        let locale = p.locale.unwrap_or(default_locale);
        let ctx = Context {
            payload: &trigger.payload_value,
            recipient_name: &r.name,
            recipient_email: &r.email,
        };
        let texts = ty.texts(locale);
        let (title, body) = (
            texts.title.render(&ctx, false),
            texts.body.render(&ctx, false),
        );
        let url = ty.url.as_ref().map(|u| u.render(&ctx, false));
        planned.push(Planned {
            recipient: r,
            locale,
            email: decision.email,
            in_app: decision.in_app,
            title,
            body,
            url,
        });
    }
    Ok(Some(Page {
        planned,
        recipients: count,
        last,
    }))
}

/// One page in one transaction: inbox rows, counters, outbox emails and the
/// trigger's progress, which advances to `resume_to`. Rows that already
/// exist (a page redone after a crash or a lost lease) are skipped by the
/// unique `(trigger_id, user_id)`, with their emails and counters.
async fn write_page(
    notify: &Notify,
    trigger: &Claimed,
    page: &Page,
    resume_to: &str,
) -> anyhow::Result<(Vec<Event>, u64)> {
    let tenant = trigger.tenant.as_str();
    let now = notify.clock.now_millis();
    let ty = &trigger.ty;
    let def = &ty.def;
    let planned = &page.planned;
    let lease_until = now_millis() + notify.config.lease.as_millis() as i64;
    let mut tx = notify.store.pool.begin().await?;
    if notify.store.backend == Backend::Sqlite {
        // A write as the first statement takes SQLite's write lock up front,
        // so this transaction never has to upgrade a read lock (which fails
        // at once if another connection wrote meanwhile). PostgreSQL leaves
        // the trigger row alone until the end: concurrent pages of the same
        // trigger then wait on its row lock only for the other's commit.
        sqlx::query("UPDATE notification_triggers SET lease_until = $2 WHERE id = $1")
            .bind(&trigger.id)
            .bind(lease_until)
            .execute(&mut *tx)
            .await?;
    }

    let in_app: Vec<&Planned> = planned.iter().filter(|p| p.in_app).collect();
    let mut created: HashMap<String, i64> = HashMap::with_capacity(in_app.len());
    if !in_app.is_empty() {
        let rows: Vec<(&str, &str, &str, Option<&str>)> = in_app
            .iter()
            .map(|p| {
                (
                    p.recipient.id.as_str(),
                    p.title.as_str(),
                    p.body.as_str(),
                    p.url.as_deref(),
                )
            })
            .collect();
        let rows_sql = json_rows::select(
            notify.store.backend,
            8,
            &[
                Column::Text("user_id"),
                Column::Text("title"),
                Column::Text("body"),
                Column::Text("url"),
            ],
        );
        // `WHERE TRUE`: see `counts::apply`.
        let insert = format!(
            "INSERT INTO notifications (tenant_id, user_id, trigger_id, type_key, category, priority, title, body, url, payload, created_at) \
             SELECT $1, r.user_id, $2, $3, $4, $5, r.title, r.body, r.url, $6, $7 FROM ({rows_sql}) r WHERE TRUE \
             ON CONFLICT (trigger_id, user_id) DO NOTHING"
        );
        let bind = |sql: String| {
            sqlx::query(AssertSqlSafe(sql))
                .bind(tenant)
                .bind(&trigger.id)
                .bind(&def.key)
                .bind(&def.category)
                .bind(def.priority.rank())
                .bind(&trigger.payload)
                .bind(now)
        };
        // The ids of the rows this statement created (not those a redone
        // page finds already there), as one aggregated row.
        let ids = json_rows::aggregate(notify.store.backend, &["user_id", "id"]);
        let inserted = match notify.store.backend {
            Backend::Postgres => {
                let sql =
                    format!("WITH ins AS ({insert} RETURNING id, user_id) SELECT {ids} FROM ins");
                bind(sql)
                    .bind(json_rows::encode(&rows)?)
                    .fetch_one(&mut *tx)
                    .await?
            }
            // SQLite has no INSERT in a WITH. This transaction holds the
            // write lock (its first statement wrote), so the rows above the
            // current greatest id are exactly the ones it inserts.
            Backend::Sqlite => {
                let floor: i64 =
                    sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM notifications")
                        .fetch_one(&mut *tx)
                        .await?;
                bind(insert)
                    .bind(json_rows::encode(&rows)?)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT {ids} FROM notifications WHERE id > $1 AND trigger_id = $2"
                )))
                .bind(floor)
                .bind(&trigger.id)
                .fetch_one(&mut *tx)
                .await?
            }
        };
        created.extend(json_rows::decode::<(String, i64)>(&inserted)?);
    }

    let deltas: BTreeMap<(String, String), Delta> = created
        .keys()
        .map(|user| {
            (
                (user.clone(), def.category.clone()),
                Delta {
                    unread: 1,
                    unseen: 1,
                    ..Delta::default()
                },
            )
        })
        .collect();
    counts::apply(&mut tx, tenant, &deltas).await?;

    let mut emails = Vec::new();
    for p in planned {
        let notification_id = created.get(&p.recipient.id).copied();
        // In-app copy already there: this page was committed before.
        if p.in_app && notification_id.is_none() {
            continue;
        }
        let (kind, send_after) = match p.email {
            EmailPlan::None | EmailPlan::Digest => continue,
            EmailPlan::Now => (kind::NOTIFICATION, now),
            EmailPlan::Fallback => (
                kind::FALLBACK,
                now + notify.email.fallback_delay.as_millis() as i64,
            ),
        };
        let ctx = Context {
            payload: &trigger.payload_value,
            recipient_name: &p.recipient.name,
            recipient_email: &p.recipient.email,
        };
        let link = p.url.as_deref().map(|u| notify.absolute(u));
        let rendered = email_render::notification(ty, p.locale, &ctx, link.as_deref());
        emails.push(NewEmail {
            tenant: tenant.to_owned(),
            user: p.recipient.id.clone(),
            cause_id: notification_id,
            kind,
            dedupe_key: format!("n:{}:{}:email", trigger.id, p.recipient.id),
            to: p.recipient.email.clone(),
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
            critical: def.priority == super::types::Priority::Critical,
            send_after,
        });
    }
    let emailed = email::insert_many(&mut tx, &emails, now).await?;

    // `resume_after` only moves forward, and only to the end of a page known
    // to be committed (`resume_to`); `processed` counts a page redone after
    // a lost lease twice, hence the cap.
    sqlx::query(
        "UPDATE notification_triggers SET \
         resume_after = CASE WHEN resume_after < $2 THEN $2 ELSE resume_after END, \
         processed = CASE WHEN processed + $3 > total THEN total ELSE processed + $3 END, \
         created_count = created_count + $4, updated_at = $5, lease_until = $6 WHERE id = $1",
    )
    .bind(&trigger.id)
    .bind(resume_to)
    .bind(page.recipients as i64)
    .bind(created.len() as i64)
    .bind(now)
    .bind(lease_until)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    notify
        .metrics
        .notifications_created
        .inc_by(created.len() as u64);

    let events = in_app
        .iter()
        .filter_map(|p| {
            let id = *created.get(&p.recipient.id)?;
            Some(Event {
                user: p.recipient.id.clone(),
                item: Item {
                    id,
                    type_key: def.key.clone(),
                    category: def.category.clone(),
                    priority: def.priority,
                    title: p.title.clone(),
                    body: p.body.clone(),
                    url: p.url.clone(),
                    data: RawValue::from_string(trigger.payload.clone()).ok()?,
                    status: "unread",
                    seen_at: None,
                    read_at: None,
                    archived_at: None,
                    created_at: now,
                },
            })
        })
        .collect();
    Ok((events, emailed))
}
