//! REST endpoints of the notification engine: types (tenant admins),
//! triggers (app backends), the signed-in user's inbox and preferences,
//! and the one-click unsubscribe address of emails (no sign-in).

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::Value;

use super::{
    Notify,
    counts::{self, Counts},
    inbox::{self, Action, InboxError, ListQuery, Page, Target},
    live,
    prefs::Preferences,
    prefs_store,
    trigger::TriggerRequest,
    type_store::{self, TypeStoreError},
    types::TypeDef,
    unsubscribe,
};
use crate::{
    api::idempotency::IdempotencyKey,
    app::AppState,
    auth::{
        Caller, Permission, Principal, Scope,
        extract::{AnyCaller, AuthUser, TenantAdmin},
    },
    error::{ApiError, ApiJson, ApiResult, OptionalJson, query},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/notification-types",
            get(list_types).post(create_type),
        )
        .route(
            "/api/v1/notification-types/{key}",
            get(find_type).put(put_type).delete(delete_type),
        )
        .route("/api/v1/notifications", post(trigger))
        .route("/api/v1/notifications/{id}", get(find_trigger))
        .route("/api/v1/inbox", get(list_inbox))
        .route("/api/v1/inbox/counts", get(inbox_counts))
        .route("/api/v1/inbox/batch", post(batch))
        .route("/api/v1/inbox/read-all", post(read_all))
        .route("/api/v1/inbox/seen-all", post(seen_all))
        .route("/api/v1/inbox/{id}", get(find_item))
        .route("/api/v1/inbox/{id}/{action}", post(act_on_item))
        .route(
            "/api/v1/me/preferences",
            get(get_preferences)
                .put(put_preferences)
                .patch(patch_preferences),
        )
        // Public: the signed token is the credential (RFC 8058 one-click).
        .route(
            "/api/v1/unsubscribe/{token}",
            get(unsubscribe::get).post(unsubscribe::post),
        )
}

async fn list_types(
    State(notify): State<Arc<Notify>>,
    AnyCaller(caller): AnyCaller,
) -> ApiResult<Json<Vec<TypeDef>>> {
    Ok(Json(
        type_store::list(&notify.store, caller.tenant().as_str()).await?,
    ))
}

async fn find_type(
    State(notify): State<Arc<Notify>>,
    AnyCaller(caller): AnyCaller,
    Path(key): Path<String>,
) -> ApiResult<Json<TypeDef>> {
    let def = type_store::get(&notify.store, caller.tenant().as_str(), &key)
        .await?
        .ok_or(TypeStoreError::NotFound)?;
    Ok(Json(def))
}

async fn create_type(
    State(notify): State<Arc<Notify>>,
    TenantAdmin(admin): TenantAdmin,
    ApiJson(def): ApiJson<TypeDef>,
) -> ApiResult<(StatusCode, Json<TypeDef>)> {
    let tenant = admin.tenant().as_str();
    if type_store::get(&notify.store, tenant, &def.key)
        .await?
        .is_some()
    {
        return Err(TypeStoreError::Exists(def.key).into());
    }
    let compiled = type_store::put(&notify.store, tenant, def).await?;
    Ok((StatusCode::CREATED, Json(compiled.def)))
}

async fn put_type(
    State(notify): State<Arc<Notify>>,
    TenantAdmin(admin): TenantAdmin,
    Path(key): Path<String>,
    ApiJson(def): ApiJson<TypeDef>,
) -> ApiResult<Json<TypeDef>> {
    if def.key != key {
        return Err(TypeStoreError::KeyMismatch.into());
    }
    let compiled = type_store::put(&notify.store, admin.tenant().as_str(), def).await?;
    Ok(Json(compiled.def))
}

async fn delete_type(
    State(notify): State<Arc<Notify>>,
    TenantAdmin(admin): TenantAdmin,
    Path(key): Path<String>,
) -> ApiResult<StatusCode> {
    if type_store::delete(&notify.store, admin.tenant().as_str(), &key).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(TypeStoreError::TenantTypeNotFound.into())
    }
}

fn may_trigger(caller: &Caller) -> ApiResult<()> {
    if caller.allowed(Permission::ManageTenant, Scope::Notify) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "triggering notifications requires an API key with the notify scope or an admin",
        ))
    }
}

async fn trigger(
    State(notify): State<Arc<Notify>>,
    AnyCaller(caller): AnyCaller,
    idempotency_key: Result<IdempotencyKey, ApiError>,
    ApiJson(req): ApiJson<TriggerRequest>,
) -> ApiResult<Response> {
    may_trigger(&caller)?;
    let IdempotencyKey(key) = idempotency_key?;
    let (view, replayed) = notify
        .trigger(
            caller.tenant(),
            req,
            key.as_deref(),
            super::trigger::Recipients::AtLeastOne,
        )
        .await?;
    Ok(accepted(view, replayed))
}

