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
//!   email and the rules the outbox worker applies to them),
//!   [`unsubscribe`] (one-click unsubscribe tokens and their effect);
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
pub mod unsubscribe;

use std::sync::Arc;

use axum::extract::FromRef;
use secrecy::SecretString;

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
use unsubscribe::{Stop, Unsubscribe, UnsubscribeKey};

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
    /// Signs the one-click unsubscribe addresses of emails.
    pub unsubscribe: UnsubscribeKey,
}

impl Notify {
    pub fn new(
        store: Store,
        gateway: Arc<Gateway>,
        config: NotifyConfig,
        email: EmailConfig,
        public_url: Option<String>,
        metrics: Arc<Metrics>,
        jwt_secret: &SecretString,
    ) -> Self {
        if let Some(warning) = public_url_warning(&email, public_url.as_deref()) {
            tracing::warn!("{warning}");
        }
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
            unsubscribe: UnsubscribeKey::derive(jwt_secret),
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

    /// The preferences page as an absolute `http(s)` address, or `None`
    /// when no public URL makes it one (a relative link is useless in an
    /// email).
    pub fn preferences_link(&self) -> Option<String> {
        let url = self.absolute(&self.email.preferences_url);
        (url.starts_with("https://") || url.starts_with("http://")).then_some(url)
    }

    /// The one-click unsubscribe address (RFC 8058) that stops `stop` for
    /// one user, or `None` unless the public URL is `https` (the RFC wants
    /// an HTTPS address, and a relative one is useless in an email).
    pub fn one_click_link(&self, tenant: &str, user: &str, stop: Stop) -> Option<String> {
        let base = self.public_url.as_deref()?;
        if !base.starts_with("https://") {
            return None;
        }
        let token = self.unsubscribe.sign(&Unsubscribe {
            tenant: tenant.to_owned(),
            user: user.to_owned(),
            stop,
        });
        Some(format!("{base}/api/v1/unsubscribe/{token}"))
    }

    /// One user's preferences (the defaults if never saved).
    pub async fn preferences(&self, tenant: &str, user: &str) -> anyhow::Result<Preferences> {
        prefs_store::load(&self.store, tenant, user).await
    }
}

/// Emails sent through a real server with no public URL carry relative
/// links (to the notification, to the preferences) that no mail client can
/// open: worth a warning at start. Files (the embedded default) are for
/// looking at, so they go unremarked.
fn public_url_warning(email: &EmailConfig, public_url: Option<&str>) -> Option<&'static str> {
    (email.smtp.is_some() && public_url.is_none()).then_some(
        "RELAIS_SMTP_HOST is set but RELAIS_PUBLIC_URL is not: links in emails will be \
         relative (unusable in a mail client) and emails will carry no List-Unsubscribe; \
         set RELAIS_PUBLIC_URL to the address of your app, e.g. https://app.example.com",
    )
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{SmtpConfig, SmtpTls};

    #[test]
    fn smtp_without_a_public_url_is_warned_about() {
        let mut email = EmailConfig {
            smtp: None,
            from: "Relais <relais@localhost>".into(),
            max_attempts: 1,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(1),
            fallback_delay: Duration::from_secs(1),
            concurrency: 1,
            digest_tick: Duration::from_secs(1),
            preferences_url: "/settings/notifications".into(),
        };
        // Files: nothing to warn about.
        assert_eq!(public_url_warning(&email, None), None);
        email.smtp = Some(SmtpConfig {
            host: "smtp.example.com".into(),
            port: 587,
            tls: SmtpTls::StartTls,
            username: None,
            password: None,
            timeout: Duration::from_secs(1),
        });
        assert!(
            public_url_warning(&email, None)
                .unwrap()
                .contains("RELAIS_PUBLIC_URL")
        );
        assert_eq!(
            public_url_warning(&email, Some("https://app.example.com")),
            None
        );
    }
}
