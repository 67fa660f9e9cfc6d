//! What the chat module registers on the gateway: the membership rule of
//! `chat:<room>`, the publish hook (messages stored first, typing made
//! ephemeral), the `chat.` RPC methods and the presence observer; and the
//! operations they share with the routes.

use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json, value::RawValue};

use super::{
    ChatError, Core, Kind, MAX_CLIENT_ID, MAX_TEXT, Message, NAMESPACE, Room, TYPING_TTL_MS, raw,
    store::{self, NewMessage},
    worker::Job,
};
use crate::{
    auth::Principal,
    channels::{AccessCheck, ChannelKey, ChannelName},
    extension::{
        DomainError, PresenceObserver, PublishHook, PublishOutcome, Publisher, RpcCall, RpcHandler,
        method_not_found,
    },
    gateway::Gateway,
};

/// What a client publishes into `chat:<room>`.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Incoming {
    Message {
        text: String,
        #[serde(default)]
        reply_to: Option<String>,
        #[serde(default)]
        client_id: Option<String>,
    },
    Typing,
}

/// The channel name of a room.
pub fn channel(room: &str) -> String {
    format!("{NAMESPACE}:{room}")
}

impl Core {
    /// The room behind a `chat:` channel of the tenant.
    pub async fn room_of(&self, tenant: &str, channel: &ChannelName) -> Result<Room, ChatError> {
        let id = channel.key().ok_or(ChatError::RoomNotFound)?;
        store::room(&self.store, tenant, id)
            .await?
            .ok_or(ChatError::RoomNotFound)
    }

    /// Validates, checks limits and mutes, stores a message and hands its
    /// mentions to the worker. `author` is `None` for an app backend.
    pub async fn post_message(
        &self,
        tenant: &str,
        room: &Room,
        author: Option<&str>,
        text: &str,
        reply_to: Option<&str>,
        client_id: Option<&str>,
    ) -> Result<Message, ChatError> {
        if room.archived {
            return Err(ChatError::Archived);
        }
        let length = text.chars().count();
        if text.trim().is_empty() || length > MAX_TEXT {
            return Err(ChatError::TooLong);
        }
        if client_id.is_some_and(|c| c.is_empty() || c.len() > MAX_CLIENT_ID) {
            return Err(ChatError::Invalid(format!(
                "client_id: 1-{MAX_CLIENT_ID} characters"
            )));
        }
        if let Some(author) = author {
            if store::is_muted(&self.store, &room.id, author).await? {
                return Err(ChatError::Muted);
            }
            self.take_token(tenant, author)?;
        }
        if let Some(parent) = reply_to {
            match store::message(&self.store, &room.id, parent).await? {
                Some(m) if m.kind == "message" => {}
                _ => {
                    return Err(ChatError::Invalid(
                        "reply_to: no such message in this room".into(),
                    ));
                }
            }
        }
        let mentions = self.mentions(tenant, room, text).await?;
        let message = store::insert_message(
            &self.store,
            tenant,
            &room.id,
            &NewMessage {
                kind: "message",
                author,
                event: None,
                subject: None,
                text,
                reply_to,
                mentions: &mentions,
                client_id,
            },
        )
        .await?;
        self.mark_unread(tenant, room);
        if !message.mentions.is_empty() {
            self.job(Job::Mention {
                tenant: tenant.to_owned(),
                room: Box::new(room.clone()),
                message: Box::new(message.clone()),
            })
            .await;
        }
        Ok(message)
    }

    /// The members a text mentions (`room` for `@room`), minus the author's
    /// own handle is kept: the notification module never notifies an actor.
    pub async fn mentions(
        &self,
        tenant: &str,
        room: &Room,
        text: &str,
    ) -> Result<Vec<String>, ChatError> {
        let handles = super::mention_handles(text);
        if handles.is_empty() {
            return Ok(Vec::new());
        }
        let mut mentions = Vec::new();
        if handles.iter().any(|h| h == "room") {
            mentions.push("room".to_owned());
        }
        let named: Vec<String> = handles.into_iter().filter(|h| h != "room").collect();
        for user in store::resolve_handles(&self.store, tenant, &named).await? {
            if store::is_member(&self.store, tenant, room, &user).await? {
                mentions.push(user);
            }
        }
        Ok(mentions)
    }

