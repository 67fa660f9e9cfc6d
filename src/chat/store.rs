//! Every query on `chat_rooms`, `chat_members`, `chat_messages`,
//! `chat_reads`, `chat_mutes` and `chat_settings`.
//!
//! A message takes the next sequence number of its room in the same
//! transaction that stores it: the room's counter is bumped first (SQLite
//! then holds its write lock at once, PostgreSQL locks the room's row), so
//! sequence numbers are dense and unique per room however many send at once.

use sqlx::{AssertSqlSafe, Row, any::AnyRow};

use super::{ChatError, Kind, Message, Room};
use crate::{
    ids::now_millis,
    store::{Store, is_unique_violation},
};

const ROOM_COLUMNS: &str =
    "r.id, r.kind, r.name, r.project_id, r.created_by, r.last_seq, r.archived_at, r.created_at";

const MESSAGE_COLUMNS: &str = "id, room_id, seq, author, kind, event, subject, text, reply_to, mentions, client_id, created_at, edited_at, deleted_at";

fn room_from_row(row: &AnyRow) -> Result<Room, sqlx::Error> {
    let kind: String = row.try_get("kind")?;
    Ok(Room {
        id: row.try_get("id")?,
        kind: Kind::parse(&kind)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown room kind `{kind}`").into()))?,
        name: row.try_get("name")?,
        project_id: row.try_get("project_id")?,
        created_by: row.try_get("created_by")?,
        last_seq: row.try_get("last_seq")?,
        archived: row.try_get::<Option<i64>, _>("archived_at")?.is_some(),
        created_at: row.try_get("created_at")?,
    })
}

fn message_from_row(row: &AnyRow) -> Result<Message, sqlx::Error> {
    let mentions: String = row.try_get("mentions")?;
    let deleted_at: Option<i64> = row.try_get("deleted_at")?;
    Ok(Message {
        kind: row.try_get("kind")?,
        id: row.try_get("id")?,
        room: row.try_get("room_id")?,
        seq: row.try_get("seq")?,
        author: row.try_get("author")?,
        event: row.try_get("event")?,
        user: row.try_get("subject")?,
        // A tombstone keeps its place in the history, not its words.
        text: if deleted_at.is_some() {
            String::new()
        } else {
            row.try_get("text")?
        },
        reply_to: row.try_get("reply_to")?,
        mentions: serde_json::from_str(&mentions).unwrap_or_default(),
        client_id: row.try_get("client_id")?,
        created_at: row.try_get("created_at")?,
        edited_at: row.try_get("edited_at")?,
        deleted_at,
    })
}

pub async fn room(store: &Store, tenant: &str, id: &str) -> Result<Option<Room>, ChatError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {ROOM_COLUMNS} FROM chat_rooms r WHERE r.tenant_id = $1 AND r.id = $2"
    )))
    .bind(tenant)
    .bind(id)
    .fetch_optional(&store.pool)
    .await?;
    Ok(row.as_ref().map(room_from_row).transpose()?)
}

#[allow(clippy::too_many_arguments)]
/// The room under `unique_key` (the general room, a project's, a pair's),
/// created on first use.
pub async fn ensure_room(
    store: &Store,
    tenant: &str,
    kind: Kind,
    unique_key: &str,
    name: &str,
    project_id: Option<&str>,
    created_by: Option<&str>,
    members: &[&str],
) -> Result<(Room, bool), ChatError> {
    let id = uuid::Uuid::now_v7().to_string();
    let now = now_millis();
    let mut tx = store.pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO chat_rooms (id, tenant_id, kind, name, unique_key, project_id, created_by, last_seq, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8) ON CONFLICT (tenant_id, unique_key) DO NOTHING",
    )
    .bind(&id)
    .bind(tenant)
    .bind(kind.as_str())
    .bind(name)
    .bind(unique_key)
    .bind(project_id)
    .bind(created_by)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if inserted {
        for member in members {
            sqlx::query(
                "INSERT INTO chat_members (room_id, user_id, tenant_id, role, joined_at) VALUES ($1, $2, $3, 'member', $4)",
            )
            .bind(&id)
            .bind(*member)
            .bind(tenant)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {ROOM_COLUMNS} FROM chat_rooms r WHERE r.tenant_id = $1 AND r.unique_key = $2"
    )))
    .bind(tenant)
    .bind(unique_key)
    .fetch_one(&store.pool)
    .await?;
    Ok((room_from_row(&row)?, inserted))
}

