//! Every query on `assistant_providers`, `assistants`,
//! `assistant_conversations`, `assistant_messages` and `assistant_settings`.
//! Every query names the tenant.

use sqlx::{AssertSqlSafe, Row, any::AnyRow};

use super::{Assistant, Conversation, Message, Provider, Usage};
use crate::{ids::now_millis, store::Store};

pub const DAY_MS: i64 = 86_400_000;

fn provider_from_row(row: &AnyRow) -> Result<Provider, sqlx::Error> {
    Ok(Provider {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        base_url: row.try_get("base_url")?,
        has_key: row.try_get::<Option<String>, _>("api_key_enc")?.is_some(),
        created_at: row.try_get("created_at")?,
    })
}

pub async fn insert_provider(
    store: &Store,
    tenant: &str,
    id: &str,
    name: &str,
    base_url: &str,
    api_key_enc: Option<&str>,
) -> Result<Provider, sqlx::Error> {
    let now = now_millis();
    sqlx::query(
        "INSERT INTO assistant_providers (id, tenant_id, name, base_url, api_key_enc, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(tenant)
    .bind(name)
    .bind(base_url)
    .bind(api_key_enc)
    .bind(now)
    .execute(&store.pool)
    .await?;
    Ok(Provider {
        id: id.to_owned(),
        name: name.to_owned(),
        base_url: base_url.to_owned(),
        has_key: api_key_enc.is_some(),
        created_at: now,
    })
}

pub async fn providers(store: &Store, tenant: &str) -> Result<Vec<Provider>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, name, base_url, api_key_enc, created_at FROM assistant_providers \
         WHERE tenant_id = $1 ORDER BY created_at, id",
    )
    .bind(tenant)
    .fetch_all(&store.pool)
    .await?;
    rows.iter().map(provider_from_row).collect()
}

/// A provider with its sealed key, for a run.
pub struct ProviderSecret {
    pub id: String,
    pub name: String,
    pub base_url: String,
    pub api_key_enc: Option<String>,
}

pub async fn provider_secret(
    store: &Store,
    tenant: &str,
    id: &str,
) -> Result<Option<ProviderSecret>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, name, base_url, api_key_enc FROM assistant_providers \
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant)
    .bind(id)
    .fetch_optional(&store.pool)
    .await?;
    row.map(|row| {
        Ok(ProviderSecret {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            base_url: row.try_get("base_url")?,
            api_key_enc: row.try_get("api_key_enc")?,
        })
    })
    .transpose()
}

