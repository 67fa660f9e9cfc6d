//! The notification engine (`RELAIS_NOTIFY_*`, `RELAIS_DEFAULT_LOCALE`).

use std::time::Duration;

use super::{ConfigError, Env};

/// The notification engine.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// Language of users who chose none (`en` or `fr`).
    pub default_locale: String,
    /// Recipients written per transaction during a fan-out.
    pub fanout_batch: usize,
    /// How often idle workers look for work they were not woken for
    /// (another node's triggers, work left by a crash).
    pub poll_interval: Duration,
    /// How long a node owns a trigger or an email it started on; after a
    /// crash, another node (or the restarted one) takes over after this.
    pub lease: Duration,
}

impl NotifyConfig {
    pub(super) fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let default_locale = env.get("RELAIS_DEFAULT_LOCALE").unwrap_or("en").to_owned();
        if !matches!(default_locale.as_str(), "en" | "fr") {
            return Err(ConfigError {
                name: "RELAIS_DEFAULT_LOCALE".into(),
                value: default_locale,
                reason: "expected en or fr".into(),
            });
        }
        Ok(NotifyConfig {
            default_locale,
            fanout_batch: env.parse("RELAIS_NOTIFY_BATCH", 1000usize)?.clamp(1, 2000),
            poll_interval: env.secs("RELAIS_NOTIFY_POLL_SECS", Duration::from_secs(1))?,
            lease: env.secs("RELAIS_NOTIFY_LEASE_SECS", Duration::from_secs(120))?,
        })
    }
}
