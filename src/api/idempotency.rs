//! `Idempotency-Key` support: a retried request returns the first result and
//! does its work once.
//!
//! The first request with a key claims a row (unique per tenant and key); a
//! concurrent duplicate sees the claim and gets `409 idempotency_in_progress`;
//! a later retry gets the stored response. A different body under the same
//! key is refused. Claims abandoned by a crash expire after
//! [`STALE_CLAIM_MS`]; stored responses are purged after [`RETENTION_MS`].

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, request::Parts},
};
use sqlx::Row;

use crate::{
    auth::tokens::sha256_hex,
    error::{ApiError, ApiResult},
    ids::{TenantId, now_millis},
    store::{Store, is_unique_violation},
};

/// A claim older than this without a response is considered abandoned.
const STALE_CLAIM_MS: i64 = 60_000;
/// Stored responses are kept this long.
pub const RETENTION_MS: i64 = 24 * 3600 * 1000;

/// What to do with a request carrying an idempotency key.
pub enum Claim {
    /// First time: do the work, then [`Idempotency::complete`] or [`Idempotency::release`].
    Fresh,
    /// Seen before: return this response as is.
    Replay { status: u16, body: String },
}

pub struct Idempotency {
    store: Store,
}

/// The request's `Idempotency-Key` header, validated; `None` when absent.
///
/// A present header that is not 1-255 visible ASCII characters is refused
/// with `422 invalid_idempotency_key`. A handler that must report other
/// errors first (permissions, the body) takes
/// `Result<IdempotencyKey, ApiError>` and applies `?` where it needs the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(pub Option<String>);

impl IdempotencyKey {
    /// Reads and validates the header; the one parser of `Idempotency-Key`.
    pub fn from_headers(headers: &HeaderMap) -> ApiResult<Self> {
        let Some(value) = headers.get("idempotency-key") else {
            return Ok(IdempotencyKey(None));
        };
        let raw = value.to_str().map_err(|_| {
            ApiError::invalid("invalid_idempotency_key", "Idempotency-Key must be ASCII")
        })?;
        Ok(IdempotencyKey(Some(parse_key(raw)?)))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Self::from_headers(&parts.headers)
    }
}

/// Validates the header value.
fn parse_key(raw: &str) -> ApiResult<String> {
    let key = raw.trim();
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1-255 visible ASCII characters",
        ));
    }
    Ok(key.to_owned())
}

impl Idempotency {
    pub fn new(store: Store) -> Self {
        Idempotency { store }
    }

    /// A fingerprint of what the request asks, to refuse a reused key.
    pub fn fingerprint(route: &str, body: &[u8]) -> String {
        sha256_hex(&format!("{route}\n{}", String::from_utf8_lossy(body)))
    }

    pub async fn claim(&self, tenant: &TenantId, key: &str, fingerprint: &str) -> ApiResult<Claim> {
        for _ in 0..2 {
            let inserted = sqlx::query("INSERT INTO idempotency_keys (tenant_id, key, fingerprint, created_at) VALUES ($1, $2, $3, $4)")
                .bind(tenant.as_str())
                .bind(key)
                .bind(fingerprint)
                .bind(now_millis())
                .execute(&self.store.pool)
                .await;
            match inserted {
                Ok(_) => return Ok(Claim::Fresh),
                Err(e) if is_unique_violation(&e) => {}
                Err(e) => return Err(e.into()),
            }
            let Some(row) = sqlx::query("SELECT fingerprint, status_code, response_body, created_at FROM idempotency_keys WHERE tenant_id = $1 AND key = $2")
                .bind(tenant.as_str())
                .bind(key)
                .fetch_optional(&self.store.pool)
                .await?
            else {
                continue; // released meanwhile: try to claim again
            };
            if row.try_get::<String, _>("fingerprint")? != fingerprint {
                return Err(ApiError::invalid(
                    "idempotency_key_reused",
                    "this Idempotency-Key was used with a different request",
                ));
            }
            match (
                row.try_get::<Option<i64>, _>("status_code")?,
                row.try_get::<Option<String>, _>("response_body")?,
            ) {
                (Some(status), Some(body)) => {
                    return Ok(Claim::Replay {
                        status: status as u16,
                        body,
                    });
                }
                _ if now_millis() - row.try_get::<i64, _>("created_at")? > STALE_CLAIM_MS => {
                    self.release(tenant, key).await?;
                }
                _ => {
                    return Err(ApiError::conflict(
                        "idempotency_in_progress",
                        "a request with this Idempotency-Key is in progress; retry shortly",
                    ));
                }
            }
        }
        Err(ApiError::conflict(
            "idempotency_in_progress",
            "a request with this Idempotency-Key is in progress; retry shortly",
        ))
    }

    pub async fn complete(
        &self,
        tenant: &TenantId,
        key: &str,
        status: u16,
        body: &str,
    ) -> ApiResult<()> {
        sqlx::query("UPDATE idempotency_keys SET status_code = $3, response_body = $4 WHERE tenant_id = $1 AND key = $2")
            .bind(tenant.as_str())
            .bind(key)
            .bind(status as i64)
            .bind(body)
            .execute(&self.store.pool)
            .await?;
        Ok(())
    }

    /// Gives up a claim after a failure, so a retry can do the work.
    pub async fn release(&self, tenant: &TenantId, key: &str) -> ApiResult<()> {
        sqlx::query("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND status_code IS NULL")
            .bind(tenant.as_str())
            .bind(key)
            .execute(&self.store.pool)
            .await?;
        Ok(())
    }

    /// Deletes records past their retention.
    pub async fn purge(&self) -> ApiResult<u64> {
        Ok(
            sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
                .bind(now_millis() - RETENTION_MS)
                .execute(&self.store.pool)
                .await?
                .rows_affected(),
        )
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};

    use super::IdempotencyKey;

    fn code(headers: &HeaderMap) -> &'static str {
        IdempotencyKey::from_headers(headers).unwrap_err().code()
    }

    #[test]
    fn the_header_is_optional_trimmed_and_bounded() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            IdempotencyKey::from_headers(&headers).unwrap(),
            IdempotencyKey(None)
        );
        headers.insert("idempotency-key", HeaderValue::from_static(" order-42 "));
        assert_eq!(
            IdempotencyKey::from_headers(&headers).unwrap(),
            IdempotencyKey(Some("order-42".into()))
        );
        headers.insert("idempotency-key", HeaderValue::from_static(""));
        assert_eq!(code(&headers), "invalid_idempotency_key");
        headers.insert("idempotency-key", HeaderValue::from_static("two words"));
        assert_eq!(code(&headers), "invalid_idempotency_key");
        headers.insert(
            "idempotency-key",
            HeaderValue::from_str(&"k".repeat(256)).unwrap(),
        );
        assert_eq!(code(&headers), "invalid_idempotency_key");
        headers.insert(
            "idempotency-key",
            HeaderValue::from_bytes("clé".as_bytes()).unwrap(),
        );
        assert_eq!(code(&headers), "invalid_idempotency_key");
    }
}