pub async fn delete_provider(store: &Store, tenant: &str, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM assistant_providers WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .execute(&store.pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

const ASSISTANT_COLUMNS: &str =
    "id, name, instructions, model, providers, temperature, max_tokens, steps, created_at";

fn assistant_from_row(row: &AnyRow) -> Result<Assistant, sqlx::Error> {
    let providers: String = row.try_get("providers")?;
    let steps: Option<String> = row.try_get("steps")?;
    Ok(Assistant {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        instructions: row.try_get("instructions")?,
        model: row.try_get("model")?,
        providers: serde_json::from_str(&providers).unwrap_or_default(),
        temperature: row
            .try_get::<Option<i64>, _>("temperature")?
            .map(|t| t as f64 / 100.0),
        max_tokens: row.try_get("max_tokens")?,
        steps: steps.and_then(|s| serde_json::from_str(&s).ok()),
        created_at: row.try_get("created_at")?,
    })
}

pub async fn insert_assistant(
    store: &Store,
    tenant: &str,
    a: &Assistant,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO assistants (id, tenant_id, name, instructions, model, providers, temperature, \
         max_tokens, steps, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&a.id)
    .bind(tenant)
    .bind(&a.name)
    .bind(&a.instructions)
    .bind(&a.model)
    .bind(serde_json::to_string(&a.providers).unwrap_or_else(|_| "[]".into()))
    .bind(a.temperature.map(|t| (t * 100.0).round() as i64))
    .bind(a.max_tokens)
    .bind(a.steps.as_ref().map(|s| s.to_string()))
    .bind(a.created_at)
    .execute(&store.pool)
    .await?;
    Ok(())
}

pub async fn update_assistant(
    store: &Store,
    tenant: &str,
    a: &Assistant,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE assistants SET name = $1, instructions = $2, model = $3, providers = $4, \
         temperature = $5, max_tokens = $6, steps = $7 WHERE tenant_id = $8 AND id = $9",
    )
    .bind(&a.name)
    .bind(&a.instructions)
    .bind(&a.model)
    .bind(serde_json::to_string(&a.providers).unwrap_or_else(|_| "[]".into()))
    .bind(a.temperature.map(|t| (t * 100.0).round() as i64))
    .bind(a.max_tokens)
    .bind(a.steps.as_ref().map(|s| s.to_string()))
    .bind(tenant)
    .bind(&a.id)
    .execute(&store.pool)
    .await?;
    Ok(())
}

/// Deletes an assistant, its conversations (with their messages) and its
/// widgets, in one transaction.
pub async fn delete_assistant(store: &Store, tenant: &str, id: &str) -> Result<bool, sqlx::Error> {
    let mut tx = store.pool.begin().await?;
    sqlx::query(
        "DELETE FROM assistant_messages WHERE tenant_id = $1 AND conversation_id IN \
         (SELECT id FROM assistant_conversations WHERE tenant_id = $1 AND assistant_id = $2)",
    )
    .bind(tenant)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    for sql in [
        "DELETE FROM assistant_conversations WHERE tenant_id = $1 AND assistant_id = $2",
        "DELETE FROM assistant_widgets WHERE tenant_id = $1 AND assistant_id = $2",
    ] {
        sqlx::query(sql)
            .bind(tenant)
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    let deleted = sqlx::query("DELETE FROM assistants WHERE tenant_id = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(deleted == 1)
}

pub async fn assistants(store: &Store, tenant: &str) -> Result<Vec<Assistant>, sqlx::Error> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {ASSISTANT_COLUMNS} FROM assistants WHERE tenant_id = $1 ORDER BY created_at, id"
    )))
    .bind(tenant)
    .fetch_all(&store.pool)
    .await?;
    rows.iter().map(assistant_from_row).collect()
}

pub async fn assistant(
    store: &Store,
    tenant: &str,
    id: &str,
) -> Result<Option<Assistant>, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {ASSISTANT_COLUMNS} FROM assistants WHERE tenant_id = $1 AND id = $2"
    )))
    .bind(tenant)
    .bind(id)
    .fetch_optional(&store.pool)
    .await?;
    row.as_ref().map(assistant_from_row).transpose()
}

const CONVERSATION_COLUMNS: &str =
    "id, user_id, assistant_id, title, created_at, updated_at, step, answers";

fn conversation_from_row(row: &AnyRow) -> Result<Conversation, sqlx::Error> {
    Ok(Conversation {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        assistant_id: row.try_get("assistant_id")?,
        title: row.try_get("title")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        step: row.try_get("step")?,
        answers: serde_json::from_str(&row.try_get::<String, _>("answers")?)
            .unwrap_or_else(|_| serde_json::json!({})),
    })
}

pub async fn insert_conversation(
    store: &Store,
    tenant: &str,
    c: &Conversation,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO assistant_conversations (id, tenant_id, user_id, assistant_id, title, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&c.id)
    .bind(tenant)
    .bind(&c.user_id)
    .bind(&c.assistant_id)
    .bind(&c.title)
    .bind(c.created_at)
    .bind(c.updated_at)
    .execute(&store.pool)
    .await?;
    Ok(())
}

pub async fn conversation(
    store: &Store,
    tenant: &str,
    id: &str,
) -> Result<Option<Conversation>, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {CONVERSATION_COLUMNS} FROM assistant_conversations WHERE tenant_id = $1 AND id = $2"
    )))
    .bind(tenant)
    .bind(id)
    .fetch_optional(&store.pool)
    .await?;
    row.as_ref().map(conversation_from_row).transpose()
}

pub async fn conversations(
    store: &Store,
    tenant: &str,
    user: &str,
) -> Result<Vec<Conversation>, sqlx::Error> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {CONVERSATION_COLUMNS} FROM assistant_conversations \
         WHERE tenant_id = $1 AND user_id = $2 ORDER BY updated_at DESC, id LIMIT 200"
    )))
    .bind(tenant)
    .bind(user)
    .fetch_all(&store.pool)
    .await?;
    rows.iter().map(conversation_from_row).collect()
}

