//! `/api/v1/assistant`: providers and assistants (tenant admins),
//! conversations, messages, cancel and export (their user), settings and
//! analytics (tenant admins).

use std::sync::Arc;

use axum::{
    Extension, Json, Router,
    extract::{Path, Query, rejection::QueryRejection},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Assistant, AssistantError, Conversation, Engine, store};
use crate::{
    auth::extract::{AuthUser, TenantAdmin},
    error::{ApiJson, ApiResult, query},
    ids::now_millis,
};

pub fn router() -> Router<crate::state::AppState> {
    Router::new()
        .route(
            "/api/v1/assistant/providers",
            get(list_providers).post(create_provider),
        )
        .route(
            "/api/v1/assistant/providers/{id}",
            axum::routing::delete(delete_provider),
        )
        .route(
            "/api/v1/assistant/assistants",
            get(list_assistants).post(create_assistant),
        )
        .route(
            "/api/v1/assistant/assistants/{id}",
            get(get_assistant)
                .patch(update_assistant)
                .delete(delete_assistant),
        )
        .route(
            "/api/v1/assistant/conversations",
            get(list_conversations).post(create_conversation),
        )
        .route(
            "/api/v1/assistant/conversations/{id}/messages",
            get(history).post(send),
        )
        .route("/api/v1/assistant/conversations/{id}/export", get(export))
        .route("/api/v1/assistant/runs/{id}/cancel", post(cancel))
        .route("/api/v1/assistant/settings", put(settings))
        .route("/api/v1/assistant/analytics", get(analytics))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewProvider {
    name: String,
    base_url: String,
    #[serde(default)]
    api_key: Option<String>,
}

async fn create_provider(
    Extension(engine): Extension<Arc<Engine>>,
    TenantAdmin(caller): TenantAdmin,
    ApiJson(req): ApiJson<NewProvider>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let tenant = caller.tenant().as_str();
    let name = super::valid_name(&req.name)?;
    let base_url = req.base_url.trim();
    if !(base_url.starts_with("http://") || base_url.starts_with("https://"))
        || base_url.len() > 500
    {
        return Err(AssistantError::Invalid(
            "base_url: an http(s) URL such as https://api.openai.com/v1".into(),
        )
        .into());
    }
    let id = uuid::Uuid::now_v7().to_string();
    let sealed = match req.api_key.as_deref().filter(|k| !k.is_empty()) {
        None => None,
        Some(key) => {
            let cipher = engine
                .cipher
                .as_ref()
                .ok_or(AssistantError::EncryptionKeyMissing)?;
            Some(cipher.seal(key, &format!("{tenant}/{id}"))?)
        }
    };
    let provider = match store::insert_provider(
        &engine.store,
        tenant,
        &id,
        name,
        base_url,
        sealed.as_deref(),
    )
    .await
    {
        Ok(p) => p,
        Err(e) if crate::store::is_unique_violation(&e) => {
            return Err(crate::error::ApiError::conflict(
                "provider_exists",
                "a provider with this name exists",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    Ok((StatusCode::CREATED, Json(json!(provider))))
}

async fn list_providers(
    Extension(engine): Extension<Arc<Engine>>,
    TenantAdmin(caller): TenantAdmin,
) -> ApiResult<Json<Value>> {
    let providers = store::providers(&engine.store, caller.tenant().as_str()).await?;
    Ok(Json(json!({"providers": providers})))
}

async fn delete_provider(
    Extension(engine): Extension<Arc<Engine>>,
    TenantAdmin(caller): TenantAdmin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if store::delete_provider(&engine.store, caller.tenant().as_str(), &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AssistantError::NotFound("provider").into())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAssistant {
    name: String,
    #[serde(default)]
    instructions: String,
    model: String,
    providers: Vec<String>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    max_tokens: Option<i64>,
    #[serde(default)]
    steps: Option<Vec<Value>>,
}

async fn create_assistant(
    Extension(engine): Extension<Arc<Engine>>,
    TenantAdmin(caller): TenantAdmin,
    ApiJson(req): ApiJson<NewAssistant>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let tenant = caller.tenant().as_str();
    let assistant = Assistant {
        id: uuid::Uuid::now_v7().to_string(),
        name: req.name.trim().to_owned(),
        instructions: req.instructions,
        model: req.model.trim().to_owned(),
        providers: req.providers,
        temperature: req.temperature,
        max_tokens: req.max_tokens,
        steps: req.steps.map(Value::from),
        created_at: now_millis(),
    };
    check_assistant(&engine, tenant, &assistant).await?;
    store::insert_assistant(&engine.store, tenant, &assistant).await?;
    Ok((StatusCode::CREATED, Json(json!(assistant))))
}

/// The rules an assistant keeps, when created and after each change.
async fn check_assistant(
    engine: &Engine,
    tenant: &str,
    a: &Assistant,
) -> Result<(), crate::error::ApiError> {
    let invalid = |m: &str| -> crate::error::ApiError { AssistantError::Invalid(m.into()).into() };
    super::valid_name(&a.name)?;
    if a.model.trim().is_empty() || a.model.len() > 200 {
        return Err(invalid("model: 1-200 characters"));
    }
    if a.instructions.chars().count() > 20_000 {
        return Err(invalid("instructions: at most 20000 characters"));
    }
    if a.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
        return Err(invalid("temperature: 0 to 2"));
    }
    if a.max_tokens.is_some_and(|t| !(1..=1_000_000).contains(&t)) {
        return Err(invalid("max_tokens: 1 to 1000000"));
    }
    if a.providers.is_empty() || a.providers.len() > 10 {
        return Err(invalid("providers: 1-10 provider ids, tried in order"));
    }
    if let Some(steps) = &a.steps {
        super::steps::parse(steps.as_array().map(Vec::as_slice).unwrap_or_default())?;
    }
    for id in &a.providers {
        if store::provider_secret(&engine.store, tenant, id)
            .await?
            .is_none()
        {
            return Err(invalid(&format!("providers: no provider `{id}`")));
        }
    }
    Ok(())
}

async fn get_assistant(
    Extension(engine): Extension<Arc<Engine>>,
    AuthUser(who): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let assistant = store::assistant(&engine.store, who.tenant.as_str(), &id)
        .await?
        .ok_or(AssistantError::NotFound("assistant"))?;
    Ok(Json(json!(assistant)))
}

/// A change to an assistant: the fields given replace the stored ones
/// (`null` clears `temperature`, `max_tokens` and `steps`). Conversations
/// under way keep their step index; new ones see the new steps.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssistantChanges {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    providers: Option<Vec<String>>,
    #[serde(default, with = "serde_with_null")]
    temperature: Option<Option<f64>>,
    #[serde(default, with = "serde_with_null")]
    max_tokens: Option<Option<i64>>,
    #[serde(default, with = "serde_with_null")]
    steps: Option<Option<Vec<Value>>>,
}

/// `Option<Option<T>>` from JSON: absent → `None`, `null` → `Some(None)`.
mod serde_with_null {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        Option::<T>::deserialize(d).map(Some)
    }
}

async fn update_assistant(
    Extension(engine): Extension<Arc<Engine>>,
    TenantAdmin(caller): TenantAdmin,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<AssistantChanges>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant().as_str();
    let mut a = store::assistant(&engine.store, tenant, &id)
        .await?
        .ok_or(AssistantError::NotFound("assistant"))?;
    if let Some(name) = req.name {
        a.name = name.trim().to_owned();
    }
    if let Some(instructions) = req.instructions {
        a.instructions = instructions;
    }
    if let Some(model) = req.model {
        a.model = model.trim().to_owned();
    }
    if let Some(providers) = req.providers {
        a.providers = providers;
    }
    if let Some(t) = req.temperature {
        a.temperature = t;
    }
    if let Some(t) = req.max_tokens {
        a.max_tokens = t;
    }
    if let Some(steps) = req.steps {
        a.steps = steps.map(Value::from);
    }
    check_assistant(&engine, tenant, &a).await?;
    store::update_assistant(&engine.store, tenant, &a).await?;
    Ok(Json(json!(a)))
}

/// Deletes an assistant with its conversations and widgets.
async fn delete_assistant(
    Extension(engine): Extension<Arc<Engine>>,
    TenantAdmin(caller): TenantAdmin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if store::delete_assistant(&engine.store, caller.tenant().as_str(), &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AssistantError::NotFound("assistant").into())
    }
}

async fn list_assistants(
    Extension(engine): Extension<Arc<Engine>>,
    AuthUser(who): AuthUser,
) -> ApiResult<Json<Value>> {
    let assistants = store::assistants(&engine.store, who.tenant.as_str()).await?;
    Ok(Json(json!({"assistants": assistants})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewConversation {
    /// The tenant's first assistant when absent.
    #[serde(default)]
    assistant: Option<String>,
}

async fn create_conversation(
    Extension(engine): Extension<Arc<Engine>>,
    AuthUser(who): AuthUser,
    ApiJson(req): ApiJson<NewConversation>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let tenant = who.tenant.as_str();
    let assistant = match req.assistant {
        Some(id) => store::assistant(&engine.store, tenant, &id)
            .await?
            .ok_or(AssistantError::NotFound("assistant"))?,
        None => store::assistants(&engine.store, tenant)
            .await?
            .into_iter()
            .next()
            .ok_or(AssistantError::NotConfigured)?,
    };
    if assistant.providers.is_empty() {
        return Err(AssistantError::NotConfigured.into());
    }
    let now = now_millis();
    let conversation = Conversation {
        id: uuid::Uuid::now_v7().to_string(),
        user_id: who.user.to_string(),
        assistant_id: assistant.id.clone(),
        title: String::new(),
        created_at: now,
        updated_at: now,
        step: None,
        answers: json!({}),
    };
    store::insert_conversation(&engine.store, tenant, &conversation).await?;
    let conversation = engine
        .open_steps(&who.tenant, conversation, &assistant)
        .await?;
    let channel = format!("{}:{}", super::NAMESPACE, conversation.id);
    Ok((
        StatusCode::CREATED,
        Json(json!({"conversation": conversation, "channel": channel})),
    ))
}

async fn list_conversations(
    Extension(engine): Extension<Arc<Engine>>,
    AuthUser(who): AuthUser,
) -> ApiResult<Json<Value>> {
    let list = store::conversations(&engine.store, who.tenant.as_str(), who.user.as_str()).await?;
    Ok(Json(json!({"conversations": list})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    #[serde(default)]
    before: Option<i64>,
    #[serde(default)]
    limit: Option<i64>,
}

async fn history(
    Extension(engine): Extension<Arc<Engine>>,
    AuthUser(who): AuthUser,
    Path(id): Path<String>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(50).clamp(1, 200);
    let conversation = engine.own_conversation(&who, &id).await?;
    let messages = store::messages(
        &engine.store,
        who.tenant.as_str(),
        &conversation.id,
        q.before,
        limit + 1,
    )
    .await?;
    let more = messages.len() as i64 > limit;
    let messages: Vec<_> = messages.into_iter().skip(usize::from(more)).collect();
    let next = if more {
        messages.first().map(|m| m.seq)
    } else {
        None
    };
    Ok(Json(
        json!({"conversation": conversation, "messages": messages, "has_more": more, "next_before": next}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendRequest {
    text: String,
    /// The guided step the message answers, if the client shows one: a
    /// message for a step the conversation has left is refused (409).
    #[serde(default)]
    step: Option<String>,
}

async fn send(
    Extension(engine): Extension<Arc<Engine>>,
    AuthUser(who): AuthUser,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SendRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let started = engine
        .send(&who, &id, &req.text, req.step.as_deref())
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!(started))))
}

async fn cancel(
    Extension(engine): Extension<Arc<Engine>>,
    AuthUser(who): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    engine.cancel(&who, &id).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    #[serde(default)]
    format: Option<String>,
}

async fn export(
    Extension(engine): Extension<Arc<Engine>>,
    AuthUser(who): AuthUser,
    Path(id): Path<String>,
    q: Result<Query<ExportQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    let conversation = engine.own_conversation(&who, &id).await?;
    let messages = store::messages(
        &engine.store,
        who.tenant.as_str(),
        &conversation.id,
        None,
        100_000,
    )
    .await?;
    match q.format.as_deref().unwrap_or("json") {
        "json" => {
            Ok(Json(json!({"conversation": conversation, "messages": messages})).into_response())
        }
        "csv" => {
            let mut out = String::from(
                "seq,role,status,created_at,prompt_tokens,completion_tokens,usage_estimated,content\r\n",
            );
            for m in &messages {
                out.push_str(&format!(
                    "{},{},{},{},{},{},{},{}\r\n",
                    m.seq,
                    m.role,
                    m.status,
                    m.created_at,
                    m.usage.prompt_tokens,
                    m.usage.completion_tokens,
                    m.usage.estimated,
                    csv_field(&m.content)
                ));
            }
            Ok((
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!(
                            "attachment; filename=\"conversation-{}.csv\"",
                            conversation.id
                        ),
                    ),
                ],
                out,
            )
                .into_response())
        }
        _ => Err(AssistantError::Invalid("format: json or csv".into()).into()),
    }
}

/// A CSV field, quoted when needed; a leading `=`, `+`, `-` or `@` is
/// prefixed with `'` so spreadsheets do not run it as a formula.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    retention_days: i64,
}

async fn settings(
    Extension(engine): Extension<Arc<Engine>>,
    TenantAdmin(caller): TenantAdmin,
    ApiJson(req): ApiJson<Settings>,
) -> ApiResult<Json<Value>> {
    if !(1..=3650).contains(&req.retention_days) {
        return Err(AssistantError::Invalid("retention_days: 1 to 3650".into()).into());
    }
    store::set_retention(&engine.store, caller.tenant().as_str(), req.retention_days).await?;
    Ok(Json(json!({"retention_days": req.retention_days})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnalyticsQuery {
    #[serde(default)]
    days: Option<i64>,
}

async fn analytics(
    Extension(engine): Extension<Arc<Engine>>,
    TenantAdmin(caller): TenantAdmin,
    q: Result<Query<AnalyticsQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let days = q.days.unwrap_or(30).clamp(1, 366);
    let tenant = caller.tenant().as_str();
    let since = now_millis() / store::DAY_MS - (days - 1);
    let mut out = store::analytics(&engine.store, tenant, since).await?;
    out["retention_days"] = json!(
        store::retention(&engine.store, tenant)
            .await?
            .unwrap_or(engine.config.retention_days)
    );
    Ok(Json(out))
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=1+1"), "'=1+1");
    }
}
