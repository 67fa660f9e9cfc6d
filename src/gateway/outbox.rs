//! A connection's outbound queue, bounded in bytes.
//!
//! Publishers push without ever waiting: if a connection's queue would exceed
//! its byte budget, the connection is marked closed as a slow consumer and
//! further pushes are dropped. The publisher moves on, so one slow client
//! never slows the others and never makes the server's memory grow.
//! The same object carries close requests (revocation, shutdown) to the
//! connection's task, so there is one wake-up path for everything.

use std::{
    collections::VecDeque,
    future::poll_fn,
    sync::Arc,
    task::{Poll, Waker},
};

use parking_lot::Mutex;

use super::protocol::CloseReason;
use crate::{bus::Publication, metrics::Metrics};

/// The connection task's waker lives under the same lock as the queue: a
/// push that finds the queue empty takes it and wakes the task, so a
/// delivery costs one uncontended lock and at most one wake-up.
pub struct Outbox {
    inner: Mutex<Inner>,
    limit: usize,
    metrics: Arc<Metrics>,
}

struct Inner {
    queue: VecDeque<Arc<Publication>>,
    bytes: usize,
    closed: Option<CloseReason>,
    /// Set only while the queue is empty and the connection open.
    waker: Option<Waker>,
}

/// What the connection task should do after waking.
pub enum Drained {
    /// Write these publications.
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
                waker: None,
            }),
            limit,
            metrics,
        }
    }

    /// Queues `publication`. Returns `false` if the connection is (now)
    /// closed. The caller accounts the queued bytes in the
    /// `outbound_queued_bytes` gauge, once per publication rather than once
    /// per subscriber.
    pub fn push(&self, publication: &Arc<Publication>) -> bool {
        let len = publication.frame.len();
        let mut inner = self.inner.lock();
        if inner.closed.is_some() {
            return false;
        }
        if inner.bytes + len > self.limit {
            inner.closed = Some(CloseReason::SlowConsumer);
            let dropped = std::mem::take(&mut inner.bytes);
            inner.queue = VecDeque::new();
            let waker = inner.waker.take();
            drop(inner);
            self.metrics.queued_bytes.dec_by(dropped as i64);
            self.metrics.slow_consumer_closes.inc();
            if let Some(waker) = waker {
                waker.wake();
            }
            return false;
        }
        inner.queue.push_back(publication.clone());
        inner.bytes += len;
        let waker = inner.waker.take();
        drop(inner);
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// Asks the connection to close; the first reason wins.
    pub fn close(&self, reason: CloseReason) {
        let mut inner = self.inner.lock();
        if inner.closed.is_none() {
            inner.closed = Some(reason);
        }
        let waker = inner.waker.take();
        drop(inner);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Resolves when there is something to write or a close to perform.
    pub async fn wait(&self) {
        poll_fn(|cx| {
            let mut inner = self.inner.lock();
            if !inner.queue.is_empty() || inner.closed.is_some() {
                return Poll::Ready(());
            }
            match &mut inner.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
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

    /// Bytes waiting in this queue.
    pub fn queued_bytes(&self) -> usize {
        self.inner.lock().bytes
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
        assert_eq!(outbox.queued_bytes(), 600);
        assert!(!outbox.push(&publication(600)));
        assert_eq!(outbox.queued_bytes(), 0);
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
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn wait_resolves_on_a_push_or_a_close_only() {
        let metrics = Arc::new(Metrics::default());
        let outbox = Arc::new(Outbox::new(1000, metrics));
        let waiting = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.wait().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        outbox.push(&publication(1));
        waiting.await.unwrap();
        let Drained::Items(_) = outbox.drain() else {
            panic!("items")
        };
        let waiting = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.wait().await }
        });
        outbox.close(CloseReason::ShuttingDown);
        waiting.await.unwrap();
        assert!(matches!(
            outbox.drain(),
            Drained::Close(CloseReason::ShuttingDown)
        ));
    }
}
