//! `/api/v1/projects`: projects, members and project events.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::Response,
    routing::{get, post, put},
};
use serde::Deserialize;
use serde_json::{Value, json, value::RawValue};
use sqlx::{AssertSqlSafe, Row};

use super::{Member, PROJECT_COLUMNS, Project, is_member, project_from_row};
use crate::{
    api::idempotency::IdempotencyKey,
    app::AppState,
    auth::{Caller, Permission, Scope, extract::AnyCaller},
    error::{ApiError, ApiJson, ApiResult},
    ids::now_millis,
    notify::{
        Notify,
        fanout::{Recipients, TriggerRequest},
        recipients::RecipientSpec,
        routes::accepted,
        types::validate_key,
    },
    store::is_unique_violation,
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

fn check_name(name: &str) -> ApiResult<()> {
    if name.trim().is_empty() || name.len() > 200 {
        return Err(ApiError::invalid(
            "invalid_project",
            "name: 1-200 characters",
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberSpec {
    user_id: String,
    #[serde(default = "default_role")]
    role: String,
}

fn default_role() -> String {
    "member".into()
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

async fn load(notify: &Notify, tenant: &str, id: &str) -> ApiResult<Project> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {PROJECT_COLUMNS} FROM projects WHERE tenant_id = $1 AND id = $2"
    )))
    .bind(tenant)
    .bind(id)
    .fetch_optional(&notify.store.pool)
    .await?
    .ok_or(ApiError::NotFound("project"))?;
    let mut project = project_from_row(&row)?;
    let members = sqlx::query(
        "SELECT user_id, role, added_at FROM project_members WHERE tenant_id = $1 AND project_id = $2 ORDER BY added_at, user_id",
    )
    .bind(tenant)
    .bind(id)
    .fetch_all(&notify.store.pool)
    .await?;
    project.members = Some(
        members
            .iter()
            .map(|r| {
                Ok(Member {
                    user_id: r.try_get("user_id")?,
                    role: r.try_get("role")?,
                    added_at: r.try_get("added_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?,
    );
    Ok(project)
}

async fn check_users(notify: &Notify, caller: &Caller, members: &[MemberSpec]) -> ApiResult<()> {
    for m in members {
        validate_key(&m.role)
            .map_err(|e| ApiError::invalid("invalid_member", format!("role: {e}")))?;
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
    let tenant = caller.tenant().as_str();
    let id = uuid::Uuid::now_v7().to_string();
    let now = now_millis();
    let mut tx = notify.store.pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO projects (id, tenant_id, name, external_ref, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(&id)
    .bind(tenant)
    .bind(req.name.trim())
    .bind(req.external_ref.as_deref())
    .bind(now)
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => {
            return Err(ApiError::conflict(
                "project_exists",
                "a project with this external_ref exists",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    for m in &req.members {
        sqlx::query(
            "INSERT INTO project_members (project_id, user_id, tenant_id, role, added_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (project_id, user_id) DO UPDATE SET role = excluded.role",
        )
        .bind(&id)
        .bind(&m.user_id)
        .bind(tenant)
        .bind(&m.role)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(load(&notify, tenant, &id).await?)))
}

async fn list(
    State(notify): State<Arc<Notify>>,
    AnyCaller(caller): AnyCaller,
) -> ApiResult<Json<Vec<Project>>> {
    let tenant = caller.tenant().as_str();
    // Managers see every project; other users see those they belong to.
    let rows = match &caller {
        Caller::User(p) if !p.can(Permission::ManageProjects) => {
            sqlx::query(AssertSqlSafe(format!(
                "SELECT {PROJECT_COLUMNS} FROM projects WHERE tenant_id = $1 AND id IN (SELECT project_id FROM project_members WHERE tenant_id = $1 AND user_id = $2) ORDER BY id LIMIT 1000"
            )))
            .bind(tenant)
            .bind(p.user.as_str())
            .fetch_all(&notify.store.pool)
            .await?
        }
        _ => {
            manager(&caller)?;
            sqlx::query(AssertSqlSafe(format!(
                "SELECT {PROJECT_COLUMNS} FROM projects WHERE tenant_id = $1 ORDER BY id LIMIT 1000"
            )))
            .bind(tenant)
            .fetch_all(&notify.store.pool)
            .await?
        }
    };
    Ok(Json(
        rows.iter()
            .map(project_from_row)
            .collect::<Result<_, _>>()?,
    ))
}

async fn find(
    State(notify): State<Arc<Notify>>,
    AnyCaller(caller): AnyCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<Project>> {
    let tenant = caller.tenant().as_str();
    if let Caller::User(p) = &caller
        && !p.can(Permission::ManageProjects)
        && !is_member(&notify.store, tenant, &id, p.user.as_str()).await?
    {
        return Err(ApiError::NotFound("project"));
    }
    if let Caller::Key(_) = &caller {
        manager(&caller)?;
    }
    Ok(Json(load(&notify, tenant, &id).await?))
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
    let done = sqlx::query(
        "UPDATE projects SET name = $3, updated_at = $4 WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant)
    .bind(&id)
    .bind(req.name.trim())
    .bind(now_millis())
    .execute(&notify.store.pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound("project"));
    }
    Ok(Json(load(&notify, tenant, &id).await?))
}

async fn remove(
    State(notify): State<Arc<Notify>>,
    AnyCaller(caller): AnyCaller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    manager(&caller)?;
    let done = sqlx::query("DELETE FROM projects WHERE tenant_id = $1 AND id = $2")
        .bind(caller.tenant().as_str())
        .bind(&id)
        .execute(&notify.store.pool)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound("project"));
    }
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
    body: axum::body::Bytes,
) -> ApiResult<Json<Project>> {
    manager(&caller)?;
    let req: MemberRequest = if body.iter().all(u8::is_ascii_whitespace) {
        MemberRequest {
            role: default_role(),
        }
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid("invalid_body", e.to_string()))?
    };
    let tenant = caller.tenant().as_str();
    load(&notify, tenant, &id).await?;
    check_users(
        &notify,
        &caller,
        &[MemberSpec {
            user_id: user.clone(),
            role: req.role.clone(),
        }],
    )
    .await?;
    sqlx::query(
        "INSERT INTO project_members (project_id, user_id, tenant_id, role, added_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (project_id, user_id) DO UPDATE SET role = excluded.role",
    )
    .bind(&id)
    .bind(&user)
    .bind(tenant)
    .bind(&req.role)
    .bind(now_millis())
    .execute(&notify.store.pool)
    .await?;
    Ok(Json(load(&notify, tenant, &id).await?))
}

async fn remove_member(
    State(notify): State<Arc<Notify>>,
    AnyCaller(caller): AnyCaller,
    Path((id, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    manager(&caller)?;
    let done = sqlx::query(
        "DELETE FROM project_members WHERE tenant_id = $1 AND project_id = $2 AND user_id = $3",
    )
    .bind(caller.tenant().as_str())
    .bind(&id)
    .bind(&user)
    .execute(&notify.store.pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::NotFound("project member"));
    }
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
    validate_key(&req.event)
        .map_err(|e| ApiError::invalid("invalid_event", format!("event: {e}")))?;
    let tenant = caller.tenant();
    let project = load(&notify, tenant.as_str(), &id).await?;
    let mut payload = match req.payload {
        Value::Null => json!({}),
        Value::Object(map) => Value::Object(map),
        _ => {
            return Err(ApiError::invalid(
                "invalid_payload",
                "payload must be a JSON object",
            ));
        }
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
