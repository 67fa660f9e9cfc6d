//! `/api/v1/chat`: rooms (create, list with unread counts, join, leave,
//! invite, rename, archive, mute), messages (history pages, post, edit,
//! delete), read markers and the tenant's retention.
//!
//! Users act on the rooms they are members of; a room they are not in is
//! answered as not found. App backends (API keys with the `chat` scope)
//! read any room of the tenant and post into it.

use std::sync::Arc;

use axum::{
    Extension, Json, Router,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::StatusCode,
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ChatError, Core, Kind, MAX_NAME, Room, hook,
    hook::{channel, publish},
    is_moderator, store,
};
use crate::{
    auth::{
        Caller, Permission, Principal, Scope,
        extract::{AnyCaller, AuthUser, TenantAdmin},
    },
    error::{ApiJson, ApiResult, query},
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/chat/rooms", get(list_rooms).post(create_room))
        .route(
            "/api/v1/chat/rooms/{room}",
            get(find_room).patch(update_room),
        )
        .route("/api/v1/chat/rooms/{room}/join", post(join))
        .route("/api/v1/chat/rooms/{room}/leave", post(leave))
        .route("/api/v1/chat/rooms/{room}/invite", post(invite))
        .route("/api/v1/chat/rooms/{room}/mutes", post(mute))
        .route("/api/v1/chat/rooms/{room}/read", post(read))
        .route("/api/v1/chat/rooms/{room}/members", get(members))
        .route(
            "/api/v1/chat/rooms/{room}/messages",
            get(history).post(post_message),
        )
        .route(
            "/api/v1/chat/rooms/{room}/messages/{message}",
            axum::routing::patch(edit_message).delete(delete_message),
        )
        .route("/api/v1/chat/settings", get(settings).put(put_settings))
}

/// The tenant's general room, created on first use.
pub async fn general_room(core: &Core, tenant: &str) -> Result<Room, ChatError> {
    store::ensure_room(
        &core.store,
        tenant,
        Kind::General,
        "general",
        "General",
        None,
        None,
        &[],
    )
    .await
    .map(|(room, _)| room)
}

/// A room the caller may read: a member's, or any room of the tenant for a
/// key with the `chat` scope. Others are told it does not exist.
async fn readable(core: &Core, caller: &Caller, id: &str) -> Result<Room, ChatError> {
    let tenant = caller.tenant().as_str();
    let room = store::room(&core.store, tenant, id)
        .await?
        .ok_or(ChatError::RoomNotFound)?;
    match caller {
        Caller::User(p) => {
            if store::is_member(&core.store, tenant, &room, p.user.as_str()).await? {
                Ok(room)
            } else {
                Err(ChatError::RoomNotFound)
            }
        }
        Caller::Key(k) if k.scopes.contains(&Scope::Chat) => Ok(room),
        Caller::Key(_) => Err(ChatError::Forbidden(
            "chat needs a user, or an API key with the chat scope",
        )),
    }
}

async fn member_room(core: &Core, who: &Principal, id: &str) -> Result<Room, ChatError> {
    readable(core, &Caller::User(who.clone()), id).await
}

/// The room's admin (group rooms), or a tenant moderator or admin.
async fn may_moderate(core: &Core, who: &Principal, room: &Room) -> Result<bool, ChatError> {
    if is_moderator(who) {
        return Ok(true);
    }
    Ok(room.kind == Kind::Group
        && store::member_role(&core.store, &room.id, who.user.as_str())
            .await?
            .as_deref()
            == Some("admin"))
}

