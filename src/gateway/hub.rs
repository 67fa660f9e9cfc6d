//! The local fan-out table: which connections on this node subscribe to
//! which channel, and every live connection (for revocation and shutdown).
//!
//! Delivery pushes one shared [`Publication`] into each subscriber's
//! [`Outbox`]; nothing here waits on a socket.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use dashmap::DashMap;

use super::{outbox::Outbox, protocol::CloseReason};
use crate::{
    bus::{
        Delivery, Publication,
        nodes::{ChannelCount, TenantSummary},
    },
    channels::ChannelKey,
    ids::{SessionId, TenantId, UserId},
    metrics::Metrics,
};

/// A connection's identity on this node.
pub type ConnId = u64;

struct Subscriber {
    conn: ConnId,
    outbox: Arc<Outbox>,
}

/// What carries a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    Sse,
}

/// What the hub knows of a live connection.
pub struct ConnEntry {
    pub transport: Transport,
    pub tenant: TenantId,
    pub user: UserId,
    pub session: SessionId,
    pub outbox: Arc<Outbox>,
}

pub struct Hub {
    channels: DashMap<ChannelKey, Vec<Subscriber>>,
    connections: DashMap<ConnId, ConnEntry>,
    next_conn: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Hub {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Hub {
            channels: DashMap::new(),
            connections: DashMap::new(),
            next_conn: AtomicU64::new(1),
            metrics,
        }
    }

    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    pub fn register(&self, conn: ConnId, entry: ConnEntry) {
        self.connections.insert(conn, entry);
        self.metrics.connections.inc();
    }

    pub fn deregister(&self, conn: ConnId) {
        if self.connections.remove(&conn).is_some() {
            self.metrics.connections.dec();
        }
    }

    /// Updates a connection's session after a token refresh on the socket.
    pub fn set_session(&self, conn: ConnId, session: SessionId) {
        if let Some(mut entry) = self.connections.get_mut(&conn) {
            entry.session = session;
        }
    }

    /// Adds a subscriber. Returns the canonical key of the channel (see
    /// [`Delivery::canonical`]) and whether it is the channel's first subscriber
    /// on this node.
    pub fn subscribe(
        &self,
        channel: &ChannelKey,
        conn: ConnId,
        outbox: Arc<Outbox>,
    ) -> (ChannelKey, bool) {
        let mut subs = self.channels.entry(channel.clone()).or_default();
        subs.push(Subscriber { conn, outbox });
        self.metrics.subscriptions.inc();
        (subs.key().clone(), subs.len() == 1)
    }

    /// Removes a subscriber; returns `true` if it was the channel's last on this node.
    pub fn unsubscribe(&self, channel: &ChannelKey, conn: ConnId) -> bool {
        let removed = self.channels.remove_if_mut(channel, |_, subs| {
            if let Some(i) = subs.iter().position(|s| s.conn == conn) {
                subs.swap_remove(i);
                self.metrics.subscriptions.dec();
            }
            subs.is_empty()
        });
        removed.is_some()
    }

    /// Closes the connections of the revoked sessions: one session, or every
    /// session of the user when `session` is `None`. Returns how many.
    pub fn close_sessions(
        &self,
        tenant: &TenantId,
        user: &UserId,
        session: Option<&SessionId>,
    ) -> usize {
        let mut closed = 0;
        for entry in self.connections.iter() {
            let hit = entry.tenant == *tenant
                && entry.user == *user
                && session.is_none_or(|s| *s == entry.session);
            if hit {
                entry.outbox.close(CloseReason::SessionRevoked);
                closed += 1;
            }
        }
        closed
    }

    /// Asks every connection to close (graceful shutdown).
    pub fn close_all(&self, reason: CloseReason) {
        for entry in self.connections.iter() {
            entry.outbox.close(reason);
        }
    }

    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// This node's totals: (connections, subscriptions, channels).
    pub fn totals(&self) -> (u64, u64, u64) {
        let subscriptions = self.channels.iter().map(|c| c.len() as u64).sum();
        (
            self.connections.len() as u64,
            subscriptions,
            self.channels.len() as u64,
        )
    }

    /// Each tenant's share of this node: connections (by transport),
    /// subscriptions, channels and the `max_channels` busiest of them. At
    /// most `max_tenants` tenants, the busiest by connections; with `only`,
    /// that tenant alone. Memory stays bounded by the tenants, not by the
    /// channels.
    pub fn shares(
        &self,
        only: Option<&TenantId>,
        max_tenants: usize,
        max_channels: usize,
    ) -> HashMap<TenantId, TenantSummary> {
        let wanted = |tenant: &TenantId| only.is_none_or(|t| t == tenant);
        let mut shares: HashMap<TenantId, TenantSummary> = HashMap::new();
        for conn in self.connections.iter() {
            if !wanted(&conn.tenant) {
                continue;
            }
            let share = shares.entry(conn.tenant.clone()).or_default();
            share.connections += 1;
            match conn.transport {
                Transport::WebSocket => share.ws += 1,
                Transport::Sse => share.sse += 1,
            }
        }
        for channel in self.channels.iter() {
            if !wanted(channel.key().tenant()) {
                continue;
            }
            let share = shares.entry(channel.key().tenant().clone()).or_default();
            share.subscriptions += channel.len() as u64;
            share.channels += 1;
            share.busiest.push(ChannelCount {
                name: channel.key().name().as_str().to_owned(),
                subscribers: channel.len() as u64,
            });
            if share.busiest.len() >= 2 * max_channels.max(1) {
                keep_busiest(&mut share.busiest, max_channels);
            }
        }
        for share in shares.values_mut() {
            keep_busiest(&mut share.busiest, max_channels);
        }
        if shares.len() > max_tenants {
            let mut all: Vec<_> = shares.into_iter().collect();
            all.sort_by(|a, b| {
                (b.1.connections, b.1.subscriptions).cmp(&(a.1.connections, a.1.subscriptions))
            });
            all.truncate(max_tenants);
            shares = all.into_iter().collect();
        }
        shares
    }