const MESSAGE_COLUMNS: &str = "id, conversation_id, seq, role, content, status, delta_seq, \
     prompt_tokens, completion_tokens, usage_estimated, provider_id, error, created_at, step";

fn message_from_row(row: &AnyRow) -> Result<Message, sqlx::Error> {
    Ok(Message {
        id: row.try_get("id")?,
        conversation: row.try_get("conversation_id")?,
        seq: row.try_get("seq")?,
        role: row.try_get("role")?,
        content: row.try_get("content")?,
        status: row.try_get("status")?,
        delta_seq: row.try_get("delta_seq")?,
        usage: Usage {
            prompt_tokens: row.try_get("prompt_tokens")?,
            completion_tokens: row.try_get("completion_tokens")?,
            estimated: row.try_get::<i64, _>("usage_estimated")? != 0,
        },
        provider: row.try_get("provider_id")?,
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        step: row.try_get("step")?,
    })
}

/// Messages of a conversation before `before` (a `seq`), newest `limit`,
/// returned oldest first.
pub async fn messages(
    store: &Store,
    tenant: &str,
    conversation: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Message>, sqlx::Error> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM assistant_messages \
         WHERE tenant_id = $1 AND conversation_id = $2 AND seq < $3 ORDER BY seq DESC LIMIT $4"
    )))
    .bind(tenant)
    .bind(conversation)
    .bind(before.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(&store.pool)
    .await?;
    let mut out = rows
        .iter()
        .map(message_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    out.reverse();
    Ok(out)
}

pub async fn message(
    store: &Store,
    tenant: &str,
    id: &str,
) -> Result<Option<Message>, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM assistant_messages WHERE tenant_id = $1 AND id = $2"
    )))
    .bind(tenant)
    .bind(id)
    .fetch_optional(&store.pool)
    .await?;
    row.as_ref().map(message_from_row).transpose()
}

/// Stores the user's message and the empty answer (`streaming`) with the
/// conversation's next two sequence numbers, in one transaction.
pub async fn start_exchange(
    store: &Store,
    tenant: &str,
    conversation: &Conversation,
    text: &str,
    limits: &StreamLimits,
    step: Option<&StepMove>,
) -> Result<Result<(Message, Message), Refused>, sqlx::Error> {
    let now = now_millis();
    let mut tx = store.pool.begin().await?;
    // Counting the answers streaming and adding one must not interleave
    // with another send of the tenant, or two sends at the same instant
    // both pass the limit. PostgreSQL: a lock per tenant for the
    // transaction. SQLite: the write below takes the database's write
    // lock before the count reads.
    if store.backend == crate::store::Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7283))")
            .bind(format!("assistant-streams:{tenant}"))
            .execute(&mut *tx)
            .await?;
    }
    let title_if_first = text.chars().take(80).collect::<String>();
    let row = sqlx::query(
        "UPDATE assistant_conversations SET last_seq = last_seq + 2, updated_at = $1, \
         title = CASE WHEN last_seq = 0 THEN $2 ELSE title END \
         WHERE tenant_id = $3 AND id = $4 RETURNING last_seq",
    )
    .bind(now)
    .bind(&title_if_first)
    .bind(tenant)
    .bind(&conversation.id)
    .fetch_one(&mut *tx)
    .await?;
    let (user_n, tenant_n) =
        streaming(&mut tx, tenant, &conversation.user_id, limits.stale_after).await?;
    if user_n >= limits.per_user {
        return Ok(Err(Refused::Streams("per user")));
    }
    if tenant_n >= limits.per_tenant {
        return Ok(Err(Refused::Streams("per tenant")));
    }
    if let Some(m) = step {
        // Compare-and-set: of two messages answering the same step, one wins.
        let moved = sqlx::query(
            "UPDATE assistant_conversations SET step = $1, answers = $2 \
             WHERE tenant_id = $3 AND id = $4 AND step = $5",
        )
        .bind(m.to)
        .bind(&m.answers)
        .bind(tenant)
        .bind(&conversation.id)
        .bind(m.from)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved != 1 {
            return Ok(Err(Refused::StepChanged));
        }
    }
    let last: i64 = row.try_get(0)?;
    let mut out = Vec::with_capacity(2);
    for (seq, role, content, status) in [
        (last - 1, "user", text, "complete"),
        (last, "assistant", "", "streaming"),
    ] {
        let message_step = step.and_then(|m| {
            if role == "user" {
                Some(m.answered.as_str())
            } else {
                m.asks.as_deref()
            }
        });
        let new = NewMessage {
            seq,
            role,
            content,
            status,
            step: message_step,
        };
        out.push(insert_message(&mut tx, tenant, conversation, &new, now).await?);
    }
    tx.commit().await?;
    let answer = out.pop().expect("two messages");
    let question = out.pop().expect("two messages");
    Ok(Ok((question, answer)))
}