/// A new group room; its creator is its admin.
pub async fn create_group(
    store: &Store,
    tenant: &str,
    name: &str,
    creator: &str,
    members: &[String],
) -> Result<Room, ChatError> {
    let id = uuid::Uuid::now_v7().to_string();
    let now = now_millis();
    let mut tx = store.pool.begin().await?;
    sqlx::query(
        "INSERT INTO chat_rooms (id, tenant_id, kind, name, created_by, last_seq, created_at, updated_at) VALUES ($1, $2, 'group', $3, $4, 0, $5, $5)",
    )
    .bind(&id)
    .bind(tenant)
    .bind(name)
    .bind(creator)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    for member in std::iter::once(creator).chain(members.iter().map(String::as_str)) {
        let role = if member == creator { "admin" } else { "member" };
        sqlx::query(
            "INSERT INTO chat_members (room_id, user_id, tenant_id, role, joined_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_id, user_id) DO NOTHING",
        )
        .bind(&id)
        .bind(member)
        .bind(tenant)
        .bind(role)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    room(store, tenant, &id)
        .await?
        .ok_or(ChatError::RoomNotFound)
}

/// Whether `user` is a member of `room`: every user of the tenant for the
/// general room, the project's members for a project room, the stored
/// members otherwise.
pub async fn is_member(
    store: &Store,
    tenant: &str,
    room: &Room,
    user: &str,
) -> Result<bool, ChatError> {
    let row = match room.kind {
        Kind::General => {
            sqlx::query(
                "SELECT 1 AS x FROM users WHERE tenant_id = $1 AND id = $2 AND disabled_at IS NULL",
            )
            .bind(tenant)
            .bind(user)
            .fetch_optional(&store.pool)
            .await?
        }
        Kind::Project => {
            sqlx::query(
                "SELECT 1 AS x FROM project_members WHERE tenant_id = $1 AND project_id = $2 AND user_id = $3",
            )
            .bind(tenant)
            .bind(room.project_id.as_deref().unwrap_or_default())
            .bind(user)
            .fetch_optional(&store.pool)
            .await?
        }
        Kind::Direct | Kind::Group => {
            sqlx::query(
                "SELECT 1 AS x FROM chat_members WHERE tenant_id = $1 AND room_id = $2 AND user_id = $3",
            )
            .bind(tenant)
            .bind(&room.id)
            .bind(user)
            .fetch_optional(&store.pool)
            .await?
        }
    };
    Ok(row.is_some())
}

/// Every member's user id.
pub async fn member_ids(
    store: &Store,
    tenant: &str,
    room: &Room,
) -> Result<Vec<String>, ChatError> {
    let rows = match room.kind {
        Kind::General => {
            sqlx::query(
                "SELECT id AS user_id FROM users WHERE tenant_id = $1 AND disabled_at IS NULL ORDER BY id",
            )
            .bind(tenant)
            .fetch_all(&store.pool)
            .await?
        }
        Kind::Project => {
            sqlx::query(
                "SELECT user_id FROM project_members WHERE tenant_id = $1 AND project_id = $2 ORDER BY user_id",
            )
            .bind(tenant)
            .bind(room.project_id.as_deref().unwrap_or_default())
            .fetch_all(&store.pool)
            .await?
        }
        Kind::Direct | Kind::Group => {
            sqlx::query(
                "SELECT user_id FROM chat_members WHERE tenant_id = $1 AND room_id = $2 ORDER BY user_id",
            )
            .bind(tenant)
            .bind(&room.id)
            .fetch_all(&store.pool)
            .await?
        }
    };
    Ok(rows
        .iter()
        .map(|r| r.try_get("user_id"))
        .collect::<Result<_, _>>()?)
}

/// A member as the member list shows it: never more than the id, the name
/// and, in group rooms, whether they are the room's admin.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberView {
    pub id: String,
    pub display_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// The name shown to other members. A user created without a name of
/// their own has their email as display name: others see the email's
/// local part (their mention handle), never the address.
fn public_name(display_name: &str, email: &str) -> String {
    if display_name.trim().eq_ignore_ascii_case(email.trim()) {
        email.split('@').next().unwrap_or_default().to_owned()
    } else {
        display_name.to_owned()
    }
}

/// A page of a room's members in id order, after the id `after`: the
/// tenant's active users for the general room, the project's members, the
/// stored members otherwise. Returns the page and whether more follow.
pub async fn members(
    store: &Store,
    tenant: &str,
    room: &Room,
    after: &str,
    limit: i64,
) -> Result<(Vec<MemberView>, bool), ChatError> {
    let rows = match room.kind {
        Kind::General => {
            sqlx::query(
                "SELECT u.id, u.email, u.display_name FROM users u \
                 WHERE u.tenant_id = $1 AND u.disabled_at IS NULL AND u.id > $2 ORDER BY u.id LIMIT $3",
            )
            .bind(tenant)
            .bind(after)
            .bind(limit + 1)
            .fetch_all(&store.pool)
            .await?
        }
        Kind::Project => {
            sqlx::query(
                "SELECT u.id, u.email, u.display_name FROM project_members pm \
                 JOIN users u ON u.tenant_id = pm.tenant_id AND u.id = pm.user_id \
                 WHERE pm.tenant_id = $1 AND pm.project_id = $2 AND u.id > $3 ORDER BY u.id LIMIT $4",
            )
            .bind(tenant)
            .bind(room.project_id.as_deref().unwrap_or_default())
            .bind(after)
            .bind(limit + 1)
            .fetch_all(&store.pool)
            .await?
        }
        Kind::Direct | Kind::Group => {
            sqlx::query(
                "SELECT u.id, u.email, u.display_name, cm.role FROM chat_members cm \
                 JOIN users u ON u.tenant_id = cm.tenant_id AND u.id = cm.user_id \
                 WHERE cm.tenant_id = $1 AND cm.room_id = $2 AND u.id > $3 ORDER BY u.id LIMIT $4",
            )
            .bind(tenant)
            .bind(&room.id)
            .bind(after)
            .bind(limit + 1)
            .fetch_all(&store.pool)
            .await?
        }
    };
    let group = room.kind == Kind::Group;
    let mut members = rows
        .iter()
        .map(|r| {
            let display_name: String = r.try_get("display_name")?;
            let email: String = r.try_get("email")?;
            let role: Option<String> = if group { r.try_get("role")? } else { None };
            Ok(MemberView {
                id: r.try_get("id")?,
                display_name: public_name(&display_name, &email),
                role,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let more = members.len() as i64 > limit;
    members.truncate(limit as usize);
    Ok((members, more))
}

/// The stored role of a member of a group room (`admin` or `member`).
pub async fn member_role(
    store: &Store,
    room: &str,
    user: &str,
) -> Result<Option<String>, ChatError> {
    let row = sqlx::query("SELECT role FROM chat_members WHERE room_id = $1 AND user_id = $2")
        .bind(room)
        .bind(user)
        .fetch_optional(&store.pool)
        .await?;
    Ok(row.map(|r| r.try_get("role")).transpose()?)
}

/// Adds a member; `false` when already one.
pub async fn add_member(
    store: &Store,
    tenant: &str,
    room: &str,
    user: &str,
) -> Result<bool, ChatError> {
    Ok(sqlx::query(
        "INSERT INTO chat_members (room_id, user_id, tenant_id, role, joined_at) VALUES ($1, $2, $3, 'member', $4) ON CONFLICT (room_id, user_id) DO NOTHING",
    )
    .bind(room)
    .bind(user)
    .bind(tenant)
    .bind(now_millis())
    .execute(&store.pool)
    .await?
    .rows_affected()
        == 1)
}

/// Removes a member; `false` when not one.
pub async fn remove_member(store: &Store, room: &str, user: &str) -> Result<bool, ChatError> {
    Ok(
        sqlx::query("DELETE FROM chat_members WHERE room_id = $1 AND user_id = $2")
            .bind(room)
            .bind(user)
            .execute(&store.pool)
            .await?
            .rows_affected()
            == 1,
    )
}

pub async fn rename(store: &Store, tenant: &str, room: &str, name: &str) -> Result<(), ChatError> {
    sqlx::query(
        "UPDATE chat_rooms SET name = $1, updated_at = $2 WHERE tenant_id = $3 AND id = $4",
    )
    .bind(name)
    .bind(now_millis())
    .bind(tenant)
    .bind(room)
    .execute(&store.pool)
    .await?;
    Ok(())
}

pub async fn set_archived(
    store: &Store,
    tenant: &str,
    room: &str,
    archived: bool,
) -> Result<(), ChatError> {
    let now = now_millis();
    sqlx::query(
        "UPDATE chat_rooms SET archived_at = $1, updated_at = $2 WHERE tenant_id = $3 AND id = $4",
    )
    .bind(archived.then_some(now))
    .bind(now)
    .bind(tenant)
    .bind(room)
    .execute(&store.pool)
    .await?;
    Ok(())
}

/// What a new message holds.
pub struct NewMessage<'a> {
    pub kind: &'a str,
    pub author: Option<&'a str>,
    pub event: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub text: &'a str,
    pub reply_to: Option<&'a str>,
    pub mentions: &'a [String],
    pub client_id: Option<&'a str>,
}

/// Stores a message with the room's next sequence number. The same
/// `client_id` from the same author again is [`ChatError::Duplicate`].
pub async fn insert_message(
    store: &Store,
    tenant: &str,
    room: &str,
    new: &NewMessage<'_>,
) -> Result<Message, ChatError> {
    let id = uuid::Uuid::now_v7().to_string();
    let now = now_millis();
    let mentions = serde_json::to_string(new.mentions).unwrap_or_else(|_| "[]".into());
    let mut tx = store.pool.begin().await?;
    let seq: i64 = sqlx::query(
        "UPDATE chat_rooms SET last_seq = last_seq + 1 WHERE tenant_id = $1 AND id = $2 RETURNING last_seq",
    )
    .bind(tenant)
    .bind(room)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ChatError::RoomNotFound)?
    .try_get("last_seq")?;
    let inserted = sqlx::query(
        "INSERT INTO chat_messages (id, room_id, tenant_id, seq, author, kind, event, subject, text, reply_to, mentions, client_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&id)
    .bind(room)
    .bind(tenant)
    .bind(seq)
    .bind(new.author)
    .bind(new.kind)
    .bind(new.event)
    .bind(new.subject)
    .bind(new.text)
    .bind(new.reply_to)
    .bind(&mentions)
    .bind(new.client_id)
    .bind(now)
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => {
            drop(tx);
            let existing = sqlx::query(
                "SELECT id FROM chat_messages WHERE room_id = $1 AND author = $2 AND client_id = $3",
            )
            .bind(room)
            .bind(new.author)
            .bind(new.client_id)
            .fetch_optional(&store.pool)
            .await?;
            let id = existing
                .map(|r| r.try_get::<String, _>("id"))
                .transpose()?
                .unwrap_or_default();
            return Err(ChatError::Duplicate(id));
        }
        Err(e) => return Err(e.into()),
    }
    tx.commit().await?;
    Ok(Message {
        kind: new.kind.to_owned(),
        id,
        room: room.to_owned(),
        seq,
        author: new.author.map(Into::into),
        event: new.event.map(Into::into),
        user: new.subject.map(Into::into),
        text: new.text.to_owned(),
        reply_to: new.reply_to.map(Into::into),
        mentions: new.mentions.to_vec(),
        client_id: new.client_id.map(Into::into),
        created_at: now,
        edited_at: None,
        deleted_at: None,
    })
}

pub async fn message(store: &Store, room: &str, id: &str) -> Result<Option<Message>, ChatError> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM chat_messages WHERE room_id = $1 AND id = $2"
    )))
    .bind(room)
    .bind(id)
    .fetch_optional(&store.pool)
    .await?;
    Ok(row.as_ref().map(message_from_row).transpose()?)
}

