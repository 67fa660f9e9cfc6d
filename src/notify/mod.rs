//! The notification engine: types, triggers and their durable fan-out,
//! inboxes with counters, preferences, and live events. Email delivery is
//! the generic outbox's (`crate::email`); this module decides which emails
//! to send, renders them, commits them to the outbox, and tells the
//! outbox's worker, through a send guard, which of them still should go.
//!
//! A trigger is accepted once its type, payload and recipients are checked,
//! and written as one row; a background worker (on any node) fans it out in
//! pages of recipients, one transaction per page: inbox rows, counters and
//! outbox emails together. Live events are published after each commit.
//!
//! Where things are:
//! - types: [`types`] (definitions, validation, compiled templates),
//!   [`catalog`] (the built-in ones), [`type_store`] (a tenant's own rows
//!   over the catalogue), [`template`] (the template language);
//! - triggers: [`trigger`] (accepting one), [`fanout`] (the worker that
//!   claims triggers and paces their pages), [`fanout_page`] (reading,
//!   planning and writing one page of recipients), [`recipients`] (who a
//!   trigger names);
//! - what users see: [`inbox`], [`counts`], [`live`], [`prefs`] (and
//!   [`prefs_store`], their queries), [`routes`];
//! - email: [`email_render`] (notification and digest texts), [`digest`]
//!   (the digest scheduler), [`email_guard`] (the kinds of notification
//!   email and the rules the outbox worker applies to them);
//! - [`clock`]: the engine's clock, shared with the outbox.

pub mod catalog;
pub mod clock;
pub mod counts;
pub mod digest;
pub mod email_guard;
pub mod email_render;
pub mod fanout;
pub mod fanout_page;
pub mod inbox;
pub mod live;
pub mod prefs;
pub mod prefs_store;
pub mod recipients;
pub mod routes;
pub mod template;
pub mod trigger;
pub mod type_store;
pub mod types;

use std::sync::Arc;

use axum::extract::FromRef;

use crate::{
    app::AppState,
    config::{EmailConfig, NotifyConfig},
    email::Outbox,
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
    /// The email outbox this engine queues into; it runs on [`Self::clock`].
    pub outbox: Arc<Outbox>,
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
        let clock = Clock::default();
        let outbox = Arc::new(Outbox::new(
            store.clone(),
            email.clone(),
            config.lease,
            config.poll_interval,
            metrics.clone(),
            {
                let clock = clock.clone();
                move || clock.now_millis()
            },
        ));
        Notify {
            store,
            gateway,
            clock,
            config,
            email,
            public_url,
            metrics,
            fanout_wake: tokio::sync::Notify::new(),
            outbox,
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
        prefs_store::load(&self.store, tenant, user).await
    }
}

/// Stored documents were validated when saved; an unreadable one (from a
/// future version, say) falls back to the defaults rather than failing sends.
pub fn parse_stored(settings: &str) -> Preferences {
    serde_json::from_str(settings).unwrap_or_default()
}

/// The email admin routes take the outbox from the application state; until
/// that state carries the outbox itself, it is the one this engine built.
impl FromRef<AppState> for Arc<Outbox> {
    fn from_ref(state: &AppState) -> Self {
        state.notify.outbox.clone()
    }
}
