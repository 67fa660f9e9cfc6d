//! Users: accounts, roles and passwords.

use serde::Serialize;
use sqlx::{AssertSqlSafe, Row};

use super::{
    AuthService,
    throttle::{PasswordRefused, ThrottleKey},
};
use crate::{
    auth::{
        password,
        principal::Principal,
        rbac::{Role, format_roles, parse_roles},
    },
    error::{ApiError, ApiResult},
    ids::{TenantId, UserId, now_millis},
    store::is_unique_violation,
};

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

    /// The tenant's user with this email (compared case-insensitively).
    pub async fn find_user_by_email(&self, tenant: &TenantId, email: &str) -> ApiResult<UserView> {
        let email = normalize_email(email)?;
        let row = sqlx::query("SELECT id, tenant_id, email, display_name, roles, disabled_at, created_at FROM users WHERE tenant_id = $1 AND email = $2")
            .bind(tenant.as_str())
            .bind(&email)
            .fetch_optional(&self.store.pool)
            .await?
            .ok_or(ApiError::NotFound("user"))?;
        Ok(user_from_row(&row)?)
    }

    /// A signed-in user changes their own password. The current one must be
    /// given (403 `forbidden` otherwise); wrong ones count towards the
    /// account's login throttle, so a stolen access token cannot be used to
    /// guess it. The new one follows the password rules (422
    /// `weak_password`). Every other session of the user ends (their sockets
    /// close); the caller's own session stays valid, so its access and
    /// refresh tokens keep working.
    pub async fn change_own_password(
        &self,
        me: &Principal,
        current: &str,
        new: &str,
    ) -> Result<(), PasswordRefused> {
        password::check_strength(new).map_err(|m| ApiError::invalid("weak_password", m))?;
        let row = sqlx::query(
            "SELECT u.password_hash, u.email, t.slug FROM users u JOIN tenants t ON t.id = u.tenant_id
             WHERE u.tenant_id = $1 AND u.id = $2",
        )
        .bind(me.tenant.as_str())
        .bind(me.user.as_str())
        .fetch_optional(&self.store.pool)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
        let account = ThrottleKey::account(
            &row.try_get::<String, _>("slug")?,
            &row.try_get::<String, _>("email")?,
        );
        self.check_throttle(std::slice::from_ref(&account)).await?;
        let stored: String = row.try_get("password_hash")?;
        if !password::verify(current.to_owned(), Some(stored)).await? {
            self.record_failure(std::slice::from_ref(&account)).await?;
            return Err(ApiError::forbidden("the current password is wrong").into());
        }
        self.clear_failures(&account).await?;
        let hash = password::hash(new.to_owned()).await?;
        sqlx::query(
            "UPDATE users SET password_hash = $3, updated_at = $4 WHERE tenant_id = $1 AND id = $2",
        )
        .bind(me.tenant.as_str())
        .bind(me.user.as_str())
        .bind(hash)
        .bind(now_millis())
        .execute(&self.store.pool)
        .await?;
        Ok(self
            .revoke_other_sessions(&me.tenant, &me.user, &me.session, "password changed")
            .await?)
    }

    /// Up to `limit` of the tenant's users by email, after the email `after`
    /// when given; with whether more follow.
    pub async fn list_users(
        &self,
        tenant: &TenantId,
        after: Option<&str>,
        limit: usize,
    ) -> ApiResult<(Vec<UserView>, bool)> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, tenant_id, email, display_name, roles, disabled_at, created_at FROM users
             WHERE tenant_id = $1 AND email > $2 ORDER BY email LIMIT {}",
            limit + 1
        )))
        .bind(tenant.as_str())
        .bind(after.unwrap_or(""))
        .fetch_all(&self.store.pool)
        .await?;
        let mut users = rows
            .iter()
            .map(user_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let more = users.len() > limit;
        users.truncate(limit);
        Ok((users, more))
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
}
