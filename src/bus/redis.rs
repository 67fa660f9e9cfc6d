//! Cluster mode: the broker over Redis, for any number of identical nodes.
//!
//! - **One order per channel.** A Lua script assigns the next offset
//!   (`INCR`), appends to the channel's history (a stream whose entry ids
//!   are the offsets, trimmed with `MAXLEN`) and `PUBLISH`es, atomically, so
//!   two nodes publishing to one channel produce one order that every node
//!   receives in that order.
//! - **Epochs.** The epoch lives beside the counter. If Redis loses them
//!   (restart without persistence, or the channel idle past its history
//!   TTL), the next publication starts a new epoch and recovering clients
//!   are told `recovered: false`.
//! - **Fan-out.** A node subscribes to a channel's Redis pub/sub channel only
//!   while it has local subscribers, over [`SHARDS`] pub/sub connections
//!   chosen by channel hash. Each shard reconnects with back-off by itself,
//!   restores its subscriptions, and then catches up from history what it
//!   may have missed while disconnected; where that is impossible, local
//!   subscribers are told to resubscribe (and learn `recovered: false`).
//! - **Presence** is a sorted set per channel whose members (`node|user|count`)
//!   carry an expiry as score, refreshed by each node; a crashed node's
//!   members vanish after the presence TTL (`RELAIS_PRESENCE_TTL_SECS`).
//! - **Control messages** (revocations, cancellations) travel on a control
//!   channel every node listens to.
//! - **Node reports** are a hash per node (`node:<id>`: field `_` for the
//!   node, `t:<tenant>` per tenant) with an expiry, and a sorted set of node
//!   ids scored by that expiry; a node that stops reporting drops out.

use std::{
    collections::{HashMap, HashSet},
    hash::{Hash, Hasher},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use dashmap::DashMap;
use futures_util::{StreamExt, future::BoxFuture};
use parking_lot::Mutex;
use redis::{AsyncCommands, Script, aio::ConnectionManager};
use serde_json::value::RawValue;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{
    Broker, BusError, ControlMessage, ControlRouter, Delivery, HistoryPage, Position,
    PresenceEntry, Publication, Recovery,
    coalesce::{Coalescer, Wanted},
    nodes::{MAX_NODES, NodeReport, NodeSummary, TenantSummary},
};
use crate::{
    channels::{ChannelKey, HistoryPolicy},
    ids::{TenantId, UserId},
};

/// Pub/sub connections per node.
pub const SHARDS: usize = 4;
/// Longest wait for one Redis command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// History reads in flight to Redis from one node. They share the one
/// multiplexed connection with publishes; past this, a read waits its turn
/// here (up to [`COMMAND_TIMEOUT`]) instead of in Redis's output buffer,
/// where every command behind it would wait too.
const MAX_READS_IN_FLIGHT: usize = 32;
/// Longest wait for Redis to confirm a pub/sub subscription.
const READY_TIMEOUT: Duration = Duration::from_secs(3);
/// Shortest lifetime of a channel's epoch and counter in Redis.
const MIN_STREAM_TTL: Duration = Duration::from_secs(60);

/// `KEYS`: epoch, counter, history, and optionally a publication id's key.
/// `ARGV`: candidate epoch, history size, TTL (s), pub/sub channel, data,
/// now (ms), TTL of the id (s). Returns `{epoch, offset, replayed}`.
///
/// With an id, a publication already made under it is not made again: its
/// position is returned with `replayed` = 1. A caller whose command timed
/// out (Redis stalled, the script ran later) retries with the same id and
/// learns the position of what did happen instead of publishing twice.
const PUBLISH: &str = r#"
if KEYS[4] then
  local done = redis.call('GET', KEYS[4])
  if done then
    local sep = string.find(done, '\n', 1, true)
    return {string.sub(done, 1, sep - 1), tonumber(string.sub(done, sep + 1)), 1}
  end
end
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
  redis.call('DEL', KEYS[2], KEYS[3])
end
local offset = redis.call('INCR', KEYS[2])
local size = tonumber(ARGV[2])
if size > 0 then
  redis.call('XADD', KEYS[3], 'MAXLEN', size, offset .. '-1', 't', ARGV[6], 'd', ARGV[5])
  redis.call('EXPIRE', KEYS[3], ARGV[3])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[4], 'p\n' .. epoch .. '\n' .. offset .. '\n' .. ARGV[5])
