//! Tenant-admin view of the outbox: emails by status (dead letters first of
//! all), each with its attempt log, and a retry for dead ones. The router
//! is generic over the application state: it needs only the [`Outbox`] and
//! the auth service from it.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{FromRef, Path, Query, State, rejection::QueryRejection},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, Row, any::AnyRow};

use super::Outbox;
use crate::{
    auth::{AuthService, extract::TenantAdmin},
    error::{ApiError, ApiResult},
};

pub fn router<S>() -> Router<S>
where
    Arc<Outbox>: FromRef<S>,
    Arc<AuthService>: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/api/v1/admin/emails", get(list))
        .route("/api/v1/admin/emails/{id}", get(find))
        .route("/api/v1/admin/emails/{id}/retry", post(retry))
}

/// Query-string errors in our format rather than axum's plain text.
pub fn query<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::invalid("invalid_query", e.body_text()))
}

#[derive(Serialize)]
struct EmailView {
    id: String,
    user_id: String,
    notification_id: Option<i64>,
    kind: String,
    to: String,
    subject: String,
    status: String,
    attempts: i64,
    send_after: i64,
    last_error: Option<String>,
    created_at: i64,
    sent_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log: Option<Vec<AttemptView>>,
}

#[derive(Serialize)]
struct AttemptView {
    attempt: i64,
    at: i64,
    outcome: String,
    smtp_code: Option<i64>,
    detail: String,
}

const COLUMNS: &str = "id, user_id, notification_id, kind, to_address, subject, status, attempts, send_after, last_error, created_at, sent_at";

fn view(row: &AnyRow) -> Result<EmailView, sqlx::Error> {
    Ok(EmailView {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        notification_id: row.try_get("notification_id")?,
        kind: row.try_get("kind")?,
        to: row.try_get("to_address")?,
        subject: row.try_get("subject")?,
        status: row.try_get("status")?,
        attempts: row.try_get("attempts")?,
        send_after: row.try_get("send_after")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        sent_at: row.try_get("sent_at")?,
        log: None,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

#[derive(Serialize)]
struct Page {
    items: Vec<EmailView>,
    next_cursor: Option<String>,
}

async fn list(
    State(outbox): State<Arc<Outbox>>,
    TenantAdmin(admin): TenantAdmin,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Page>> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(50).clamp(1, 200) as usize;
    let status = q.status.unwrap_or_else(|| "dead".into());
    if !matches!(status.as_str(), "pending" | "sent" | "cancelled" | "dead") {
        return Err(ApiError::invalid(
            "invalid_filter",
            "status: pending, sent, cancelled or dead",
        ));
    }
    // Ids are UUIDv7: ordered by creation, so they serve as the cursor.
    let after = if q.cursor.is_some() {
        " AND id < $3"
    } else {
        ""
    };
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM emails WHERE tenant_id = $1 AND status = $2{after} ORDER BY id DESC LIMIT {}",
        limit + 1
    )))
    .bind(admin.tenant().as_str())
    .bind(&status);
    let rows = match &q.cursor {
        Some(cursor) => rows.bind(cursor),
        None => rows,
    }
    .fetch_all(&outbox.store.pool)
    .await?;
    let mut items = rows.iter().map(view).collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|e| e.id.clone())
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}

async fn find(
    State(outbox): State<Arc<Outbox>>,
    TenantAdmin(admin): TenantAdmin,
    Path(id): Path<String>,
) -> ApiResult<Json<EmailView>> {
    let tenant = admin.tenant().as_str();
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM emails WHERE tenant_id = $1 AND id = $2"
    )))
    .bind(tenant)
    .bind(&id)
    .fetch_optional(&outbox.store.pool)
    .await?
    .ok_or(ApiError::NotFound("email"))?;
    let mut email = view(&row)?;
    let attempts = sqlx::query(
        "SELECT attempt, finished_at, outcome, smtp_code, detail FROM email_attempts WHERE email_id = $1 AND tenant_id = $2 ORDER BY id",
    )
    .bind(&id)
    .bind(tenant)
    .fetch_all(&outbox.store.pool)
    .await?;
    email.log = Some(
        attempts
            .iter()
            .map(|r| {
                Ok(AttemptView {
                    attempt: r.try_get("attempt")?,
                    at: r.try_get("finished_at")?,
                    outcome: r.try_get("outcome")?,
                    smtp_code: r.try_get("smtp_code")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?,
    );
    Ok(Json(email))
}

/// Puts a dead email back in the queue with a fresh set of attempts.
async fn retry(
    State(outbox): State<Arc<Outbox>>,
    TenantAdmin(admin): TenantAdmin,
    Path(id): Path<String>,
) -> ApiResult<Json<EmailView>> {
    let tenant = admin.tenant().as_str();
    let now = outbox.now_millis();
    let done = sqlx::query(
        "UPDATE emails SET status = 'pending', attempts = 0, send_after = $3, lease_until = 0, updated_at = $3 WHERE tenant_id = $1 AND id = $2 AND status = 'dead'",
    )
    .bind(tenant)
    .bind(&id)
    .bind(now)
    .execute(&outbox.store.pool)
    .await?;
    if done.rows_affected() == 0 {
        let exists = sqlx::query("SELECT 1 AS x FROM emails WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(&id)
            .fetch_optional(&outbox.store.pool)
            .await?;
        return Err(match exists {
            Some(_) => ApiError::conflict("not_dead", "only a dead-lettered email can be retried"),
            None => ApiError::NotFound("email"),
        });
    }
    outbox.wake();
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM emails WHERE tenant_id = $1 AND id = $2"
    )))
    .bind(tenant)
    .bind(&id)
    .fetch_one(&outbox.store.pool)
    .await?;
    Ok(Json(view(&row)?))
}