async fn list_rooms(
    Extension(core): Extension<Arc<Core>>,
    AuthUser(who): AuthUser,
) -> ApiResult<Json<Value>> {
    let tenant = who.tenant.as_str();
    general_room(&core, tenant).await?;
    let rooms = store::rooms_of(&core.store, tenant, who.user.as_str()).await?;
    let total: i64 = rooms.iter().map(|(_, _, n)| n).sum();
    let rooms: Vec<Value> = rooms
        .into_iter()
        .map(|(room, read_seq, unread)| {
            let mut v = serde_json::to_value(&room).unwrap_or_default();
            v["channel"] = json!(channel(&room.id));
            v["read_seq"] = json!(read_seq);
            v["unread"] = json!(unread);
            v
        })
        .collect();
    Ok(Json(json!({"rooms": rooms, "total_unread": total})))
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum CreateRoom {
    Group {
        name: String,
        #[serde(default)]
        members: Vec<String>,
    },
    Direct {
        user: String,
    },
    Project {
        project: String,
    },
}

fn check_name(name: &str) -> Result<&str, ChatError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME {
        return Err(ChatError::Invalid(format!("name: 1-{MAX_NAME} characters")));
    }
    Ok(name)
}

/// Creates a group room, or opens (creating on first use) the direct room
/// with a user or a project's room. 201 when created, 200 when it existed.
async fn create_room(
    Extension(core): Extension<Arc<Core>>,
    AuthUser(who): AuthUser,
    ApiJson(req): ApiJson<CreateRoom>,
) -> ApiResult<(StatusCode, Json<Room>)> {
    let tenant = who.tenant.as_str();
    let me = who.user.as_str();
    let (room, created) = match req {
        CreateRoom::Group { name, members } => {
            let name = check_name(&name)?;
            for m in &members {
                if !store::is_user(&core.store, tenant, m).await? {
                    return Err(ChatError::Invalid(format!(
                        "members: no user `{m}` in this tenant"
                    ))
                    .into());
                }
            }
            let room = store::create_group(&core.store, tenant, name, me, &members).await?;
            return Ok((StatusCode::CREATED, Json(room)));
        }
        CreateRoom::Direct { user } => {
            if user == me || !store::is_user(&core.store, tenant, &user).await? {
                return Err(ChatError::Invalid(format!(
                    "user: no other user `{user}` in this tenant"
                ))
                .into());
            }
            let (a, b) = if me < user.as_str() {
                (me, user.as_str())
            } else {
                (user.as_str(), me)
            };
            store::ensure_room(
                &core.store,
                tenant,
                Kind::Direct,
                &format!("direct:{a}:{b}"),
                "",
                None,
                Some(me),
                &[a, b],
            )
            .await?
        }
        CreateRoom::Project { project } => {
            let Some(name) = store::project_name(&core.store, tenant, &project).await? else {
                return Err(ChatError::Invalid(format!("project: no project `{project}`")).into());
            };
            if !crate::projects::store::is_member(&core.store, tenant, &project, me)
                .await
                .map_err(crate::error::ApiError::from)?
                && !who.can(Permission::ManageProjects)
            {
                return Err(
                    ChatError::Forbidden("project rooms are for the project's members").into(),
                );
            }
            store::ensure_room(
                &core.store,
                tenant,
                Kind::Project,
                &format!("project:{project}"),
                &name,
                Some(&project),
                Some(me),
                &[],
            )
            .await?
        }
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(room)))
}

