//! The in-process broker: one node, no external service.
//!
//! Each channel has a stream (epoch, last offset, bounded history) behind its
//! own mutex. Publishing assigns the offset, appends to history and hands the
//! publication to the node's delivery while holding that mutex, so every subscriber sees
//! one order and a recovering subscriber can never fall between history and
//! live delivery. Epochs are random per stream: after a restart, or after an
//! idle stream is evicted, clients learn that recovery is impossible.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use dashmap::{DashMap, mapref::entry::Entry};
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::value::RawValue;

use super::{
    Broker, BusError, ControlMessage, ControlRouter, Delivery, HistoryPage, Position,
    PresenceEntry, Publication, Recovery, nodes::NodeReport,
};
use crate::{
    channels::{ChannelKey, HistoryPolicy},
    ids::{TenantId, UserId},
    metrics::Metrics,
};

/// Shards of the stream table: more than dashmap's default (four per
/// core), so that the idle sweep's read pass keeps each shard for a small
/// share of its time (see [`MemoryBroker::evict_idle`]).
const STREAM_SHARDS: usize = 64;

struct Stream {
    epoch: Arc<str>,
    top: u64,
    /// Ages come from each publication's `received`, the moment this node
    /// built it, so an entry is the publication alone.
    history: VecDeque<Arc<Publication>>,
}

impl Stream {
    fn new() -> Self {
        Stream {
            epoch: crate::ids::random_token(6).into(),
            top: 0,
            history: VecDeque::new(),
        }
    }

    fn trim(&mut self, policy: HistoryPolicy, now: Instant) {
        while self.history.len() > policy.size {
            self.history.pop_front();
        }
        while self
            .history
            .front()
            .is_some_and(|p| now.duration_since(p.received) > policy.ttl)
        {
            self.history.pop_front();
        }
    }

    fn position(&self) -> Position {
        Position {
            epoch: self.epoch.clone(),
            offset: self.top,
        }
    }
}

pub struct MemoryBroker {
    streams: DashMap<ChannelKey, Arc<Mutex<Stream>>>,
    /// How many streams there are, kept beside the table: `DashMap::len`
    /// read-locks every shard, which every channel creation would pay.
    count: AtomicUsize,
    presence: DashMap<ChannelKey, HashMap<UserId, u32>>,
    delivery: Arc<dyn Delivery>,
    control: Arc<ControlRouter>,
    max_channels: usize,
    metrics: Arc<Metrics>,
    node: Arc<str>,
    /// This node's last report: the only node there is.
    report: Mutex<Option<(NodeReport, Instant, Duration)>>,
}

impl MemoryBroker {
    pub fn new(
        delivery: Arc<dyn Delivery>,
        control: Arc<ControlRouter>,
        max_channels: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        MemoryBroker {
            control,
            streams: DashMap::with_shard_amount(STREAM_SHARDS),
            count: AtomicUsize::new(0),
            presence: DashMap::new(),
            delivery,
            max_channels,
            metrics,
            node: crate::ids::random_token(9).into(),
            report: Mutex::new(None),
        }
    }

    fn stream(&self, channel: &ChannelKey) -> Result<Arc<Mutex<Stream>>, BusError> {
        if let Some(s) = self.streams.get(channel) {
            return Ok(s.clone());
        }
        if self.count.load(Ordering::Relaxed) >= self.max_channels {
            return Err(BusError::TooManyChannels);
        }
        let stream = match self.streams.entry(channel.clone()) {
            Entry::Occupied(entry) => entry.get().clone(),
            Entry::Vacant(entry) => {
                let stream = entry.insert(Arc::new(Mutex::new(Stream::new()))).clone();
                let count = self.count.fetch_add(1, Ordering::Relaxed) + 1;
                self.metrics.channels.set(count as i64);
                stream
            }
        };
        Ok(stream)
    }