/// Why an exchange was not started.
#[derive(Debug)]
pub enum Refused {
    /// Too many answers streaming (`per user` or `per tenant`).
    Streams(&'static str),
    /// The conversation's step moved since it was read.
    StepChanged,
}

/// A message that answers guided step `from` (key `answered`) and moves
/// the conversation to step `to` (`None`: the steps are done), whose
/// question the answer asks (`asks`); `answers` is the conversation's
/// answers with this one, as JSON.
pub struct StepMove {
    pub from: i64,
    pub to: Option<i64>,
    pub answered: String,
    pub asks: Option<String>,
    pub answers: String,
}

/// Starts guided steps: the conversation is at step 0, and its first
/// message is the assistant asking it (`key`, `prompt`).
pub async fn open_steps(
    store: &Store,
    tenant: &str,
    conversation: &Conversation,
    key: &str,
    prompt: &str,
) -> Result<Message, sqlx::Error> {
    let now = now_millis();
    let mut tx = store.pool.begin().await?;
    let seq: i64 = sqlx::query(
        "UPDATE assistant_conversations SET step = 0, last_seq = last_seq + 1 \
         WHERE tenant_id = $1 AND id = $2 RETURNING last_seq",
    )
    .bind(tenant)
    .bind(&conversation.id)
    .fetch_one(&mut *tx)
    .await?
    .try_get(0)?;
    let new = NewMessage {
        seq,
        role: "assistant",
        content: prompt,
        status: "complete",
        step: Some(key),
    };
    let message = insert_message(&mut tx, tenant, conversation, &new, now).await?;
    tx.commit().await?;
    Ok(message)
}

/// A message to add to a conversation.
struct NewMessage<'a> {
    seq: i64,
    role: &'a str,
    content: &'a str,
    status: &'a str,
    step: Option<&'a str>,
}

/// Inserts `new` into `conversation` within `tx`; answers it as stored.
async fn insert_message(
    tx: &mut sqlx::AnyConnection,
    tenant: &str,
    conversation: &Conversation,
    new: &NewMessage<'_>,
    now: i64,
) -> Result<Message, sqlx::Error> {
    let id = uuid::Uuid::now_v7().to_string();
    sqlx::query(
        "INSERT INTO assistant_messages (id, tenant_id, conversation_id, user_id, assistant_id, \
         seq, role, content, status, day, created_at, updated_at, step) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12)",
    )
    .bind(&id)
    .bind(tenant)
    .bind(&conversation.id)
    .bind(&conversation.user_id)
    .bind(&conversation.assistant_id)
    .bind(new.seq)
    .bind(new.role)
    .bind(new.content)
    .bind(new.status)
    .bind(now / DAY_MS)
    .bind(now)
    .bind(new.step)
    .execute(&mut *tx)
    .await?;
    Ok(Message {
        id,
        conversation: conversation.id.clone(),
        seq: new.seq,
        role: new.role.to_owned(),
        content: new.content.to_owned(),
        status: new.status.to_owned(),
        delta_seq: 0,
        usage: Usage::default(),
        provider: None,
        error: None,
        created_at: now,
        step: new.step.map(str::to_owned),
    })
}

/// Answers streaming at once, at most; rows silent for `stale_after`
/// milliseconds (their node stopped) do not count.
pub struct StreamLimits {
    pub per_user: i64,
    pub per_tenant: i64,
    pub stale_after: i64,
}

