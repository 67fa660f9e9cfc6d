//! `/api/v1/queues`: queue items, their transitions and audit trail, counts.
//!
//! Moderators and admins (or API keys with the `queues` scope) do
//! everything; a submitter sees their own items and may withdraw them.

use std::sync::Arc;

use axum::{
    Extension, Json, Router,
    extract::{Path, Query, rejection::QueryRejection},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use futures_util::{StreamExt, stream};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json, value::RawValue};

use super::{
    Item, MAX_PAYLOAD, MAX_TITLE, QueueError, Queues, Status, Transition, check_queue,
    store::{self, Filter, NewItem},
};
use crate::{
    auth::{Caller, Permission, Scope, extract::AnyCaller},
    error::{ApiError, ApiJson, ApiResult, query},
    notify::{fanout::Recipients, recipients::RecipientSpec, trigger::TriggerRequest},
};

pub fn router() -> Router<crate::state::AppState> {
    Router::new()
        .route("/api/v1/queues", get(all_counts))
        .route("/api/v1/queues/{queue}", get(queue_counts))
        .route("/api/v1/queues/{queue}/items", get(list).post(create))
        .route("/api/v1/queues/{queue}/items/{id}", get(find))
        .route(
            "/api/v1/queues/{queue}/items/{id}/transition",
            post(transition),
        )
        .route("/api/v1/queues/{queue}/items/{id}/events", get(events))
        .route("/api/v1/queues/{queue}/transitions", post(bulk))
}

fn is_moderator(caller: &Caller) -> bool {
    caller.allowed(Permission::ModerateQueues, Scope::Queues)
}

fn moderator(caller: &Caller) -> Result<(), QueueError> {
    if is_moderator(caller) {
        Ok(())
    } else {
        Err(QueueError::Forbidden(
            "moderation queues need the moderator or admin role, or an API key with the queues scope",
        ))
    }
}

/// Who acted, as the audit trail records it.
fn actor(caller: &Caller) -> String {
    match caller {
        Caller::User(p) => format!("user:{}", p.user.as_str()),
        Caller::Key(k) => format!("key:{}", k.key.as_str()),
    }
}

fn user_id(caller: &Caller) -> Option<&str> {
    match caller {
        Caller::User(p) => Some(p.user.as_str()),
        Caller::Key(_) => None,
    }
}