if KEYS[4] then
  redis.call('SET', KEYS[4], epoch .. '\n' .. offset, 'EX', ARGV[7])
end
return {epoch, offset, 0}
"#;

/// How long the index of node reports outlives the last report of any node.
const NODES_INDEX_TTL: Duration = Duration::from_secs(3600);

/// How long a publication id is remembered: a retry with the same
/// `Idempotency-Key` within this window resolves to the publication made.
const PUBLICATION_ID_TTL: Duration = Duration::from_secs(3600);

/// `KEYS`: epoch, counter, history. `ARGV`: candidate epoch, TTL (s), first
/// offset wanted (0 = the latest), count. Returns `{epoch, top, entries}`
/// with entries flattened as `offset, time, data`.
const READ: &str = r#"
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch, 'EX', ARGV[2])
  redis.call('DEL', KEYS[2], KEYS[3])
end
local top = tonumber(redis.call('GET', KEYS[2]) or '0')
local from = tonumber(ARGV[3])
local count = tonumber(ARGV[4])
local entries
-- COUNT 0 answers nil, not an empty list, once the stream exists.
if count == 0 then
  entries = {}
elseif from > 0 then
  entries = redis.call('XRANGE', KEYS[3], from .. '-1', '+', 'COUNT', count)
else
  entries = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', count)
end
local out = {}
for _, e in ipairs(entries) do
  local id = e[1]
  local fields = e[2]
  local t, d = '0', ''
  for i = 1, #fields, 2 do
    if fields[i] == 't' then t = fields[i + 1] elseif fields[i] == 'd' then d = fields[i + 1] end
  end
  table.insert(out, string.sub(id, 1, string.find(id, '-') - 1))
  table.insert(out, t)
  table.insert(out, d)
end
return {epoch, top, out}
"#;

/// One pub/sub connection: the subscriptions wanted (Redis channel → key)
/// and those confirmed by Redis, with a generation bumped on every change of
/// the latter so [`Broker::ready_for`] can wait for its channel.
struct Shard {
    wanted: Mutex<HashMap<String, ChannelKey>>,
    changed: Notify,
    active: Mutex<HashSet<String>>,
    generation: tokio::sync::watch::Sender<u64>,
}