/// Replaces a live message's text; `None` when it is gone or deleted.
pub async fn edit_message(
    store: &Store,
    room: &str,
    id: &str,
    text: &str,
    mentions: &[String],
) -> Result<Option<Message>, ChatError> {
    let mentions = serde_json::to_string(mentions).unwrap_or_else(|_| "[]".into());
    let done = sqlx::query(
        "UPDATE chat_messages SET text = $1, mentions = $2, edited_at = $3 WHERE room_id = $4 AND id = $5 AND deleted_at IS NULL AND kind = 'message'",
    )
    .bind(text)
    .bind(&mentions)
    .bind(now_millis())
    .bind(room)
    .bind(id)
    .execute(&store.pool)
    .await?
    .rows_affected();
    if done == 0 {
        return Ok(None);
    }
    message(store, room, id).await
}

/// Leaves a tombstone: the text is erased, the place in the history kept.
pub async fn delete_message(
    store: &Store,
    room: &str,
    id: &str,
) -> Result<Option<Message>, ChatError> {
    let done = sqlx::query(
        "UPDATE chat_messages SET text = '', mentions = '[]', deleted_at = $1 WHERE room_id = $2 AND id = $3 AND deleted_at IS NULL",
    )
    .bind(now_millis())
    .bind(room)
    .bind(id)
    .execute(&store.pool)
    .await?
    .rows_affected();
    if done == 0 {
        return Ok(None);
    }
    message(store, room, id).await
}

