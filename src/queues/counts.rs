//! The live counts on the `queues` channel: a snapshot on subscribe, then
//! coalesced updates.
//!
//! At hundreds of transitions a second, one publication per transition
//! would send every console hundreds of frames a second for numbers nobody
//! reads that fast. [`CountsFeed`] instead publishes a tenant's counts at
//! most once per window (`RELAIS_QUEUE_COUNTS_WINDOW_MS`, 250 ms by
//! default): the first change after a quiet period goes out at once, later
//! ones wait for the end of the window. One publication carries every queue
//! whose counts moved, as absolute values read from the store after the
//! changes it covers, so a console simply replaces what it shows, and ten
//! busy queues cost a console one frame per window, not ten.
//!
//! *Never stale once activity stops:* a change marks its tenant; the worker
//! reads the counts only after clearing the mark, so a change committed
//! during the read marks the tenant again and is published one window later.
//! In cluster mode each node publishes what its own changes marked, and two
//! nodes' publications may cross on the bus; so after each publication the
//! node reads once more one window later and publishes again if the counts
//! moved. The last word is therefore always a read made after the last
//! change. The memory used is one entry per tenant that had a change, with
//! the counts last shown for each of its queues.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Weak},
    time::Duration,
};

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::{json, value::RawValue};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{CHANNEL, store};
use crate::{
    auth::Principal,
    bus::Position,
    channels::ChannelKey,
    extension::{DomainError, SnapshotSource},
    gateway::Gateway,
    ids::{TenantId, now_millis},
    store::Store,
};

#[derive(Default)]
struct Entry {
    /// When the worker reads and publishes what moved.
    due: Option<Instant>,
    /// When this node last published for the tenant.
    published_at: Option<Instant>,
    /// Every queue's counts as this node last published or read them.
    shown: BTreeMap<String, store::Counts>,
}

/// Coalesces count changes into at most one publication per tenant (so per
/// queue) per window.
pub struct CountsFeed {
    store: Store,
    window: Duration,
    tenants: Mutex<HashMap<TenantId, Entry>>,
    wake: tokio::sync::Notify,
}

impl CountsFeed {
    pub fn new(store: Store, window: Duration) -> Arc<CountsFeed> {
        Arc::new(CountsFeed {
            store,
            window,
            tenants: Mutex::new(HashMap::new()),
            wake: tokio::sync::Notify::new(),
        })
    }

    /// Tells the feed that a queue of `tenant` changed (after the change
    /// committed).
    pub fn changed(&self, tenant: &TenantId) {
        let now = Instant::now();
        let mut tenants = self.tenants.lock();
        let entry = tenants.entry(tenant.clone()).or_default();
        if entry.due.is_none() {
            let due = match entry.published_at {
                Some(at) => (at + self.window).max(now),
                None => now,
            };
            entry.due = Some(due);
            drop(tenants);
            self.wake.notify_one();
        }
    }

    /// Publishes due counts until `stop`.
    pub async fn run(self: Arc<Self>, gateway: Weak<Gateway>, stop: CancellationToken) {
        loop {
            let (ready, next) = self.take_due();
            if !ready.is_empty() {
                let Some(gateway) = gateway.upgrade() else {
                    return;
                };
                let flushes = ready.iter().map(|tenant| self.flush(&gateway, tenant));
                futures_util::future::join_all(flushes).await;
            }
            let sleep = match next {
                Some(at) => tokio::time::sleep_until(at),
                None => tokio::time::sleep(Duration::from_secs(3600)),
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = sleep => {}
            }
        }
    }

    /// The tenants due now (their marks cleared), and when the next one is.
    fn take_due(&self) -> (Vec<TenantId>, Option<Instant>) {
        let now = Instant::now();
        let mut ready = Vec::new();
        let mut next: Option<Instant> = None;
        for (tenant, entry) in self.tenants.lock().iter_mut() {
            match entry.due {
                Some(due) if due <= now => {
                    entry.due = None;
                    ready.push(tenant.clone());
                }
                Some(due) => next = Some(next.map_or(due, |n| n.min(due))),
                None => {}
            }
        }
        (ready, next)
    }

    /// Reads the tenant's counts and publishes the queues whose counts
    /// moved since this node last showed them; then checks once more a
    /// window later.
    async fn flush(&self, gateway: &Gateway, tenant: &TenantId) {
        let as_of = now_millis();
        let counts = match store::counts(&self.store, tenant.as_str(), None).await {
            Ok(counts) => counts,
            Err(e) => {
                tracing::warn!(error = %e, %tenant, "queue counts not read; retrying");
                self.retry_later(tenant);
                return;
            }
        };
        let moved: BTreeMap<String, store::Counts> = {
            let mut tenants = self.tenants.lock();
            let Some(entry) = tenants.get_mut(tenant) else {
                return;
            };
            let moved: BTreeMap<_, _> = counts
                .into_iter()
                .filter(|(queue, c)| entry.shown.get(queue) != Some(c))
                .collect();
            if moved.is_empty() {
                // Nothing moved since our last word: the settling read ends
                // here unless a change arrived meanwhile.
                return;
            }
            let now = Instant::now();
            entry.published_at = Some(now);
            entry.shown.extend(moved.clone());
            // The settling read: one window later, publish again whatever
            // moved (a change on another node, or one that committed while
            // we read).
            entry.due = Some(now + self.window);
            moved
        };
        self.wake.notify_one();
        let update = json!({"type": "queue.counts", "queues": moved, "as_of": as_of});
        let published = match RawValue::from_string(update.to_string()) {
            Ok(raw) => match gateway.resolve(tenant, CHANNEL) {
                Ok((channel, ns)) => gateway.publish(&channel, ns, &raw).await.map(|_| ()),
                Err(e) => Err(e),
            },
            Err(e) => {
                tracing::error!(error = %e, "queue counts not encoded");
                return;
            }
        };
        if let Err(e) = published {
            tracing::warn!(error = %e, %tenant, "queue counts not published; retrying");
            // Forget what we claimed to have shown, so the retry publishes.
            if let Some(entry) = self.tenants.lock().get_mut(tenant) {
                for queue in moved.keys() {
                    entry.shown.remove(queue);
                }
            }
            self.retry_later(tenant);
        }
    }

    fn retry_later(&self, tenant: &TenantId) {
        let due = Instant::now() + self.window;
        if let Some(entry) = self.tenants.lock().get_mut(tenant) {
            entry.due = Some(entry.due.map_or(due, |d| d.min(due)));
        }
        self.wake.notify_one();
    }
}

/// The counts of every queue of the subscriber's tenant, as the `subscribed`
/// reply's snapshot: `{"queues": {"<queue>": {"pending": n, …}}, "as_of"}`.
pub struct Snapshot(pub Store);

impl SnapshotSource for Snapshot {
    fn snapshot<'a>(
        &'a self,
        who: &'a Principal,
        _channel: &'a ChannelKey,
        _at: &'a Position,
        _params: Option<&'a RawValue>,
    ) -> BoxFuture<'a, Result<Box<RawValue>, DomainError>> {
        Box::pin(async move {
            let as_of = now_millis();
            let queues: BTreeMap<String, store::Counts> =
                store::counts(&self.0, who.tenant.as_str(), None)
                    .await
                    .map_err(DomainError::internal)?;
            let snapshot = json!({"queues": queues, "as_of": as_of});
            RawValue::from_string(snapshot.to_string()).map_err(DomainError::internal)
        })
    }
}