impl Default for Shard {
    fn default() -> Self {
        Shard {
            wanted: Mutex::default(),
            changed: Notify::new(),
            active: Mutex::default(),
            generation: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Shard {
    fn set_active(&self, active: HashSet<String>) {
        *self.active.lock() = active;
        self.generation.send_modify(|g| *g += 1);
    }
}

/// A channel's position and publications read from it, oldest first.
type HistoryRead = (Position, Vec<Arc<Publication>>);

pub struct RedisBroker {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: Arc<str>,
    /// The pub/sub channel of control messages, heard by every node.
    control_channel: String,
    node: Arc<str>,
    delivery: Arc<dyn Delivery>,
    control: Arc<ControlRouter>,
    metrics: Arc<crate::metrics::Metrics>,
    shards: Vec<Arc<Shard>>,
    /// Shards currently connected.
    connected: AtomicUsize,
    /// Last position this node received per channel, to catch up after a
    /// pub/sub reconnect.
    received: DashMap<ChannelKey, Position>,
    /// This node's presence: channel → user → local connection count.
    presence: DashMap<ChannelKey, HashMap<UserId, u32>>,
    presence_ttl: Duration,
    publish_script: Script,
    read_script: Script,
    /// Concurrent recoveries of one channel share one history read.
    recoveries: Coalescer<ChannelKey, Result<Arc<HistoryRead>, BusError>>,
    reads_in_flight: tokio::sync::Semaphore,
    ready: AtomicBool,
}

impl RedisBroker {
    /// Connects (failing fast if Redis is unreachable at start) and starts
    /// the shard and presence tasks, which stop with `stop`.
    pub async fn connect(
        url: &str,
        prefix: &str,
        presence_ttl: Duration,
        delivery: Arc<dyn Delivery>,
        control: Arc<ControlRouter>,
        metrics: Arc<crate::metrics::Metrics>,
        stop: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let client = redis::Client::open(url)?;
        // Bounded waits: during an outage a publish fails within about
        // COMMAND_TIMEOUT instead of hanging, and the manager reconnects by itself.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_millis(500));
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| anyhow::anyhow!("Redis did not answer within 5 s"))??;
        let broker = Arc::new(RedisBroker {
            client,
            conn,
            prefix: prefix.into(),
            control_channel: format!("{prefix}:control"),
            node: crate::ids::random_token(9).into(),
            delivery,
            control,
            metrics,
            shards: (0..SHARDS).map(|_| Arc::new(Shard::default())).collect(),
            connected: AtomicUsize::new(0),
            received: DashMap::new(),
            presence: DashMap::new(),
            presence_ttl,
            publish_script: Script::new(PUBLISH),
            read_script: Script::new(READ),
            recoveries: Coalescer::default(),
            reads_in_flight: tokio::sync::Semaphore::new(MAX_READS_IN_FLIGHT),
            ready: AtomicBool::new(false),
        });
        for index in 0..SHARDS {
            tokio::spawn(broker.clone().run_shard(index, stop.clone()));
        }
        tokio::spawn(broker.clone().refresh_presence(stop));
        Ok(broker)
    }

    /// Waits until every shard is connected (start-up and tests).
    pub async fn wait_connected(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while self.connected.load(Ordering::Acquire) < SHARDS {
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    fn key_base(&self, channel: &ChannelKey) -> String {
        format!("{}:ch:{}:{}", self.prefix, channel.tenant(), channel.name())
    }

    fn pubsub_name(&self, channel: &ChannelKey) -> String {
        format!(
            "{}:pub:{}:{}",
            self.prefix,
            channel.tenant(),
            channel.name()
        )
    }

    fn presence_key(&self, channel: &ChannelKey) -> String {
        format!(
            "{}:presence:{}:{}",
            self.prefix,
            channel.tenant(),
            channel.name()
        )
    }

    fn node_key(&self, node: &str) -> String {
        format!("{}:node:{}", self.prefix, node)
    }

    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    fn shard_of(&self, pubsub_name: &str) -> &Arc<Shard> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        pubsub_name.hash(&mut hasher);
        &self.shards[(hasher.finish() as usize) % SHARDS]
    }

    fn ttl_secs(history: HistoryPolicy) -> u64 {
        history.ttl.max(MIN_STREAM_TTL).as_secs()
    }

    fn unavailable(&self, e: redis::RedisError) -> BusError {
        self.metrics.bus_errors.inc();
        BusError::Unavailable(e.to_string())
    }

    /// Runs the publish script; with `id`, at most once per id.
    async fn run_publish(
        &self,
        channel: &ChannelKey,
        history: HistoryPolicy,
        data: &RawValue,
        id: Option<&str>,
    ) -> Result<(Position, bool), BusError> {
        let base = self.key_base(channel);
        let mut conn = self.conn.clone();
        let mut invocation = self.publish_script.prepare_invoke();
        invocation
            .key(format!("{base}:epoch"))
            .key(format!("{base}:top"))
            .key(format!("{base}:hist"));
        if let Some(id) = id {
            invocation.key(format!("{}:pubid:{}:{id}", self.prefix, channel.tenant()));
        }
        let (epoch, offset, replayed): (String, u64, u8) = invocation
            .arg(crate::ids::random_token(6))
            .arg(history.size)
            .arg(Self::ttl_secs(history))
            .arg(self.pubsub_name(channel))
            .arg(data.get())
            .arg(crate::ids::now_millis())
            .arg(PUBLICATION_ID_TTL.as_secs())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok((
            Position {
                epoch: epoch.into(),
                offset,
            },
            replayed == 1,
        ))
    }

    /// Reads the channel's position and history (`from` = first offset
    /// wanted, 0 for the latest `count`), as publications oldest first.
    async fn read(
        &self,
        channel: &ChannelKey,
        history: HistoryPolicy,
        from: u64,
        count: usize,
    ) -> Result<(Position, Vec<Arc<Publication>>), BusError> {
        let base = self.key_base(channel);
        let mut conn = self.conn.clone();
        let _permit = tokio::time::timeout(COMMAND_TIMEOUT, self.reads_in_flight.acquire())
            .await
            .map_err(|_| {
                self.metrics.bus_errors.inc();
                BusError::Unavailable("too many history reads waiting".into())
            })?
            .map_err(|_| BusError::Unavailable("shutting down".into()))?;
        let (epoch, top, entries): (String, u64, Vec<String>) = self
            .read_script
            .key(format!("{base}:epoch"))
            .key(format!("{base}:top"))
            .key(format!("{base}:hist"))
            .arg(crate::ids::random_token(6))
            .arg(Self::ttl_secs(history))
            .arg(from)
            .arg(count)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(e))?;
        let epoch: Arc<str> = epoch.into();
        let now = crate::ids::now_millis();
        let key = self
            .delivery
            .canonical(channel)
            .unwrap_or_else(|| channel.clone());
        let mut publications = Vec::with_capacity(entries.len() / 3);
        for entry in entries.chunks_exact(3) {
            let (Ok(offset), Ok(at)) = (entry[0].parse::<u64>(), entry[1].parse::<i64>()) else {
                continue;
            };
            if now - at > history.ttl.as_millis() as i64 {
                continue;
            }
            let Ok(data) = RawValue::from_string(entry[2].clone()) else {
                continue;
            };
            publications.push(Arc::new(Publication::encode(
                key.clone(),
                epoch.clone(),
                offset,
                &data,
            )));
        }
        if from == 0 {
            publications.reverse();
        }
        Ok((Position { epoch, offset: top }, publications))
    }

    async fn run_shard(self: Arc<Self>, index: usize, stop: CancellationToken) {
        let shard = self.shards[index].clone();
        let mut backoff = Duration::from_millis(100);
        let mut reconnecting = false;
        loop {
            let pubsub = tokio::select! {
                r = self.client.get_async_pubsub() => r,
                _ = stop.cancelled() => return,
            };
            let pubsub = match pubsub {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(shard = index, error = %e, "Redis pub/sub connection failed; retrying");
                    tokio::select! { _ = tokio::time::sleep(backoff) => {}, _ = stop.cancelled() => return }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    reconnecting = true;
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            let (mut sink, mut stream) = pubsub.split();
            let mut subscribed: HashSet<String> = HashSet::new();
            if index == 0 && sink.subscribe(&self.control_channel).await.is_err() {
                tracing::warn!(
                    shard = index,
                    "subscribing to the control channel failed; retrying"
                );
                tokio::select! { _ = tokio::time::sleep(backoff) => {}, _ = stop.cancelled() => return }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                reconnecting = true;
                continue;
            }
            let mut up = false;
            // Reconcile only when the wanted set changed (and once after
            // connecting), never per message.
            let mut dirty = true;
            let failed = loop {
                if !dirty {
                    tokio::select! {
                        msg = stream.next() => match msg {
                            Some(msg) => self.on_message(&msg),
                            None => break true,
                        },
                        _ = shard.changed.notified() => dirty = true,
                        _ = stop.cancelled() => break false,
                    }
                    continue;
                }
                dirty = false;
                // Reconcile the wanted set with what this connection has.
                let wanted: Vec<(String, ChannelKey)> = shard
                    .wanted
                    .lock()
                    .iter()
                    .map(|(n, k)| (n.clone(), k.clone()))
                    .collect();
                let wanted_names: HashSet<&String> = wanted.iter().map(|(n, _)| n).collect();
                let mut error = false;
                for (name, _) in &wanted {
                    if !subscribed.contains(name) {
                        if sink.subscribe(name).await.is_err() {
                            error = true;
                            break;
                        }
                        subscribed.insert(name.clone());
                    }
                }
                let stale: Vec<String> = subscribed
                    .iter()
                    .filter(|n| !wanted_names.contains(n))
                    .cloned()
                    .collect();
                for name in stale {
                    if sink.unsubscribe(&name).await.is_err() {
                        error = true;
                        break;
                    }
                    subscribed.remove(&name);
                }
                if error {
                    break true;
                }
                shard.set_active(subscribed.clone());
                if !up {
                    up = true;
                    self.metrics.bus_connections.inc();
                    if reconnecting {
                        self.metrics.bus_reconnects.inc();
                    }
                    if self.connected.fetch_add(1, Ordering::AcqRel) + 1 == SHARDS {
                        self.ready.store(true, Ordering::Release);
                    }
                    if reconnecting {
                        tracing::info!(
                            shard = index,
                            channels = wanted.len(),
                            "Redis pub/sub reconnected; catching up"
                        );
                        for (_, key) in &wanted {
                            self.catch_up(key).await;
                        }
                    }
                }
            };
            shard.set_active(HashSet::new());
            if up {
                self.metrics.bus_connections.dec();
                self.connected.fetch_sub(1, Ordering::AcqRel);
                self.ready.store(false, Ordering::Release);
            }
            if !failed {
                return;
            }
            tracing::warn!(shard = index, "Redis pub/sub connection lost; reconnecting");
            reconnecting = true;
            tokio::select! { _ = tokio::time::sleep(backoff) => {}, _ = stop.cancelled() => return }
        }
    }

    /// After a pub/sub gap: deliver what history still holds, or make local
    /// subscribers resynchronise.
    async fn catch_up(&self, key: &ChannelKey) {
        let Some(last) = self.received.get(key).map(|p| p.clone()) else {
            return;
        };
        let policy = HistoryPolicy {
            size: usize::MAX,
            ttl: Duration::from_secs(u64::MAX / 4),
        };
        let read = self.read(key, policy, last.offset + 1, 10_000).await;
        let recovery =
            read.map(|(top, publications)| self.recovery(key, top, Some(&last), publications));
        match recovery {
            Ok(r) if r.recovered => {
                for publication in &r.publications {
                    self.note_received(publication);
                    self.delivery.deliver(publication);
                }
            }
            _ => self
                .delivery
                .deliver(&Arc::new(Publication::resync(key.clone()))),
        }
    }

    /// What a subscriber at `since` recovers, given the channel's position
    /// and the publications read after `since` (oldest first).
    fn recovery(
        &self,
        channel: &ChannelKey,
        top: Position,
        since: Option<&Position>,
        publications: Vec<Arc<Publication>>,
    ) -> Recovery {
        self.received
            .entry(channel.clone())
            .or_insert_with(|| top.clone());
        let fail = |top| Recovery {
            top,
            publications: Vec::new(),
            recovered: false,
        };
        let Some(since) = since else {
            return fail(top);
        };
        if since.epoch != top.epoch || since.offset > top.offset {
            return fail(top);
        }
        let missed = top.offset - since.offset;
        let complete = publications.len() as u64 == missed
            && publications
                .first()
                .is_none_or(|p| p.offset == since.offset + 1)
            && publications.last().is_none_or(|p| p.offset == top.offset);
        if !complete {
            return fail(top);
        }
        Recovery {
            top,
            publications,
            recovered: true,
        }
    }

    fn note_received(&self, publication: &Publication) {
        if publication.offset != 0 {
            self.received.insert(
                publication.channel.clone(),
                Position {
                    epoch: publication.epoch.clone(),
                    offset: publication.offset,
                },
            );
        }
    }

    fn on_message(&self, msg: &redis::Msg) {
        let name = msg.get_channel_name();
        let payload = msg.get_payload_bytes();
        if name == self.control_channel {
            // `node\n{envelope}`; a node's own messages were applied when sent.
            let Some(split) = payload.iter().position(|b| *b == b'\n') else {
                tracing::warn!("malformed control message");
                return;
            };
            if payload[..split] != *self.node.as_bytes() {
                self.control.dispatch_json(&payload[split + 1..]);
            }
            return;
        }
        let Some(key) = self.shard_of(name).wanted.lock().get(name).cloned() else {
            return;
        };
        let Ok(text) = std::str::from_utf8(payload) else {
            return;
        };
        let publication = if let Some(frame) = text.strip_prefix("e\n") {
            Publication::ephemeral(key, frame.to_owned())
        } else if let Some(rest) = text.strip_prefix("p\n") {
            let mut parts = rest.splitn(3, '\n');
            let (Some(epoch), Some(offset), Some(data)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return;
            };
            let (Ok(offset), Ok(data)) = (
                offset.parse::<u64>(),
                RawValue::from_string(data.to_owned()),
            ) else {
                return;
            };
            Publication::encode(key, epoch.into(), offset, &data)
        } else {
            return;
        };
        let publication = Arc::new(publication);
        self.note_received(&publication);
        self.delivery.deliver(&publication);
    }

    fn presence_member(&self, user: &UserId, count: u32) -> String {
        format!("{}|{}|{}", self.node, user, count)
    }

    /// Re-announces this node's presence entries before they expire.
    async fn refresh_presence(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.presence_ttl / 3);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let expiry = crate::ids::now_millis() + self.presence_ttl.as_millis() as i64;
            let entries: Vec<(String, Vec<String>)> = self
                .presence
                .iter()
                .map(|e| {
                    (
                        self.presence_key(e.key()),
                        e.value()
                            .iter()
                            .map(|(u, c)| self.presence_member(u, *c))
                            .collect(),
                    )
                })
                .collect();
            let mut conn = self.conn.clone();
            let mut pipe = redis::pipe();
            for (key, members) in &entries {
                for member in members {
                    pipe.zadd(key, member, expiry).ignore();
                }
                pipe.pexpire(key, self.presence_ttl.as_millis() as i64)
                    .ignore();
            }
            if !entries.is_empty()
                && let Err(e) = pipe.query_async::<()>(&mut conn).await
            {
                tracing::warn!(error = %e, "refreshing presence failed");
            }
        }
    }

    async fn write_presence(
        &self,
        channel: &ChannelKey,
        user: &UserId,
        old: u32,
        new: u32,
    ) -> Result<(), BusError> {
        let key = self.presence_key(channel);
        let expiry = crate::ids::now_millis() + self.presence_ttl.as_millis() as i64;
        let mut pipe = redis::pipe();
        pipe.atomic();
        if old > 0 {
            pipe.zrem(&key, self.presence_member(user, old)).ignore();
        }
        if new > 0 {
            pipe.zadd(&key, self.presence_member(user, new), expiry)
                .ignore();
            pipe.pexpire(&key, self.presence_ttl.as_millis() as i64)
                .ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.unavailable(e))
    }

    /// Whether `user` has a live presence entry from another node.
    async fn present_elsewhere(
        &self,
        channel: &ChannelKey,
        user: &UserId,
    ) -> Result<bool, BusError> {
        Ok(self
            .presence(channel)
            .await?
            .iter()
            .any(|e| e.user == *user))
    }
}

impl Broker for RedisBroker {
    fn publish<'a>(
        &'a self,
        channel: &'a ChannelKey,
        history: HistoryPolicy,
        data: &'a RawValue,
    ) -> BoxFuture<'a, Result<Position, BusError>> {
        Box::pin(async move {
            let (position, _) = self.run_publish(channel, history, data, None).await?;
            Ok(position)
        })
    }

    fn publish_once<'a>(
        &'a self,
        channel: &'a ChannelKey,
        history: HistoryPolicy,
        data: &'a RawValue,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(Position, bool), BusError>> {
        Box::pin(self.run_publish(channel, history, data, Some(id)))
    }

    fn publish_ephemeral(
        &self,
        channel: &ChannelKey,
        frame: String,
    ) -> BoxFuture<'_, Result<(), BusError>> {
        let name = self.pubsub_name(channel);
        Box::pin(async move {
            let mut conn = self.conn.clone();
            conn.publish::<_, _, ()>(name, format!("e\n{frame}"))
                .await
                .map_err(|e| self.unavailable(e))
        })
    }

    fn recover<'a>(
        &'a self,
        channel: &'a ChannelKey,
        history: HistoryPolicy,
        since: Option<&'a Position>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Recovery, BusError>> {
        Box::pin(async move {
            let wanted = match since {
                None => Wanted { from: None, to: 0 },
                Some(since) => Wanted {
                    from: Some(since.offset + 1),
                    to: since.offset + 1 + limit.max(1) as u64,
                },
            };
            let read = self
                .recoveries
                .read(channel, wanted, |wanted| async move {
                    let (from, count) = match wanted.from {
                        None => (0, 0),
                        Some(from) => (from, (wanted.to - from) as usize),
                    };
                    self.read(channel, history, from, count).await.map(Arc::new)
                })
                .await?;
            let (top, publications) = &*read;
            let mine = since.map(|since| {
                publications
                    .iter()
                    .filter(|p| p.offset > since.offset)
                    .take(limit.max(1))
                    .cloned()
                    .collect()
            });
            Ok(self.recovery(channel, top.clone(), since, mine.unwrap_or_default()))
        })
    }

    fn page_after<'a>(
        &'a self,
        channel: &'a ChannelKey,
        history: HistoryPolicy,
        since: &'a Position,
        limit: usize,
    ) -> BoxFuture<'a, Result<HistoryPage, BusError>> {
        Box::pin(async move {
            let (top, publications) = self
                .read(channel, history, since.offset + 1, limit.max(1))
                .await?;
            let complete = since.epoch == top.epoch
                && since.offset <= top.offset
                && (since.offset == top.offset
                    || publications
                        .first()
                        .is_some_and(|p| p.offset == since.offset + 1));
            if !complete {
                return Ok(HistoryPage {
                    top,
                    publications: Vec::new(),
                    complete: false,
                    more: false,
                });
            }
            let last = publications.last().map_or(since.offset, |p| p.offset);
            Ok(HistoryPage {
                more: last < top.offset,
                top,
                publications,
                complete: true,
            })
        })
    }

    fn latest<'a>(
        &'a self,
        channel: &'a ChannelKey,
        history: HistoryPolicy,
        limit: usize,
    ) -> BoxFuture<'a, Result<Recovery, BusError>> {
        Box::pin(async move {
            let (top, publications) = self.read(channel, history, 0, limit).await?;
            let recovered = publications.first().is_none_or(|p| p.offset == 1)
                && (publications.len() as u64) == top.offset;
            Ok(Recovery {
                top,
                publications,
                recovered,
            })
        })
    }

    fn presence_join<'a>(
        &'a self,
        channel: &'a ChannelKey,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<bool, BusError>> {
        Box::pin(async move {
            let (old, new) = {
                let mut members = self.presence.entry(channel.clone()).or_default();
                let count = members.entry(user.clone()).or_insert(0);
                *count += 1;
                (*count - 1, *count)
            };
            let elsewhere = if old == 0 {
                self.present_elsewhere(channel, user).await?
            } else {
                true
            };
            self.write_presence(channel, user, old, new).await?;
            Ok(!elsewhere)
        })
    }

    fn presence_leave<'a>(
        &'a self,
        channel: &'a ChannelKey,
        user: &'a UserId,
    ) -> BoxFuture<'a, Result<bool, BusError>> {
        Box::pin(async move {
            let mut counts = None;
            self.presence.remove_if_mut(channel, |_, members| {
                if let Some(count) = members.get_mut(user) {
                    counts = Some((*count, *count - 1));
                    *count -= 1;
                    if *count == 0 {
                        members.remove(user);
                    }
                }
                members.is_empty()
            });
            let Some((old, new)) = counts else {
                return Ok(false);
            };
            self.write_presence(channel, user, old, new).await?;
            if new > 0 {
                return Ok(false);
            }
            Ok(!self.present_elsewhere(channel, user).await?)
        })
    }

    fn presence<'a>(
        &'a self,
        channel: &'a ChannelKey,
    ) -> BoxFuture<'a, Result<Vec<PresenceEntry>, BusError>> {
        Box::pin(async move {
            let key = self.presence_key(channel);
            let now = crate::ids::now_millis();
            let mut conn = self.conn.clone();
            let members: Vec<String> = conn
                .zrangebyscore(&key, now, "+inf")
                .await
                .map_err(|e| self.unavailable(e))?;
            let mut by_user: HashMap<String, u32> = HashMap::new();
            for member in members {
                let mut parts = member.rsplitn(2, '|');
                let (Some(count), Some(rest)) = (parts.next(), parts.next()) else {
                    continue;
                };
                let Some((_, user)) = rest.split_once('|') else {
                    continue;
                };
                *by_user.entry(user.to_owned()).or_default() += count.parse::<u32>().unwrap_or(0);
            }
            let mut entries: Vec<PresenceEntry> = by_user
                .into_iter()
                .map(|(user, clients)| PresenceEntry {
                    user: user.into(),
                    clients,
                })
                .collect();
            entries.sort_by(|a, b| a.user.cmp(&b.user));
            Ok(entries)
        })
    }

    fn control(&self, message: ControlMessage) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            // Applied here at once, even if Redis is down; other nodes apply
            // it from the control channel. The payload names this node so
            // that it does not apply its own message a second time.
            self.control.dispatch(&message);
            let payload = format!(
                "{}\n{}",
                self.node,
                serde_json::to_string(&message).unwrap_or_default()
            );
            let mut conn = self.conn.clone();
            conn.publish::<_, _, ()>(&self.control_channel, payload)
                .await
                .map_err(|e| self.unavailable(e))
        })
    }

    fn local_interest(&self, channel: &ChannelKey, interested: bool) {
        let name = self.pubsub_name(channel);
        let shard = self.shard_of(&name);
        {
            let mut wanted = shard.wanted.lock();
            if interested {
                wanted.insert(name, channel.clone());
            } else {
                wanted.remove(&name);
                self.received.remove(channel);
            }
        }
        shard.changed.notify_one();
    }

    fn ready_for<'a>(&'a self, channel: &'a ChannelKey) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            let name = self.pubsub_name(channel);
            let shard = self.shard_of(&name);
            let mut generation = shard.generation.subscribe();
            let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
            loop {
                if shard.active.lock().contains(&name) {
                    return Ok(());
                }
                match tokio::time::timeout_at(deadline, generation.changed()).await {
                    Ok(Ok(())) => {}
                    _ => {
                        return Err(BusError::Unavailable(
                            "Redis pub/sub subscription not confirmed".into(),
                        ));
                    }
                }
            }
        })
    }

    fn healthy(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn node_id(&self) -> &str {
        &self.node
    }

    fn report_node(
        &self,
        report: NodeReport,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            let key = self.node_key(&self.node);
            let mut fields = Vec::with_capacity(report.tenants.len() + 1);
            fields.push((
                "_".to_owned(),
                serde_json::to_string(&report.node).unwrap_or_default(),
            ));
            for (tenant, share) in &report.tenants {
                fields.push((
                    format!("t:{tenant}"),
                    serde_json::to_string(share).unwrap_or_default(),
                ));
            }
            let ttl_ms = ttl.as_millis() as i64;
            let now = crate::ids::now_millis();
            let index = self.nodes_key();
            let mut pipe = redis::pipe();
            pipe.atomic();
            pipe.del(&key).ignore();
            pipe.hset_multiple(&key, &fields).ignore();
            pipe.pexpire(&key, ttl_ms).ignore();
            pipe.zadd(&index, &*self.node, now + ttl_ms).ignore();
            pipe.zrembyscore(&index, "-inf", now).ignore();
            pipe.expire(&index, NODES_INDEX_TTL.as_secs() as i64)
                .ignore();
            let mut conn = self.conn.clone();
            pipe.query_async::<()>(&mut conn)
                .await
                .map_err(|e| self.unavailable(e))
        })
    }

    fn nodes<'a>(
        &'a self,
        tenant: &'a TenantId,
    ) -> BoxFuture<'a, Result<Vec<NodeReport>, BusError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let now = crate::ids::now_millis();
            let ids: Vec<String> = conn
                .zrangebyscore_limit(self.nodes_key(), now, "+inf", 0, MAX_NODES as isize)
                .await
                .map_err(|e| self.unavailable(e))?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let share = format!("t:{tenant}");
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("HMGET")
                    .arg(self.node_key(id))
                    .arg("_")
                    .arg(&share);
            }
            let rows: Vec<(Option<String>, Option<String>)> = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| self.unavailable(e))?;
            let mut reports = Vec::with_capacity(rows.len());
            for (node, share) in rows {
                // The hash expired between the two reads: the node is gone.
                let Some(node) = node else { continue };
                let Ok(node) = serde_json::from_str::<NodeSummary>(&node) else {
                    tracing::warn!("unreadable node report in Redis");
                    continue;
                };
                let share = share.and_then(|s| serde_json::from_str::<TenantSummary>(&s).ok());
                reports.push(NodeReport {
                    node,
                    tenants: share
                        .map(|share| (tenant.clone(), share))
                        .into_iter()
                        .collect(),
                });
            }
            Ok(reports)
        })
    }
}
