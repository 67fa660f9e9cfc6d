//! Typed configuration read from the environment.
//!
//! Every setting has a default that lets a newcomer run the hub with no
//! configuration at all (embedded SQLite, in-process bus). Production values
//! come from `RELAIS_*` variables; the conventional `DATABASE_URL` and
//! `REDIS_URL` are accepted as fallbacks. Secrets are wrapped in
//! [`SecretString`] so they never appear in `Debug` output or logs.

mod email;
mod limits;
mod notify;
mod origins;

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, time::Duration};

use secrecy::SecretString;

pub use email::{EmailConfig, SmtpConfig, SmtpTls};
pub use limits::Limits;
pub use notify::NotifyConfig;
pub use origins::OriginPolicy;

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {name}={value:?}: {reason}")]
pub struct ConfigError {
    pub name: String,
    pub value: String,
    pub reason: String,
}

/// Everything the hub needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the HTTP/WebSocket listener binds to.
    pub bind: SocketAddr,
    /// Folder for the embedded database, the generated JWT secret and email files.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; `None` means the embedded SQLite file.
    pub database_url: Option<SecretString>,
    /// Cluster mode: the bus on Redis. The in-process bus serves when unset.
    pub redis_url: Option<SecretString>,
    /// Prefix of every Redis key and pub/sub channel, so several hubs (or
    /// test runs) can share one Redis.
    pub redis_prefix: String,
    /// Cluster mode: how long a node's presence entries outlive its last
    /// refresh (so a crashed node leaves no ghosts beyond it).
    pub presence_ttl: Duration,
    /// How often a node reports itself (connections, channels) for the
    /// operator view (`RELAIS_NODE_REPORT_SECS`).
    pub node_report_every: Duration,
    /// History size and TTL per channel namespace, replacing the defaults
    /// the namespaces declare (`RELAIS_CHANNEL_HISTORY`).
    pub channel_history: Vec<(String, crate::channels::HistoryPolicy)>,
    /// HS256 signing secret; generated and persisted under `data_dir` when unset.
    pub jwt_secret: Option<SecretString>,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// Browser origins allowed to open a WebSocket or SSE stream.
    pub allowed_origins: OriginPolicy,
    pub bootstrap: BootstrapConfig,
    pub limits: Limits,
    pub notify: NotifyConfig,
    /// Moderation queues: the shortest time between two publications of a
    /// queue's counts (`RELAIS_QUEUE_COUNTS_WINDOW_MS`).
    pub queue_counts_window: Duration,
    pub chat: ChatConfig,
    pub assistant: AssistantConfig,
    pub email: EmailConfig,
    /// Public address of the hub or the app, used to make links in emails absolute.
    pub public_url: Option<String>,
    /// Tracing filter (e.g. `info`, `relais=debug`).
    pub log_filter: String,
    /// `text` or `json` log lines.
    pub log_json: bool,
}

/// Collaboration chat settings.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// How long after a user's last connection to the general room leaves
    /// before "disconnected" is posted; a reconnect within it posts nothing
    /// (`RELAIS_CHAT_DISCONNECT_DELAY_SECS`).
    pub disconnect_delay: Duration,
    /// Messages a user may send per second in a room, per node, with a
    /// burst of twice as many (`RELAIS_CHAT_MESSAGES_PER_SEC`).
    pub messages_per_sec: u32,
    /// How often the retention purge runs (`RELAIS_CHAT_PURGE_INTERVAL_SECS`).
    pub purge_interval: Duration,
    /// Shortest time between two pushes of a user's unread counts after
    /// new messages (`RELAIS_CHAT_UNREAD_WINDOW_MS`).
    pub unread_window: Duration,
}

/// Assistant settings.
#[derive(Clone)]
pub struct AssistantConfig {
    /// The key that encrypts providers' API keys at rest: 32 bytes, base64
    /// (`RELAIS_ASSISTANT_ENCRYPTION_KEY`). Without it no provider can be
    /// added.
    pub encryption_key: Option<[u8; 32]>,
    /// Shortest time between two frames of one answer: tokens arriving
    /// faster are coalesced (`RELAIS_ASSISTANT_FRAME_MS`).
    pub frame_interval: Duration,
    /// How long a provider may take to send its first token before the
    /// next one in the chain is tried (`RELAIS_ASSISTANT_FIRST_TOKEN_TIMEOUT_MS`).
    pub first_token_timeout: Duration,
    /// Retention of conversations when the tenant sets none
    /// (`RELAIS_ASSISTANT_RETENTION_DAYS`).
    pub retention_days: i64,
    /// How often the retention purge runs (`RELAIS_ASSISTANT_PURGE_INTERVAL_SECS`).
    pub purge_interval: Duration,
    /// Answers streaming at once per user and per tenant
    /// (`RELAIS_ASSISTANT_MAX_STREAMS_PER_USER`, `…_PER_TENANT`).
    pub max_streams_per_user: i64,
    pub max_streams_per_tenant: i64,
    /// Tokens (prompt and completion) a tenant may use per UTC day; 0 for
    /// no limit (`RELAIS_ASSISTANT_TOKENS_PER_DAY`).
    pub tokens_per_day: i64,
    /// Shortest time between two `assistant.fallback` notifications for one
    /// assistant and provider (`RELAIS_ASSISTANT_FALLBACK_NOTIFY_SECS`).
    pub fallback_notify_interval: Duration,
}

