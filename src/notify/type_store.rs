//! A tenant's notification types: its own rows over the built-in catalogue.

use std::collections::BTreeMap;

use sqlx::Row;

use super::{
    catalog,
    types::{CompiledType, TypeDef, TypeError},
};
use crate::{error::ApiError, ids::now_millis, store::Store};

/// Why an operation on a tenant's notification types failed.
#[derive(Debug, thiserror::Error)]
pub enum TypeStoreError {
    /// The definition does not compile.
    #[error(transparent)]
    Invalid(#[from] TypeError),
    /// A definition saved under a key other than its own.
    #[error("the body's key differs from the path's")]
    KeyMismatch,
    /// Creating a type the tenant already has.
    #[error("type `{0}` exists; PUT /api/v1/notification-types/{0} replaces it")]
    Exists(String),
    /// Neither the tenant nor the catalogue has this type.
    #[error("notification type not found")]
    NotFound,
    /// The tenant has no row of its own for this type.
    #[error("tenant notification type not found")]
    TenantTypeNotFound,
    /// A stored definition no longer parses.
    #[error("stored type {key} unreadable: {source}")]
    Unreadable {
        key: String,
        source: serde_json::Error,
    },
    /// A definition could not be serialized for storage.
    #[error(transparent)]
    Unwritable(serde_json::Error),
    #[error("internal error")]
    Store(#[from] sqlx::Error),
}

impl TypeStoreError {
    /// The stable code clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            TypeStoreError::Invalid(_) | TypeStoreError::KeyMismatch => "invalid_type",
            TypeStoreError::Exists(_) => "type_exists",
            TypeStoreError::NotFound | TypeStoreError::TenantTypeNotFound => "not_found",
            TypeStoreError::Unreadable { .. }
            | TypeStoreError::Unwritable(_)
            | TypeStoreError::Store(_) => "internal",
        }
    }
}

impl From<TypeStoreError> for ApiError {
    fn from(e: TypeStoreError) -> Self {
        let code = e.code();
        match e {
            TypeStoreError::Invalid(_) | TypeStoreError::KeyMismatch => {
                ApiError::invalid(code, e.to_string())
            }
            TypeStoreError::Exists(_) => ApiError::conflict(code, e.to_string()),
            TypeStoreError::NotFound => ApiError::NotFound("notification type"),
            TypeStoreError::TenantTypeNotFound => ApiError::NotFound("tenant notification type"),
            TypeStoreError::Unreadable { .. } => ApiError::Internal(e.into()),
            TypeStoreError::Unwritable(e) => ApiError::Internal(e.into()),
            TypeStoreError::Store(e) => e.into(),
        }
    }
}

fn from_row(definition: &str, key: &str) -> Result<TypeDef, TypeStoreError> {
    serde_json::from_str(definition).map_err(|source| TypeStoreError::Unreadable {
        key: key.to_owned(),
        source,
    })
}

/// The effective type `key` of the tenant, if any.
pub async fn get(
    store: &Store,
    tenant: &str,
    key: &str,
) -> Result<Option<TypeDef>, TypeStoreError> {
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
pub async fn list(store: &Store, tenant: &str) -> Result<Vec<TypeDef>, TypeStoreError> {
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
pub async fn put(
    store: &Store,
    tenant: &str,
    mut def: TypeDef,
) -> Result<CompiledType, TypeStoreError> {
    def.builtin = false;
    let compiled = CompiledType::compile(def)?;
    let json = serde_json::to_string(&compiled.def).map_err(TypeStoreError::Unwritable)?;
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
pub async fn delete(store: &Store, tenant: &str, key: &str) -> Result<bool, TypeStoreError> {
    let done = sqlx::query("DELETE FROM notification_types WHERE tenant_id = $1 AND key = $2")
        .bind(tenant)
        .bind(key)
        .execute(&store.pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

#[cfg(test)]
mod tests {
    use super::{TypeError, TypeStoreError};

    #[test]
    fn each_type_store_error_keeps_its_status_code_and_message() {
        let unreadable = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let cases = [
            (
                TypeStoreError::Invalid(TypeError::Invalid(
                    "channels: at least one of in_app, email".into(),
                )),
                422,
                "invalid_type",
                "channels: at least one of in_app, email",
            ),
            (
                TypeStoreError::KeyMismatch,
                422,
                "invalid_type",
                "the body's key differs from the path's",
            ),
            (
                TypeStoreError::Exists("task.assigned".into()),
                409,
                "type_exists",
                "type `task.assigned` exists; PUT /api/v1/notification-types/task.assigned replaces it",
            ),
            (
                TypeStoreError::NotFound,
                404,
                "not_found",
                "notification type not found",
            ),
            (
                TypeStoreError::TenantTypeNotFound,
                404,
                "not_found",
                "tenant notification type not found",
            ),
            (
                TypeStoreError::Unreadable {
                    key: "task.assigned".into(),
                    source: unreadable,
                },
                500,
                "internal",
                "internal error",
            ),
            (
                TypeStoreError::Unwritable(serde_json::Error::io(std::io::Error::other("full"))),
                500,
                "internal",
                "internal error",
            ),
            (
                TypeStoreError::Store(sqlx::Error::RowNotFound),
                500,
                "internal",
                "internal error",
            ),
        ];
        crate::error::assert_maps_to(cases, |e| e.code());
    }
}
