//! Tenants: creation and lookup by slug.

use serde::Serialize;
use sqlx::Row;

use super::AuthService;
use crate::{
    error::{ApiError, ApiResult},
    ids::{TenantId, now_millis},
    store::is_unique_violation,
};

#[derive(Debug, Clone, Serialize)]
pub struct TenantView {
    pub id: TenantId,
    pub slug: String,
    pub name: String,
}

impl AuthService {
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
}