async fn find_room(
    Extension(core): Extension<Arc<Core>>,
    AnyCaller(caller): AnyCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let room = readable(&core, &caller, &id).await?;
    let members = store::member_ids(&core.store, caller.tenant().as_str(), &room).await?;
    let mut v = serde_json::to_value(&room).map_err(anyhow::Error::from)?;
    v["channel"] = json!(channel(&room.id));
    v["members"] = json!(members);
    Ok(Json(v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateRoom {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    archived: Option<bool>,
}

/// Renames (group rooms) or archives a room: its admin, or a tenant admin.
async fn update_room(
    Extension(core): Extension<Arc<Core>>,
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateRoom>,
) -> ApiResult<Json<Room>> {
    let tenant = who.tenant.as_str();
    let room = member_room(&core, &who, &id).await?;
    let admin = who.can(Permission::ManageTenant)
        || (room.kind == Kind::Group
            && store::member_role(&core.store, &room.id, who.user.as_str())
                .await?
                .as_deref()
                == Some("admin"));
    if !admin {
        return Err(ChatError::Forbidden("the room's admin or a tenant admin only").into());
    }
    if let Some(name) = &req.name {
        if room.kind != Kind::Group {
            return Err(ChatError::Invalid("only group rooms are renamed".into()).into());
        }
        let name = check_name(name)?;
        store::rename(&core.store, tenant, &room.id, name).await?;
        core.post_system(
            &state.gateway,
            tenant,
            &room.id,
            "renamed",
            who.user.as_str(),
            &format!("Room renamed to {name}"),
        )
        .await?;
    }
    if let Some(archived) = req.archived {
        if room.kind == Kind::General {
            return Err(ChatError::Invalid("the general room is never archived".into()).into());
        }
        store::set_archived(&core.store, tenant, &room.id, archived).await?;
        publish(
            &state.gateway,
            tenant,
            &channel(&room.id),
            &json!({"type": "room.updated", "room": room.id, "archived": archived}),
        )
        .await;
    }
    let room = store::room(&core.store, tenant, &room.id)
        .await?
        .ok_or(ChatError::RoomNotFound)?;
    Ok(Json(room))
}

/// A group room of the tenant (join, leave and invite concern only those).
async fn group(core: &Core, tenant: &str, id: &str) -> Result<Room, ChatError> {
    let room = store::room(&core.store, tenant, id)
        .await?
        .ok_or(ChatError::RoomNotFound)?;
    if !hook::has_stored_members(room.kind) {
        return Err(ChatError::Invalid(
            "only group rooms are joined, left or invited to; other rooms follow the tenant, the project or the pair".into(),
        ));
    }
    if room.archived {
        return Err(ChatError::Archived);
    }
    Ok(room)
}

async fn joined(
    core: &Core,
    state: &AppState,
    tenant: &str,
    room: &str,
    user: &str,
) -> ApiResult<()> {
    let name = store::display_name(&core.store, tenant, user).await?;
    core.post_system(
        &state.gateway,
        tenant,
        room,
        "joined",
        user,
        &format!("{name} joined"),
    )
    .await?;
    Ok(())
}

/// Joins a group room (group rooms are open to the tenant's users).
async fn join(
    Extension(core): Extension<Arc<Core>>,
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let tenant = who.tenant.as_str();
    let room = group(&core, tenant, &id).await?;
    let added = store::add_member(&core.store, tenant, &room.id, who.user.as_str()).await?;
    if added {
        joined(&core, &state, tenant, &room.id, who.user.as_str()).await?;
    }
    Ok(Json(json!({"room": room.id, "joined": added})))
}

async fn leave(
    Extension(core): Extension<Arc<Core>>,
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let tenant = who.tenant.as_str();
    let room = group(&core, tenant, &id).await?;
    let removed = store::remove_member(&core.store, &room.id, who.user.as_str()).await?;
    if removed {
        let name = store::display_name(&core.store, tenant, who.user.as_str()).await?;
        core.post_system(
            &state.gateway,
            tenant,
            &room.id,
            "left",
            who.user.as_str(),
            &format!("{name} left"),
        )
        .await?;
    }
    Ok(Json(json!({"room": room.id, "left": removed})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserRef {
    user: String,
}

/// A member invites another user of the tenant into a group room.
async fn invite(
    Extension(core): Extension<Arc<Core>>,
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UserRef>,
) -> ApiResult<Json<Value>> {
    let tenant = who.tenant.as_str();
    let room = group(&core, tenant, &id).await?;
    if !store::is_member(&core.store, tenant, &room, who.user.as_str()).await? {
        return Err(ChatError::RoomNotFound.into());
    }
    if !store::is_user(&core.store, tenant, &req.user).await? {
        return Err(
            ChatError::Invalid(format!("user: no user `{}` in this tenant", req.user)).into(),
        );
    }
    let added = store::add_member(&core.store, tenant, &room.id, &req.user).await?;
    if added {
        joined(&core, &state, tenant, &room.id, &req.user).await?;
    }
    Ok(Json(
        json!({"room": room.id, "user": req.user, "added": added}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MuteRequest {
    user: String,
    muted: bool,
}

/// Mutes or unmutes a user in a room: the room's admin or a tenant moderator.
async fn mute(
    Extension(core): Extension<Arc<Core>>,
    AuthUser(who): AuthUser,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<MuteRequest>,
) -> ApiResult<Json<Value>> {
    let tenant = who.tenant.as_str();
    let room = member_room(&core, &who, &id).await?;
    if !may_moderate(&core, &who, &room).await? {
        return Err(ChatError::Forbidden("the room's admin or a tenant moderator only").into());
    }
    store::set_muted(
        &core.store,
        tenant,
        &room.id,
        &req.user,
        req.muted,
        who.user.as_str(),
    )
    .await?;
    Ok(Json(
        json!({"room": room.id, "user": req.user, "muted": req.muted}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadRequest {
    #[serde(default)]
    seq: Option<i64>,
    #[serde(default)]
    message_id: Option<String>,
}

/// The REST form of the `chat.mark_read` RPC.
async fn read(
    Extension(core): Extension<Arc<Core>>,
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ReadRequest>,
) -> ApiResult<Json<Value>> {
    let room = member_room(&core, &who, &id).await?;
    let seq = match (req.seq, req.message_id) {
        (Some(seq), _) => seq,
        (None, Some(mid)) => {
            store::message(&core.store, &room.id, &mid)
                .await?
                .ok_or(ChatError::MessageNotFound)?
                .seq
        }
        (None, None) => room.last_seq,
    };
    Ok(Json(
        core.mark_read(&state.gateway, &who, &room, seq).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    #[serde(default)]
    before: Option<i64>,
    #[serde(default)]
    after: Option<i64>,
    #[serde(default)]
    limit: Option<i64>,
}

/// A page of messages in sequence order (tombstones and system messages
/// included): the newest, those `before` a seq, or those `after` one.
async fn history(
    Extension(core): Extension<Arc<Core>>,
    AnyCaller(caller): AnyCaller,
    Path(id): Path<String>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    if q.before.is_some() && q.after.is_some() {
        return Err(ChatError::Invalid("give before or after, not both".into()).into());
    }
    let limit = q.limit.unwrap_or(50).clamp(1, 200);
    let room = readable(&core, &caller, &id).await?;
    let (messages, more) = store::history(&core.store, &room.id, q.before, q.after, limit).await?;
    Ok(Json(json!({"messages": messages, "has_more": more})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MembersQuery {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

/// A page of the room's members with their display names, in id order:
/// who may read the history may read it. Ids and names only.
async fn members(
    Extension(core): Extension<Arc<Core>>,
    AnyCaller(caller): AnyCaller,
    Path(id): Path<String>,
    q: Result<Query<MembersQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(200).clamp(1, 500);
    let room = readable(&core, &caller, &id).await?;
    let (members, more) = store::members(
        &core.store,
        caller.tenant().as_str(),
        &room,
        q.after.as_deref().unwrap_or_default(),
        limit,
    )
    .await?;
    let mut body = json!({"members": members});
    if more && let Some(last) = members.last() {
        body["next_after"] = json!(last.id);
    }
    Ok(Json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostMessage {
    text: String,
    #[serde(default)]
    reply_to: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
}

/// Posts a message over REST (a member, or a backend with the `chat`
/// scope): the same checks and storage as over the socket, then published.
async fn post_message(
    Extension(core): Extension<Arc<Core>>,
    State(state): State<AppState>,
    AnyCaller(caller): AnyCaller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<PostMessage>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let tenant = caller.tenant().as_str();
    let room = readable(&core, &caller, &id).await?;
    let author = match &caller {
        Caller::User(p) => Some(p.user.as_str()),
        Caller::Key(_) => None,
    };
    let message = core
        .post_message(
            tenant,
            &room,
            author,
            &req.text,
            req.reply_to.as_deref(),
            req.client_id.as_deref(),
        )
        .await?;
    let (key, ns) = state.gateway.resolve(caller.tenant(), &channel(&room.id))?;
    let data = super::raw(&message)?;
    let position = state.gateway.publish(&key, ns, &data).await?;
    let mut body = serde_json::to_value(&message).map_err(anyhow::Error::from)?;
    body["offset"] = json!(position.offset);
    Ok((StatusCode::CREATED, Json(body)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EditMessage {
    text: String,
}

/// Edits one's own message; members see `message.edited` live.
async fn edit_message(
    Extension(core): Extension<Arc<Core>>,
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    Path((id, message_id)): Path<(String, String)>,
    ApiJson(req): ApiJson<EditMessage>,
) -> ApiResult<Json<Value>> {
    let tenant = who.tenant.as_str();
    let room = member_room(&core, &who, &id).await?;
    if room.archived {
        return Err(ChatError::Archived.into());
    }
    let message = store::message(&core.store, &room.id, &message_id)
        .await?
        .filter(|m| m.deleted_at.is_none())
        .ok_or(ChatError::MessageNotFound)?;
    if message.author.as_deref() != Some(who.user.as_str()) {
        return Err(ChatError::Forbidden("only its author edits a message").into());
    }
    let text = req.text.as_str();
    if text.trim().is_empty() || text.chars().count() > super::MAX_TEXT {
        return Err(ChatError::TooLong.into());
    }
    let mentions = core.mentions(tenant, &room, text).await?;
    let edited = store::edit_message(&core.store, &room.id, &message.id, text, &mentions)
        .await?
        .ok_or(ChatError::MessageNotFound)?;
    let event = json!({
        "type": "message.edited",
        "id": edited.id,
        "room": room.id,
        "seq": edited.seq,
        "text": edited.text,
        "mentions": edited.mentions,
        "edited_at": edited.edited_at,
    });
    publish(&state.gateway, tenant, &channel(&room.id), &event).await;
    Ok(Json(
        serde_json::to_value(&edited).map_err(anyhow::Error::from)?,
    ))
}

/// Deletes a message, leaving a tombstone: its author, the room's admin or
/// a tenant moderator. Members see `message.deleted` live.
async fn delete_message(
    Extension(core): Extension<Arc<Core>>,
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    Path((id, message_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let tenant = who.tenant.as_str();
    let room = member_room(&core, &who, &id).await?;
    let message = store::message(&core.store, &room.id, &message_id)
        .await?
        .filter(|m| m.deleted_at.is_none())
        .ok_or(ChatError::MessageNotFound)?;
    let own = message.author.as_deref() == Some(who.user.as_str());
    if !own && !may_moderate(&core, &who, &room).await? {
        return Err(ChatError::Forbidden(
            "only its author, the room's admin or a moderator deletes a message",
        )
        .into());
    }
    let deleted = store::delete_message(&core.store, &room.id, &message.id)
        .await?
        .ok_or(ChatError::MessageNotFound)?;
    let event = json!({
        "type": "message.deleted",
        "id": deleted.id,
        "room": room.id,
        "seq": deleted.seq,
        "deleted_at": deleted.deleted_at,
        "by": who.user.as_str(),
    });
    publish(&state.gateway, tenant, &channel(&room.id), &event).await;
    Ok(Json(event))
}

async fn settings(
    Extension(core): Extension<Arc<Core>>,
    TenantAdmin(caller): TenantAdmin,
) -> ApiResult<Json<Value>> {
    let days = store::retention_days(&core.store, caller.tenant().as_str()).await?;
    Ok(Json(json!({"retention_days": days})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Days messages are kept; `null` keeps them forever.
    retention_days: Option<i64>,
}

async fn put_settings(
    Extension(core): Extension<Arc<Core>>,
    TenantAdmin(caller): TenantAdmin,
    ApiJson(req): ApiJson<Settings>,
) -> ApiResult<Json<Value>> {
    if req
        .retention_days
        .is_some_and(|d| !(1..=36_500).contains(&d))
    {
        return Err(ChatError::Invalid("retention_days: 1-36500, or null".into()).into());
    }
    store::set_retention_days(&core.store, caller.tenant().as_str(), req.retention_days).await?;
    Ok(Json(json!({"retention_days": req.retention_days})))
}
