//! The chat module's background work: mention notifications, the general
//! room's connected/disconnected messages (the disconnect debounced, so a
//! page reload posts nothing), and the retention purge.

use std::{
    collections::HashMap,
    sync::{Arc, Weak},
    time::Duration,
};

use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Core, Kind, Message, Room, hook, store};
use crate::{
    gateway::Gateway,
    ids::now_millis,
    notify::{Notify, fanout::Recipients, recipients::RecipientSpec, trigger::TriggerRequest},
};

/// Work handed to the worker by the hook, the observer and the routes.
pub enum Job {
    /// A stored message mentions people.
    Mention {
        tenant: String,
        room: Box<Room>,
        message: Box<Message>,
    },
    /// A user's first connection entered a room's presence, or their last
    /// one left it.
    Presence {
        tenant: String,
        user: String,
        room: String,
        present: bool,
    },
    /// The disconnect delay of a user ran out; `generation` tells whether
    /// they came back since.
    DisconnectDue {
        tenant: String,
        user: String,
        room: String,
        generation: u64,
    },
}

/// Messages deleted per statement by the retention purge.
const PURGE_BATCH: i64 = 500;

/// Longest excerpt of a message in a notification.
const EXCERPT: usize = 140;

#[derive(Clone)]
pub struct ChatWorker {
    pub core: Arc<Core>,
    pub notify: Arc<Notify>,
    pub gateway: Weak<Gateway>,
}