/// A page of a room's messages in sequence order: the newest `limit`
/// before `before`, or the oldest `limit` after `after`, or the newest.
/// Returns the page and whether more lie beyond it.
pub async fn history(
    store: &Store,
    room: &str,
    before: Option<i64>,
    after: Option<i64>,
    limit: i64,
) -> Result<(Vec<Message>, bool), ChatError> {
    let (condition, order, bound) = match (before, after) {
        (_, Some(after)) => ("seq > $2", "ASC", after),
        (Some(before), None) => ("seq < $2", "DESC", before),
        (None, None) => ("seq < $2", "DESC", i64::MAX),
    };
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM chat_messages WHERE room_id = $1 AND {condition} ORDER BY seq {order} LIMIT $3"
    )))
    .bind(room)
    .bind(bound)
    .bind(limit + 1)
    .fetch_all(&store.pool)
    .await?;
    let mut messages = rows
        .iter()
        .map(message_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let more = messages.len() as i64 > limit;
    messages.truncate(limit as usize);
    if order == "DESC" {
        messages.reverse();
    }
    Ok((messages, more))
}

/// The last `connected`/`disconnected` event of a user in a room.
pub async fn last_presence_event(
    store: &Store,
    room: &str,
    user: &str,
) -> Result<Option<String>, ChatError> {
    let row = sqlx::query(
        "SELECT event FROM chat_messages WHERE room_id = $1 AND subject = $2 AND event IN ('connected', 'disconnected') ORDER BY seq DESC LIMIT 1",
    )
    .bind(room)
    .bind(user)
    .fetch_optional(&store.pool)
    .await?;
    Ok(row.map(|r| r.try_get("event")).transpose()?)
}

