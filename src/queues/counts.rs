//! The live counts on the `queues` channel: a snapshot on subscribe, then
//! coalesced updates.
//!
//! At hundreds of transitions a second, one publication per transition
//! would send every console hundreds of frames a second for numbers nobody
//! reads that fast. [`CountsFeed`] instead publishes a queue's counts at
//! most once per window (`RELAIS_QUEUE_COUNTS_WINDOW_MS`, 250 ms by
//! default): the first change after a quiet period goes out at once, later
//! ones wait for the end of the window. Each publication carries the
//! queue's absolute counts read from the store after the changes it
//! covers, so a console simply replaces what it shows.
//!
//! *Never stale once activity stops:* a change marks its queue; the worker
//! reads the counts only after clearing the mark, so a change committed
//! during the read marks the queue again and is published one window later.
//! In cluster mode each node publishes what its own changes marked, and two
//! nodes' publications may cross on the bus; so after each publication the
//! node reads once more one window later and publishes again if the counts
//! moved. The last word is therefore always a read made after the last
//! change. The memory used is one small entry per recently active queue.

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

/// A queue of a tenant.
type QueueKey = (TenantId, String);

#[derive(Default)]
struct Entry {
    /// When the worker reads and, if they changed, publishes the counts.
    due: Option<Instant>,
    /// The last publication of this node: when, and what.
    published: Option<(Instant, store::Counts)>,
}

/// Coalesces count changes into at most one publication per queue per window.
pub struct CountsFeed {
    store: Store,
    window: Duration,
    queues: Mutex<HashMap<QueueKey, Entry>>,
    wake: tokio::sync::Notify,
}

impl CountsFeed {
    pub fn new(store: Store, window: Duration) -> Arc<CountsFeed> {
        Arc::new(CountsFeed {
            store,
            window,
            queues: Mutex::new(HashMap::new()),
            wake: tokio::sync::Notify::new(),
        })
    }

    /// Tells the feed that `queue` changed (after the change committed).
    pub fn changed(&self, tenant: &TenantId, queue: &str) {
        let now = Instant::now();
        let mut queues = self.queues.lock();
        let entry = queues
            .entry((tenant.clone(), queue.to_owned()))
            .or_default();
        if entry.due.is_none() {
            let due = match &entry.published {
                Some((at, _)) => (*at + self.window).max(now),
                None => now,
            };
            entry.due = Some(due);
            drop(queues);
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
                let flushes = ready.iter().map(|key| self.flush(&gateway, key));
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

    /// The queues due now (their marks cleared), and when the next one is.
    fn take_due(&self) -> (Vec<QueueKey>, Option<Instant>) {
        let now = Instant::now();
        let mut ready = Vec::new();
        let mut next: Option<Instant> = None;
        for (key, entry) in self.queues.lock().iter_mut() {
            match entry.due {
                Some(due) if due <= now => {
                    entry.due = None;
                    ready.push(key.clone());
                }
                Some(due) => next = Some(next.map_or(due, |n| n.min(due))),
                None => {}
            }
        }
        (ready, next)
    }

    /// Reads a queue's counts and publishes them if they moved since this
    /// node last did; then checks once more a window later.
    async fn flush(&self, gateway: &Gateway, (tenant, queue): &QueueKey) {
        let as_of = now_millis();
        let counts = match store::counts(&self.store, tenant.as_str(), Some(queue)).await {
            Ok(mut all) => all.remove(queue.as_str()).unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, %queue, "queue counts not read; retrying");
                self.retry_later(tenant, queue);
                return;
            }
        };
        let key = (tenant.clone(), queue.clone());
        {
            let mut queues = self.queues.lock();
            let Some(entry) = queues.get_mut(&key) else {
                return;
            };
            if entry.published.as_ref().is_some_and(|(_, c)| *c == counts) {
                // Nothing moved since our last word. Forget the queue unless
                // a change arrived meanwhile.
                if entry.due.is_none() {
                    queues.remove(&key);
                }
                return;
            }
            let now = Instant::now();
            entry.published = Some((now, counts.clone()));
            // The settling read: one window later, publish again if the
            // counts moved (a change on another node, or one that committed
            // while we read).
            entry.due = Some(
                entry
                    .due
                    .unwrap_or(now + self.window)
                    .max(now + self.window),
            );
        }
        self.wake.notify_one();
        let update = json!({
            "type": "queue.counts",
            "queue": queue,
            "counts": counts,
            "as_of": as_of,
        });
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
            tracing::warn!(error = %e, %queue, "queue counts not published; retrying");
            // Forget what we claimed to have said, so the retry publishes.
            if let Some(entry) = self.queues.lock().get_mut(&key) {
                entry.published = None;
            }
            self.retry_later(tenant, queue);
        }
    }

    fn retry_later(&self, tenant: &TenantId, queue: &str) {
        let due = Instant::now() + self.window;
        if let Some(entry) = self
            .queues
            .lock()
            .get_mut(&(tenant.clone(), queue.to_owned()))
        {
            entry.due = Some(entry.due.map_or(due, |d| d.min(due)));
        }
        self.wake.notify_one();
    }

    /// Queues this node is watching (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.queues.lock().len()
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
