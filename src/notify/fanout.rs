//! Triggers: accepting one (checked, durable, idempotent) and fanning it out
//! in the background.

use std::{
    collections::{BTreeMap, HashMap},
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
    email::{self, NewEmail, kind, render},
    error::{ApiError, ApiResult},
    ids::{TenantId, now_millis},
    store::{
        is_unique_violation,
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
    pub async fn trigger(
        &self,
        tenant: &TenantId,
        mut req: TriggerRequest,
        idempotency_key: Option<&str>,
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
        if total == 0 {
            return Err(ApiError::invalid(
                "no_recipients",
                "the recipients resolve to no active user",
            ));
        }
        let id = uuid::Uuid::now_v7().to_string();
        let now = self.clock.now_millis();
        let inserted = sqlx::query(
            "INSERT INTO notification_triggers (id, tenant_id, type_key, type_def, payload, recipients, actor_id, idempotency_key, fingerprint, status, total, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10, $11, $11)",
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
        self.fanout_wake.notify_one();
        Ok((
            TriggerView {
                id,
                type_key: req.type_key,
                status: "pending".into(),
                recipients: total,
                processed: 0,
                created: 0,
                error: None,
                created_at: now,
                completed_at: None,
            },
            false,
        ))
    }
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

async fn process(
    notify: &Arc<Notify>,
    mut trigger: Claimed,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let mut publishing: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        if stop.is_cancelled() {
            // Leave the rest to whichever node claims it after the lease.
            break;
        }
        let page = trigger
            .spec
            .page(
                &notify.store,
                trigger.tenant.as_str(),
                trigger.actor.as_deref(),
                &trigger.resume_after,
                notify.config.fanout_batch,
            )
            .await?;
        let Some(last) = page.last().map(|r| r.id.clone()) else {
            sqlx::query("UPDATE notification_triggers SET status = 'done', completed_at = $2, updated_at = $2, lease_until = 0 WHERE id = $1")
                .bind(&trigger.id)
                .bind(notify.clock.now_millis())
                .execute(&notify.store.pool)
                .await?;
            break;
        };
        let (events, counts, emails) = write_page(notify, &trigger, &page, &last).await?;
        trigger.resume_after = last;
        if emails > 0 {
            notify.outbox_wake.notify_one();
        }
        // Publish this page while the next one is written, but never more
        // than one page behind.
        if let Some(previous) = publishing.take() {
            let _ = previous.await;
        }
        let notify = notify.clone();
        let tenant = trigger.tenant.clone();
        publishing = Some(tokio::spawn(async move {
            futures_util::stream::iter(events)
                .for_each_concurrent(PUBLISH_CONCURRENCY, |event| {
                    let notify = &notify;
                    let tenant = &tenant;
                    let counts = counts.get(&event.user);
                    async move {
                        let empty = Counts::default();
                        let created = live::Created {
                            kind: "notification.created",
                            notification: &event.item,
                            counts: counts.unwrap_or(&empty),
                        };
                        live::publish(&notify.gateway, tenant, &event.user, &created).await;
                    }
                })
                .await;
        }));
    }
    if let Some(previous) = publishing.take() {
        let _ = previous.await;
    }
    Ok(())
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
    let sql = format!(
        "SELECT user_id, settings FROM notification_preferences WHERE tenant_id = $1 AND user_id IN ({})",
        json_rows::strings(backend_of(conn), 2)
    );
    let q = sqlx::query(AssertSqlSafe(sql))
        .bind(tenant)
        .bind(json_rows::encode(users)?);
    for row in q.fetch_all(conn).await? {
        out.insert(
            row.try_get("user_id")?,
            parse_stored(&row.try_get::<String, _>("settings")?),
        );
    }
    Ok(out)
}

/// One page in one transaction: inbox rows, counters, outbox emails and the
/// trigger's progress. Rows that already exist (a page redone after a crash)
/// are skipped by the unique `(trigger_id, user_id)`, with their emails.
async fn write_page(
    notify: &Notify,
    trigger: &Claimed,
    page: &[Recipient],
    last: &str,
) -> anyhow::Result<(Vec<Event>, HashMap<String, Counts>, u64)> {
    let tenant = trigger.tenant.as_str();
    let now = notify.clock.now_millis();
    let ty = &trigger.ty;
    let def = &ty.def;
    let mut conn = notify.store.pool.acquire().await?;
    let ids: Vec<&str> = page.iter().map(|r| r.id.as_str()).collect();
    let prefs = load_preferences(&mut conn, tenant, &ids).await?;
    drop(conn);
    let default_prefs = Preferences::default();
    let default_locale = notify.default_locale();

    struct Planned<'a> {
        recipient: &'a Recipient,
        locale: Locale,
        email: EmailPlan,
        in_app: bool,
        title: String,
        body: String,
        url: Option<String>,
    }
    let mut planned = Vec::with_capacity(page.len());
    for r in page {
        let p = prefs.get(&r.id).unwrap_or(&default_prefs);
        let decision = plan(def, p);
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
        planned.push(Planned {
            recipient: r,
            locale,
            email: decision.email,
            in_app: decision.in_app,
            title: texts.title.render(&ctx, false),
            body: texts.body.render(&ctx, false),
            url: ty.url.as_ref().map(|u| u.render(&ctx, false)),
        });
    }

    let mut tx = notify.store.pool.begin().await?;
    // Progress first: a write as the first statement takes SQLite's write
    // lock up front, so this transaction never has to upgrade a read lock.
    sqlx::query("UPDATE notification_triggers SET resume_after = $2, processed = processed + $3, updated_at = $4, lease_until = $5 WHERE id = $1")
        .bind(&trigger.id)
        .bind(last)
        .bind(page.len() as i64)
        .bind(now)
        .bind(now_millis() + notify.config.lease.as_millis() as i64)
        .execute(&mut *tx)
        .await?;

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
        let sql = format!(
            "INSERT INTO notifications (tenant_id, user_id, trigger_id, type_key, category, priority, title, body, url, payload, created_at) \
             SELECT $1, r.user_id, $2, $3, $4, $5, r.title, r.body, r.url, $6, $7 FROM ({rows_sql}) r WHERE TRUE \
             ON CONFLICT (trigger_id, user_id) DO NOTHING RETURNING id, user_id"
        );
        let inserted = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(&trigger.id)
            .bind(&def.key)
            .bind(&def.category)
            .bind(def.priority.rank())
            .bind(&trigger.payload)
            .bind(now)
            .bind(json_rows::encode(&rows)?)
            .fetch_all(&mut *tx)
            .await?;
        for row in inserted {
            created.insert(row.try_get("user_id")?, row.try_get("id")?);
        }
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
    let users: Vec<&str> = created.keys().map(String::as_str).collect();
    let counts = counts::snapshots(&mut tx, tenant, &users).await?;

    let mut emails = Vec::new();
    for p in &planned {
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
        let rendered = render::notification(ty, p.locale, &ctx, link.as_deref());
        emails.push(NewEmail {
            tenant: tenant.to_owned(),
            user: p.recipient.id.clone(),
            notification_id,
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

    sqlx::query(
        "UPDATE notification_triggers SET created_count = created_count + $2 WHERE id = $1",
    )
    .bind(&trigger.id)
    .bind(created.len() as i64)
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
    Ok((events, counts, emailed))
}