    /// The tenant's channels with subscribers on this node whose name
    /// starts with `prefix`: the `limit` busiest, most subscribers first.
    pub fn tenant_channels(
        &self,
        tenant: &TenantId,
        prefix: &str,
        limit: usize,
    ) -> Vec<ChannelCount> {
        let mut out = Vec::new();
        for channel in self.channels.iter() {
            let key = channel.key();
            if key.tenant() != tenant || !key.name().as_str().starts_with(prefix) {
                continue;
            }
            out.push(ChannelCount {
                name: key.name().as_str().to_owned(),
                subscribers: channel.len() as u64,
            });
            if out.len() >= 2 * limit.max(1) {
                keep_busiest(&mut out, limit);
            }
        }
        keep_busiest(&mut out, limit);
        out
    }
}

/// Sorts by subscribers (most first, then by name) and keeps `n`.
fn keep_busiest(channels: &mut Vec<ChannelCount>, n: usize) {
    channels.sort_by(|a, b| {
        b.subscribers
            .cmp(&a.subscribers)
            .then_with(|| a.name.cmp(&b.name))
    });
    channels.truncate(n);
}

impl Delivery for Hub {
    /// Pushes the shared publication into each local subscriber's outbox.
    fn deliver(&self, publication: &Arc<Publication>) {
        if let Some(subs) = self.channels.get(&publication.channel) {
            let mut delivered = 0u64;
            for sub in subs.iter() {
                delivered += sub.outbox.push(publication) as u64;
            }
            self.metrics.deliveries.inc_by(delivered);
            self.metrics
                .queued_bytes
                .inc_by((delivered * publication.frame.len() as u64) as i64);
        }
    }

    fn has_subscribers(&self, channel: &ChannelKey) -> bool {
        self.channels.contains_key(channel)
    }

    /// Publications built with the canonical key compare by pointer in every
    /// connection's subscription lookup instead of by string.
    fn canonical(&self, channel: &ChannelKey) -> Option<ChannelKey> {
        self.channels.get(channel).map(|entry| entry.key().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{channels::ChannelName, ids::SessionId};

    fn key(tenant: &str, name: &str) -> ChannelKey {
        ChannelKey::new(tenant.into(), ChannelName::parse(name).unwrap())
    }

    fn connect(hub: &Hub, tenant: &str, transport: Transport) -> (ConnId, Arc<Outbox>) {
        let id = hub.next_conn_id();
        let outbox = Arc::new(Outbox::new(1024, hub.metrics.clone()));
        hub.register(
            id,
            ConnEntry {
                transport,
                tenant: tenant.into(),
                user: UserId::from("u"),
                session: SessionId::from("s"),
                outbox: outbox.clone(),
            },
        );
        (id, outbox)
    }

    #[test]
    fn shares_count_each_tenant_and_keep_only_the_busiest_channels() {
        let hub = Hub::new(Arc::new(Metrics::default()));
        let (a1, out1) = connect(&hub, "a", Transport::WebSocket);
        let (a2, out2) = connect(&hub, "a", Transport::Sse);
        let (b1, out3) = connect(&hub, "b", Transport::WebSocket);
        for n in 0..30 {
            hub.subscribe(&key("a", &format!("room:{n:02}")), a1, out1.clone());
        }
        hub.subscribe(&key("a", "room:29"), a2, out2.clone());
        hub.subscribe(&key("b", "room:b"), b1, out3.clone());

        assert_eq!(hub.totals(), (3, 32, 31));
        let shares = hub.shares(None, 10, 5);
        let a = &shares[&TenantId::from("a")];
        assert_eq!((a.connections, a.ws, a.sse), (2, 1, 1));
        assert_eq!((a.subscriptions, a.channels), (31, 30));
        let names: Vec<&str> = a.busiest.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["room:29", "room:00", "room:01", "room:02", "room:03"]
        );
        assert_eq!(a.busiest[0].subscribers, 2);
        assert_eq!(shares[&TenantId::from("b")].channels, 1);

        let only_b = hub.shares(Some(&TenantId::from("b")), 10, 5);
        assert_eq!(only_b.len(), 1);
        let busiest_tenant = hub.shares(None, 1, 5);
        assert_eq!(
            busiest_tenant.keys().collect::<Vec<_>>(),
            [&TenantId::from("a")]
        );

        let listed = hub.tenant_channels(&TenantId::from("a"), "room:2", 3);
        let names: Vec<&str> = listed.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["room:29", "room:20", "room:21"]);
        assert!(
            hub.tenant_channels(&TenantId::from("b"), "room:0", 3)
                .is_empty()
        );
    }
}
