//! The gateway: authenticates connections, authorises by channel policy,
//! and delivers. It knows no domain; domain modules reach clients only by
//! publishing to channels of namespaces they registered.
//!
//! - [`protocol`]: frames and close codes of the WebSocket protocol.
//! - [`session`]: the transport-free connection core (subscriptions,
//!   recovery, snapshots, ordering, every command).
//! - [`ws`]: the WebSocket transport, one task per connection.
//! - [`sse`]: the read-only Server-Sent Events transport.
//! - [`rpc`]: client RPC routed to domain handlers by method prefix.
//! - [`hub`]: local subscribers and live connections.
//! - [`nodes`]: this node's report (connections, channels) for the operator view.
//! - [`outbox`]: the byte-bounded queue of each connection.
//! - [`ratelimit`]: the per-connection command budget.

pub mod hub;
pub mod nodes;
pub mod outbox;
pub mod protocol;
pub mod ratelimit;
pub mod rpc;
pub mod session;
pub mod sse;
pub mod ws;

use std::sync::Arc;

use serde_json::value::RawValue;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    auth::{AuthService, Principal},
    bus::{Broker, BusError, Position},
    channels::{ChannelError, ChannelKey, ChannelName, ChannelRegistry, Namespace, Operation},
    config::{Limits, OriginPolicy},
    error::ApiError,
    extension::{DomainError, PresenceObserver, PublishOutcome, Publisher},
    ids::TenantId,
    metrics::Metrics,
};
use hub::Hub;
use rpc::RpcRegistry;

/// Why a channel operation was refused; shared by the WebSocket, SSE and REST paths.
#[derive(Debug, thiserror::Error)]
pub enum ChannelOpError {
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("not allowed on this channel")]
    Forbidden,
    #[error("publication data is larger than {0} bytes")]
    TooLarge(usize),
    #[error(transparent)]
    Bus(#[from] BusError),
    /// Refused by the namespace's publish hook or snapshot source.
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ChannelOpError {
    pub fn code(&self) -> &'static str {
        use protocol::codes;
        match self {
            ChannelOpError::Channel(ChannelError::Invalid(_)) => codes::INVALID_CHANNEL,
            ChannelOpError::Channel(ChannelError::UnknownNamespace(_)) => codes::CHANNEL_NOT_FOUND,
            ChannelOpError::Forbidden => codes::FORBIDDEN,
            ChannelOpError::TooLarge(_) => codes::PAYLOAD_TOO_LARGE,
            ChannelOpError::Bus(_) => codes::UNAVAILABLE,
            ChannelOpError::Domain(e) => e.code,
            ChannelOpError::Internal(_) => codes::INTERNAL,
        }
    }
}

impl From<ChannelOpError> for ApiError {
    fn from(e: ChannelOpError) -> Self {
        let code = e.code();
        match e {
            ChannelOpError::Channel(ChannelError::UnknownNamespace(_)) => {
                ApiError::invalid(code, e.to_string())
            }
            ChannelOpError::Channel(_) => ApiError::invalid(code, e.to_string()),
            ChannelOpError::Forbidden => ApiError::forbidden(e.to_string()),
            ChannelOpError::TooLarge(_) => ApiError::PayloadTooLarge,
            ChannelOpError::Bus(_) => ApiError::Unavailable(code, e.to_string()),
            ChannelOpError::Domain(e) => e.into(),
            ChannelOpError::Internal(e) => ApiError::Internal(e),
        }
    }
}

/// Where a publication went.
#[derive(Debug)]
pub enum Published {
    /// Into the channel's stream, at this position.
    Stored(Position),
    /// Already published under the same publication id (a retried
    /// request), at this position; nothing was published again.
    Replayed(Position),
    /// To current subscribers only (a hook chose ephemeral delivery).
    Ephemeral,
}

/// What domain modules add to the gateway: their namespaces and RPC handlers.
#[derive(Default)]
pub struct Extensions {
    pub channels: ChannelRegistry,
    pub rpc: RpcRegistry,
    /// Presence observers by namespace name.
    pub presence: std::collections::HashMap<&'static str, Arc<dyn PresenceObserver>>,
}

pub struct Gateway {
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
    /// Set once, by [`Gateway::seal`], after every module declared its
    /// extensions: the modules hold the gateway (to publish), so it exists
    /// before them. Until then no channel resolves; the listener does not
    /// serve before it is set.
    extensions: std::sync::OnceLock<Extensions>,
    pub auth: Arc<AuthService>,
    pub limits: Limits,
    pub origins: OriginPolicy,
    pub metrics: Arc<Metrics>,
    /// One permit per open connection: the global connection limit.
    permits: Arc<Semaphore>,
    /// Cancelled when the server begins shutting down.
    pub shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// When this node started (Unix milliseconds).
    pub started_at: i64,
}

impl Gateway {
    pub fn new(
        hub: Arc<Hub>,
        broker: Arc<dyn Broker>,
        auth: Arc<AuthService>,
        limits: Limits,
        origins: OriginPolicy,
        metrics: Arc<Metrics>,
    ) -> Self {
        Gateway {
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            hub,
            broker,
            extensions: std::sync::OnceLock::new(),
            auth,
            limits,
            origins,
            metrics,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            started_at: crate::ids::now_millis(),
        }
    }

    /// Installs the modules' namespaces and RPC handlers; once, at start-up.
    pub fn seal(&self, extensions: Extensions) {
        if self.extensions.set(extensions).is_err() {
            panic!("gateway extensions installed twice");
        }
    }