    /// Drops streams with no local subscriber and no history left. Their
    /// epoch is forgotten, so a later recovery attempt is told it failed
    /// instead of silently missing something.
    ///
    /// A sweep visits every channel: about a second of one thread's time at
    /// 1,000,000 channels with history (`relais-cost`). So it takes no
    /// shard's write lock for long: a first pass trims under read locks,
    /// which publishing to existing channels shares (only creating a
    /// channel in the shard being read waits, and with [`STREAM_SHARDS`]
    /// shards for a sixty-fourth of the pass), and each channel found idle
    /// is then removed on its own, after checking again that it still is.
    pub fn evict_idle(&self, policy_of: impl Fn(&ChannelKey) -> Option<HistoryPolicy>) {
        let now = Instant::now();
        let idle: Vec<ChannelKey> = self
            .streams
            .iter()
            .filter_map(|entry| {
                let key = entry.key();
                if self.delivery.has_subscribers(key) {
                    return None;
                }
                let mut s = entry.value().lock();
                if let Some(policy) = policy_of(key) {
                    s.trim(policy, now);
                }
                s.history.is_empty().then(|| key.clone())
            })
            .collect();
        for key in idle {
            let removed = self.streams.remove_if(&key, |key, stream| {
                !self.delivery.has_subscribers(key) && stream.lock().history.is_empty()
            });
            if removed.is_some() {
                self.count.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.metrics
            .channels
            .set(self.count.load(Ordering::Relaxed) as i64);
    }

    /// Runs [`MemoryBroker::evict_idle`] every `every` until `stop` fires,
    /// each sweep on a blocking thread: it is long, synchronous work that
    /// would hold one of the runtime's few worker threads for its duration.
    pub async fn run_eviction(
        self: Arc<Self>,
        every: Duration,
        policy_of: impl Fn(&ChannelKey) -> Option<HistoryPolicy> + Send + Sync + 'static,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let policy_of = Arc::new(policy_of);
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {
                    let (broker, policy_of) = (Arc::clone(&self), Arc::clone(&policy_of));
                    let sweep = tokio::task::spawn_blocking(move || broker.evict_idle(&*policy_of));
                    if let Err(e) = sweep.await {
                        tracing::error!(error = %e, "idle channel sweep failed");
                    }
                }
            }
        }
    }
}

/// Up to `limit` publications after `since`, if history still holds
/// everything that followed it.
fn page_after(stream: &Stream, since: &Position, limit: usize) -> HistoryPage {
    let top = stream.position();
    let oldest = stream.history.front().map(|p| p.offset);
    let complete = since.epoch == stream.epoch
        && since.offset <= stream.top
        && (since.offset == stream.top || oldest.is_some_and(|o| o <= since.offset + 1));
    if !complete {
        return HistoryPage {
            top,
            publications: Vec::new(),
            complete: false,
            more: false,
        };
    }
    let publications: Vec<_> = stream
        .history
        .iter()
        .filter(|p| p.offset > since.offset)
        .take(limit)
        .cloned()
        .collect();
    let last = publications.last().map_or(since.offset, |p| p.offset);
    HistoryPage {
        more: last < stream.top,
        top,
        publications,
        complete: true,
    }
}

fn after(stream: &Stream, since: &Position, limit: usize) -> Recovery {
    let top = stream.position();
    let fail = |top| Recovery {
        top,
        publications: Vec::new(),
        recovered: false,
    };
    if since.epoch != stream.epoch || since.offset > stream.top {
        return fail(top);
    }
    let missed = (stream.top - since.offset) as usize;
    if missed == 0 {
        return Recovery {
            top,
            publications: Vec::new(),
            recovered: true,
        };
    }
    let oldest = stream.history.front().map(|p| p.offset);
    if missed > limit || oldest.is_none_or(|o| o > since.offset + 1) {
        return fail(top);
    }
    let publications: Vec<_> = stream
        .history
        .iter()
        .filter(|p| p.offset > since.offset)
        .cloned()
        .collect();
    Recovery {
        top,
        publications,
        recovered: true,
    }
}

