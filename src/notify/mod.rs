//! The notification engine: types, triggers and their durable fan-out,
//! inboxes with counters, preferences, and live events. Email delivery is
//! the `email` module's; this one decides what to send and commits it.
//!
//! A trigger is accepted once its type, payload and recipients are checked,
//! and written as one row; a background worker (on any node) fans it out in
//! pages of recipients, one transaction per page: inbox rows, counters and
//! outbox emails together. Live events are published after each commit.

pub mod catalog;
pub mod clock;
pub mod counts;
pub mod fanout;
pub mod inbox;
pub mod live;
pub mod prefs;
pub mod recipients;
pub mod routes;
pub mod template;
pub mod type_store;
pub mod types;

use std::sync::Arc;

use sqlx::Row;

use crate::{
    config::{EmailConfig, NotifyConfig},
    gateway::Gateway,
    metrics::Metrics,
    store::Store,
};

pub use clock::Clock;
use prefs::Preferences;
use types::Locale;

/// Shared by the REST handlers and the background workers.
pub struct Notify {
    pub store: Store,
    pub gateway: Arc<Gateway>,
    pub clock: Clock,
    pub config: NotifyConfig,
    pub email: EmailConfig,
    pub public_url: Option<String>,
    pub metrics: Arc<Metrics>,
    /// Wakes the fan-out workers when a trigger is accepted.
    pub fanout_wake: tokio::sync::Notify,
    /// Wakes the email worker when an email is due now.
    pub outbox_wake: Arc<tokio::sync::Notify>,
}

impl Notify {
    pub fn new(
        store: Store,
        gateway: Arc<Gateway>,
        config: NotifyConfig,
        email: EmailConfig,
        public_url: Option<String>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Notify {
            store,
            gateway,
            clock: Clock::default(),
            config,
            email,
            public_url,
            metrics,
            fanout_wake: tokio::sync::Notify::new(),
            outbox_wake: Arc::new(tokio::sync::Notify::new()),
        }
    }

    pub fn default_locale(&self) -> Locale {
        self.config.default_locale.parse().unwrap_or(Locale::En)
    }

    /// A link made absolute with the public URL, when one is configured.
    pub fn absolute(&self, url: &str) -> String {
        match &self.public_url {
            Some(base) if url.starts_with('/') => format!("{base}{url}"),
            _ => url.to_owned(),
        }
    }

    /// One user's preferences (the defaults if never saved).
    pub async fn preferences(&self, tenant: &str, user: &str) -> anyhow::Result<Preferences> {
        let row = sqlx::query(
            "SELECT settings FROM notification_preferences WHERE tenant_id = $1 AND user_id = $2",
        )
        .bind(tenant)
        .bind(user)
        .fetch_optional(&self.store.pool)
        .await?;
        Ok(match row {
            Some(row) => parse_stored(&row.try_get::<String, _>("settings")?),
            None => Preferences::default(),
        })
    }
}

/// Stored documents were validated when saved; an unreadable one (from a
/// future version, say) falls back to the defaults rather than failing sends.
pub fn parse_stored(settings: &str) -> Preferences {
    serde_json::from_str(settings).unwrap_or_default()
}
