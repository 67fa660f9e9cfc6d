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

use super::{
    Outbox,
    store::{self, Attempt, Email, Status},
};
use crate::{
    auth::{AuthService, extract::TenantAdmin},
    error::{ApiResult, query},
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

impl From<Email> for EmailView {
    fn from(e: Email) -> Self {
        EmailView {
            id: e.id,
            user_id: e.user_id,
            notification_id: e.notification_id,
            kind: e.kind,
            to: e.to_address,
            subject: e.subject,
            status: e.status,
            attempts: e.attempts,
            send_after: e.send_after,
            last_error: e.last_error,
            created_at: e.created_at,
            sent_at: e.sent_at,
            log: None,
        }
    }
}

impl From<Attempt> for AttemptView {
    fn from(a: Attempt) -> Self {
        AttemptView {
            attempt: a.attempt,
            at: a.finished_at,
            outcome: a.outcome,
            smtp_code: a.smtp_code,
            detail: a.detail,
        }
    }
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
    let status = match &q.status {
        Some(status) => Status::parse(status)?,
        None => Status::Dead,
    };
    let page = store::list(
        &outbox.store,
        admin.tenant().as_str(),
        status,
        q.cursor.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(Page {
        items: page.emails.into_iter().map(EmailView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

async fn find(
    State(outbox): State<Arc<Outbox>>,
    TenantAdmin(admin): TenantAdmin,
    Path(id): Path<String>,
) -> ApiResult<Json<EmailView>> {
    let (email, attempts) =
        store::get_with_attempts(&outbox.store, admin.tenant().as_str(), &id).await?;
    Ok(Json(EmailView {
        log: Some(attempts.into_iter().map(AttemptView::from).collect()),
        ..email.into()
    }))
}

/// Puts a dead email back in the queue with a fresh set of attempts.
async fn retry(
    State(outbox): State<Arc<Outbox>>,
    TenantAdmin(admin): TenantAdmin,
    Path(id): Path<String>,
) -> ApiResult<Json<EmailView>> {
    let tenant = admin.tenant().as_str();
    store::revive(&outbox.store, tenant, &id, outbox.now_millis()).await?;
    outbox.wake();
    Ok(Json(store::get(&outbox.store, tenant, &id).await?.into()))
}
