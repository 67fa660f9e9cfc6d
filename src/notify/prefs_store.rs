//! The queries on `notification_preferences` for one user: reading their
//! document and saving it. (Preferences of a page of recipients are read
//! in one query by [`super::fanout_page::load_preferences`].)

use sqlx::Row;

use super::{parse_stored, prefs::Preferences};
use crate::store::Store;

/// One user's preferences (the defaults if never saved).
pub async fn load(store: &Store, tenant: &str, user: &str) -> anyhow::Result<Preferences> {
    let row = sqlx::query(
        "SELECT settings FROM notification_preferences WHERE tenant_id = $1 AND user_id = $2",
    )
    .bind(tenant)
    .bind(user)
    .fetch_optional(&store.pool)
    .await?;
    Ok(match row {
        Some(row) => parse_stored(&row.try_get::<String, _>("settings")?),
        None => Preferences::default(),
    })
}

/// Saves one user's (validated) preferences, replacing any saved before;
/// `now` is the update time, in milliseconds since the Unix epoch.
pub async fn save(
    store: &Store,
    tenant: &str,
    user: &str,
    prefs: &Preferences,
    now: i64,
) -> anyhow::Result<()> {
    let settings = serde_json::to_string(prefs)?;
    sqlx::query(
        "INSERT INTO notification_preferences (tenant_id, user_id, settings, has_digest, updated_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (tenant_id, user_id) DO UPDATE SET settings = excluded.settings, has_digest = excluded.has_digest, updated_at = excluded.updated_at",
    )
    .bind(tenant)
    .bind(user)
    .bind(settings)
    .bind(i64::from(prefs.has_digest()))
    .bind(now)
    .execute(&store.pool)
    .await?;
    Ok(())
}