/// Saves the text so far of a streaming answer and its frame number; only
/// moves a streaming row forward, so a late save changes nothing.
pub async fn save_progress<'e, E>(
    executor: E,
    id: &str,
    content: &str,
    delta_seq: i64,
) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        "UPDATE assistant_messages SET content = $1, delta_seq = $2, updated_at = $3 \
         WHERE id = $4 AND status = 'streaming' AND delta_seq < $2",
    )
    .bind(content)
    .bind(delta_seq)
    .bind(now_millis())
    .bind(id)
    .execute(executor)
    .await?;
    Ok(())
}

/// How an answer ended.
pub struct Outcome<'a> {
    pub content: &'a str,
    pub delta_seq: i64,
    pub status: &'a str,
    pub usage: Usage,
    pub provider: Option<&'a str>,
    pub fallbacks: i64,
    pub error: Option<&'a str>,
}

/// Stores the final answer once: only a `streaming` row changes. Returns
/// whether this call stored it.
pub async fn finish(store: &Store, id: &str, o: &Outcome<'_>) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE assistant_messages SET content = $1, delta_seq = $2, status = $3, \
         prompt_tokens = $4, completion_tokens = $5, usage_estimated = $6, provider_id = $7, \
         fallbacks = $8, error = $9 WHERE id = $10 AND status = 'streaming'",
    )
    .bind(o.content)
    .bind(o.delta_seq)
    .bind(o.status)
    .bind(o.usage.prompt_tokens)
    .bind(o.usage.completion_tokens)
    .bind(i64::from(o.usage.estimated))
    .bind(o.provider)
    .bind(o.fallbacks)
    .bind(o.error)
    .bind(id)
    .execute(&store.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Answers streaming now for the user and for the tenant. Rows silent for
/// `stale_after` (a node that died mid-answer) do not count.
async fn streaming(
    conn: &mut sqlx::AnyConnection,
    tenant: &str,
    user: &str,
    stale_after: i64,
) -> Result<(i64, i64), sqlx::Error> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS tenant_n, \
         CAST(COALESCE(SUM(CASE WHEN user_id = $1 THEN 1 ELSE 0 END), 0) AS BIGINT) AS user_n \
         FROM assistant_messages WHERE tenant_id = $2 AND status = 'streaming' AND updated_at > $3",
    )
    .bind(user)
    .bind(tenant)
    .bind(now_millis() - stale_after)
    .fetch_one(conn)
    .await?;
    Ok((row.try_get("user_n")?, row.try_get("tenant_n")?))
}

/// Tokens the tenant used today (UTC).
pub async fn tokens_today(store: &Store, tenant: &str) -> Result<i64, sqlx::Error> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS BIGINT) AS n \
         FROM assistant_messages WHERE tenant_id = $1 AND day = $2",
    )
    .bind(tenant)
    .bind(now_millis() / DAY_MS)
    .fetch_one(&store.pool)
    .await?;
    row.try_get("n")
}

