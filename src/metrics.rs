//! Prometheus metrics of the gateway, served at `/metrics`.
//!
//! Counters and gauges are plain atomics; rendering walks a registry built
//! once at start-up.

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
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
    /// Work waiting in the durable queues, and the build.
    pub backlog: Backlog,
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
        self.backlog.register(&mut registry);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

/// The labels of a gauge family (`state="due"`, `version="0.1.0"`).
type Labels = Vec<(&'static str, &'static str)>;

/// What waits in the durable queues (set by their workers on each tick,
/// from the shared store, so every node reports the same cluster-wide
/// figure), and which build is running.
#[derive(Default)]
pub struct Backlog {
    /// Emails not yet sent, dead or cancelled: `state="due"` (their time
    /// has come) or `state="scheduled"` (a fallback delay, quiet hours or a
    /// retry backoff still runs).
    email_outbox: Family<Labels, Gauge>,
    /// Notification triggers accepted and not yet fanned out:
    /// `state="pending"` (not started) or `state="processing"`.
    notification_triggers: Family<Labels, Gauge>,
}

impl Backlog {
    pub fn set_email_outbox(&self, due: i64, scheduled: i64) {
        self.email_outbox
            .get_or_create(&vec![("state", "due")])
            .set(due);
        self.email_outbox
            .get_or_create(&vec![("state", "scheduled")])
            .set(scheduled);
    }

    pub fn set_notification_triggers(&self, pending: i64, processing: i64) {
        self.notification_triggers
            .get_or_create(&vec![("state", "pending")])
            .set(pending);
        self.notification_triggers
            .get_or_create(&vec![("state", "processing")])
            .set(processing);
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "email_outbox_backlog",
            "Emails waiting to be sent (state: due now, or scheduled later), cluster-wide",
            self.email_outbox.clone(),
        );
        registry.register(
            "notification_triggers_backlog",
            "Notification triggers accepted and not yet fanned out (state: pending, processing), cluster-wide",
            self.notification_triggers.clone(),
        );
        let build = Family::<Labels, Gauge>::default();
        build
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        registry.register("build_info", "The running build: always 1", build);
    }
}
