//! `/api/v1/projects`: projects, members and project events.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::StatusCode,
    response::Response,
    routing::{get, post, put},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json, value::RawValue};

use super::{
    MemberSpec, Project, ProjectError, check_event, check_name, check_role, default_role, store,
};
use crate::{
    api::idempotency::IdempotencyKey,
    app::AppState,
    auth::{Caller, Permission, Scope, extract::AnyCaller},
    error::{ApiError, ApiJson, ApiResult, OptionalJson, query},
    notify::{
        Notify,
        fanout::{Recipients, TriggerRequest},
        recipients::RecipientSpec,
        routes::accepted,
    },
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/projects", get(list).post(create))
        .route(
            "/api/v1/projects/{id}",
            get(find).patch(update).delete(remove),
        )
        .route(
            "/api/v1/projects/{id}/members/{user}",
            put(put_member).delete(remove_member),
        )
        .route("/api/v1/projects/{id}/events", post(report_event))
}

fn manager(caller: &Caller) -> ApiResult<()> {
    if caller.allowed(Permission::ManageProjects, Scope::Projects) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "managing projects requires the editor or admin role, or an API key with the projects scope",
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    name: String,
    #[serde(default)]
    external_ref: Option<String>,
    #[serde(default)]
    members: Vec<MemberSpec>,
}

async fn check_users(notify: &Notify, caller: &Caller, members: &[MemberSpec]) -> ApiResult<()> {
    for m in members {
        check_role(&m.role)?;
    }
    let mut spec = RecipientSpec {
        users: members.iter().map(|m| m.user_id.clone()).collect(),
        ..RecipientSpec::default()
    };
    if spec.users.is_empty() {
        return Ok(());
    }
    spec.validate(&notify.store, caller.tenant()).await
}

async fn create(
    State(notify): State<Arc<Notify>>,
    AnyCaller(caller): AnyCaller,
    ApiJson(req): ApiJson<CreateRequest>,
) -> ApiResult<(StatusCode, Json<Project>)> {
    manager(&caller)?;
    check_name(&req.name)?;
    check_users(&notify, &caller, &req.members).await?;
    let project = store::create(
        &notify.store,
        caller.tenant().as_str(),
        req.name.trim(),
        req.external_ref.as_deref(),
        &req.members,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(project)))
}

/// `GET /api/v1/projects` query: a page size and the cursor of the last page.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    cursor: Option<String>,
    limit: Option<u32>,
}

#[derive(Serialize)]
struct Page {
    items: Vec<Project>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<String>,
}

/// Projects per page by default, and at most.
const PAGE_DEFAULT: u32 = 100;
const PAGE_MAX: u32 = 1000;

async fn list(
    State(notify): State<Arc<Notify>>,
    AnyCaller(caller): AnyCaller,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Page>> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(PAGE_DEFAULT).clamp(1, PAGE_MAX) as usize;
    let tenant = caller.tenant().as_str();
    // Managers see every project; other users see those they belong to.
    let member = match &caller {
        Caller::User(p) if !p.can(Permission::ManageProjects) => Some(p.user.as_str()),
        _ => {
            manager(&caller)?;
            None
        }
    };
    let page = store::list(&notify.store, tenant, member, q.cursor.as_deref(), limit).await?;
    Ok(Json(Page {
        items: page.projects,
        next_cursor: page.next_cursor,
    }))
}