pub async fn is_muted(store: &Store, room: &str, user: &str) -> Result<bool, ChatError> {
    Ok(
        sqlx::query("SELECT 1 AS x FROM chat_mutes WHERE room_id = $1 AND user_id = $2")
            .bind(room)
            .bind(user)
            .fetch_optional(&store.pool)
            .await?
            .is_some(),
    )
}

pub async fn set_muted(
    store: &Store,
    tenant: &str,
    room: &str,
    user: &str,
    muted: bool,
    by: &str,
) -> Result<(), ChatError> {
    if muted {
        sqlx::query(
            "INSERT INTO chat_mutes (room_id, user_id, tenant_id, muted_by, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_id, user_id) DO NOTHING",
        )
        .bind(room)
        .bind(user)
        .bind(tenant)
        .bind(by)
        .bind(now_millis())
        .execute(&store.pool)
        .await?;
    } else {
        sqlx::query("DELETE FROM chat_mutes WHERE room_id = $1 AND user_id = $2")
            .bind(room)
            .bind(user)
            .execute(&store.pool)
            .await?;
    }
    Ok(())
}

/// Moves a read marker forward (never back).
pub async fn mark_read(
    store: &Store,
    tenant: &str,
    room: &str,
    user: &str,
    seq: i64,
) -> Result<(), ChatError> {
    sqlx::query(
        "INSERT INTO chat_reads (room_id, user_id, tenant_id, last_seq, updated_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_id, user_id) DO UPDATE SET last_seq = CASE WHEN excluded.last_seq > chat_reads.last_seq THEN excluded.last_seq ELSE chat_reads.last_seq END, updated_at = excluded.updated_at",
    )
    .bind(room)
    .bind(user)
    .bind(tenant)
    .bind(seq)
    .bind(now_millis())
    .execute(&store.pool)
    .await?;
    Ok(())
}

