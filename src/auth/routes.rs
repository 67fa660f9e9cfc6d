//! `/api/v1/auth/*`, `/api/v1/me` and the tenant-admin endpoints for users,
//! roles and API keys.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::StatusCode,
    routing::{get, patch, post},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use super::{
    AuthService, Role, Scope,
    extract::{AuthUser, ClientAddr, TenantAdmin},
    service::{ApiKeyView, CreatedApiKey, PasswordRefused, TokenPair, UserChanges, UserView},
};
use crate::{
    app::AppState,
    error::{ApiError, ApiJson, ApiResult, query},
    ids::{ApiKeyId, UserId},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/refresh", post(refresh))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/me", get(me))
        .route("/api/v1/me/password", patch(change_password))
        .route("/api/v1/admin/roles", get(list_roles))
        .route("/api/v1/admin/users", get(list_users).post(create_user))
        .route(
            "/api/v1/admin/users/{id}",
            get(find_user).patch(update_user),
        )
        .route(
            "/api/v1/admin/users/{id}/revoke-sessions",
            post(revoke_user_sessions),
        )
        .route(
            "/api/v1/admin/api-keys",
            get(list_api_keys).post(create_api_key),
        )
        .route(
            "/api/v1/admin/api-keys/{id}",
            axum::routing::delete(revoke_api_key),
        )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    tenant: String,
    email: String,
    password: String,
}