impl std::fmt::Debug for AssistantConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssistantConfig")
            .field("encryption_key", &self.encryption_key.map(|_| "<set>"))
            .field("frame_interval", &self.frame_interval)
            .field("first_token_timeout", &self.first_token_timeout)
            .field("retention_days", &self.retention_days)
            .finish_non_exhaustive()
    }
}

fn assistant_key(env: &Env) -> Result<Option<[u8; 32]>, ConfigError> {
    use base64::Engine;
    let Some(value) = env
        .get("RELAIS_ASSISTANT_ENCRYPTION_KEY")
        .filter(|v| !v.is_empty())
    else {
        return Ok(None);
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok());
    match bytes {
        Some(key) => Ok(Some(key)),
        None => Err(ConfigError {
            name: "RELAIS_ASSISTANT_ENCRYPTION_KEY".into(),
            value: "<hidden>".into(),
            reason: "must be 32 bytes in base64 (e.g. `openssl rand -base64 32`)".into(),
        }),
    }
}

/// First-start identity, used only when the store holds no tenant.
#[derive(Debug, Clone)]
pub struct BootstrapConfig {
    pub tenant_slug: String,
    pub admin_email: String,
    /// Generated and printed once when unset.
    pub admin_password: Option<SecretString>,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars().collect())
    }

    /// Reads configuration from a map of variables (tests pass their own).
    pub fn from_vars(vars: HashMap<String, String>) -> Result<Self, ConfigError> {
        let env = Env(vars);
        let limits = Limits::from_env(&env)?;
        let allowed_origins = OriginPolicy::from_env(&env);
        // SMTP settings are read before the notification engine's and the
        // rest of email's: the first bad variable is the one reported.
        let smtp = SmtpConfig::from_env(&env)?;
        let notify = NotifyConfig::from_env(&env)?;
        let email = EmailConfig::from_env(&env, smtp)?;
        if let Some(smtp) = &email.smtp
            && notify.lease <= smtp.timeout * 2
        {
            return Err(ConfigError {
                name: "RELAIS_NOTIFY_LEASE_SECS".into(),
                value: notify.lease.as_secs_f64().to_string(),
                reason: "must exceed twice RELAIS_SMTP_TIMEOUT_SECS: an attempt may last half the lease, so one slow SMTP reply must fit in it".into(),
            });
        }
        let config = Config {
            bind: env.parse("RELAIS_BIND", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
            data_dir: PathBuf::from(env.get("RELAIS_DATA_DIR").unwrap_or("./data")),
            database_url: env.secret_any(&["RELAIS_DATABASE_URL", "DATABASE_URL"]),
            redis_url: env.secret_any(&["RELAIS_REDIS_URL", "REDIS_URL"]),
            redis_prefix: env
                .get("RELAIS_REDIS_PREFIX")
                .unwrap_or("relais")
                .to_owned(),
            presence_ttl: env.secs("RELAIS_PRESENCE_TTL_SECS", Duration::from_secs(30))?,
            node_report_every: env.secs("RELAIS_NODE_REPORT_SECS", Duration::from_secs(5))?,
            channel_history: match env.get("RELAIS_CHANNEL_HISTORY") {
                None => Vec::new(),
                Some(value) => {
                    crate::channels::parse_history_overrides(value).map_err(|reason| {
                        ConfigError {
                            name: "RELAIS_CHANNEL_HISTORY".into(),
                            value: value.into(),
                            reason,
                        }
                    })?
                }
            },
            jwt_secret: env.secret_any(&["RELAIS_JWT_SECRET"]),
            access_token_ttl: env
                .secs("RELAIS_ACCESS_TOKEN_TTL_SECS", Duration::from_secs(30 * 60))?,
            refresh_token_ttl: env.secs(
                "RELAIS_REFRESH_TOKEN_TTL_SECS",
                Duration::from_secs(7 * 24 * 3600),
            )?,
            allowed_origins,
            bootstrap: BootstrapConfig {
                tenant_slug: env
                    .get("RELAIS_BOOTSTRAP_TENANT")
                    .unwrap_or("default")
                    .to_owned(),
                admin_email: env
                    .get("RELAIS_BOOTSTRAP_ADMIN_EMAIL")
                    .unwrap_or("admin@localhost")
                    .to_owned(),
                admin_password: env.secret_any(&["RELAIS_BOOTSTRAP_ADMIN_PASSWORD"]),
            },
            limits,
            notify,
            queue_counts_window: Duration::from_millis(
                env.parse("RELAIS_QUEUE_COUNTS_WINDOW_MS", 250u64)?
                    .clamp(1, 60_000),
            ),
            chat: ChatConfig {
                disconnect_delay: env
                    .secs("RELAIS_CHAT_DISCONNECT_DELAY_SECS", Duration::from_secs(10))?,
                messages_per_sec: env
                    .parse("RELAIS_CHAT_MESSAGES_PER_SEC", 5u32)?
                    .clamp(1, 10_000),
                purge_interval: env
                    .secs("RELAIS_CHAT_PURGE_INTERVAL_SECS", Duration::from_secs(3600))?,
                unread_window: Duration::from_millis(
                    env.parse("RELAIS_CHAT_UNREAD_WINDOW_MS", 1000u64)?
                        .clamp(50, 60_000),
                ),
            },
            assistant: AssistantConfig {
                encryption_key: assistant_key(&env)?,
                frame_interval: Duration::from_millis(
                    env.parse("RELAIS_ASSISTANT_FRAME_MS", 10u64)?
                        .clamp(1, 5_000),
                ),
                first_token_timeout: Duration::from_millis(
                    env.parse("RELAIS_ASSISTANT_FIRST_TOKEN_TIMEOUT_MS", 20_000u64)?
                        .clamp(10, 600_000),
                ),
                retention_days: env
                    .parse("RELAIS_ASSISTANT_RETENTION_DAYS", 7i64)?
                    .clamp(1, 3650),
                purge_interval: env.secs(
                    "RELAIS_ASSISTANT_PURGE_INTERVAL_SECS",
                    Duration::from_secs(3600),
                )?,
                max_streams_per_user: env
                    .parse("RELAIS_ASSISTANT_MAX_STREAMS_PER_USER", 2i64)?
                    .clamp(1, 1000),
                max_streams_per_tenant: env
                    .parse("RELAIS_ASSISTANT_MAX_STREAMS_PER_TENANT", 50i64)?
                    .clamp(1, 100_000),
                tokens_per_day: env.parse("RELAIS_ASSISTANT_TOKENS_PER_DAY", 0i64)?.max(0),
                fallback_notify_interval: env.secs(
                    "RELAIS_ASSISTANT_FALLBACK_NOTIFY_SECS",
                    Duration::from_secs(600),
                )?,
            },
            email,
            public_url: env
                .get("RELAIS_PUBLIC_URL")
                .map(|u| u.trim_end_matches('/').to_owned()),
            log_filter: env.get("RELAIS_LOG").unwrap_or("info").to_owned(),
            log_json: env.get("RELAIS_LOG_FORMAT") == Some("json"),
        };
        if config.limits.ping_interval >= config.limits.idle_timeout {
            return Err(ConfigError {
                name: "RELAIS_WS_PING_INTERVAL_SECS".into(),
                value: config.limits.ping_interval.as_secs().to_string(),
                reason: "must be shorter than RELAIS_WS_IDLE_TIMEOUT_SECS".into(),
            });
        }
        Ok(config)
    }
}