/// The user's rooms that are not archived, each with its unread count
/// (messages of others after the user's read marker, tombstones and system
/// messages excluded), oldest room first.
pub async fn rooms_of(
    store: &Store,
    tenant: &str,
    user: &str,
) -> Result<Vec<(Room, i64, i64)>, ChatError> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {ROOM_COLUMNS}, COALESCE(cr.last_seq, 0) AS read_seq, \
         (SELECT COUNT(*) FROM chat_messages m WHERE m.room_id = r.id AND m.seq > COALESCE(cr.last_seq, 0) \
          AND m.kind = 'message' AND m.deleted_at IS NULL AND (m.author IS NULL OR m.author <> $2)) AS unread \
         FROM chat_rooms r LEFT JOIN chat_reads cr ON cr.room_id = r.id AND cr.user_id = $2 \
         WHERE r.tenant_id = $1 AND r.archived_at IS NULL AND ( \
           r.kind = 'general' \
           OR (r.kind = 'project' AND EXISTS (SELECT 1 FROM project_members pm WHERE pm.project_id = r.project_id AND pm.user_id = $2)) \
           OR EXISTS (SELECT 1 FROM chat_members cm WHERE cm.room_id = r.id AND cm.user_id = $2)) \
         ORDER BY r.created_at, r.id"
    )))
    .bind(tenant)
    .bind(user)
    .fetch_all(&store.pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                room_from_row(row)?,
                row.try_get::<i64, _>("read_seq")?,
                row.try_get::<i64, _>("unread")?,
            ))
        })
        .collect()
}

/// Users of the tenant named by mention handles: a user id, or the local
/// part of the user's email (case-insensitive).
pub async fn resolve_handles(
    store: &Store,
    tenant: &str,
    handles: &[String],
) -> Result<Vec<String>, ChatError> {
    let mut found = Vec::new();
    for handle in handles {
        let rows = sqlx::query(
            "SELECT id FROM users WHERE tenant_id = $1 AND disabled_at IS NULL AND (id = $2 OR LOWER(email) LIKE $3 ESCAPE '\\')",
        )
        .bind(tenant)
        .bind(handle)
        .bind(format!("{}@%", like_escape(&handle.to_lowercase())))
        .fetch_all(&store.pool)
        .await?;
        for row in rows {
            let id: String = row.try_get("id")?;
            if !found.contains(&id) {
                found.push(id);
            }
        }
    }
    Ok(found)
}