/// Throttled per account and per source address (429 `too_many_attempts`
/// with `Retry-After`); see [`super::service::throttle`].
async fn login(
    State(auth): State<Arc<AuthService>>,
    ClientAddr(from): ClientAddr,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<TokenPair>, PasswordRefused> {
    Ok(Json(
        auth.login(&req.tenant, &req.email, &req.password, from)
            .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshRequest {
    refresh_token: String,
}

async fn refresh(
    State(auth): State<Arc<AuthService>>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> ApiResult<Json<TokenPair>> {
    Ok(Json(auth.refresh(&req.refresh_token).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogoutRequest {
    /// End every session of the user, not only this one.
    #[serde(default)]
    all: bool,
}

/// The body is optional: an empty body ends only the current session.
async fn logout(
    State(auth): State<Arc<AuthService>>,
    AuthUser(me): AuthUser,
    crate::error::OptionalJson(req): crate::error::OptionalJson<LogoutRequest>,
) -> ApiResult<StatusCode> {
    let all = req.is_some_and(|r| r.all);
    if all {
        auth.revoke_user_sessions(&me.tenant, &me.user, "logout all")
            .await?;
    } else {
        auth.revoke_session(&me.tenant, &me.user, &me.session, "logout")
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
struct MeResponse {
    #[serde(flatten)]
    user: UserView,
    permissions: Vec<super::Permission>,
    session_id: String,
}

async fn me(
    State(auth): State<Arc<AuthService>>,
    AuthUser(me): AuthUser,
) -> ApiResult<Json<MeResponse>> {
    let user = auth.get_user(&me.tenant, &me.user).await?;
    let mut permissions: Vec<_> = user
        .roles
        .iter()
        .flat_map(|r| r.permissions().iter().copied())
        .collect();
    permissions.dedup();
    let mut seen = std::collections::HashSet::new();
    permissions.retain(|p| seen.insert(*p));
    Ok(Json(MeResponse {
        user,
        permissions,
        session_id: me.session.to_string(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangePasswordRequest {
    current_password: String,
    new_password: String,
}

/// Ends the user's other sessions; this one stays signed in.
async fn change_password(
    State(auth): State<Arc<AuthService>>,
    AuthUser(me): AuthUser,
    ApiJson(req): ApiJson<ChangePasswordRequest>,
) -> Result<StatusCode, PasswordRefused> {
    auth.change_own_password(&me, &req.current_password, &req.new_password)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
struct RoleView {
    role: Role,
    permissions: &'static [super::Permission],
}

async fn list_roles(_: TenantAdmin) -> Json<Vec<RoleView>> {
    Json(
        Role::ALL
            .iter()
            .map(|r| RoleView {
                role: *r,
                permissions: r.permissions(),
            })
            .collect(),
    )
}

/// `limit` and `cursor` of the admin lists; other parameters are refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    limit: Option<u32>,
}

impl PageQuery {
    fn limit(&self) -> usize {
        self.limit.unwrap_or(50).clamp(1, 200) as usize
    }

    /// The sort key the page starts after. Cursors are opaque to clients
    /// (base64url of the last item's key).
    fn after(&self) -> ApiResult<Option<String>> {
        let Some(cursor) = &self.cursor else {
            return Ok(None);
        };
        URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::invalid("invalid_cursor", "cursor is not one this API returned")
            })
    }
}

/// One page of a list; `next_cursor` is absent on the last page.
#[derive(Serialize)]
struct Page<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

impl<T> Page<T> {
    fn new(items: Vec<T>, more: bool, key: impl Fn(&T) -> &str) -> Self {
        let next_cursor = if more {
            items.last().map(|last| URL_SAFE_NO_PAD.encode(key(last)))
        } else {
            None
        };
        Page { items, next_cursor }
    }
}

async fn list_users(
    State(auth): State<Arc<AuthService>>,
    TenantAdmin(admin): TenantAdmin,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult<Json<Page<UserView>>> {
    let q = query(q)?;
    let (users, more) = auth
        .list_users(admin.tenant(), q.after()?.as_deref(), q.limit())
        .await?;
    Ok(Json(Page::new(users, more, |u| &u.email)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUserRequest {
    email: String,
    password: String,
    #[serde(default)]
    display_name: String,
    roles: Vec<Role>,
}

async fn create_user(
    State(auth): State<Arc<AuthService>>,
    TenantAdmin(admin): TenantAdmin,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    let user = auth
        .create_user(
            admin.tenant(),
            &req.email,
            &req.display_name,
            &req.password,
            &req.roles,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

async fn find_user(
    State(auth): State<Arc<AuthService>>,
    TenantAdmin(admin): TenantAdmin,
    Path(id): Path<String>,
) -> ApiResult<Json<UserView>> {
    Ok(Json(
        auth.get_user(admin.tenant(), &UserId::from(id)).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateUserRequest {
    display_name: Option<String>,
    roles: Option<Vec<Role>>,
    disabled: Option<bool>,
    password: Option<String>,
}

async fn update_user(
    State(auth): State<Arc<AuthService>>,
    TenantAdmin(admin): TenantAdmin,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateUserRequest>,
) -> ApiResult<Json<UserView>> {
    let changes = UserChanges {
        display_name: req.display_name,
        roles: req.roles,
        disabled: req.disabled,
        password: req.password,
    };
    Ok(Json(
        auth.update_user(admin.tenant(), &UserId::from(id), changes)
            .await?,
    ))
}

async fn revoke_user_sessions(
    State(auth): State<Arc<AuthService>>,
    TenantAdmin(admin): TenantAdmin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let user = auth.get_user(admin.tenant(), &UserId::from(id)).await?;
    auth.revoke_user_sessions(admin.tenant(), &user.id, "revoked by admin")
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_api_keys(
    State(auth): State<Arc<AuthService>>,
    TenantAdmin(admin): TenantAdmin,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult<Json<Page<ApiKeyView>>> {
    let q = query(q)?;
    let (keys, more) = auth
        .list_api_keys(admin.tenant(), q.after()?.as_deref(), q.limit())
        .await?;
    Ok(Json(Page::new(keys, more, |k| k.id.as_str())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKeyRequest {
    name: String,
    scopes: Vec<Scope>,
}

async fn create_api_key(
    State(auth): State<Arc<AuthService>>,
    TenantAdmin(admin): TenantAdmin,
    ApiJson(req): ApiJson<CreateKeyRequest>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    Ok((
        StatusCode::CREATED,
        Json(
            auth.create_api_key(admin.tenant(), &req.name, &req.scopes)
                .await?,
        ),
    ))
}

async fn revoke_api_key(
    State(auth): State<Arc<AuthService>>,
    TenantAdmin(admin): TenantAdmin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    auth.revoke_api_key(admin.tenant(), &ApiKeyId::from(id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