/// The variables configuration is read from, with typed accessors shared by
/// every section.
struct Env(HashMap<String, String>);

impl Env {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn secret_any(&self, names: &[&str]) -> Option<SecretString> {
        names
            .iter()
            .find_map(|n| self.get(n))
            .map(|v| SecretString::from(v.to_owned()))
    }

    fn parse<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => raw.trim().parse().map_err(|e: T::Err| ConfigError {
                name: name.into(),
                value: raw.into(),
                reason: e.to_string(),
            }),
        }
    }

    fn secs(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        let secs: f64 = self.parse(name, default.as_secs_f64())?;
        if !(secs.is_finite() && secs > 0.0) {
            return Err(ConfigError {
                name: name.into(),
                value: secs.to_string(),
                reason: "must be a positive number of seconds".into(),
            });
        }
        Ok(Duration::from_secs_f64(secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_need_no_environment() {
        let c = Config::from_vars(HashMap::new()).unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
        assert!(c.database_url.is_none());
        assert_eq!(c.access_token_ttl, Duration::from_secs(1800));
    }

    #[test]
    fn conventional_database_url_is_accepted_and_hidden_from_debug() {
        let c =
            Config::from_vars(vars(&[("DATABASE_URL", "postgres://u:hunter2@db/relais")])).unwrap();
        assert!(c.database_url.is_some());
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn a_malformed_limit_names_the_variable() {
        let err = Config::from_vars(vars(&[("RELAIS_MAX_CONNECTIONS", "lots")])).unwrap_err();
        assert_eq!(err.name, "RELAIS_MAX_CONNECTIONS");
    }

    #[test]
    fn sections_are_read_in_order_and_the_first_bad_variable_is_reported() {
        let err = Config::from_vars(vars(&[
            ("RELAIS_SMTP_HOST", "smtp.example.com"),
            ("RELAIS_SMTP_PORT", "many"),
            ("RELAIS_NOTIFY_BATCH", "many"),
            ("RELAIS_EMAIL_CONCURRENCY", "many"),
        ]))
        .unwrap_err();
        assert_eq!(err.name, "RELAIS_SMTP_PORT");
        let err = Config::from_vars(vars(&[
            ("RELAIS_NOTIFY_BATCH", "many"),
            ("RELAIS_EMAIL_CONCURRENCY", "many"),
        ]))
        .unwrap_err();
        assert_eq!(err.name, "RELAIS_NOTIFY_BATCH");
    }
}
