//! `POST /api/v1/publish` and `POST /api/v1/publish/batch`: app backends
//! publish to channels of their tenant.

use std::{sync::Arc, time::Instant};

use axum::{
    Router,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::idempotency::{Claim, Idempotency, IdempotencyKey};
use crate::{
    app::AppState,
    auth::{Caller, Permission, Scope, extract::AnyCaller},
    channels::{ChannelKey, Namespace, Operation},
    error::{ApiError, ApiResult, JsonBody, parse_json},
    extension::Publisher,
    gateway::{self, ChannelOpError, Gateway},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/publish", post(publish))
        .route("/api/v1/publish/batch", post(publish_batch))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    channel: String,
    data: Box<RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    publications: Vec<PublishRequest>,
}

/// Where a publication went: its place in the stream, or `ephemeral: true`
/// when the namespace's hook delivered it without one.
#[derive(Serialize)]
struct Published {
    channel: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    ephemeral: bool,
}

impl Published {
    fn new(channel: String, published: gateway::Published) -> Self {
        match published {
            gateway::Published::Stored(position) | gateway::Published::Replayed(position) => {
                Published {
                    channel,
                    epoch: Some(position.epoch.to_string()),
                    offset: Some(position.offset),
                    ephemeral: false,
                }
            }
            gateway::Published::Ephemeral => Published {
                channel,
                epoch: None,
                offset: None,
                ephemeral: true,
            },
        }
    }
}

#[derive(Serialize)]
struct BatchResponse {
    results: Vec<Published>,
}

/// Checks everything about one publication before anything is published.
async fn authorize<'g>(
    gw: &'g Gateway,
    caller: &Caller,
    req: &PublishRequest,
) -> Result<(ChannelKey, &'g Namespace), ChannelOpError> {
    let (key, ns) = gw.resolve(caller.tenant(), &req.channel)?;
    if req.data.get().len() > gw.limits.max_publication_bytes {
        return Err(ChannelOpError::TooLarge(gw.limits.max_publication_bytes));
    }
    let allowed = match caller {
        Caller::Key(k) => k.scopes.contains(&Scope::Publish),
        Caller::User(p) => {
            p.can(Permission::PublishAny)
                || gw
                    .channels()
                    .allows(ns, Operation::Publish, p, key.name())
                    .await?
        }
    };
    if !allowed {
        return Err(ChannelOpError::Forbidden);
    }
    Ok((key, ns))
}

async fn publish(
    State(state): State<AppState>,
    AnyCaller(caller): AnyCaller,
    idempotency_key: Result<IdempotencyKey, ApiError>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let IdempotencyKey(key) = idempotency_key?;
    idempotent(&state, &caller, key, "publish", &body, async |gw, once| {
        let req: PublishRequest = parse_json(&body)?;
        let (key, ns) = authorize(gw, &caller, &req).await?;
        let started = Instant::now();
        let published = gw
            .publish_from(Publisher::from(&caller), &key, ns, &req.data, once)
            .await?;
        gw.metrics.publish_duration.observe(started.elapsed());
        let replayed = matches!(published, gateway::Published::Replayed(_));
        let body = serde_json::to_string(&Published::new(req.channel, published));
        Ok((body.unwrap_or_default(), replayed))
    })
    .await
}

async fn publish_batch(
    State(state): State<AppState>,
    AnyCaller(caller): AnyCaller,
    idempotency_key: Result<IdempotencyKey, ApiError>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let IdempotencyKey(key) = idempotency_key?;
    idempotent(
        &state,
        &caller,
        key,
        "publish/batch",
        &body,
        async |gw, once| {
            let req: BatchRequest = parse_json(&body)?;
            if req.publications.is_empty() || req.publications.len() > gw.limits.max_batch {
                return Err(ApiError::invalid(
                    "invalid_batch",
                    format!("a batch holds 1 to {} publications", gw.limits.max_batch),
                ));
            }
            // Validate and authorise all first: a bad item publishes nothing.
            let mut checked = Vec::with_capacity(req.publications.len());
            for (i, p) in req.publications.iter().enumerate() {
                let (key, ns) = authorize(gw, &caller, p).await.map_err(|e| {
                    let code = e.code();
                    ApiError::invalid(code, format!("publications[{i}]: {e}"))
                })?;
                // A hook may persist or refuse each item as it is published,
                // which would break all-or-nothing: such channels take one
                // publication per request.
                if ns.hook.is_some() {
                    return Err(ApiError::invalid(
                        "batch_not_supported",
                        format!(
                            "publications[{i}]: `{}` channels take one publication per request",
                            ns.name
                        ),
                    ));
                }
                checked.push((key, ns, p));
            }
            let mut results = Vec::with_capacity(checked.len());
            let mut all_replayed = true;
            for (i, (key, ns, p)) in checked.into_iter().enumerate() {
                let item_once = once.map(|id| format!("{id}:{i}"));
                let started = Instant::now();
                let published = gw
                    .publish_from(
                        Publisher::from(&caller),
                        &key,
                        ns,
                        &p.data,
                        item_once.as_deref(),
                    )
                    .await?;
                gw.metrics.publish_duration.observe(started.elapsed());
                all_replayed &= matches!(published, gateway::Published::Replayed(_));
                results.push(Published::new(p.channel.clone(), published));
            }
            let body = serde_json::to_string(&BatchResponse { results });
            Ok((body.unwrap_or_default(), all_replayed))
        },
    )
    .await
}

/// The bus-level id of what a request with `Idempotency-Key: key` publishes
/// on `route` (`publish` or `publish/batch`; a batch suffixes `:<index>`).
pub fn publication_id(tenant: &crate::ids::TenantId, route: &str, key: &str) -> String {
    crate::auth::tokens::sha256_hex(&format!("{tenant}\n{route}\n{key}"))
}

/// Runs `work` once per `Idempotency-Key` (when the header is present) and
/// replays its stored response to retries.
///
/// `work` gets a publication id derived from the key: the bus publishes at
/// most once per id, so a publish that timed out but took effect (a stalled
/// Redis) is found by the retry instead of being made twice. `work` returns
/// its body and whether everything in it had already been published.
async fn idempotent(
    state: &AppState,
    caller: &Caller,
    key: Option<String>,
    route: &str,
    body: &[u8],
    work: impl AsyncFnOnce(&Gateway, Option<&str>) -> ApiResult<(String, bool)>,
) -> ApiResult<Response> {
    let Some(key) = key else {
        let (body, _) = work(&state.gateway, None).await?;
        return Ok(json_response(StatusCode::OK, body, false));
    };
    let publication_id = publication_id(caller.tenant(), route, &key);
    let tenant = caller.tenant();
    let store: &Arc<Idempotency> = &state.idempotency;
    match store
        .claim(tenant, &key, &Idempotency::fingerprint(route, body))
        .await?
    {
        Claim::Replay { status, body } => Ok(json_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            body,
            true,
        )),
        Claim::Fresh => match work(&state.gateway, Some(&publication_id)).await {
            Ok((body, replayed)) => {
                store.complete(tenant, &key, 200, &body).await?;
                Ok(json_response(StatusCode::OK, body, replayed))
            }
            Err(e) => {
                store.release(tenant, &key).await?;
                Err(e)
            }
        },
    }
}

fn json_response(status: StatusCode, body: String, replayed: bool) -> Response {
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}
