//! Bounds of the gateway (`RELAIS_MAX_*`, `RELAIS_WS_*`).

use std::time::Duration;

use super::{ConfigError, Env};

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

impl Limits {
    pub(super) fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let defaults = Limits::default();
        Ok(Limits {
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
        })
    }
}