impl Broker for MemoryBroker {
    fn publish<'a>(
        &'a self,
        channel: &'a ChannelKey,
        history: HistoryPolicy,
        data: &'a RawValue,
    ) -> BoxFuture<'a, Result<Position, BusError>> {
        let result = self.stream(channel).map(|stream| {
            let mut s = stream.lock();
            s.top += 1;
            let key = self
                .delivery
                .canonical(channel)
                .unwrap_or_else(|| channel.clone());
            let publication = Arc::new(Publication::encode(key, s.epoch.clone(), s.top, data));
            if history.size > 0 {
                let now = publication.received;
                s.history.push_back(publication.clone());
                s.trim(history, now);
            }
            self.delivery.deliver(&publication);
            s.position()
        });
        Box::pin(async move { result })
    }

    fn publish_ephemeral(
        &self,
        channel: &ChannelKey,
        frame: String,
    ) -> BoxFuture<'_, Result<(), BusError>> {
        self.delivery
            .deliver(&Arc::new(Publication::ephemeral(channel.clone(), frame)));
        Box::pin(async { Ok(()) })
    }

    fn recover<'a>(
        &'a self,
        channel: &'a ChannelKey,
        history: HistoryPolicy,
        since: Option<&'a Position>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Recovery, BusError>> {
        let result = self.stream(channel).map(|stream| {
            let mut s = stream.lock();
            s.trim(history, Instant::now());
            match since {
                Some(since) => after(&s, since, limit),
                None => Recovery {
                    top: s.position(),
                    publications: Vec::new(),
                    recovered: false,
                },
            }
        });
        Box::pin(async move { result })
    }

    fn page_after<'a>(
        &'a self,
        channel: &'a ChannelKey,
        history: HistoryPolicy,
        since: &'a Position,
        limit: usize,
    ) -> BoxFuture<'a, Result<HistoryPage, BusError>> {
        let result = self.stream(channel).map(|stream| {
            let mut s = stream.lock();
            s.trim(history, Instant::now());
            page_after(&s, since, limit)
        });
        Box::pin(async move { result })
    }

    fn latest<'a>(
        &'a self,
        channel: &'a ChannelKey,
        history: HistoryPolicy,
        limit: usize,
    ) -> BoxFuture<'a, Result<Recovery, BusError>> {
        let result = self.stream(channel).map(|stream| {
            let mut s = stream.lock();
            s.trim(history, Instant::now());
            let skip = s.history.len().saturating_sub(limit);
            let publications = s.history.iter().skip(skip).cloned().collect();
            Recovery {
                top: s.position(),
                publications,
                recovered: skip == 0 && s.history.front().is_none_or(|p| p.offset == 1),
            }
        });
        Box::pin(async move { result })
    }

    fn presence_join<'a>(
        &'a self,
        channel: &'a ChannelKey,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<bool, BusError>> {
        let mut members = self.presence.entry(channel.clone()).or_default();
        let count = members.entry(user.clone()).or_insert(0);
        *count += 1;
        let first = *count == 1;
        drop(members);
        Box::pin(async move { Ok(first) })
    }

    fn presence_leave<'a>(
        &'a self,
        channel: &'a ChannelKey,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<bool, BusError>> {
        let mut last = false;
        self.presence.remove_if_mut(channel, |_, members| {
            if let Some(count) = members.get_mut(user) {
                *count -= 1;
                if *count == 0 {
                    members.remove(user);
                    last = true;
                }
            }
            members.is_empty()
        });
        Box::pin(async move { Ok(last) })
    }

    fn presence<'a>(
        &'a self,
        channel: &'a ChannelKey,
    ) -> BoxFuture<'a, Result<Vec<PresenceEntry>, BusError>> {
        let mut members: Vec<PresenceEntry> = self
            .presence
            .get(channel)
            .map(|m| {
                m.iter()
                    .map(|(user, clients)| PresenceEntry {
                        user: user.clone(),
                        clients: *clients,
                    })
                    .collect()
            })
            .unwrap_or_default();
        members.sort_by(|a, b| a.user.cmp(&b.user));
        Box::pin(async move { Ok(members) })
    }

    fn control(&self, message: ControlMessage) -> BoxFuture<'_, Result<(), BusError>> {
        self.control.dispatch(&message);
        Box::pin(async { Ok(()) })
    }

    fn local_interest(&self, _channel: &ChannelKey, _interested: bool) {}

    fn ready_for<'a>(&'a self, _channel: &'a ChannelKey) -> BoxFuture<'a, Result<(), BusError>> {
        // Delivery is in-process: a local subscriber receives from the moment it joins the fan-out.
        Box::pin(async { Ok(()) })
    }

    fn healthy(&self) -> bool {
        true
    }

    fn node_id(&self) -> &str {
        &self.node
    }

    fn report_node(
        &self,
        report: NodeReport,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), BusError>> {
        *self.report.lock() = Some((report, Instant::now(), ttl));
        Box::pin(async { Ok(()) })
    }

    fn nodes<'a>(
        &'a self,
        tenant: &'a TenantId,
    ) -> BoxFuture<'a, Result<Vec<NodeReport>, BusError>> {
        let report = self
            .report
            .lock()
            .as_ref()
            .filter(|(_, at, ttl)| at.elapsed() <= *ttl)
            .map(|(report, _, _)| report.share(tenant));
        Box::pin(async move { Ok(report.into_iter().collect()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::ChannelName;

    /// A node with no subscriber: these tests look at streams and history.
    struct Nobody;
    impl Delivery for Nobody {
        fn deliver(&self, _: &Arc<Publication>) {}
        fn has_subscribers(&self, _: &ChannelKey) -> bool {
            false
        }
        fn canonical(&self, _: &ChannelKey) -> Option<ChannelKey> {
            None
        }
    }

    fn setup() -> (MemoryBroker, ChannelKey) {
        let metrics = Arc::new(Metrics::default());
        (
            MemoryBroker::new(
                Arc::new(Nobody),
                Arc::new(ControlRouter::default()),
                10,
                metrics,
            ),
            ChannelKey::new("t".into(), ChannelName::parse("broadcast").unwrap()),
        )
    }

    fn data(n: u64) -> Box<RawValue> {
        RawValue::from_string(n.to_string()).unwrap()
    }

    const POLICY: HistoryPolicy = HistoryPolicy {
        size: 3,
        ttl: Duration::from_secs(60),
    };

    #[tokio::test]
    async fn offsets_increase_by_one_within_an_epoch() {
        let (broker, key) = setup();
        let a = broker.publish(&key, POLICY, &data(1)).await.unwrap();
        let b = broker.publish(&key, POLICY, &data(2)).await.unwrap();
        assert_eq!((a.offset, b.offset), (1, 2));
        assert_eq!(a.epoch, b.epoch);
    }

    #[tokio::test]
    async fn recovery_returns_exactly_what_followed_within_history() {
        let (broker, key) = setup();
        for n in 1..=4 {
            broker.publish(&key, POLICY, &data(n)).await.unwrap();
        }
        let epoch = broker
            .recover(&key, POLICY, None, 10)
            .await
            .unwrap()
            .top
            .epoch;
        let r = broker
            .recover(
                &key,
                POLICY,
                Some(&Position {
                    epoch: epoch.clone(),
                    offset: 2,
                }),
                10,
            )
            .await
            .unwrap();
        assert!(r.recovered);
        assert_eq!(
            r.publications.iter().map(|p| p.offset).collect::<Vec<_>>(),
            vec![3, 4]
        );
        // Offset 1 has been trimmed (history holds 3): recovery from 0 must fail.
        let r = broker
            .recover(
                &key,
                POLICY,
                Some(&Position {
                    epoch: epoch.clone(),
                    offset: 0,
                }),
                10,
            )
            .await
            .unwrap();
        assert!(!r.recovered && r.publications.is_empty());
        let r = broker
            .recover(
                &key,
                POLICY,
                Some(&Position {
                    epoch: "other".into(),
                    offset: 4,
                }),
                10,
            )
            .await
            .unwrap();
        assert!(!r.recovered);
    }

    #[tokio::test]
    async fn the_channel_limit_refuses_new_channels() {
        let (broker, _) = setup();
        for i in 0..10 {
            let key = ChannelKey::new(
                "t".into(),
                ChannelName::parse(&format!("user:{i}")).unwrap(),
            );
            broker.publish(&key, POLICY, &data(1)).await.unwrap();
        }
        let key = ChannelKey::new("t".into(), ChannelName::parse("user:x").unwrap());
        assert!(matches!(
            broker.publish(&key, POLICY, &data(1)).await,
            Err(BusError::TooManyChannels)
        ));
    }

    /// A node where only `watched` has a subscriber.
    struct Watching(ChannelKey);
    impl Delivery for Watching {
        fn deliver(&self, _: &Arc<Publication>) {}
        fn has_subscribers(&self, key: &ChannelKey) -> bool {
            *key == self.0
        }
        fn canonical(&self, _: &ChannelKey) -> Option<ChannelKey> {
            None
        }
    }

    #[tokio::test]
    async fn the_sweep_evicts_only_channels_with_neither_subscriber_nor_history() {
        let channel = |name: &str| ChannelKey::new("t".into(), ChannelName::parse(name).unwrap());
        let (expired, kept, watched) = (channel("user:a"), channel("user:b"), channel("user:c"));
        let broker = MemoryBroker::new(
            Arc::new(Watching(watched.clone())),
            Arc::new(ControlRouter::default()),
            10,
            Arc::new(Metrics::default()),
        );
        let mut epochs = Vec::new();
        for key in [&expired, &kept, &watched] {
            epochs.push(broker.publish(key, POLICY, &data(1)).await.unwrap().epoch);
        }
        // Let time pass, so that a zero time to live has expired the history.
        std::thread::sleep(Duration::from_millis(5));
        let expire = HistoryPolicy {
            size: 3,
            ttl: Duration::ZERO,
        };
        broker.evict_idle(|key| Some(if *key == kept { POLICY } else { expire }));
        assert_eq!(broker.streams.len(), 2);
        assert_eq!(broker.count.load(Ordering::Relaxed), 2);
        assert!(!broker.streams.contains_key(&expired));
        // The evicted channel starts over in a new epoch: a client holding
        // the old position learns that it cannot recover.
        let again = broker.publish(&expired, POLICY, &data(2)).await.unwrap();
        assert_eq!(broker.count.load(Ordering::Relaxed), 3);
        assert_eq!(again.offset, 1);
        assert_ne!(again.epoch, epochs[0]);
        // History within its time to live keeps a channel; a subscriber
        // keeps one whose history is gone.
        for (key, epoch) in [(&kept, &epochs[1]), (&watched, &epochs[2])] {
            let next = broker.publish(key, POLICY, &data(2)).await.unwrap();
            assert_eq!((next.offset, &next.epoch), (2, epoch));
        }
    }
}