    fn extensions(&self) -> &Extensions {
        static NONE: std::sync::LazyLock<Extensions> =
            std::sync::LazyLock::new(Extensions::default);
        self.extensions.get().unwrap_or(&NONE)
    }

    /// Every channel namespace of this node.
    pub fn channels(&self) -> &ChannelRegistry {
        &self.extensions().channels
    }

    /// The RPC handlers of this node.
    pub fn rpc(&self) -> &RpcRegistry {
        &self.extensions().rpc
    }

    /// The presence observer of a namespace, if its module registered one.
    pub fn presence_observer(&self, namespace: &str) -> Option<&Arc<dyn PresenceObserver>> {
        self.extensions().presence.get(namespace)
    }

    /// A slot for one more connection; refused at the limit or during shutdown.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        if self.shutdown.is_cancelled() {
            self.metrics.connections_refused.inc();
            return Err(ApiError::Unavailable(
                "shutting_down",
                "this node is shutting down; connect to another".into(),
            ));
        }
        self.permits.clone().try_acquire_owned().map_err(|_| {
            self.metrics.connections_refused.inc();
            ApiError::Unavailable(
                "too_many_connections",
                "connection limit reached; retry later".into(),
            )
        })
    }

    /// Registers an authenticated connection (for revocation and shutdown)
    /// and gives it its bounded outbox.
    pub fn open_connection(
        &self,
        principal: &Principal,
        transport: hub::Transport,
    ) -> (hub::ConnId, Arc<outbox::Outbox>) {
        self.metrics.connections_opened.inc();
        let id = self.hub.next_conn_id();
        let outbox = Arc::new(outbox::Outbox::new(
            self.limits.outbound_queue_bytes,
            self.metrics.clone(),
        ));
        self.hub.register(
            id,
            hub::ConnEntry {
                transport,
                tenant: principal.tenant.clone(),
                user: principal.user.clone(),
                session: principal.session.clone(),
                outbox: outbox.clone(),
            },
        );
        (id, outbox)
    }

    /// Parses a channel name within a tenant and finds its namespace.
    pub fn resolve(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<(ChannelKey, &Namespace), ChannelOpError> {
        let name = ChannelName::parse(name)?;
        let ns = self.channels().resolve(&name)?;
        Ok((ChannelKey::new(tenant.clone(), name), ns))
    }

    pub async fn authorize(
        &self,
        ns: &Namespace,
        op: Operation,
        who: &Principal,
        key: &ChannelKey,
    ) -> Result<(), ChannelOpError> {
        if self.channels().allows(ns, op, who, key.name()).await? {
            Ok(())
        } else {
            Err(ChannelOpError::Forbidden)
        }
    }

    /// Publishes already-authorised `data` from a client or an app backend:
    /// the namespace's publish hook (if any) validates, persists or
    /// transforms it first, or makes it ephemeral.
    ///
    /// With `once` (an id derived from the request's `Idempotency-Key`), a
    /// publication already made under that id is not made again: a retry
    /// after a timed-out publish learns the position of what happened.
    pub async fn publish_from(
        &self,
        publisher: Publisher<'_>,
        key: &ChannelKey,
        ns: &Namespace,
        data: &RawValue,
        once: Option<&str>,
    ) -> Result<Published, ChannelOpError> {
        if data.get().len() > self.limits.max_publication_bytes {
            return Err(ChannelOpError::TooLarge(self.limits.max_publication_bytes));
        }
        let outcome = match &ns.hook {
            Some(hook) => hook.on_publish(publisher, key, data).await?,
            None => return self.publish_stored(key, ns, data, once).await,
        };
        match outcome {
            PublishOutcome::Publish(data) => self.publish_stored(key, ns, &data, once).await,
            PublishOutcome::Ephemeral(data) => {
                let frame = crate::bus::Publication::ephemeral_frame(key, &data);
                self.broker.publish_ephemeral(key, frame).await?;
                self.metrics.publications.inc();
                Ok(Published::Ephemeral)
            }
        }
    }

    /// Puts `data` in the channel's stream; with `once`, at most once per id.
    /// The size limit is the caller's (it applies to what clients send, not
    /// to a record a hook has already stored).
    async fn publish_stored(
        &self,
        key: &ChannelKey,
        ns: &Namespace,
        data: &RawValue,
        once: Option<&str>,
    ) -> Result<Published, ChannelOpError> {
        let (position, replayed) = match once {
            Some(id) => self.broker.publish_once(key, ns.history, data, id).await?,
            None => (self.broker.publish(key, ns.history, data).await?, false),
        };
        if replayed {
            return Ok(Published::Replayed(position));
        }
        self.metrics.publications.inc();
        Ok(Published::Stored(position))
    }

    /// Publishes already-authorised `data` as it is, with no hook: for
    /// domain modules publishing their own events. The data size limit
    /// applies to every path.
    pub async fn publish(
        &self,
        key: &ChannelKey,
        ns: &Namespace,
        data: &RawValue,
    ) -> Result<Position, ChannelOpError> {
        if data.get().len() > self.limits.max_publication_bytes {
            return Err(ChannelOpError::TooLarge(self.limits.max_publication_bytes));
        }
        let position = self.broker.publish(key, ns.history, data).await?;
        self.metrics.publications.inc();
        Ok(position)
    }

    /// Starts graceful shutdown: refuse new connections and ask every
    /// connection to close with the documented reconnect code.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.hub.close_all(protocol::CloseReason::ShuttingDown);
    }
}
