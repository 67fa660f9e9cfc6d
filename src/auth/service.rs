//! Sessions, tokens, users and API keys: the rules of authentication, kept
//! out of the HTTP handlers.
//!
//! A login opens a *session*, which is one refresh-token family. Each refresh
//! marks the presented token used and issues the next; presenting a used token
//! again means it was stolen or replayed, so the whole family is revoked.
//! Revocations are also sent over the bus so live sockets of the session close.

use std::{sync::Arc, time::Duration};

use serde::Serialize;
use sqlx::Row;

use super::{
    key_cache::KeyCache,
    password,
    principal::{KeyHolder, Principal, Scope},
    rbac::{Role, format_roles, parse_roles},
    tokens::{JwtKeys, TokenError, new_refresh_token, random_token, sha256_hex},
};
use crate::{
    bus::{Broker, Revocation},
    error::{ApiError, ApiResult},
    ids::{ApiKeyId, SessionId, TenantId, UserId, now_millis},
    store::{Store, is_unique_violation},
};

pub struct AuthService {
    store: Store,
    keys: JwtKeys,
    access_ttl: Duration,
    refresh_ttl: Duration,
    broker: Arc<dyn Broker>,
    key_cache: Arc<KeyCache>,
}

/// What login and refresh return.
#[derive(Debug, Serialize)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Seconds until the refresh token expires.
    pub refresh_expires_in: u64,
    pub user: UserView,
}

#[derive(Debug, Clone, Serialize)]
pub struct UserView {
    pub id: UserId,
    pub tenant_id: TenantId,
    pub email: String,
    pub display_name: String,
    pub roles: Vec<Role>,
    pub disabled: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TenantView {
    pub id: TenantId,
    pub slug: String,
    pub name: String,
}

#[derive(Debug, Serialize)]
pub struct ApiKeyView {
    pub id: ApiKeyId,
    pub name: String,
    /// First characters of the key, to recognise it in lists.
    pub prefix: String,
    pub scopes: Vec<Scope>,
    pub created_at: i64,
    pub revoked: bool,
}

/// A new API key; `key` is shown once and never stored in clear.
#[derive(Debug, Serialize)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub view: ApiKeyView,
    pub key: String,
}

/// Changes an admin may make to a user.
#[derive(Debug, Default)]
pub struct UserChanges {
    pub display_name: Option<String>,
    pub roles: Option<Vec<Role>>,
    pub disabled: Option<bool>,
    pub password: Option<String>,
}

fn user_from_row(row: &sqlx::any::AnyRow) -> Result<UserView, sqlx::Error> {
    Ok(UserView {
        id: row.try_get::<String, _>("id")?.into(),
        tenant_id: row.try_get::<String, _>("tenant_id")?.into(),
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        roles: parse_roles(&row.try_get::<String, _>("roles")?),
        disabled: row.try_get::<Option<i64>, _>("disabled_at")?.is_some(),
        created_at: row.try_get("created_at")?,
    })
}

fn key_from_row(row: &sqlx::any::AnyRow) -> Result<ApiKeyView, sqlx::Error> {
    Ok(ApiKeyView {
        id: row.try_get::<String, _>("id")?.into(),
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        scopes: parse_scopes(&row.try_get::<String, _>("scopes")?),
        created_at: row.try_get("created_at")?,
        revoked: row.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
    })
}

fn parse_scopes(stored: &str) -> Vec<Scope> {
    stored.split(',').filter_map(Scope::parse).collect()
}

/// Normalised email: trimmed and lower-cased, so logins are case-insensitive.
pub fn normalize_email(email: &str) -> Result<String, ApiError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && !email.contains(char::is_whitespace);
    if !valid {
        return Err(ApiError::invalid(
            "invalid_email",
            "email address is not valid",
        ));
    }
    Ok(email)
}

impl AuthService {
    pub fn new(
        store: Store,
        keys: JwtKeys,
        access_ttl: Duration,
        refresh_ttl: Duration,
        broker: Arc<dyn Broker>,
        key_cache: Arc<KeyCache>,
    ) -> Self {
        AuthService {
            store,
            keys,
            access_ttl,
            refresh_ttl,
            broker,
            key_cache,
        }
    }

    // ---- tenants -------------------------------------------------------