/// Moderators see every item; a submitter sees their own, and others are
/// told it does not exist.
fn may_see(caller: &Caller, item: &Item) -> Result<(), QueueError> {
    if is_moderator(caller)
        || (user_id(caller).is_some() && user_id(caller) == item.submitter.as_deref())
    {
        Ok(())
    } else {
        Err(QueueError::NotFound)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    external_ref: String,
    title: String,
    /// The user who submitted it; the calling user when a moderator creates it.
    #[serde(default)]
    submitter: Option<String>,
    #[serde(default)]
    payload: Option<Box<RawValue>>,
}

/// Puts an item in a queue. The same `external_ref` again with the same
/// content answers 200 with the stored item; with other content, 409.
async fn create(
    Extension(queues): Extension<Arc<Queues>>,
    AnyCaller(caller): AnyCaller,
    Path(queue): Path<String>,
    ApiJson(req): ApiJson<CreateRequest>,
) -> ApiResult<Response> {
    moderator(&caller)?;
    check_queue(&queue)?;
    let external_ref = req.external_ref.trim();
    if external_ref.is_empty() || external_ref.len() > 200 {
        return Err(QueueError::Invalid("external_ref: 1-200 characters".into()).into());
    }
    let title = req.title.trim();
    if title.is_empty() || title.chars().count() > MAX_TITLE {
        return Err(QueueError::Invalid(format!("title: 1-{MAX_TITLE} characters")).into());
    }
    let payload = match req.payload {
        Some(p) if !p.get().trim_start().starts_with('{') => {
            return Err(QueueError::Invalid("payload must be a JSON object".into()).into());
        }
        Some(p) if p.get().len() > MAX_PAYLOAD => {
            return Err(
                QueueError::Invalid(format!("payload: at most {MAX_PAYLOAD} bytes")).into(),
            );
        }
        Some(p) => p,
        None => RawValue::from_string("{}".into()).map_err(anyhow::Error::from)?,
    };
    let tenant = caller.tenant();
    let submitter = req.submitter.or_else(|| user_id(&caller).map(Into::into));
    if let Some(s) = &submitter
        && !store::is_user(&queues.store, tenant.as_str(), s).await?
    {
        return Err(QueueError::Invalid(format!("submitter: no user `{s}` in this tenant")).into());
    }
    let new = NewItem {
        queue: &queue,
        external_ref,
        title,
        submitter: submitter.as_deref(),
        payload: &payload,
    };
    let (item, created) =
        store::create(&queues.store, tenant.as_str(), &new, &actor(&caller)).await?;
    if created {
        queues.feed.changed(tenant);
        Ok((StatusCode::CREATED, Json(item)).into_response())
    } else {
        let mut headers = HeaderMap::new();
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
        Ok((StatusCode::OK, headers, Json(item)).into_response())
    }
}

/// `GET …/items` query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// One status or several, comma-separated.
    status: Option<String>,
    assignee: Option<String>,
    submitter: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

#[derive(Serialize)]
struct Page {
    items: Vec<Item>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

const PAGE_DEFAULT: u32 = 50;
const PAGE_MAX: u32 = 500;

async fn list(
    Extension(queues): Extension<Arc<Queues>>,
    AnyCaller(caller): AnyCaller,
    Path(queue): Path<String>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Page>> {
    let q = query(q)?;
    check_queue(&queue)?;
    let mut filter = Filter {
        assignee: q.assignee.as_deref(),
        submitter: q.submitter.as_deref(),
        ..Filter::default()
    };
    if let Some(statuses) = &q.status {
        for s in statuses.split(',') {
            let status = Status::parse(s.trim()).ok_or_else(|| {
                ApiError::invalid(
                    "invalid_query",
                    format!(
                        "status: unknown `{s}` (pending, in_review, approved, rejected, withdrawn)"
                    ),
                )
            })?;
            filter.statuses.push(status);
        }
    }
    // A user who is no moderator lists only what they submitted.
    if !is_moderator(&caller) {
        match user_id(&caller) {
            Some(me) if filter.submitter.is_none_or(|s| s == me) => filter.submitter = Some(me),
            _ => moderator(&caller)?,
        }
    }
    let limit = q.limit.unwrap_or(PAGE_DEFAULT).clamp(1, PAGE_MAX) as usize;
    let (items, next_cursor) = store::list(
        &queues.store,
        caller.tenant().as_str(),
        &queue,
        &filter,
        q.cursor.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(Page { items, next_cursor }))
}

async fn find(
    Extension(queues): Extension<Arc<Queues>>,
    AnyCaller(caller): AnyCaller,
    Path((queue, id)): Path<(String, String)>,
) -> ApiResult<Json<Item>> {
    let item = store::load(&queues.store, caller.tenant().as_str(), &queue, &id).await?;
    may_see(&caller, &item)?;
    Ok(Json(item))
}

async fn events(
    Extension(queues): Extension<Arc<Queues>>,
    AnyCaller(caller): AnyCaller,
    Path((queue, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant().as_str();
    let item = store::load(&queues.store, tenant, &queue, &id).await?;
    may_see(&caller, &item)?;
    let events = store::events(&queues.store, tenant, &queue, &id).await?;
    Ok(Json(json!({"events": events})))
}

async fn transition(
    Extension(queues): Extension<Arc<Queues>>,
    AnyCaller(caller): AnyCaller,
    Path((queue, id)): Path<(String, String)>,
    ApiJson(change): ApiJson<Transition>,
) -> ApiResult<Json<Item>> {
    let assignee = check_transition(&queues, &caller, &change).await?;
    if !is_moderator(&caller) {
        // The submitter may withdraw their own item, and nothing else.
        let item = store::load(&queues.store, caller.tenant().as_str(), &queue, &id).await?;
        may_see(&caller, &item)?;
        if change.to != Status::Withdrawn {
            moderator(&caller)?;
        }
    }
    Ok(Json(
        apply(&queues, &caller, &queue, &id, &change, assignee.as_deref()).await?,
    ))
}

/// Checks a transition before any item is read; returns the reviewer of an
/// `in_review` transition (the given assignee, else the acting user).
async fn check_transition(
    queues: &Queues,
    caller: &Caller,
    change: &Transition,
) -> Result<Option<String>, QueueError> {
    change.check()?;
    let assignee = match change.to {
        Status::InReview => change
            .assignee
            .clone()
            .or_else(|| user_id(caller).map(Into::into)),
        _ => None,
    };
    if let Some(a) = &assignee
        && !store::is_user(&queues.store, caller.tenant().as_str(), a).await?
    {
        return Err(QueueError::Invalid(format!(
            "assignee: no user `{a}` in this tenant"
        )));
    }
    Ok(assignee)
}

/// Applies a checked transition, tells the counts feed, and notifies the
/// submitter of a decision.
async fn apply(
    queues: &Queues,
    caller: &Caller,
    queue: &str,
    id: &str,
    change: &Transition,
    assignee: Option<&str>,
) -> Result<Item, QueueError> {
    let tenant = caller.tenant();
    let (item, _from) = store::transition(
        &queues.store,
        tenant.as_str(),
        queue,
        id,
        change,
        assignee,
        &actor(caller),
    )
    .await?;
    queues.feed.changed(tenant);
    notify_decision(queues, caller, &item).await;
    Ok(item)
}

/// Tells the submitter that their item was approved or rejected (with the
/// reason). The decision stands if this fails: it is logged, not returned.
async fn notify_decision(queues: &Queues, caller: &Caller, item: &Item) {
    let type_key = match item.status {
        Status::Approved => "moderation.item_approved",
        Status::Rejected => "moderation.item_rejected",
        _ => return,
    };
    let Some(submitter) = &item.submitter else {
        return;
    };
    let payload = json!({
        "queue": {"name": item.queue},
        "item": {"id": item.id, "title": item.title, "external_ref": item.external_ref},
        "reason": item.reason.clone().unwrap_or_default(),
    });
    let trigger = TriggerRequest {
        type_key: type_key.into(),
        payload,
        recipients: RecipientSpec {
            users: vec![submitter.clone()],
            ..RecipientSpec::default()
        },
        actor: user_id(caller).map(Into::into),
    };
    // One notification per decision, even if this call is repeated.
    let key = format!("queue-item:{}:{}", item.id, item.version);
    if let Err(e) = queues
        .notify
        .trigger(caller.tenant(), trigger, Some(&key), Recipients::MayBeNone)
        .await
    {
        tracing::warn!(error = %e, item = %item.id, "submitter not notified of the decision");
    }
}

/// Items changed at once, at most.
const BULK_MAX: usize = 500;
/// Items of a bulk request changed concurrently.
const BULK_CONCURRENCY: usize = 8;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkRequest {
    ids: Vec<String>,
    to: Status,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    assignee: Option<String>,
}

/// Applies one transition to many items. Each item changes on its own (a
/// withdrawn item does not stop the others); the answer reports each, in
/// the order asked.
async fn bulk(
    Extension(queues): Extension<Arc<Queues>>,
    AnyCaller(caller): AnyCaller,
    Path(queue): Path<String>,
    ApiJson(req): ApiJson<BulkRequest>,
) -> ApiResult<Json<Value>> {
    moderator(&caller)?;
    check_queue(&queue)?;
    if req.ids.is_empty() || req.ids.len() > BULK_MAX {
        return Err(QueueError::Invalid(format!("ids: 1-{BULK_MAX} item ids")).into());
    }
    let change = Transition {
        to: req.to,
        reason: req.reason,
        assignee: req.assignee,
    };
    let assignee = check_transition(&queues, &caller, &change).await?;
    let (queues, caller, queue, change, assignee) = (
        &*queues,
        &caller,
        queue.as_str(),
        &change,
        assignee.as_deref(),
    );
    let results: Vec<Value> = stream::iter(req.ids)
        .map(|id: String| async move {
            match apply(queues, caller, queue, &id, change, assignee).await {
                Ok(item) => json!({"id": id, "ok": true, "item": item}),
                Err(e) => {
                    if let QueueError::Store(e) = &e {
                        tracing::error!(error = %e, item = %id, "bulk transition failed");
                    }
                    json!({"id": id, "ok": false, "error": e.report()})
                }
            }
        })
        .buffered(BULK_CONCURRENCY)
        .collect()
        .await;
    let applied = results.iter().filter(|r| r["ok"] == true).count();
    Ok(Json(json!({
        "applied": applied,
        "failed": results.len() - applied,
        "results": results,
    })))
}

async fn all_counts(
    Extension(queues): Extension<Arc<Queues>>,
    AnyCaller(caller): AnyCaller,
) -> ApiResult<Json<Value>> {
    moderator(&caller)?;
    let counts = store::counts(&queues.store, caller.tenant().as_str(), None).await?;
    Ok(Json(json!({"queues": counts})))
}

async fn queue_counts(
    Extension(queues): Extension<Arc<Queues>>,
    AnyCaller(caller): AnyCaller,
    Path(queue): Path<String>,
) -> ApiResult<Json<Value>> {
    moderator(&caller)?;
    check_queue(&queue)?;
    let mut counts = store::counts(&queues.store, caller.tenant().as_str(), Some(&queue)).await?;
    Ok(Json(
        json!({"queue": queue, "counts": counts.remove(&queue).unwrap_or_default()}),
    ))
}
