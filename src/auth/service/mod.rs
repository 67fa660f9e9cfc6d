//! Sessions, tokens, users and API keys: the rules of authentication, kept
//! out of the HTTP handlers.
//!
//! One [`AuthService`] holds them; its methods live with their idea:
//! `tenants`, `users` (accounts and passwords), `sessions` (login,
//! refresh rotation, access tokens, revocation) and `api_keys`.

mod api_keys;
mod sessions;
mod tenants;
pub mod throttle;
mod users;

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use crate::{
    auth::{key_cache::KeyCache, tokens::JwtKeys},
    bus::Broker,
    metrics::Metrics,
    store::Store,
};

pub use api_keys::{ApiKeyView, CreatedApiKey};
pub use sessions::{AccessRefused, TokenPair};
pub use tenants::TenantView;
pub use throttle::{PasswordRefused, Throttled};
pub use users::{UserChanges, UserView, normalize_email};

pub struct AuthService {
    store: Store,
    keys: JwtKeys,
    access_ttl: Duration,
    refresh_ttl: Duration,
    broker: Arc<dyn Broker>,
    key_cache: Arc<KeyCache>,
    /// The hub's metrics, once [`AuthService::report_to`] has been called.
    metrics: OnceLock<Arc<Metrics>>,
}

impl AuthService {
    pub fn new(
        store: Store,
        keys: JwtKeys,
        access_ttl: Duration,
        refresh_ttl: Duration,
        broker: Arc<dyn Broker>,
        key_cache: Arc<KeyCache>,
    ) -> Self {
        AuthService {
            store,
            keys,
            access_ttl,
            refresh_ttl,
            broker,
            key_cache,
            metrics: OnceLock::new(),
        }
    }

    /// Counts refused credentials and throttled logins into `metrics` (the
    /// hub's, served at `/metrics`). Without it (one-shot admin commands)
    /// nothing is counted. Only the first call has an effect.
    pub fn report_to(&self, metrics: Arc<Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// Counts one sign-in refused by the login throttle.
    fn count_login_throttled(&self) {
        if let Some(m) = self.metrics.get() {
            m.login_throttled.inc();
        }
    }

    /// Counts one refused token or API key.
    pub fn count_auth_failure(&self) {
        if let Some(m) = self.metrics.get() {
            m.auth_failures.inc();
        }
    }
}
