//! The hub's side of the embeddable assistant widget: a site includes a
//! script that chats with one assistant on behalf of anonymous visitors.
//!
//! A tenant admin creates a **widget** per site: a public key (it is in the
//! page's source, so it grants nothing but starting a visitor session),
//! the one assistant it talks to, the origins allowed to use it, and limits
//! (visitors admitted per hour, messages per visitor).
//!
//! The page starts a **visitor session** with the key; the hub checks the
//! request's `Origin` against the list and answers a visitor token bound
//! to that origin (see `AuthService::start_visitor`) and a conversation of
//! the visitor's own. With the token the page sends messages, reads the
//! history, cancels, and follows the answer on the conversation's channel
//! over SSE (`/api/v1/sse?channels=assistant:<id>&access_token=…`). A
//! visitor token opens no REST route but these, is no member of the
//! tenant, and works from its origin only.

use std::sync::Arc;

use axum::{
    Extension, Json, Router,
    extract::Path,
    http::{HeaderMap, StatusCode, header},
    routing::{get, patch, post},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::Row;

use super::{AssistantError, Conversation, Engine, store};
use crate::{
    auth::{Principal, extract::TenantAdmin},
    error::{ApiError, ApiJson, ApiResult},
    ids::{TenantId, now_millis, random_token},
};

/// How long a visitor session (and its token) lasts.
pub const VISITOR_TTL_SECS: u64 = 24 * 3600;
const DEFAULT_MESSAGES_PER_VISITOR: i64 = 20;
const DEFAULT_VISITORS_PER_HOUR: i64 = 500;
const HOUR_MS: i64 = 3600 * 1000;

pub fn router() -> Router<crate::state::AppState> {
    Router::new()
        .route(
            "/api/v1/assistant/widgets",
            get(list_widgets).post(create_widget),
        )
        .route(
            "/api/v1/assistant/widgets/{id}",
            patch(update_widget).delete(delete_widget),
        )
        .route("/api/v1/widget/sessions", post(start_session))
        .route(
            "/api/v1/widget/messages",
            get(visitor_history).post(visitor_send),
        )
        .route("/api/v1/widget/runs/{id}/cancel", post(visitor_cancel))
}

/// A widget as tenant admins see it.
#[derive(Debug, Clone, Serialize)]
pub struct Widget {
    pub id: String,
    pub name: String,
    pub assistant: String,
    pub public_key: String,
    pub origins: Vec<String>,
    pub messages_per_visitor: i64,
    pub visitors_per_hour: i64,
    pub disabled: bool,
    pub created_at: i64,
}

const WIDGET_COLUMNS: &str = "id, tenant_id, assistant_id, name, public_key, origins, \
     messages_per_visitor, visitors_per_hour, disabled, created_at";

fn widget_from_row(row: &sqlx::any::AnyRow) -> Result<(String, Widget), sqlx::Error> {
    let origins: String = row.try_get("origins")?;
    Ok((
        row.try_get("tenant_id")?,
        Widget {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            assistant: row.try_get("assistant_id")?,
            public_key: row.try_get("public_key")?,
            origins: serde_json::from_str(&origins).unwrap_or_default(),
            messages_per_visitor: row.try_get("messages_per_visitor")?,
            visitors_per_hour: row.try_get("visitors_per_hour")?,
            disabled: row.try_get::<i64, _>("disabled")? != 0,
            created_at: row.try_get("created_at")?,
        },
    ))
}

async fn widget_where(
    engine: &Engine,
    clause: &str,
    a: &str,
    b: Option<&str>,
) -> Result<Option<(String, Widget)>, sqlx::Error> {
    let sql = format!("SELECT {WIDGET_COLUMNS} FROM assistant_widgets WHERE {clause}");
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(a.to_owned());
    if let Some(b) = b {
        q = q.bind(b.to_owned());
    }
    q.fetch_optional(&engine.store.pool)
        .await?
        .as_ref()
        .map(widget_from_row)
        .transpose()
}

/// `scheme://host[:port]`, as browsers send in `Origin`: lower case, no
/// path (a trailing slash, as pasted from an address bar, is dropped).
fn normalize_origin(origin: &str) -> Option<String> {
    let o = origin.trim().to_ascii_lowercase();
    let o = o.strip_suffix('/').unwrap_or(&o).to_owned();
    let rest = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))?;
    let valid = !rest.is_empty()
        && rest.len() <= 253
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    valid.then_some(o)
}

