//! Accepting a trigger: the request and its checks (type, payload,
//! recipients), idempotency, and the one row that makes it durable. The
//! work it causes is the fan-out's ([`super::fanout`]); keeping the two
//! apart separates what an API caller waits for (this) from what runs in
//! the background.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{AssertSqlSafe, Row, any::AnyRow};

use super::{Notify, recipients::RecipientSpec, template::lookup, type_store, types::TypeDef};
use crate::{
    auth::tokens::sha256_hex,
    error::{ApiError, ApiResult},
    ids::TenantId,
    store::is_unique_violation,
};

/// Largest trigger payload, in bytes of JSON.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;

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

/// Triggers accepted and not yet fanned out, across all tenants:
/// `(pending, processing)`. Two counts on the `(status, lease_until)`
/// index, for the backlog gauge.
pub async fn backlog(store: &crate::store::Store) -> Result<(i64, i64), sqlx::Error> {
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM notification_triggers WHERE status = 'pending') AS pending, \
         (SELECT COUNT(*) FROM notification_triggers WHERE status = 'processing') AS processing",
    )
    .fetch_one(&store.pool)
    .await?;
    Ok((row.try_get("pending")?, row.try_get("processing")?))
}
