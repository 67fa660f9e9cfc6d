//! API keys: creation, listing, revocation and authentication (with the
//! in-memory cache of recently verified keys).

use serde::Serialize;
use sqlx::{AssertSqlSafe, Row};

use super::AuthService;
use crate::{
    auth::{
        principal::{KeyHolder, Scope},
        tokens::{random_token, sha256_hex},
    },
    bus::Revocation,
    error::{ApiError, ApiResult},
    ids::{ApiKeyId, TenantId, now_millis},
};

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

impl AuthService {
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

    /// Up to `limit` of the tenant's keys, oldest first (ids are UUIDv7, so
    /// in creation order), after the key `after` when given; with whether
    /// more follow.
    pub async fn list_api_keys(
        &self,
        tenant: &TenantId,
        after: Option<&str>,
        limit: usize,
    ) -> ApiResult<(Vec<ApiKeyView>, bool)> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, name, prefix, scopes, created_at, revoked_at FROM api_keys
             WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT {}",
            limit + 1
        )))
        .bind(tenant.as_str())
        .bind(after.unwrap_or(""))
        .fetch_all(&self.store.pool)
        .await?;
        let mut keys = rows
            .iter()
            .map(key_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let more = keys.len() > limit;
        keys.truncate(limit);
        Ok((keys, more))
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
