//! Prometheus metrics of the gateway, served at `/metrics`.
//!
//! Counters and gauges are plain atomics; rendering walks a registry built
//! once at start-up.

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};

#[derive(Default)]
pub struct Metrics {
    pub connections: Gauge,
    pub connections_opened: Counter,
    pub connections_refused: Counter,
    pub subscriptions: Gauge,
    pub publications: Counter,
    pub deliveries: Counter,
    pub slow_consumer_closes: Counter,
    pub queued_bytes: Gauge,
    pub channels: Gauge,
    pub auth_failures: Counter,
    pub command_errors: Counter,
    pub rate_limited: Counter,
    /// Cluster mode: pub/sub connections to Redis that are up (of 4).
    pub bus_connections: Gauge,
    pub bus_reconnects: Counter,
    /// Bus operations that failed (Redis unreachable or too slow).
    pub bus_errors: Counter,
    /// Inbox notifications created by triggers.
    pub notifications_created: Counter,
    pub notification_triggers: Counter,
    pub emails_sent: Counter,
    /// Attempts that failed and will be retried.
    pub email_retries: Counter,
    pub emails_dead: Counter,
    /// Fallback emails not sent because the notification was read in time.
    pub emails_cancelled: Counter,
    /// Emails pushed back to the end of the recipient's quiet hours.
    pub emails_deferred: Counter,
    /// Sign-ins refused by the login throttle (429 `too_many_attempts`).
    pub login_throttled: Counter,
}

impl Metrics {
    /// Renders the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut registry = Registry::with_prefix("relais");
        for (name, help, counter) in [
            (
                "notifications_created",
                "Inbox notifications created",
                &self.notifications_created,
            ),
            (
                "notification_triggers",
                "Notification triggers accepted",
                &self.notification_triggers,
            ),
            (
                "emails_sent",
                "Emails accepted by the SMTP server (or written to files)",
                &self.emails_sent,
            ),
            (
                "email_retries",
                "Email attempts that failed and will be retried",
                &self.email_retries,
            ),
            (
                "emails_dead",
                "Emails dead-lettered after their last attempt or a permanent refusal",
                &self.emails_dead,
            ),
            (
                "emails_cancelled",
                "Fallback emails cancelled because the notification was read",
                &self.emails_cancelled,
            ),
            (
                "emails_deferred",
                "Emails deferred to the end of quiet hours",
                &self.emails_deferred,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "connections",
            "Open WebSocket and SSE connections",
            self.connections.clone(),
        );
        registry.register(
            "connections_opened",
            "Authenticated connections opened",
            self.connections_opened.clone(),
        );
        registry.register(
            "connections_refused",
            "Upgrades refused by the connection limit",
            self.connections_refused.clone(),
        );
        registry.register(
            "subscriptions",
            "Channel subscriptions held by local connections",
            self.subscriptions.clone(),
        );
        registry.register(
            "publications",
            "Publications accepted by this node",
            self.publications.clone(),
        );
        registry.register(
            "deliveries",
            "Publications queued to local connections",
            self.deliveries.clone(),
        );
        registry.register(
            "slow_consumer_closes",
            "Connections closed because their outbound queue was full",
            self.slow_consumer_closes.clone(),
        );
        registry.register(
            "outbound_queued_bytes",
            "Bytes waiting in connection outbound queues",
            self.queued_bytes.clone(),
        );
        registry.register(
            "channels",
            "Channels held in memory by the bus",
            self.channels.clone(),
        );
        registry.register(
            "auth_failures",
            "Refused tokens and API keys",
            self.auth_failures.clone(),
        );
        registry.register(
            "command_errors",
            "WebSocket commands answered with an error frame",
            self.command_errors.clone(),
        );
        registry.register(
            "rate_limited",
            "WebSocket commands refused by the rate limit",
            self.rate_limited.clone(),
        );
        registry.register(
            "bus_connections",
            "Cluster mode: Redis pub/sub connections up",
            self.bus_connections.clone(),
        );
        registry.register(
            "bus_reconnects",
            "Cluster mode: Redis pub/sub reconnections",
            self.bus_reconnects.clone(),
        );
        registry.register(
            "bus_errors",
            "Bus operations that failed (Redis unreachable or too slow)",
            self.bus_errors.clone(),
        );
        registry.register(
            "login_throttled",
            "Sign-ins refused because of earlier wrong passwords (per account or address)",
            self.login_throttled.clone(),
        );
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}