/// The context sent to the model: the conversation's latest complete
/// messages, oldest first, up to the answer being written.
pub async fn context(
    store: &Store,
    tenant: &str,
    conversation: &str,
    before: i64,
    limit: i64,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT role, content FROM assistant_messages WHERE tenant_id = $1 \
         AND conversation_id = $2 AND seq < $3 AND content <> '' ORDER BY seq DESC LIMIT $4",
    )
    .bind(tenant)
    .bind(conversation)
    .bind(before)
    .bind(limit)
    .fetch_all(&store.pool)
    .await?;
    let mut out = rows
        .iter()
        .map(|r| Ok((r.try_get("role")?, r.try_get("content")?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    out.reverse();
    Ok(out)
}

pub async fn set_retention(store: &Store, tenant: &str, days: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO assistant_settings (tenant_id, retention_days) VALUES ($1, $2) \
         ON CONFLICT (tenant_id) DO UPDATE SET retention_days = excluded.retention_days",
    )
    .bind(tenant)
    .bind(days)
    .execute(&store.pool)
    .await?;
    Ok(())
}

pub async fn retention(store: &Store, tenant: &str) -> Result<Option<i64>, sqlx::Error> {
    let row = sqlx::query("SELECT retention_days FROM assistant_settings WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_optional(&store.pool)
        .await?;
    row.map(|r| r.try_get(0)).transpose()
}

/// Deletes conversations untouched for longer than their tenant's
/// retention (`default_days` when the tenant set none), their messages
/// with them. Returns how many went.
pub async fn purge(store: &Store, default_days: i64) -> Result<u64, sqlx::Error> {
    let now = now_millis();
    let old = "SELECT c.id FROM assistant_conversations c \
         LEFT JOIN assistant_settings s ON s.tenant_id = c.tenant_id \
         WHERE c.updated_at < $1 - COALESCE(s.retention_days, $2) * 86400000";
    let mut tx = store.pool.begin().await?;
    sqlx::query(AssertSqlSafe(format!(
        "DELETE FROM assistant_messages WHERE conversation_id IN ({old}) AND status <> 'streaming'"
    )))
    .bind(now)
    .bind(default_days)
    .execute(&mut *tx)
    .await?;
    let done = sqlx::query(AssertSqlSafe(format!(
        "DELETE FROM assistant_conversations WHERE id IN ({old}) \
         AND id NOT IN (SELECT conversation_id FROM assistant_messages)"
    )))
    .bind(now)
    .bind(default_days)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(done.rows_affected())
}

/// Marks as incomplete the answers still `streaming` whose progress was last
/// saved over `stale_after` ago: their node stopped mid-answer. Returns how
/// many.
pub async fn close_stale(store: &Store, stale_after: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE assistant_messages SET status = 'incomplete', usage_estimated = 1,          error = 'the answer was interrupted (its server stopped)'          WHERE status = 'streaming' AND updated_at < $1",
    )
    .bind(now_millis() - stale_after)
    .execute(&store.pool)
    .await?;
    Ok(done.rows_affected())
}

/// Per-day and per-user/assistant figures of a tenant's answers since `since_day`.
pub async fn analytics(
    store: &Store,
    tenant: &str,
    since_day: i64,
) -> Result<serde_json::Value, sqlx::Error> {
    use serde_json::json;
    let days = sqlx::query(
        "SELECT day, COUNT(*) AS messages, \
         CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS prompt_tokens, \
         CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS completion_tokens, \
         CAST(COALESCE(SUM(fallbacks), 0) AS BIGINT) AS fallbacks, \
         CAST(COALESCE(SUM(CASE WHEN status = 'incomplete' THEN 1 ELSE 0 END), 0) AS BIGINT) AS failures \
         FROM assistant_messages WHERE tenant_id = $1 AND day >= $2 AND role = 'assistant' \
         GROUP BY day ORDER BY day",
    )
    .bind(tenant)
    .bind(since_day)
    .fetch_all(&store.pool)
    .await?;
    let mut per_day = Vec::new();
    for r in &days {
        let day: i64 = r.try_get("day")?;
        let date = jiff::Timestamp::from_millisecond(day * DAY_MS)
            .map(|t| t.strftime("%Y-%m-%d").to_string())
            .unwrap_or_default();
        per_day.push(json!({
            "date": date,
            "messages": r.try_get::<i64, _>("messages")?,
            "prompt_tokens": r.try_get::<i64, _>("prompt_tokens")?,
            "completion_tokens": r.try_get::<i64, _>("completion_tokens")?,
            "fallbacks": r.try_get::<i64, _>("fallbacks")?,
            "failures": r.try_get::<i64, _>("failures")?,
        }));
    }
    let mut by = serde_json::Map::new();
    for (name, column) in [("users", "user_id"), ("assistants", "assistant_id")] {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {column} AS k, COUNT(*) AS messages, \
             CAST(COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS BIGINT) AS tokens \
             FROM assistant_messages WHERE tenant_id = $1 AND day >= $2 AND role = 'assistant' \
             GROUP BY {column} ORDER BY tokens DESC LIMIT 100"
        )))
        .bind(tenant)
        .bind(since_day)
        .fetch_all(&store.pool)
        .await?;
        let mut list = Vec::new();
        for r in &rows {
            list.push(json!({
                "id": r.try_get::<String, _>("k")?,
                "messages": r.try_get::<i64, _>("messages")?,
                "tokens": r.try_get::<i64, _>("tokens")?,
            }));
        }
        by.insert(name.into(), list.into());
    }
    Ok(json!({"days": per_day, "users": by["users"], "assistants": by["assistants"]}))
}