/// `text` matched literally by `LIKE … ESCAPE '\'`.
fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A user's display name, or their id when unknown.
pub async fn display_name(store: &Store, tenant: &str, user: &str) -> Result<String, ChatError> {
    let row = sqlx::query("SELECT display_name FROM users WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(user)
        .fetch_optional(&store.pool)
        .await?;
    Ok(match row {
        Some(row) => row.try_get("display_name")?,
        None => user.to_owned(),
    })
}

pub async fn retention_days(store: &Store, tenant: &str) -> Result<Option<i64>, ChatError> {
    let row = sqlx::query("SELECT retention_days FROM chat_settings WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_optional(&store.pool)
        .await?;
    Ok(row
        .map(|r| r.try_get::<Option<i64>, _>("retention_days"))
        .transpose()?
        .flatten())
}

pub async fn set_retention_days(
    store: &Store,
    tenant: &str,
    days: Option<i64>,
) -> Result<(), ChatError> {
    sqlx::query(
        "INSERT INTO chat_settings (tenant_id, retention_days, updated_at) VALUES ($1, $2, $3) ON CONFLICT (tenant_id) DO UPDATE SET retention_days = excluded.retention_days, updated_at = excluded.updated_at",
    )
    .bind(tenant)
    .bind(days)
    .bind(now_millis())
    .execute(&store.pool)
    .await?;
    Ok(())
}

/// Tenants with a retention period, and that period in days.
pub async fn retention_settings(store: &Store) -> Result<Vec<(String, i64)>, ChatError> {
    let rows = sqlx::query(
        "SELECT tenant_id, retention_days FROM chat_settings WHERE retention_days IS NOT NULL",
    )
    .fetch_all(&store.pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("tenant_id")?, r.try_get("retention_days")?)))
        .collect()
}

/// Deletes at most `batch` messages of a tenant created before `cutoff`
/// (milliseconds); returns how many.
pub async fn purge(store: &Store, tenant: &str, cutoff: i64, batch: i64) -> Result<u64, ChatError> {
    Ok(sqlx::query(
        "DELETE FROM chat_messages WHERE id IN (SELECT id FROM chat_messages WHERE tenant_id = $1 AND created_at < $2 LIMIT $3)",
    )
    .bind(tenant)
    .bind(cutoff)
    .bind(batch)
    .execute(&store.pool)
    .await?
    .rows_affected())
}

/// Whether `user` is an active user of the tenant.
pub async fn is_user(store: &Store, tenant: &str, user: &str) -> Result<bool, ChatError> {
    Ok(sqlx::query(
        "SELECT 1 AS x FROM users WHERE tenant_id = $1 AND id = $2 AND disabled_at IS NULL",
    )
    .bind(tenant)
    .bind(user)
    .fetch_optional(&store.pool)
    .await?
    .is_some())
}

/// Whether a project of the tenant exists, and its name.
pub async fn project_name(
    store: &Store,
    tenant: &str,
    project: &str,
) -> Result<Option<String>, ChatError> {
    let row = sqlx::query("SELECT name FROM projects WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(project)
        .fetch_optional(&store.pool)
        .await?;
    Ok(row.map(|r| r.try_get("name")).transpose()?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_default_display_name_shows_the_local_part_not_the_email() {
        assert_eq!(
            super::public_name("awa@example.com", "awa@example.com"),
            "awa"
        );
        assert_eq!(
            super::public_name("Awa@Example.com", "awa@example.com"),
            "awa"
        );
        assert_eq!(super::public_name("Awa K.", "awa@example.com"), "Awa K.");
    }

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(super::like_escape("a_b%c\\d"), "a\\_b\\%c\\\\d");
        assert_eq!(super::like_escape("awa.k"), "awa.k");
    }
}