/// `202 Accepted` with the trigger, marked `Idempotent-Replayed` when it is
/// an earlier request's.
pub fn accepted(view: super::trigger::TriggerView, replayed: bool) -> Response {
    let mut response = (StatusCode::ACCEPTED, Json(view)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

async fn find_trigger(
    State(notify): State<Arc<Notify>>,
    AnyCaller(caller): AnyCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<super::trigger::TriggerView>> {
    may_trigger(&caller)?;
    Ok(Json(
        notify.trigger_view(caller.tenant().as_str(), &id).await?,
    ))
}

async fn list_inbox(
    State(notify): State<Arc<Notify>>,
    AuthUser(user): AuthUser,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Page>> {
    let q = query(q)?;
    let mut conn = notify.store.pool.acquire().await?;
    Ok(Json(
        inbox::list(&mut conn, user.tenant.as_str(), user.user.as_str(), &q).await?,
    ))
}

async fn inbox_counts(
    State(notify): State<Arc<Notify>>,
    AuthUser(user): AuthUser,
) -> ApiResult<Json<Counts>> {
    let mut conn = notify.store.pool.acquire().await?;
    Ok(Json(
        counts::snapshot(&mut conn, user.tenant.as_str(), user.user.as_str()).await?,
    ))
}

fn parse_id(raw: &str) -> Result<i64, InboxError> {
    raw.parse().map_err(|_| InboxError::NotFound)
}

async fn find_item(
    State(notify): State<Arc<Notify>>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<inbox::Item>> {
    let id = parse_id(&id)?;
    let mut conn = notify.store.pool.acquire().await?;
    Ok(Json(
        inbox::get(&mut conn, user.tenant.as_str(), user.user.as_str(), id).await?,
    ))
}

/// Runs an action in a transaction, then tells every tab and device.
async fn apply(
    notify: &Notify,
    user: &Principal,
    action: Action,
    target: Target<'_>,
) -> ApiResult<Json<Value>> {
    let (tenant, uid) = (user.tenant.as_str(), user.user.as_str());
    let mut tx = notify.store.pool.begin().await?;
    let changed = inbox::transition(
        &mut tx,
        tenant,
        uid,
        action,
        &target,
        notify.clock.now_millis(),
    )
    .await?;
    tx.commit().await?;
    notify
        .metrics
        .emails_cancelled
        .inc_by(changed.cancelled_emails);
    let counts = match changed.counts {
        Some(counts) => {
            let (ids, category) = match &target {
                Target::Ids(_) => (Some(changed.ids.as_slice()), None),
                Target::All { category } => (None, *category),
            };
            live::publish(
                &notify.gateway,
                &user.tenant,
                uid,
                &live::Updated {
                    kind: "notification.updated",
                    action: action.as_str(),
                    ids,
                    category,
                    counts: &counts,
                },
            )
            .await;
            counts
        }
        None => {
            let mut conn = notify.store.pool.acquire().await?;
            counts::snapshot(&mut conn, tenant, uid).await?
        }
    };
    Ok(Json(
        serde_json::json!({ "changed": changed.ids, "counts": counts }),
    ))
}

async fn act_on_item(
    State(notify): State<Arc<Notify>>,
    AuthUser(user): AuthUser,
    Path((id, action)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let action = Action::parse(&action).ok_or(ApiError::NotFound("route"))?;
    let id = parse_id(&id)?;
    // An id of someone else's matches nothing: say so rather than "no change".
    {
        let mut conn = notify.store.pool.acquire().await?;
        inbox::get(&mut conn, user.tenant.as_str(), user.user.as_str(), id).await?;
    }
    apply(&notify, &user, action, Target::Ids(&[id])).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    action: String,
    ids: Vec<i64>,
}

async fn batch(
    State(notify): State<Arc<Notify>>,
    AuthUser(user): AuthUser,
    ApiJson(req): ApiJson<BatchRequest>,
) -> ApiResult<Json<Value>> {
    let action = Action::parse(&req.action).ok_or(InboxError::InvalidAction)?;
    apply(&notify, &user, action, Target::Ids(&req.ids)).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AllRequest {
    #[serde(default)]
    category: Option<String>,
}

async fn read_all(
    State(notify): State<Arc<Notify>>,
    AuthUser(user): AuthUser,
    OptionalJson(req): OptionalJson<AllRequest>,
) -> ApiResult<Json<Value>> {
    // The body is optional: none means every category.
    let req = req.unwrap_or_default();
    apply(
        &notify,
        &user,
        Action::Read,
        Target::All {
            category: req.category.as_deref(),
        },
    )
    .await
}

async fn seen_all(
    State(notify): State<Arc<Notify>>,
    AuthUser(user): AuthUser,
) -> ApiResult<Json<Value>> {
    apply(&notify, &user, Action::Seen, Target::All { category: None }).await
}

async fn get_preferences(
    State(notify): State<Arc<Notify>>,
    AuthUser(user): AuthUser,
) -> ApiResult<Json<Preferences>> {
    Ok(Json(
        notify
            .preferences(user.tenant.as_str(), user.user.as_str())
            .await?,
    ))
}

async fn save_preferences(notify: &Notify, user: &Principal, prefs: &Preferences) -> ApiResult<()> {
    prefs_store::save(
        &notify.store,
        user.tenant.as_str(),
        user.user.as_str(),
        prefs,
        notify.clock.now_millis(),
    )
    .await?;
    Ok(())
}

async fn put_preferences(
    State(notify): State<Arc<Notify>>,
    AuthUser(user): AuthUser,
    ApiJson(doc): ApiJson<Value>,
) -> ApiResult<Json<Preferences>> {
    let prefs = Preferences::from_value(doc)?;
    save_preferences(&notify, &user, &prefs).await?;
    Ok(Json(prefs))
}

async fn patch_preferences(
    State(notify): State<Arc<Notify>>,
    AuthUser(user): AuthUser,
    ApiJson(patch): ApiJson<Value>,
) -> ApiResult<Json<Preferences>> {
    let current = notify
        .preferences(user.tenant.as_str(), user.user.as_str())
        .await?;
    let prefs = current.patched(patch)?;
    save_preferences(&notify, &user, &prefs).await?;
    Ok(Json(prefs))
}
