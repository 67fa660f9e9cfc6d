//! Typed configuration read from the environment.
//!
//! Every setting has a default that lets a newcomer run the hub with no
//! configuration at all (embedded SQLite, in-process bus). Production values
//! come from `RELAIS_*` variables; the conventional `DATABASE_URL` and
//! `REDIS_URL` are accepted as fallbacks. Secrets are wrapped in
//! [`SecretString`] so they never appear in `Debug` output or logs.

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, time::Duration};

use secrecy::SecretString;

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
    pub email: EmailConfig,
    /// Public address of the hub or the app, used to make links in emails absolute.
    pub public_url: Option<String>,
    /// Tracing filter (e.g. `info`, `relais=debug`).
    pub log_filter: String,
    /// `text` or `json` log lines.
    pub log_json: bool,
}

/// First-start identity, used only when the store holds no tenant.
#[derive(Debug, Clone)]
pub struct BootstrapConfig {
    pub tenant_slug: String,
    pub admin_email: String,
    /// Generated and printed once when unset.
    pub admin_password: Option<SecretString>,
}

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

/// Which `Origin` headers may open a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPolicy {
    /// Any origin (`RELAIS_ALLOWED_ORIGINS=*`).
    Any,
    /// Same origin as the hub (the `Host` header) plus this list.
    List(Vec<String>),
}

impl OriginPolicy {
    /// Requests without an `Origin` header come from non-browser clients and
    /// are allowed: the header is a browser protection, not authentication.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else { return true };
        match self {
            OriginPolicy::Any => true,
            OriginPolicy::List(list) => {
                let same_origin = host.is_some_and(|host| {
                    origin
                        .split_once("://")
                        .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host))
                });
                same_origin || list.iter().any(|o| o.eq_ignore_ascii_case(origin))
            }
        }
    }
}

/// Every bound of the gateway, so that nothing grows without limit.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Concurrent WebSocket + SSE connections on this node; further upgrades get 503.
    pub max_connections: usize,
    /// Largest WebSocket message (and frame) accepted from a client.
    pub max_message_bytes: usize,
    /// Bytes queued for one connection before it is closed as a slow consumer.
    pub outbound_queue_bytes: usize,
    /// Interval of server WebSocket pings.
    pub ping_interval: Duration,
    /// A connection that sends nothing (not even a pong) for this long is closed.
    pub idle_timeout: Duration,
    /// Time allowed between the upgrade and a valid `connect` frame.
    pub auth_timeout: Duration,
    /// Sustained commands per second per connection.
    pub commands_per_sec: u32,
    /// Burst of commands above the sustained rate.
    pub commands_burst: u32,
    /// Subscriptions one connection may hold.
    pub max_subscriptions: usize,
    /// Channels held in memory (with their history) on this node.
    pub max_channels: usize,
    /// Largest `data` of one publication, in bytes of JSON.
    pub max_publication_bytes: usize,
    /// Publications in one batch publish request.
    pub max_batch: usize,
    /// How long graceful shutdown waits for connections to drain.
    pub shutdown_grace: Duration,
    /// Time a slow socket may take to accept one batch of writes.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 100_000,
            max_message_bytes: 64 * 1024,
            outbound_queue_bytes: 256 * 1024,
            ping_interval: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            auth_timeout: Duration::from_secs(10),
            commands_per_sec: 50,
            commands_burst: 100,
            max_subscriptions: 256,
            max_channels: 1_000_000,
            max_publication_bytes: 64 * 1024,
            max_batch: 500,
            shutdown_grace: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars().collect())
    }

    /// Reads configuration from a map of variables (tests pass their own).
    pub fn from_vars(vars: HashMap<String, String>) -> Result<Self, ConfigError> {
        let env = Env(vars);
        let defaults = Limits::default();
        let limits = Limits {
            max_connections: env.parse("RELAIS_MAX_CONNECTIONS", defaults.max_connections)?,
            max_message_bytes: env
                .parse("RELAIS_WS_MAX_MESSAGE_BYTES", defaults.max_message_bytes)?,
            outbound_queue_bytes: env.parse(
                "RELAIS_WS_OUTBOUND_QUEUE_BYTES",
                defaults.outbound_queue_bytes,
            )?,
            ping_interval: env.secs("RELAIS_WS_PING_INTERVAL_SECS", defaults.ping_interval)?,
            idle_timeout: env.secs("RELAIS_WS_IDLE_TIMEOUT_SECS", defaults.idle_timeout)?,
            auth_timeout: env.secs("RELAIS_WS_AUTH_TIMEOUT_SECS", defaults.auth_timeout)?,
            commands_per_sec: env.parse("RELAIS_WS_COMMANDS_PER_SEC", defaults.commands_per_sec)?,
            commands_burst: env.parse("RELAIS_WS_COMMANDS_BURST", defaults.commands_burst)?,
            max_subscriptions: env
                .parse("RELAIS_WS_MAX_SUBSCRIPTIONS", defaults.max_subscriptions)?,
            max_channels: env.parse("RELAIS_MAX_CHANNELS", defaults.max_channels)?,
            max_publication_bytes: env.parse(
                "RELAIS_MAX_PUBLICATION_BYTES",
                defaults.max_publication_bytes,
            )?,
            max_batch: env.parse("RELAIS_MAX_BATCH", defaults.max_batch)?,
            shutdown_grace: env.secs("RELAIS_SHUTDOWN_GRACE_SECS", defaults.shutdown_grace)?,
            write_timeout: env.secs("RELAIS_WS_WRITE_TIMEOUT_SECS", defaults.write_timeout)?,
        };
        let allowed_origins = match env.get("RELAIS_ALLOWED_ORIGINS") {
            Some("*") => OriginPolicy::Any,
            Some(list) => OriginPolicy::List(
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
            None => OriginPolicy::List(Vec::new()),
        };
        let smtp = match env.get("RELAIS_SMTP_HOST") {
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
        };
        let default_locale = env.get("RELAIS_DEFAULT_LOCALE").unwrap_or("en").to_owned();
        if !matches!(default_locale.as_str(), "en" | "fr") {
            return Err(ConfigError {
                name: "RELAIS_DEFAULT_LOCALE".into(),
                value: default_locale,
                reason: "expected en or fr".into(),
            });
        }
        let notify = NotifyConfig {
            default_locale,
            fanout_batch: env.parse("RELAIS_NOTIFY_BATCH", 1000usize)?.clamp(1, 2000),
            poll_interval: env.secs("RELAIS_NOTIFY_POLL_SECS", Duration::from_secs(1))?,
            lease: env.secs("RELAIS_NOTIFY_LEASE_SECS", Duration::from_secs(120))?,
        };
        let email = EmailConfig {
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
        };
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
    fn origin_policy_allows_same_origin_and_listed_origins_only() {
        let p = OriginPolicy::List(vec!["https://app.example.com".into()]);
        assert!(p.allows(None, Some("hub:8080")));
        assert!(p.allows(Some("http://hub:8080"), Some("hub:8080")));
        assert!(p.allows(Some("https://app.example.com"), Some("hub:8080")));
        assert!(!p.allows(Some("https://evil.example"), Some("hub:8080")));
        assert!(OriginPolicy::Any.allows(Some("https://evil.example"), None));
    }
}
