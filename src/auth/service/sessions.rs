//! Sessions: login, refresh-token rotation, access tokens and revocation.
//!
//! A login opens a *session*, which is one refresh-token family. Each refresh
//! marks the presented token used and issues the next; presenting a used token
//! again means it was stolen or replayed, so the whole family is revoked.
//! Revocations are also sent over the bus so live sockets of the session close.

use std::net::IpAddr;

use serde::Serialize;
use sqlx::Row;

use super::{
    AuthService, UserView, normalize_email,
    throttle::{PasswordRefused, ThrottleKey},
};
use crate::{
    auth::{
        password,
        principal::Principal,
        rbac::parse_roles,
        tokens::{TokenError, VisitorClaims, new_refresh_token, sha256_hex},
    },
    bus::Revocation,
    error::{ApiError, ApiResult},
    ids::{SessionId, TenantId, UserId, now_millis},
};

/// Why an access token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccessRefused {
    #[error(transparent)]
    Token(TokenError),
    #[error("this session has been revoked")]
    Revoked,
    #[error("internal error")]
    Store(#[from] sqlx::Error),
}

impl AccessRefused {
    pub fn code(&self) -> &'static str {
        match self {
            AccessRefused::Token(e) => e.code(),
            AccessRefused::Revoked => "session_revoked",
            AccessRefused::Store(_) => "internal",
        }
    }
}

/// The user id a visitor session's principal carries.
fn visitor_user(session: &str) -> UserId {
    format!("visitor-{session}").into()
}

impl From<AccessRefused> for ApiError {
    fn from(e: AccessRefused) -> Self {
        match e {
            AccessRefused::Store(e) => ApiError::from(e),
            refused => ApiError::unauthorized(refused.code(), refused.to_string()),
        }
    }
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

impl AuthService {
    /// Checks credentials and opens a session. `from` is the caller's
    /// address, when known, for the per-address login throttle (see
    /// [`super::throttle`]); the account is throttled either way.
    pub async fn login(
        &self,
        tenant_slug: &str,
        email: &str,
        password: &str,
        from: Option<IpAddr>,
    ) -> Result<TokenPair, PasswordRefused> {
        let bad =
            || ApiError::unauthorized("invalid_credentials", "tenant, email or password is wrong");
        let account = ThrottleKey::account(tenant_slug, email);
        let mut keys = vec![account.clone()];
        keys.extend(from.and_then(ThrottleKey::address));
        self.check_throttle(&keys).await?;
        let Ok(email) = normalize_email(email) else {
            self.record_failure(&keys).await?;
            return Err(bad().into());
        };
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
            self.record_failure(&keys).await?;
            return Err(bad().into());
        };
        self.clear_failures(&account).await?;
        if row.try_get::<Option<i64>, _>("disabled_at")?.is_some() {
            return Err(ApiError::unauthorized("user_disabled", "this account is disabled").into());
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
        Ok(self.token_pair(&tenant, &user, &session, refresh).await?)
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
        self.verify_access(token).await.map_err(ApiError::from)
    }

    /// Who an access token speaks for, or why it is refused: the typed form
    /// of [`AuthService::authenticate`], for callers that act on the reason
    /// (the gateway picks its close code from it).
    pub async fn verify_access(&self, token: &str) -> Result<Principal, AccessRefused> {
        let claims = self.keys.verify(token).map_err(AccessRefused::Token)?;
        let row = sqlx::query(
            "SELECT s.revoked_at, u.disabled_at, u.roles FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.id = $1 AND s.tenant_id = $2 AND s.user_id = $3",
        )
        .bind(claims.sid.as_str())
        .bind(claims.tid.as_str())
        .bind(claims.sub.as_str())
        .fetch_optional(&self.store.pool)
        .await?
        .ok_or(AccessRefused::Token(TokenError::Invalid))?;
        if row.try_get::<Option<i64>, _>("revoked_at")?.is_some()
            || row.try_get::<Option<i64>, _>("disabled_at")?.is_some()
        {
            return Err(AccessRefused::Revoked);
        }
        Ok(Principal {
            tenant: claims.tid,
            user: claims.sub,
            session: claims.sid,
            roles: parse_roles(&row.try_get::<String, _>("roles")?),
            expires_at: claims.exp,
            origin: None,
        })
    }

    /// Who a token opening a live connection speaks for: a user (an access
    /// token) or an anonymous visitor of a web page (a visitor token, see
    /// [`AuthService::start_visitor`]). REST routes take user tokens only
    /// ([`AuthService::verify_access`]); visitors reach only the streams of
    /// what names them.
    pub async fn verify_connection(&self, token: &str) -> Result<Principal, AccessRefused> {
        match self.keys.verify_visitor(token) {
            Ok(claims) => self.visitor(claims).await,
            Err(_) => self.verify_access(token).await,
        }
    }

