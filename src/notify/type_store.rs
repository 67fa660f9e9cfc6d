//! A tenant's notification types: its own rows over the built-in catalogue.

use std::collections::BTreeMap;

use sqlx::Row;

use super::{
    catalog,
    types::{CompiledType, TypeDef},
};
use crate::{
    error::{ApiError, ApiResult},
    ids::now_millis,
    store::Store,
};

fn from_row(definition: &str, key: &str) -> ApiResult<TypeDef> {
    serde_json::from_str(definition)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored type {key} unreadable: {e}")))
}

/// The effective type `key` of the tenant, if any.
pub async fn get(store: &Store, tenant: &str, key: &str) -> ApiResult<Option<TypeDef>> {
    let row =
        sqlx::query("SELECT definition FROM notification_types WHERE tenant_id = $1 AND key = $2")
            .bind(tenant)
            .bind(key)
            .fetch_optional(&store.pool)
            .await?;
    match row {
        Some(row) => Ok(Some(from_row(
            &row.try_get::<String, _>("definition")?,
            key,
        )?)),
        None => Ok(catalog::builtin_type(key)),
    }
}

/// Every effective type of the tenant, by key.
pub async fn list(store: &Store, tenant: &str) -> ApiResult<Vec<TypeDef>> {
    let mut all: BTreeMap<String, TypeDef> = catalog::builtin_types()
        .into_iter()
        .map(|t| (t.key.clone(), t))
        .collect();
    let rows = sqlx::query("SELECT key, definition FROM notification_types WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_all(&store.pool)
        .await?;
    for row in rows {
        let key: String = row.try_get("key")?;
        let def = from_row(&row.try_get::<String, _>("definition")?, &key)?;
        all.insert(key, def);
    }
    Ok(all.into_values().collect())
}

/// Saves a checked definition (creating or replacing the tenant's row).
pub async fn put(store: &Store, tenant: &str, mut def: TypeDef) -> ApiResult<CompiledType> {
    def.builtin = false;
    let compiled =
        CompiledType::compile(def).map_err(|e| ApiError::invalid("invalid_type", e.to_string()))?;
    let json = serde_json::to_string(&compiled.def).map_err(anyhow::Error::from)?;
    let now = now_millis();
    sqlx::query(
        "INSERT INTO notification_types (tenant_id, key, definition, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
         ON CONFLICT (tenant_id, key) DO UPDATE SET definition = excluded.definition, updated_at = excluded.updated_at",
    )
    .bind(tenant)
    .bind(&compiled.def.key)
    .bind(json)
    .bind(now)
    .execute(&store.pool)
    .await?;
    Ok(compiled)
}

/// Removes the tenant's row; `true` if there was one.
pub async fn delete(store: &Store, tenant: &str, key: &str) -> ApiResult<bool> {
    let done = sqlx::query("DELETE FROM notification_types WHERE tenant_id = $1 AND key = $2")
        .bind(tenant)
        .bind(key)
        .execute(&store.pool)
        .await?;
    Ok(done.rows_affected() > 0)
}
