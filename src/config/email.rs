//! Email delivery (`RELAIS_SMTP_*`, `RELAIS_EMAIL_*`, `RELAIS_DIGEST_*`).

use std::time::Duration;

use secrecy::SecretString;

use super::{ConfigError, Env};

/// Email delivery: SMTP when `RELAIS_SMTP_HOST` is set, else `.eml` files
/// under `<data dir>/mail`.
#[derive(Debug, Clone)]
pub struct EmailConfig {
    pub smtp: Option<SmtpConfig>,
    /// `From` header, e.g. `Relais <notifications@example.com>`.
    pub from: String,
    /// Attempts before an email is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt up to `retry_max`, with jitter.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// An `immediate` email waits this long and is sent only if the in-app
    /// notification is still unread.
    pub fallback_delay: Duration,
    /// Emails sent at once by one node.
    pub concurrency: usize,
    /// How often the digest scheduler looks for users whose local digest hour has come.
    pub digest_tick: Duration,
    /// The app's page where a user changes their notification preferences
    /// (`RELAIS_EMAIL_PREFERENCES_URL`); a path is prefixed with the public
    /// URL. Linked from every email's footer and sent as `List-Unsubscribe`.
    pub preferences_url: String,
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// Per-command timeout (connect, each reply).
    pub timeout: Duration,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which is required (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS at all: only for a relay on a trusted network or loopback.
    None,
}

impl std::str::FromStr for SmtpTls {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "starttls" => Ok(SmtpTls::StartTls),
            "tls" => Ok(SmtpTls::Tls),
            "none" => Ok(SmtpTls::None),
            _ => Err("expected starttls, tls or none".into()),
        }
    }
}

impl SmtpConfig {
    /// `None` (email written to files) when `RELAIS_SMTP_HOST` is unset.
    pub(super) fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        Ok(match env.get("RELAIS_SMTP_HOST") {
            None => None,
            Some(host) => {
                let tls: SmtpTls = env.parse("RELAIS_SMTP_TLS", SmtpTls::StartTls)?;
                let default_port = match tls {
                    SmtpTls::StartTls => 587,
                    SmtpTls::Tls => 465,
                    SmtpTls::None => 25,
                };
                Some(SmtpConfig {
                    host: host.to_owned(),
                    port: env.parse("RELAIS_SMTP_PORT", default_port)?,
                    tls,
                    username: env.get("RELAIS_SMTP_USERNAME").map(str::to_owned),
                    password: env.secret_any(&["RELAIS_SMTP_PASSWORD"]),
                    timeout: env.secs("RELAIS_SMTP_TIMEOUT_SECS", Duration::from_secs(30))?,
                })
            }
        })
    }
}

impl EmailConfig {
    pub(super) fn from_env(env: &Env, smtp: Option<SmtpConfig>) -> Result<Self, ConfigError> {
        Ok(EmailConfig {
            smtp,
            from: env
                .get("RELAIS_EMAIL_FROM")
                .unwrap_or("Relais <relais@localhost>")
                .to_owned(),
            max_attempts: env.parse("RELAIS_EMAIL_MAX_ATTEMPTS", 8u32)?.max(1),
            retry_base: env.secs("RELAIS_EMAIL_RETRY_BASE_SECS", Duration::from_secs(30))?,
            retry_max: env.secs("RELAIS_EMAIL_RETRY_MAX_SECS", Duration::from_secs(3600))?,
            fallback_delay: env
                .secs("RELAIS_EMAIL_FALLBACK_DELAY_SECS", Duration::from_secs(300))?,
            concurrency: env.parse("RELAIS_EMAIL_CONCURRENCY", 8usize)?.clamp(1, 256),
            digest_tick: env.secs("RELAIS_DIGEST_TICK_SECS", Duration::from_secs(60))?,
            preferences_url: env
                .get("RELAIS_EMAIL_PREFERENCES_URL")
                .unwrap_or("/settings/notifications")
                .to_owned(),
        })
    }
}