    /// The visitor a visitor token names, if its session is live.
    pub async fn verify_visitor(&self, token: &str) -> Result<Principal, AccessRefused> {
        let claims = self
            .keys
            .verify_visitor(token)
            .map_err(AccessRefused::Token)?;
        self.visitor(claims).await
    }

    async fn visitor(&self, claims: VisitorClaims) -> Result<Principal, AccessRefused> {
        let row = sqlx::query(
            "SELECT revoked_at, expires_at FROM visitor_sessions WHERE id = $1 AND tenant_id = $2",
        )
        .bind(claims.sid.as_str())
        .bind(claims.tid.as_str())
        .fetch_optional(&self.store.pool)
        .await?
        .ok_or(AccessRefused::Token(TokenError::Invalid))?;
        if row.try_get::<Option<i64>, _>("revoked_at")?.is_some()
            || row.try_get::<i64, _>("expires_at")? <= now_millis()
        {
            return Err(AccessRefused::Revoked);
        }
        Ok(Principal {
            tenant: claims.tid,
            user: claims.sub,
            session: claims.sid,
            roles: Vec::new(),
            expires_at: claims.exp,
            origin: Some(claims.org),
        })
    }

    /// Starts an anonymous visitor session bound to one web origin, for
    /// `issuer` (what admitted it, e.g. `widget:<id>`, so it can end them
    /// all); returns the visitor's id and its token with the expiry.
    pub async fn start_visitor(
        &self,
        tenant: &TenantId,
        issuer: &str,
        origin: &str,
        ttl_secs: u64,
    ) -> ApiResult<(UserId, String, u64)> {
        let id = uuid::Uuid::now_v7().to_string();
        let visitor = visitor_user(&id);
        let session: SessionId = id.clone().into();
        let now = now_millis();
        sqlx::query(
            "INSERT INTO visitor_sessions (id, tenant_id, issuer, origin, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(tenant.as_str())
        .bind(issuer)
        .bind(origin)
        .bind(now)
        .bind(now + (ttl_secs as i64) * 1000)
        .execute(&self.store.pool)
        .await?;
        let (token, exp) = self
            .keys
            .issue_visitor(tenant, &visitor, &session, origin, ttl_secs)
            .map_err(ApiError::Internal)?;
        Ok((visitor, token, exp))
    }

    /// Deletes visitor sessions that expired (or were ended) more than a
    /// day ago: their tokens verify no more, and anonymous visitors would
    /// otherwise add rows forever. Returns how many.
    pub async fn purge_visitors(&self) -> ApiResult<u64> {
        let before = now_millis() - 86_400_000;
        Ok(
            sqlx::query("DELETE FROM visitor_sessions WHERE expires_at < $1 OR revoked_at < $1")
                .bind(before)
                .execute(&self.store.pool)
                .await?
                .rows_affected(),
        )
    }

    /// Ends every visitor session `issuer` started: their tokens stop
    /// opening connections and calling routes, and their live streams are
    /// closed on every node.
    pub async fn end_visitors(&self, tenant: &TenantId, issuer: &str) -> ApiResult<u64> {
        let ended = sqlx::query(
            "UPDATE visitor_sessions SET revoked_at = $3 \
             WHERE tenant_id = $1 AND issuer = $2 AND revoked_at IS NULL RETURNING id",
        )
        .bind(tenant.as_str())
        .bind(issuer)
        .bind(now_millis())
        .fetch_all(&self.store.pool)
        .await?;
        for row in &ended {
            let id: String = row.try_get("id")?;
            self.broker
                .revoke(Revocation::Sessions {
                    tenant: tenant.clone(),
                    user: visitor_user(&id),
                    session: Some(id.into()),
                })
                .await
                .map_err(|e| ApiError::Internal(e.into()))?;
        }
        Ok(ended.len() as u64)
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

    /// Ends every session of a user but `keep` (the caller's own), closing
    /// their live sockets on every node.
    pub async fn revoke_other_sessions(
        &self,
        tenant: &TenantId,
        user: &UserId,
        keep: &SessionId,
        reason: &str,
    ) -> ApiResult<()> {
        let ended = sqlx::query(
            "UPDATE sessions SET revoked_at = $4, revoked_reason = $5
             WHERE tenant_id = $1 AND user_id = $2 AND id <> $3 AND revoked_at IS NULL
             RETURNING id",
        )
        .bind(tenant.as_str())
        .bind(user.as_str())
        .bind(keep.as_str())
        .bind(now_millis())
        .bind(reason)
        .fetch_all(&self.store.pool)
        .await?;
        tracing::info!(tenant = %tenant, user = %user, kept = %keep, ended = ended.len(), reason, "other sessions revoked");
        for row in ended {
            let session: SessionId = row.try_get::<String, _>("id")?.into();
            self.broker
                .revoke(Revocation::Sessions {
                    tenant: tenant.clone(),
                    user: user.clone(),
                    session: Some(session),
                })
                .await
                .map_err(|e| ApiError::Internal(e.into()))?;
        }
        Ok(())
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
}
