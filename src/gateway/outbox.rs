//! A connection's outbound queue, bounded in bytes.
//!
//! Publishers push without ever waiting: if a connection's queue would exceed
//! its byte budget, the connection is marked closed as a slow consumer and
//! further pushes are dropped. The publisher moves on, so one slow client
//! never slows the others and never makes the server's memory grow.
//! The same object carries close requests (revocation, shutdown) to the
//! connection's task, so there is one wake-up path for everything.

use std::{collections::VecDeque, sync::Arc};

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::protocol::CloseReason;
use crate::{bus::Publication, metrics::Metrics};

pub struct Outbox {
    inner: Mutex<Inner>,
    notify: Notify,
    limit: usize,
    metrics: Arc<Metrics>,
}

struct Inner {
    queue: VecDeque<Arc<Publication>>,
    bytes: usize,
    closed: Option<CloseReason>,
}

/// What the connection task should do after waking.
pub enum Drained {
    /// Write these publications (possibly none, on a spurious wake-up).
    Items(VecDeque<Arc<Publication>>),
    /// Stop and close with this reason.
    Close(CloseReason),
}

impl Outbox {
    pub fn new(limit: usize, metrics: Arc<Metrics>) -> Self {
        Outbox {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                bytes: 0,
                closed: None,
            }),
            notify: Notify::new(),
            limit,
            metrics,
        }
    }

    /// Queues `publication`. Returns `false` if the connection is (now) closed.
    pub fn push(&self, publication: &Arc<Publication>) -> bool {
        let len = publication.frame.len();
        let mut inner = self.inner.lock();
        if inner.closed.is_some() {
            return false;
        }
        if inner.bytes + len > self.limit {
            inner.closed = Some(CloseReason::SlowConsumer);
            self.metrics.queued_bytes.dec_by(inner.bytes as i64);
            inner.bytes = 0;
            inner.queue = VecDeque::new();
            drop(inner);
            self.metrics.slow_consumer_closes.inc();
            self.notify.notify_one();
            return false;
        }
        let was_empty = inner.queue.is_empty();
        inner.queue.push_back(publication.clone());
        inner.bytes += len;
        drop(inner);
        self.metrics.queued_bytes.inc_by(len as i64);
        if was_empty {
            self.notify.notify_one();
        }
        true
    }

    /// Asks the connection to close; the first reason wins.
    pub fn close(&self, reason: CloseReason) {
        let mut inner = self.inner.lock();
        if inner.closed.is_none() {
            inner.closed = Some(reason);
        }
        drop(inner);
        self.notify.notify_one();
    }

    /// Waits until there is something to do.
    pub async fn wait(&self) {
        self.notify.notified().await
    }

    /// Takes everything queued, or the close reason.
    pub fn drain(&self) -> Drained {
        let mut inner = self.inner.lock();
        if let Some(reason) = inner.closed {
            return Drained::Close(reason);
        }
        let bytes = std::mem::take(&mut inner.bytes);
        let items = std::mem::take(&mut inner.queue);
        drop(inner);
        self.metrics.queued_bytes.dec_by(bytes as i64);
        Drained::Items(items)
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.inner.lock().closed
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let bytes = self.inner.get_mut().bytes;
        self.metrics.queued_bytes.dec_by(bytes as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::{ChannelKey, ChannelName};

    fn publication(size: usize) -> Arc<Publication> {
        let key = ChannelKey::new("t".into(), ChannelName::parse("broadcast").unwrap());
        Arc::new(Publication::ephemeral(key, "x".repeat(size)))
    }

    #[test]
    fn a_full_outbox_closes_as_slow_consumer_and_frees_its_queue() {
        let metrics = Arc::new(Metrics::default());
        let outbox = Outbox::new(1000, metrics.clone());
        assert!(outbox.push(&publication(600)));
        assert_eq!(metrics.queued_bytes.get(), 600);
        assert!(!outbox.push(&publication(600)));
        assert_eq!(metrics.queued_bytes.get(), 0);
        assert!(!outbox.push(&publication(1)));
        assert!(matches!(
            outbox.drain(),
            Drained::Close(CloseReason::SlowConsumer)
        ));
        assert_eq!(metrics.slow_consumer_closes.get(), 1);
    }

    #[test]
    fn drain_returns_items_in_order_and_releases_their_bytes() {
        let metrics = Arc::new(Metrics::default());
        let outbox = Outbox::new(1000, metrics.clone());
        outbox.push(&publication(1));
        outbox.push(&publication(2));
        match outbox.drain() {
            Drained::Items(items) => assert_eq!(
                items.iter().map(|p| p.frame.len()).collect::<Vec<_>>(),
                vec![1, 2]
            ),
            Drained::Close(_) => panic!("not closed"),
        }
        assert_eq!(metrics.queued_bytes.get(), 0);
    }
}
