//! Prometheus metrics of the gateway, served at `/metrics`.
//!
//! Counters and gauges are plain atomics; rendering walks a registry built
//! once at start-up.

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
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
    /// REST requests: time to the response head, by route, method and status class.
    pub http_requests: HttpLatency,
    /// REST publications: time the bus took to accept each one.
    pub publish_duration: Latency,
    /// Sign-ins refused by the login throttle (429 `too_many_attempts`).
    pub login_throttled: Counter,
    /// From a publication's arrival on this node to the flush of the socket
    /// write that carried it (the oldest publication of each written batch).
    pub delivery_latency: Latency,
    /// Assistant answers stored (complete, incomplete or cancelled).
    pub assistant_messages: Counter,
    /// Prompt and completion tokens of stored answers.
    pub assistant_tokens: Counter,
    /// Frames (coalesced tokens) published.
    pub assistant_frames: Counter,
    /// Hand-overs to the next provider of a chain.
    pub assistant_fallbacks: Counter,
    /// Providers that failed before the first token.
    pub assistant_provider_failures: Counter,
    /// Answers stored incomplete (every provider failed, or one failed mid-answer).
    pub assistant_failures: Counter,
    /// Messages refused by the stream or token limits.
    pub assistant_refused: Counter,
    /// Answers streaming on this node.
    pub assistant_streams: Gauge,
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
            (
                "assistant_messages",
                "Assistant answers stored (complete, incomplete or cancelled)",
                &self.assistant_messages,
            ),
            (
                "assistant_tokens",
                "Prompt and completion tokens of stored assistant answers",
                &self.assistant_tokens,
            ),
            (
                "assistant_frames",
                "Assistant frames (coalesced tokens) published",
                &self.assistant_frames,
            ),
            (
                "assistant_fallbacks",
                "Hand-overs to the next provider of an assistant's chain",
                &self.assistant_fallbacks,
            ),
            (
                "assistant_provider_failures",
                "Assistant providers that failed before the first token",
                &self.assistant_provider_failures,
            ),
            (
                "assistant_failures",
                "Assistant answers stored incomplete after a provider failure",
                &self.assistant_failures,
            ),
            (
                "assistant_refused",
                "Assistant messages refused by the stream or token limits",
                &self.assistant_refused,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "assistant_streams",
            "Assistant answers streaming on this node",
            self.assistant_streams.clone(),
        );
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
        registry.register_with_unit(
            "http_request_duration",
            "REST requests: time to the response head, by route, method and status class",
            Unit::Seconds,
            self.http_requests.0.clone(),
        );
        registry.register_with_unit(
            "publish_duration",
            "REST publications: time to publish one on the bus",
            Unit::Seconds,
            self.publish_duration.0.clone(),
        );
        registry.register_with_unit(
            "delivery_latency",
            "From a publication's arrival on this node to the flush of the socket write carrying it (oldest of each batch)",
            Unit::Seconds,
            self.delivery_latency.0.clone(),
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
/// Latency buckets, in seconds: from half a millisecond to 2.5 s.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// A latency histogram in seconds, with [`LATENCY_BUCKETS`].
#[derive(Clone)]
pub struct Latency(Histogram);

impl Default for Latency {
    fn default() -> Self {
        Latency(latency_histogram())
    }
}

impl Latency {
    pub fn observe(&self, elapsed: std::time::Duration) {
        self.0.observe(elapsed.as_secs_f64());
    }
}

/// The labels of an HTTP request's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The method, or `other` for one the API does not use.
    pub method: &'static str,
    /// The route's pattern (`/api/v1/projects/{id}`), or `unmatched`.
    pub route: String,
    /// The status class: `2xx`, `4xx`, …
    pub status: &'static str,
}

/// HTTP request latency by [`HttpLabels`].
#[derive(Clone)]
pub struct HttpLatency(Family<HttpLabels, Histogram, fn() -> Histogram>);

impl Default for HttpLatency {
    fn default() -> Self {
        HttpLatency(Family::new_with_constructor(latency_histogram))
    }
}

impl HttpLatency {
    /// Records one request. `route` is the matched route pattern (`None`
    /// when no route matched), so the label set stays small.
    pub fn observe(
        &self,
        method: &axum::http::Method,
        route: Option<&str>,
        status: axum::http::StatusCode,
        elapsed: std::time::Duration,
    ) {
        use axum::http::Method;
        let method = match *method {
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::PATCH => "PATCH",
            Method::DELETE => "DELETE",
            Method::OPTIONS => "OPTIONS",
            _ => "other",
        };
        let status = match status.as_u16() / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        };
        let labels = HttpLabels {
            method,
            route: route.unwrap_or("unmatched").to_owned(),
            status,
        };
        self.0.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }
}

/// Middleware recording each request in [`Metrics::http_requests`]; added
/// with `Router::layer`, so the matched route is known.
pub async fn record_http(
    axum::extract::State(metrics): axum::extract::State<std::sync::Arc<Metrics>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .cloned();
    let response = next.run(request).await;
    metrics.http_requests.observe(
        &method,
        route.as_ref().map(|r| r.as_str()),
        response.status(),
        started.elapsed(),
    );
    response
}