    /// Stores a system message and publishes it.
    pub async fn post_system(
        &self,
        gateway: &Gateway,
        tenant: &str,
        room: &str,
        event: &str,
        user: &str,
        text: &str,
    ) -> Result<Message, ChatError> {
        let message = store::insert_message(
            &self.store,
            tenant,
            room,
            &NewMessage {
                kind: "system",
                author: None,
                event: Some(event),
                subject: Some(user),
                text,
                reply_to: None,
                mentions: &[],
                client_id: None,
            },
        )
        .await?;
        publish(gateway, tenant, &channel(room), &message).await;
        Ok(message)
    }

    /// Sets a read marker and pushes the new counts to every device of the
    /// user (`chat.unread` on `user:<id>`). Returns that event.
    pub async fn mark_read(
        &self,
        gateway: &Gateway,
        who: &Principal,
        room: &Room,
        seq: i64,
    ) -> Result<Value, ChatError> {
        let tenant = who.tenant.as_str();
        let user = who.user.as_str();
        store::mark_read(&self.store, tenant, &room.id, user, seq.min(room.last_seq)).await?;
        let rooms = store::rooms_of(&self.store, tenant, user).await?;
        let unread = rooms
            .iter()
            .find(|(r, _, _)| r.id == room.id)
            .map_or(0, |(_, _, n)| *n);
        let total: i64 = rooms.iter().map(|(_, _, n)| n).sum();
        let read_seq = rooms
            .iter()
            .find(|(r, _, _)| r.id == room.id)
            .map_or(seq, |(_, s, _)| *s);
        let event = json!({
            "type": "chat.unread",
            "room": room.id,
            "read_seq": read_seq,
            "unread": unread,
            "total": total,
        });
        publish(gateway, tenant, &format!("user:{user}"), &event).await;
        Ok(event)
    }
}

/// Publishes a module event on a channel of the tenant; a failure is
/// logged (the change is stored; clients catch up through history).
pub async fn publish(gateway: &Gateway, tenant: &str, channel: &str, data: &impl serde::Serialize) {
    let tenant = crate::ids::TenantId::from(tenant);
    let result = async {
        let (key, ns) = gateway.resolve(&tenant, channel)?;
        let data = raw(data)?;
        gateway.publish(&key, ns, &data).await?;
        Ok::<_, crate::gateway::ChannelOpError>(())
    };
    if let Err(e) = result.await {
        tracing::warn!(error = %e, channel, "chat event not published");
    }
}

/// Subscribe, publish and presence on `chat:<room>`: the room's members.
pub struct Members(pub std::sync::Arc<Core>);

impl AccessCheck for Members {
    fn allows<'a>(
        &'a self,
        who: &'a Principal,
        channel: &'a ChannelName,
    ) -> BoxFuture<'a, anyhow::Result<bool>> {
        Box::pin(async move {
            let tenant = who.tenant.as_str();
            let room = match self.0.room_of(tenant, channel).await {
                Ok(room) => room,
                Err(ChatError::RoomNotFound) => return Ok(false),
                Err(e) => return Err(anyhow::anyhow!(e)),
            };
            store::is_member(&self.0.store, tenant, &room, who.user.as_str())
                .await
                .map_err(|e| anyhow::anyhow!(e))
        })
    }
}

/// Messages stored first; typing made ephemeral.
pub struct ChatHook(pub std::sync::Arc<Core>);