async fn find(
    State(notify): State<Arc<Notify>>,
    AnyCaller(caller): AnyCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<Project>> {
    let tenant = caller.tenant().as_str();
    if let Caller::User(p) = &caller
        && !p.can(Permission::ManageProjects)
        && !store::is_member(&notify.store, tenant, &id, p.user.as_str()).await?
    {
        return Err(ProjectError::NotFound.into());
    }
    if let Caller::Key(_) = &caller {
        manager(&caller)?;
    }
    Ok(Json(store::load(&notify.store, tenant, &id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateRequest {
    name: String,
}

async fn update(
    State(notify): State<Arc<Notify>>,
    AnyCaller(caller): AnyCaller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateRequest>,
) -> ApiResult<Json<Project>> {
    manager(&caller)?;
    check_name(&req.name)?;
    let tenant = caller.tenant().as_str();
    let project = store::rename(&notify.store, tenant, &id, req.name.trim()).await?;
    Ok(Json(project))
}

async fn remove(
    State(notify): State<Arc<Notify>>,
    AnyCaller(caller): AnyCaller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    manager(&caller)?;
    store::delete(&notify.store, caller.tenant().as_str(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MemberRequest {
    #[serde(default = "default_role")]
    role: String,
}

async fn put_member(
    State(notify): State<Arc<Notify>>,
    AnyCaller(caller): AnyCaller,
    Path((id, user)): Path<(String, String)>,
    OptionalJson(req): OptionalJson<MemberRequest>,
) -> ApiResult<Json<Project>> {
    manager(&caller)?;
    // The body is optional: none means the default role.
    let req = req.unwrap_or_else(|| MemberRequest {
        role: default_role(),
    });
    let tenant = caller.tenant().as_str();
    store::load(&notify.store, tenant, &id).await?;
    let member = MemberSpec {
        user_id: user,
        role: req.role,
    };
    check_users(&notify, &caller, std::slice::from_ref(&member)).await?;
    store::put_member(&notify.store, tenant, &id, &member).await?;
    Ok(Json(store::load(&notify.store, tenant, &id).await?))
}

async fn remove_member(
    State(notify): State<Arc<Notify>>,
    AnyCaller(caller): AnyCaller,
    Path((id, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    manager(&caller)?;
    store::remove_member(&notify.store, caller.tenant().as_str(), &id, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventRequest {
    /// `phase_changed`, `step_changed`, `task_changed`, `status_changed`…:
    /// notifies with the type `project.<event>`.
    event: String,
    #[serde(default)]
    payload: Value,
    /// The user whose action this was; not notified.
    #[serde(default)]
    actor: Option<String>,
}

/// Notifies the project's members of an event and publishes it on the
/// project's channel. The payload gets `project.id` and `project.name`.
async fn report_event(
    State(notify): State<Arc<Notify>>,
    AnyCaller(caller): AnyCaller,
    Path(id): Path<String>,
    idempotency_key: Result<IdempotencyKey, ApiError>,
    ApiJson(req): ApiJson<EventRequest>,
) -> ApiResult<Response> {
    manager(&caller)?;
    check_event(&req.event)?;
    let tenant = caller.tenant();
    let project = store::load(&notify.store, tenant.as_str(), &id).await?;
    let mut payload = match req.payload {
        Value::Null => json!({}),
        Value::Object(map) => Value::Object(map),
        _ => return Err(ProjectError::InvalidPayload.into()),
    };
    let entry = payload
        .as_object_mut()
        .expect("an object")
        .entry("project")
        .or_insert_with(|| json!({}));
    if let Value::Object(p) = entry {
        p.entry("id").or_insert_with(|| json!(project.id));
        p.entry("name").or_insert_with(|| json!(project.name));
    }
    let trigger = TriggerRequest {
        type_key: format!("project.{}", req.event),
        payload: payload.clone(),
        recipients: RecipientSpec {
            projects: vec![project.id.clone()],
            ..RecipientSpec::default()
        },
        actor: req.actor.clone(),
    };
    let IdempotencyKey(key) = idempotency_key?;
    // The event may concern nobody but its actor; it is still stored (for
    // its idempotency key) and published on the project's channel.
    let (view, replayed) = notify
        .trigger(tenant, trigger, key.as_deref(), Recipients::MayBeNone)
        .await?;
    if !replayed {
        let event = json!({"type": "project.event", "event": req.event, "actor": req.actor, "data": payload});
        if let Ok(raw) = RawValue::from_string(event.to_string())
            && let Ok((key, ns)) = notify
                .gateway
                .resolve(tenant, &format!("project:{}", project.id))
            && let Err(e) = notify.gateway.publish(&key, ns, &raw).await
        {
            tracing::warn!(error = %e, project = %project.id, "project event not published live");
        }
    }
    Ok(accepted(view, replayed))
}