    pub async fn create_tenant(&self, slug: &str, name: &str) -> ApiResult<TenantView> {
        let slug = slug.trim().to_lowercase();
        if slug.is_empty()
            || slug.len() > 64
            || !slug
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ApiError::invalid(
                "invalid_slug",
                "tenant slug must be 1-64 characters of a-z, 0-9, - or _",
            ));
        }
        let id = TenantId::generate();
        let result =
            sqlx::query("INSERT INTO tenants (id, slug, name, created_at) VALUES ($1, $2, $3, $4)")
                .bind(id.as_str())
                .bind(&slug)
                .bind(name)
                .bind(now_millis())
                .execute(&self.store.pool)
                .await;
        match result {
            Ok(_) => Ok(TenantView {
                id,
                slug,
                name: name.to_owned(),
            }),
            Err(e) if is_unique_violation(&e) => Err(ApiError::conflict(
                "tenant_exists",
                format!("tenant `{slug}` already exists"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn find_tenant(&self, slug: &str) -> ApiResult<Option<TenantView>> {
        let row = sqlx::query("SELECT id, slug, name FROM tenants WHERE slug = $1")
            .bind(slug.trim().to_lowercase())
            .fetch_optional(&self.store.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(TenantView {
                id: r.try_get::<String, _>("id")?.into(),
                slug: r.try_get("slug")?,
                name: r.try_get("name")?,
            }),
            None => None,
        })
    }

    pub async fn tenant_count(&self) -> ApiResult<i64> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM tenants")
            .fetch_one(&self.store.pool)
            .await?
            .try_get("n")?)
    }

    // ---- users ---------------------------------------------------------

    pub async fn create_user(
        &self,
        tenant: &TenantId,
        email: &str,
        display_name: &str,
        password: &str,
        roles: &[Role],
    ) -> ApiResult<UserView> {
        let email = normalize_email(email)?;
        password::check_strength(password).map_err(|m| ApiError::invalid("weak_password", m))?;
        if roles.is_empty() {
            return Err(ApiError::invalid(
                "invalid_roles",
                "a user needs at least one role",
            ));
        }
        let display_name = if display_name.trim().is_empty() {
            email.clone()
        } else {
            display_name.trim().to_owned()
        };
        let hash = password::hash(password.to_owned()).await?;
        let id = UserId::generate();
        let now = now_millis();
        let result = sqlx::query(
            "INSERT INTO users (id, tenant_id, email, display_name, password_hash, roles, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(id.as_str())
        .bind(tenant.as_str())
        .bind(&email)
        .bind(&display_name)
        .bind(&hash)
        .bind(format_roles(roles))
        .bind(now)
        .execute(&self.store.pool)
        .await;
        match result {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(ApiError::conflict(
                    "user_exists",
                    "a user with this email already exists in the tenant",
                ));
            }
            Err(e) => return Err(e.into()),
        }
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        Ok(UserView {
            id,
            tenant_id: tenant.clone(),
            email,
            display_name,
            roles,
            disabled: false,
            created_at: now,
        })
    }

    pub async fn get_user(&self, tenant: &TenantId, user: &UserId) -> ApiResult<UserView> {
        let row = sqlx::query("SELECT id, tenant_id, email, display_name, roles, disabled_at, created_at FROM users WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(user.as_str())
            .fetch_optional(&self.store.pool)
            .await?
            .ok_or(ApiError::NotFound("user"))?;
        Ok(user_from_row(&row)?)
    }

    pub async fn list_users(&self, tenant: &TenantId) -> ApiResult<Vec<UserView>> {
        let rows = sqlx::query("SELECT id, tenant_id, email, display_name, roles, disabled_at, created_at FROM users WHERE tenant_id = $1 ORDER BY email")
            .bind(tenant.as_str())
            .fetch_all(&self.store.pool)
            .await?;
        Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
    }

    /// Applies `changes`; a role change, a disable or a password change ends
    /// every session of the user (their live sockets close).
    pub async fn update_user(
        &self,
        tenant: &TenantId,
        user: &UserId,
        changes: UserChanges,
    ) -> ApiResult<UserView> {
        let current = self.get_user(tenant, user).await?;
        let now = now_millis();
        let mut ends_sessions = false;
        if let Some(name) = &changes.display_name {
            let name = name.trim();
            if name.is_empty() || name.len() > 200 {
                return Err(ApiError::invalid(
                    "invalid_display_name",
                    "display name must be 1-200 characters",
                ));
            }
        }
        if let Some(roles) = &changes.roles {
            if roles.is_empty() {
                return Err(ApiError::invalid(
                    "invalid_roles",
                    "a user needs at least one role",
                ));
            }
            let mut sorted = roles.clone();
            sorted.sort();
            sorted.dedup();
            ends_sessions |= sorted != current.roles;
        }
        let hash = match &changes.password {
            Some(p) => {
                password::check_strength(p).map_err(|m| ApiError::invalid("weak_password", m))?;
                ends_sessions = true;
                Some(password::hash(p.clone()).await?)
            }
            None => None,
        };
        if let Some(disabled) = changes.disabled {
            ends_sessions |= disabled && !current.disabled;
        }
        sqlx::query(
            "UPDATE users SET
                display_name = COALESCE($3, display_name),
                roles = COALESCE($4, roles),
                password_hash = COALESCE($5, password_hash),
                disabled_at = CASE WHEN $6 = 1 THEN COALESCE(disabled_at, $7) WHEN $6 = 0 THEN NULL ELSE disabled_at END,
                updated_at = $7
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_str())
        .bind(user.as_str())
        .bind(changes.display_name.as_deref().map(str::trim))
        .bind(changes.roles.as_deref().map(format_roles))
        .bind(hash)
        .bind(changes.disabled.map(|d| d as i64).unwrap_or(-1))
        .bind(now)
        .execute(&self.store.pool)
        .await?;
        if ends_sessions {
            self.revoke_user_sessions(tenant, user, "user changed")
                .await?;
        }
        self.get_user(tenant, user).await
    }

    // ---- sessions ------------------------------------------------------

    /// Checks credentials and opens a session.
    pub async fn login(
        &self,
        tenant_slug: &str,
        email: &str,
        password: &str,
    ) -> ApiResult<TokenPair> {
        let bad =
            || ApiError::unauthorized("invalid_credentials", "tenant, email or password is wrong");
        let email = normalize_email(email).map_err(|_| bad())?;
        let row = sqlx::query(
            "SELECT u.id, u.tenant_id, u.password_hash, u.disabled_at FROM users u JOIN tenants t ON t.id = u.tenant_id
             WHERE t.slug = $1 AND u.email = $2",
        )
        .bind(tenant_slug.trim().to_lowercase())
        .bind(&email)
        .fetch_optional(&self.store.pool)
        .await?;
        let stored = row
            .as_ref()
            .map(|r| r.try_get::<String, _>("password_hash"))
            .transpose()?;
        let ok = password::verify(password.to_owned(), stored).await?;
        let Some(row) = row.filter(|_| ok) else {
            return Err(bad());
        };
        if row.try_get::<Option<i64>, _>("disabled_at")?.is_some() {
            return Err(ApiError::unauthorized(
                "user_disabled",
                "this account is disabled",
            ));
        }
        let tenant: TenantId = row.try_get::<String, _>("tenant_id")?.into();
        let user: UserId = row.try_get::<String, _>("id")?.into();
        let session = SessionId::generate();
        let now = now_millis();
        let refresh = new_refresh_token();
        let mut tx = self.store.pool.begin().await?;
        sqlx::query("INSERT INTO sessions (id, tenant_id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(session.as_str())
            .bind(tenant.as_str())
            .bind(user.as_str())
            .bind(now)
            .bind(now + self.refresh_ttl.as_millis() as i64)
            .execute(&mut *tx)
            .await?;
        self.insert_refresh(&mut tx, &session, &refresh, now)
            .await?;
        tx.commit().await?;
        tracing::info!(tenant = %tenant, user = %user, session = %session, "login");
        self.token_pair(&tenant, &user, &session, refresh).await
    }

    async fn insert_refresh(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        session: &SessionId,
        token: &str,
        now: i64,
    ) -> ApiResult<()> {
        sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(sha256_hex(token))
            .bind(session.as_str())
            .bind(now)
            .bind(now + self.refresh_ttl.as_millis() as i64)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn token_pair(
        &self,
        tenant: &TenantId,
        user: &UserId,
        session: &SessionId,
        refresh: String,
    ) -> ApiResult<TokenPair> {
        let (access, _) = self
            .keys
            .issue(tenant, user, session, self.access_ttl.as_secs())?;
        Ok(TokenPair {
            access_token: access,
            refresh_token: refresh,
            token_type: "Bearer",
            expires_in: self.access_ttl.as_secs(),
            refresh_expires_in: self.refresh_ttl.as_secs(),
            user: self.get_user(tenant, user).await?,
        })
    }

    /// Rotates a refresh token. A token presented twice revokes its family.
    pub async fn refresh(&self, refresh_token: &str) -> ApiResult<TokenPair> {
        let invalid =
            || ApiError::unauthorized("invalid_refresh_token", "refresh token is not valid");
        let hash = sha256_hex(refresh_token.trim());
        let now = now_millis();
        let mut tx = self.store.pool.begin().await?;
        let row = sqlx::query(
            "SELECT r.session_id, r.expires_at, r.used_at, s.tenant_id, s.user_id, s.revoked_at, u.disabled_at
             FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id JOIN users u ON u.id = s.user_id
             WHERE r.token_hash = $1",
        )
        .bind(&hash)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(invalid)?;
        let session: SessionId = row.try_get::<String, _>("session_id")?.into();
        let tenant: TenantId = row.try_get::<String, _>("tenant_id")?.into();
        let user: UserId = row.try_get::<String, _>("user_id")?.into();
        if row.try_get::<Option<i64>, _>("revoked_at")?.is_some()
            || row.try_get::<Option<i64>, _>("disabled_at")?.is_some()
        {
            return Err(ApiError::unauthorized(
                "session_revoked",
                "this session has been revoked",
            ));
        }
        if row.try_get::<i64, _>("expires_at")? <= now {
            return Err(ApiError::unauthorized(
                "refresh_token_expired",
                "refresh token has expired; sign in again",
            ));
        }
        // Mark used only if still unused: of two concurrent refreshes with the
        // same token exactly one wins; the other is a reuse.
        let claimed = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL",
        )
        .bind(&hash)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !claimed {
            drop(tx);
            tracing::warn!(tenant = %tenant, user = %user, session = %session, "refresh token reused: revoking its family");
            self.revoke_session(&tenant, &user, &session, "refresh token reused")
                .await?;
            return Err(ApiError::unauthorized(
                "refresh_token_reused",
                "refresh token was already used; the session is revoked",
            ));
        }
        let next = new_refresh_token();
        self.insert_refresh(&mut tx, &session, &next, now).await?;
        tx.commit().await?;
        self.token_pair(&tenant, &user, &session, next).await
    }

    /// Verifies an access token and that its session is still live.
    pub async fn authenticate(&self, token: &str) -> ApiResult<Principal> {
        let claims = self
            .keys
            .verify(token)
            .map_err(|e: TokenError| ApiError::unauthorized(e.code(), e.to_string()))?;
        let row = sqlx::query(
            "SELECT s.revoked_at, u.disabled_at, u.roles FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.id = $1 AND s.tenant_id = $2 AND s.user_id = $3",
        )
        .bind(claims.sid.as_str())
        .bind(claims.tid.as_str())
        .bind(claims.sub.as_str())
        .fetch_optional(&self.store.pool)
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid_token", "invalid token"))?;
        if row.try_get::<Option<i64>, _>("revoked_at")?.is_some()
            || row.try_get::<Option<i64>, _>("disabled_at")?.is_some()
        {
            return Err(ApiError::unauthorized(
                "session_revoked",
                "this session has been revoked",
            ));
        }
        Ok(Principal {
            tenant: claims.tid,
            user: claims.sub,
            session: claims.sid,
            roles: parse_roles(&row.try_get::<String, _>("roles")?),
            expires_at: claims.exp,
        })
    }

    /// Ends one session of a user.
    pub async fn revoke_session(
        &self,
        tenant: &TenantId,
        user: &UserId,
        session: &SessionId,
        reason: &str,
    ) -> ApiResult<()> {
        self.revoke_sessions(tenant, user, Some(session), reason)
            .await
    }

    /// Ends every session of a user.
    pub async fn revoke_user_sessions(
        &self,
        tenant: &TenantId,
        user: &UserId,
        reason: &str,
    ) -> ApiResult<()> {
        self.revoke_sessions(tenant, user, None, reason).await
    }

    /// Marks the sessions revoked in the store (tokens of them stop working
    /// on every node), then closes their live sockets on every node.
    async fn revoke_sessions(
        &self,
        tenant: &TenantId,
        user: &UserId,
        session: Option<&SessionId>,
        reason: &str,
    ) -> ApiResult<()> {
        sqlx::query(
            "UPDATE sessions SET revoked_at = $4, revoked_reason = $5
             WHERE tenant_id = $1 AND user_id = $2 AND ($3 = '' OR id = $3) AND revoked_at IS NULL",
        )
        .bind(tenant.as_str())
        .bind(user.as_str())
        .bind(session.map_or("", |s| s.as_str()))
        .bind(now_millis())
        .bind(reason)
        .execute(&self.store.pool)
        .await?;
        tracing::info!(tenant = %tenant, user = %user, session = ?session, reason, "sessions revoked");
        self.broker
            .revoke(Revocation::Sessions {
                tenant: tenant.clone(),
                user: user.clone(),
                session: session.cloned(),
            })
            .await
            .map_err(|e| ApiError::Internal(e.into()))
    }

    // ---- API keys ------------------------------------------------------

    pub async fn create_api_key(
        &self,
        tenant: &TenantId,
        name: &str,
        scopes: &[Scope],
    ) -> ApiResult<CreatedApiKey> {
        let name = name.trim();
        if name.is_empty() || name.len() > 100 {
            return Err(ApiError::invalid(
                "invalid_name",
                "key name must be 1-100 characters",
            ));
        }
        if scopes.is_empty() {
            return Err(ApiError::invalid(
                "invalid_scopes",
                "an API key needs at least one scope",
            ));
        }
        let mut scopes = scopes.to_vec();
        scopes.sort_by_key(|s| s.as_str());
        scopes.dedup();
        let prefix = random_token(6)
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(8)
            .collect::<String>();
        let key = format!("rls_{prefix}_{}", random_token(32));
        let id = ApiKeyId::generate();
        let now = now_millis();
        sqlx::query("INSERT INTO api_keys (id, tenant_id, name, prefix, key_hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(id.as_str())
            .bind(tenant.as_str())
            .bind(name)
            .bind(format!("rls_{prefix}"))
            .bind(sha256_hex(&key))
            .bind(scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","))
            .bind(now)
            .execute(&self.store.pool)
            .await?;
        Ok(CreatedApiKey {
            view: ApiKeyView {
                id,
                name: name.to_owned(),
                prefix: format!("rls_{prefix}"),
                scopes,
                created_at: now,
                revoked: false,
            },
            key,
        })
    }

    pub async fn list_api_keys(&self, tenant: &TenantId) -> ApiResult<Vec<ApiKeyView>> {
        let rows = sqlx::query("SELECT id, name, prefix, scopes, created_at, revoked_at FROM api_keys WHERE tenant_id = $1 ORDER BY created_at")
            .bind(tenant.as_str())
            .fetch_all(&self.store.pool)
            .await?;
        Ok(rows.iter().map(key_from_row).collect::<Result<_, _>>()?)
    }

    pub async fn revoke_api_key(&self, tenant: &TenantId, key: &ApiKeyId) -> ApiResult<()> {
        let done = sqlx::query("UPDATE api_keys SET revoked_at = $3 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL")
            .bind(tenant.as_str())
            .bind(key.as_str())
            .bind(now_millis())
            .execute(&self.store.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(ApiError::NotFound("api key"));
        }
        // Every node's cache forgets it (this one at once, even if the bus fails).
        self.key_cache.forget(key);
        self.broker
            .revoke(Revocation::ApiKey {
                tenant: tenant.clone(),
                key: key.clone(),
            })
            .await
            .map_err(|e| ApiError::Internal(e.into()))
    }

    /// Resolves an API key, from memory when it was verified recently.
    pub async fn authenticate_key(&self, key: &str) -> ApiResult<KeyHolder> {
        let hash = sha256_hex(key);
        if let Some(holder) = self.key_cache.get(&hash) {
            return Ok(holder);
        }
        let row = sqlx::query(
            "SELECT id, tenant_id, scopes FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(&hash)
        .fetch_optional(&self.store.pool)
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid_api_key", "API key is not valid"))?;
        let holder = KeyHolder {
            tenant: row.try_get::<String, _>("tenant_id")?.into(),
            key: row.try_get::<String, _>("id")?.into(),
            scopes: parse_scopes(&row.try_get::<String, _>("scopes")?),
        };
        self.key_cache.insert(hash, holder.clone());
        Ok(holder)
    }
}