impl PublishHook for ChatHook {
    fn on_publish<'a>(
        &'a self,
        publisher: Publisher<'a>,
        channel: &'a ChannelKey,
        data: &'a RawValue,
    ) -> BoxFuture<'a, Result<PublishOutcome, DomainError>> {
        Box::pin(async move {
            let incoming: Incoming = serde_json::from_str(data.get()).map_err(|e| {
                ChatError::Invalid(format!(
                    "chat data is {{\"type\": \"message\", \"text\": …}} or {{\"type\": \"typing\"}}: {e}"
                ))
            })?;
            let tenant = channel.tenant().as_str();
            let author = match publisher {
                Publisher::User(p) => Some(p.user.as_str()),
                Publisher::Backend => None,
            };
            match incoming {
                Incoming::Typing => {
                    let Some(user) = author else {
                        return Err(ChatError::Invalid("only users type".into()).into());
                    };
                    let room = channel.name().key().unwrap_or_default();
                    self.0.take_typing(tenant, room, user)?;
                    Ok(PublishOutcome::Ephemeral(raw(&json!({
                        "type": "typing",
                        "room": room,
                        "user": user,
                        "expires_in": TYPING_TTL_MS,
                    }))?))
                }
                Incoming::Message {
                    text,
                    reply_to,
                    client_id,
                } => {
                    let room = self.0.room_of(tenant, channel.name()).await?;
                    let message = self
                        .0
                        .post_message(
                            tenant,
                            &room,
                            author,
                            &text,
                            reply_to.as_deref(),
                            client_id.as_deref(),
                        )
                        .await?;
                    Ok(PublishOutcome::Publish(raw(&message)?))
                }
            }
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MarkRead {
    room: String,
    #[serde(default)]
    seq: Option<i64>,
    #[serde(default)]
    message_id: Option<String>,
}

/// `chat.mark_read` and `chat.unread`.
pub struct ChatRpc(pub std::sync::Arc<Core>);

impl RpcHandler for ChatRpc {
    fn call<'a>(&'a self, call: RpcCall<'a>) -> BoxFuture<'a, Result<Box<RawValue>, DomainError>> {
        Box::pin(async move {
            let tenant = call.who.tenant.as_str();
            let user = call.who.user.as_str();
            match call.method {
                "chat.mark_read" => {
                    let data = call.data.map(RawValue::get).unwrap_or("null");
                    let req: MarkRead = serde_json::from_str(data).map_err(|e| {
                        ChatError::Invalid(format!(
                            "chat.mark_read takes {{\"room\", \"seq\" or \"message_id\"}}: {e}"
                        ))
                    })?;
                    let room = store::room(&self.0.store, tenant, &req.room)
                        .await?
                        .ok_or(ChatError::RoomNotFound)?;
                    if !store::is_member(&self.0.store, tenant, &room, user).await? {
                        return Err(ChatError::RoomNotFound.into());
                    }
                    let seq = match (req.seq, req.message_id) {
                        (Some(seq), _) => seq,
                        (None, Some(id)) => {
                            store::message(&self.0.store, &room.id, &id)
                                .await?
                                .ok_or(ChatError::MessageNotFound)?
                                .seq
                        }
                        (None, None) => room.last_seq,
                    };
                    let event = self.0.mark_read(call.gateway, call.who, &room, seq).await?;
                    raw(&event)
                }
                "chat.unread" => {
                    let rooms = store::rooms_of(&self.0.store, tenant, user).await?;
                    let total: i64 = rooms.iter().map(|(_, _, n)| n).sum();
                    let rooms: Vec<Value> = rooms
                        .iter()
                        .map(|(r, _, n)| json!({"room": r.id, "unread": n}))
                        .collect();
                    raw(&json!({"rooms": rooms, "total": total}))
                }
                other => Err(method_not_found(other)),
            }
        })
    }
}

/// Hands presence changes on chat rooms to the worker (general room:
/// connected and disconnected messages).
pub struct Presence(pub std::sync::Arc<Core>);

impl PresenceObserver for Presence {
    fn presence_changed(&self, who: &Principal, channel: &ChannelKey, present: bool) {
        if let Some(room) = channel.name().key() {
            self.0.try_job(Job::Presence {
                tenant: who.tenant.as_str().to_owned(),
                user: who.user.as_str().to_owned(),
                room: room.to_owned(),
                present,
            });
        }
    }
}

/// Whether `kind` is a room whose membership is stored (join, leave, invite).
pub fn has_stored_members(kind: Kind) -> bool {
    matches!(kind, Kind::Group)
}