impl ChatWorker {
    pub async fn run(self, mut queue: mpsc::Receiver<Job>, stop: CancellationToken) {
        // Per tenant/user/room: bumped on every presence change, so a due
        // disconnect knows whether the user came back in between.
        let mut generations: HashMap<String, u64> = HashMap::new();
        let mut tick = tokio::time::interval(self.core.config.unread_window);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let job = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {
                    let dirty = self.core.take_unread();
                    if !dirty.is_empty() {
                        self.push_unread(dirty).await;
                    }
                    continue;
                }
                job = queue.recv() => match job {
                    Some(job) => job,
                    None => return,
                },
            };
            match job {
                Job::Mention {
                    tenant,
                    room,
                    message,
                } => self.mention(&tenant, &room, &message).await,
                Job::Presence {
                    tenant,
                    user,
                    room,
                    present,
                } => {
                    let key = format!("{tenant}/{user}/{room}");
                    let generation = generations.entry(key).or_insert(0);
                    *generation += 1;
                    if present {
                        self.connected(&tenant, &user, &room).await;
                    } else {
                        let due = Job::DisconnectDue {
                            tenant,
                            user,
                            room,
                            generation: *generation,
                        };
                        let jobs = self.core.jobs.clone();
                        let delay = self.core.config.disconnect_delay;
                        let stop = stop.clone();
                        tokio::spawn(async move {
                            tokio::select! {
                                _ = stop.cancelled() => {}
                                _ = tokio::time::sleep(delay) => {
                                    let _ = jobs.send(due).await;
                                }
                            }
                        });
                    }
                }
                Job::DisconnectDue {
                    tenant,
                    user,
                    room,
                    generation,
                } => {
                    let key = format!("{tenant}/{user}/{room}");
                    if generations.get(&key) == Some(&generation) {
                        generations.remove(&key);
                        self.disconnected(&tenant, &user, &room).await;
                    }
                }
            }
        }
    }

    /// The general room, if `room` is it.
    async fn general(&self, tenant: &str, room: &str) -> Option<Room> {
        match store::room(&self.core.store, tenant, room).await {
            Ok(Some(room)) if room.kind == Kind::General => Some(room),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "chat room not read");
                None
            }
        }
    }

    /// Posts "connected" unless the user's last event in the room already
    /// says so (a reconnect within the delay, or on another node).
    async fn connected(&self, tenant: &str, user: &str, room: &str) {
        let Some(room) = self.general(tenant, room).await else {
            return;
        };
        let Some(gateway) = self.gateway.upgrade() else {
            return;
        };
        let result = async {
            if store::last_presence_event(&self.core.store, &room.id, user)
                .await?
                .as_deref()
                == Some("connected")
            {
                return Ok(());
            }
            let name = store::display_name(&self.core.store, tenant, user).await?;
            self.core
                .post_system(
                    &gateway,
                    tenant,
                    &room.id,
                    "connected",
                    user,
                    &format!("{name} connected"),
                )
                .await
                .map(drop)
        };
        if let Err(e) = result.await {
            tracing::warn!(error = %e, "chat connect message not posted");
        }
    }

    /// Posts "disconnected" when the user is present on no node and their
    /// last event in the room is "connected".
    async fn disconnected(&self, tenant: &str, user: &str, room: &str) {
        let Some(room) = self.general(tenant, room).await else {
            return;
        };
        let Some(gateway) = self.gateway.upgrade() else {
            return;
        };
        let result = async {
            let tenant_id = crate::ids::TenantId::from(tenant);
            let (key, _) = gateway
                .resolve(&tenant_id, &hook::channel(&room.id))
                .map_err(|e| anyhow::anyhow!(e))?;
            let present = gateway.broker.presence(&key).await?;
            if present.iter().any(|p| p.user.as_str() == user) {
                return Ok(());
            }
            if store::last_presence_event(&self.core.store, &room.id, user)
                .await?
                .as_deref()
                != Some("connected")
            {
                return Ok(());
            }
            let name = store::display_name(&self.core.store, tenant, user).await?;
            self.core
                .post_system(
                    &gateway,
                    tenant,
                    &room.id,
                    "disconnected",
                    user,
                    &format!("{name} disconnected"),
                )
                .await?;
            Ok::<_, anyhow::Error>(())
        };
        if let Err(e) = result.await {
            tracing::warn!(error = %e, "chat disconnect message not posted");
        }
    }

    /// Pushes `chat.unread_counts` to every member of the rooms that got
    /// messages: one publication per user per window, on `user:<id>`, with
    /// the counts of those rooms and the user's total.
    async fn push_unread(&self, dirty: HashMap<String, HashMap<String, Room>>) {
        let Some(gateway) = self.gateway.upgrade() else {
            return;
        };
        for (tenant, rooms) in dirty {
            let result = async {
                let mut users = std::collections::BTreeSet::new();
                for room in rooms.values() {
                    users.extend(store::member_ids(&self.core.store, &tenant, room).await?);
                }
                for user in users {
                    let all = store::rooms_of(&self.core.store, &tenant, &user).await?;
                    let total: i64 = all.iter().map(|(_, _, n)| n).sum();
                    let changed: Vec<serde_json::Value> = all
                        .iter()
                        .filter(|(r, _, _)| rooms.contains_key(&r.id))
                        .map(|(r, _, n)| json!({"room": r.id, "unread": n}))
                        .collect();
                    if changed.is_empty() {
                        continue;
                    }
                    let event =
                        json!({"type": "chat.unread_counts", "rooms": changed, "total": total});
                    hook::publish(&gateway, &tenant, &format!("user:{user}"), &event).await;
                }
                Ok::<_, super::ChatError>(())
            };
            if let Err(e) = result.await {
                tracing::warn!(error = %e, "chat unread counts not pushed");
            }
        }
    }

    /// One `chat.mention` notification per message: the users it names,
    /// or every member for `@room`; never its author.
    async fn mention(&self, tenant: &str, room: &Room, message: &Message) {
        let result = async {
            let mut users: Vec<String> = if message.mentions.iter().any(|m| m == "room") {
                store::member_ids(&self.core.store, tenant, room).await?
            } else {
                message
                    .mentions
                    .iter()
                    .filter(|m| *m != "room")
                    .cloned()
                    .collect()
            };
            users.retain(|u| Some(u) != message.author.as_ref());
            if users.is_empty() {
                return Ok(());
            }
            let actor_name = match &message.author {
                Some(author) => store::display_name(&self.core.store, tenant, author).await?,
                None => "App".to_owned(),
            };
            let excerpt: String = message.text.chars().take(EXCERPT).collect();
            let trigger = TriggerRequest {
                type_key: "chat.mention".into(),
                payload: json!({
                    "room": {"id": room.id, "name": room.name},
                    "message": {"id": message.id, "excerpt": excerpt},
                    "actor": {"name": actor_name},
                }),
                recipients: RecipientSpec {
                    users,
                    ..RecipientSpec::default()
                },
                actor: message.author.clone(),
            };
            let key = format!("chat-mention:{}", message.id);
            self.notify
                .trigger(
                    &crate::ids::TenantId::from(tenant),
                    trigger,
                    Some(&key),
                    Recipients::MayBeNone,
                )
                .await
                .map_err(|e| anyhow::anyhow!(e.to_string()))?;
            Ok::<_, anyhow::Error>(())
        };
        if let Err(e) = result.await {
            tracing::warn!(error = %e, message = %message.id, "chat mention not notified");
        }
    }

    /// Deletes messages older than each tenant's retention, in batches,
    /// every purge interval.
    pub async fn purge(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.core.config.purge_interval) => {}
            }
            self.core.forget_idle();
            if let Err(e) = self.purge_once(&stop).await {
                tracing::warn!(error = %e, "chat retention purge failed");
            }
        }
    }

    async fn purge_once(&self, stop: &CancellationToken) -> Result<(), super::ChatError> {
        for (tenant, days) in store::retention_settings(&self.core.store).await? {
            let cutoff = now_millis() - days.max(1) * 86_400_000;
            loop {
                let deleted = store::purge(&self.core.store, &tenant, cutoff, PURGE_BATCH).await?;
                if deleted > 0 {
                    tracing::info!(tenant, deleted, "chat messages past retention purged");
                }
                if deleted < PURGE_BATCH as u64 || stop.is_cancelled() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Ok(())
    }
}