fn origins(list: &[String]) -> Result<Vec<String>, AssistantError> {
    if list.is_empty() || list.len() > 50 {
        return Err(AssistantError::Invalid(
            "origins: 1-50 origins such as https://www.example.com".into(),
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for o in list {
        let n = normalize_origin(o).ok_or_else(|| {
            AssistantError::Invalid(format!(
                "origins: `{o}` is not an origin such as https://www.example.com (no path)"
            ))
        })?;
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

fn limit(value: Option<i64>, default: i64, field: &str) -> Result<i64, AssistantError> {
    match value {
        None => Ok(default),
        Some(v) if (1..=100_000).contains(&v) => Ok(v),
        Some(_) => Err(AssistantError::Invalid(format!("{field}: 1 to 100000"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWidget {
    name: String,
    assistant: String,
    origins: Vec<String>,
    #[serde(default)]
    messages_per_visitor: Option<i64>,
    #[serde(default)]
    visitors_per_hour: Option<i64>,
}

async fn create_widget(
    Extension(engine): Extension<Arc<Engine>>,
    TenantAdmin(caller): TenantAdmin,
    ApiJson(req): ApiJson<NewWidget>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let tenant = caller.tenant().as_str();
    let name = super::valid_name(&req.name)?;
    store::assistant(&engine.store, tenant, &req.assistant)
        .await?
        .ok_or_else(|| {
            AssistantError::Invalid(format!("assistant: no assistant `{}`", req.assistant))
        })?;
    let widget = Widget {
        id: uuid::Uuid::now_v7().to_string(),
        name: name.to_owned(),
        assistant: req.assistant,
        public_key: format!("pk_{}", random_token(18)),
        origins: origins(&req.origins)?,
        messages_per_visitor: limit(
            req.messages_per_visitor,
            DEFAULT_MESSAGES_PER_VISITOR,
            "messages_per_visitor",
        )?,
        visitors_per_hour: limit(
            req.visitors_per_hour,
            DEFAULT_VISITORS_PER_HOUR,
            "visitors_per_hour",
        )?,
        disabled: false,
        created_at: now_millis(),
    };
    sqlx::query(
        "INSERT INTO assistant_widgets (id, tenant_id, assistant_id, name, public_key, origins, \
         messages_per_visitor, visitors_per_hour, disabled, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9)",
    )
    .bind(&widget.id)
    .bind(tenant)
    .bind(&widget.assistant)
    .bind(&widget.name)
    .bind(&widget.public_key)
    .bind(json!(widget.origins).to_string())
    .bind(widget.messages_per_visitor)
    .bind(widget.visitors_per_hour)
    .bind(widget.created_at)
    .execute(&engine.store.pool)
    .await?;
    Ok((StatusCode::CREATED, Json(json!(widget))))
}

async fn list_widgets(
    Extension(engine): Extension<Arc<Engine>>,
    TenantAdmin(caller): TenantAdmin,
) -> ApiResult<Json<Value>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {WIDGET_COLUMNS} FROM assistant_widgets WHERE tenant_id = $1 ORDER BY created_at, id"
    )))
    .bind(caller.tenant().as_str())
    .fetch_all(&engine.store.pool)
    .await?;
    let widgets = rows
        .iter()
        .map(|r| widget_from_row(r).map(|(_, w)| w))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(json!({"widgets": widgets})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WidgetChanges {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    origins: Option<Vec<String>>,
    #[serde(default)]
    messages_per_visitor: Option<i64>,
    #[serde(default)]
    visitors_per_hour: Option<i64>,
    #[serde(default)]
    disabled: Option<bool>,
}

async fn update_widget(
    Extension(engine): Extension<Arc<Engine>>,
    TenantAdmin(caller): TenantAdmin,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<WidgetChanges>,
) -> ApiResult<Json<Value>> {
    let tenant = caller.tenant().as_str();
    let (_, mut w) = widget_where(&engine, "tenant_id = $1 AND id = $2", tenant, Some(&id))
        .await?
        .ok_or(AssistantError::NotFound("widget"))?;
    if let Some(name) = req.name {
        w.name = super::valid_name(&name)?.to_owned();
    }
    if let Some(list) = req.origins {
        w.origins = origins(&list)?;
    }
    w.messages_per_visitor = limit(
        req.messages_per_visitor.or(Some(w.messages_per_visitor)),
        0,
        "messages_per_visitor",
    )?;
    w.visitors_per_hour = limit(
        req.visitors_per_hour.or(Some(w.visitors_per_hour)),
        0,
        "visitors_per_hour",
    )?;
    let disabling = req.disabled == Some(true) && !w.disabled;
    if let Some(d) = req.disabled {
        w.disabled = d;
    }
    sqlx::query(
        "UPDATE assistant_widgets SET name = $1, origins = $2, messages_per_visitor = $3, \
         visitors_per_hour = $4, disabled = $5 WHERE tenant_id = $6 AND id = $7",
    )
    .bind(&w.name)
    .bind(json!(w.origins).to_string())
    .bind(w.messages_per_visitor)
    .bind(w.visitors_per_hour)
    .bind(i64::from(w.disabled))
    .bind(tenant)
    .bind(&id)
    .execute(&engine.store.pool)
    .await?;
    if disabling {
        engine
            .auth
            .end_visitors(caller.tenant(), &issuer(&id))
            .await?;
    }
    Ok(Json(json!(w)))
}

async fn delete_widget(
    Extension(engine): Extension<Arc<Engine>>,
    TenantAdmin(caller): TenantAdmin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let deleted = sqlx::query("DELETE FROM assistant_widgets WHERE tenant_id = $1 AND id = $2")
        .bind(caller.tenant().as_str())
        .bind(&id)
        .execute(&engine.store.pool)
        .await?
        .rows_affected();
    if deleted == 0 {
        return Err(AssistantError::NotFound("widget").into());
    }
    engine
        .auth
        .end_visitors(caller.tenant(), &issuer(&id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn issuer(widget: &str) -> String {
    format!("widget:{widget}")
}

fn request_origin(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSession {
    key: String,
}

/// Admits a visitor: the key names the widget, the request's origin must
/// be one of its origins, and the widget admits at most its hourly number.
async fn start_session(
    Extension(engine): Extension<Arc<Engine>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<NewSession>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let (tenant, widget) = widget_where(&engine, "public_key = $1", &req.key, None)
        .await?
        .filter(|(_, w)| !w.disabled)
        .ok_or(AssistantError::NotFound("widget"))?;
    let origin = request_origin(&headers)
        .and_then(normalize_origin)
        .filter(|o| widget.origins.contains(o))
        .ok_or(AssistantError::OriginNotAllowed)?;
    let tenant = TenantId::from(tenant);
    let admitted: i64 = sqlx::query(
        "SELECT COUNT(*) FROM visitor_sessions WHERE tenant_id = $1 AND issuer = $2 AND created_at > $3",
    )
    .bind(tenant.as_str())
    .bind(issuer(&widget.id))
    .bind(now_millis() - HOUR_MS)
    .fetch_one(&engine.store.pool)
    .await?
    .try_get(0)?;
    if admitted >= widget.visitors_per_hour {
        engine.metrics.assistant_refused.inc();
        return Err(AssistantError::TooManyVisitors.into());
    }
    let assistant = store::assistant(&engine.store, tenant.as_str(), &widget.assistant)
        .await?
        .filter(|a| !a.providers.is_empty())
        .ok_or(AssistantError::NotConfigured)?;
    let (visitor, token, expires_at) = engine
        .auth
        .start_visitor(&tenant, &issuer(&widget.id), &origin, VISITOR_TTL_SECS)
        .await?;
    let now = now_millis();
    let conversation = Conversation {
        id: uuid::Uuid::now_v7().to_string(),
        user_id: visitor.to_string(),
        assistant_id: assistant.id.clone(),
        title: String::new(),
        created_at: now,
        updated_at: now,
        step: None,
        answers: json!({}),
    };
    store::insert_conversation(&engine.store, tenant.as_str(), &conversation).await?;
    sqlx::query("UPDATE assistant_conversations SET widget_id = $1 WHERE id = $2")
        .bind(&widget.id)
        .bind(&conversation.id)
        .execute(&engine.store.pool)
        .await?;
    let conversation = engine.open_steps(&tenant, conversation, &assistant).await?;
    let channel = format!("{}:{}", super::NAMESPACE, conversation.id);
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": token,
            "expires_at": expires_at,
            "visitor": visitor,
            "assistant": {"name": assistant.name},
            "conversation": conversation,
            "channel": channel,
            "messages_left": widget.messages_per_visitor,
        })),
    ))
}

/// The visitor a request's token names, if it comes from the token's
/// origin and its widget is still enabled; with its conversation and the
/// widget's message limit.
async fn visitor(
    engine: &Engine,
    headers: &HeaderMap,
) -> Result<(Principal, Conversation, i64), ApiError> {
    let token = crate::auth::extract::bearer_token(headers).ok_or(ApiError::Unauthenticated)?;
    let who = engine
        .auth
        .verify_visitor(token)
        .await
        .map_err(ApiError::from)?;
    if request_origin(headers).and_then(normalize_origin) != who.origin {
        return Err(AssistantError::OriginNotAllowed.into());
    }
    let row = sqlx::query(
        "SELECT c.id, w.messages_per_visitor FROM assistant_conversations c \
         JOIN assistant_widgets w ON w.id = c.widget_id \
         WHERE c.tenant_id = $1 AND c.user_id = $2 AND w.disabled = 0",
    )
    .bind(who.tenant.as_str())
    .bind(who.user.as_str())
    .fetch_optional(&engine.store.pool)
    .await?
    .ok_or(AssistantError::NotFound("widget"))?;
    let conversation = engine
        .own_conversation(&who, &row.try_get::<String, _>("id")?)
        .await?;
    Ok((who, conversation, row.try_get("messages_per_visitor")?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VisitorMessage {
    text: String,
    #[serde(default)]
    step: Option<String>,
}

async fn visitor_send(
    Extension(engine): Extension<Arc<Engine>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<VisitorMessage>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let (who, conversation, allowed) = visitor(&engine, &headers).await?;
    let sent: i64 = sqlx::query(
        "SELECT COUNT(*) FROM assistant_messages WHERE conversation_id = $1 AND role = 'user'",
    )
    .bind(&conversation.id)
    .fetch_one(&engine.store.pool)
    .await?
    .try_get(0)?;
    if sent >= allowed {
        engine.metrics.assistant_refused.inc();
        return Err(AssistantError::VisitorLimit.into());
    }
    let started = engine
        .send(&who, &conversation.id, &req.text, req.step.as_deref())
        .await?;
    let mut body = json!(started);
    body["messages_left"] = json!(allowed - sent - 1);
    Ok((StatusCode::ACCEPTED, Json(body)))
}

async fn visitor_history(
    Extension(engine): Extension<Arc<Engine>>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let (who, conversation, _) = visitor(&engine, &headers).await?;
    let mut messages = store::messages(
        &engine.store,
        who.tenant.as_str(),
        &conversation.id,
        None,
        200,
    )
    .await?;
    super::run::hide_errors(&mut messages);
    Ok(Json(
        json!({"conversation": conversation, "messages": messages}),
    ))
}

async fn visitor_cancel(
    Extension(engine): Extension<Arc<Engine>>,
    headers: HeaderMap,
    Path(run): Path<String>,
) -> ApiResult<StatusCode> {
    let (who, _, _) = visitor(&engine, &headers).await?;
    engine.cancel(&who, &run).await?;
    Ok(StatusCode::ACCEPTED)
}

#[cfg(test)]
mod tests {
    use super::normalize_origin;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        assert_eq!(
            normalize_origin("https://Shop.Example.com").as_deref(),
            Some("https://shop.example.com")
        );
        assert_eq!(
            normalize_origin("http://127.0.0.1:8080").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            normalize_origin("https://example.com/").as_deref(),
            Some("https://example.com")
        );
        assert_eq!(normalize_origin("https://example.com/path"), None);
        assert_eq!(normalize_origin("ftp://example.com"), None);
        assert_eq!(normalize_origin("https://"), None);
        assert_eq!(normalize_origin("null"), None);
    }
}
