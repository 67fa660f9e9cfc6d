//! The REST error type: one enum, each variant mapped once to an HTTP status
//! and a stable machine-readable `code`. Database and internal errors become
//! a generic `internal` error so no storage detail leaks to clients; the
//! detail is logged instead.

use axum::{
    Json,
    body::Bytes,
    extract::{FromRequest, Request},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Serialize, de::DeserializeOwned};

use crate::json_depth::{DepthError, MAX_JSON_DEPTH, check_depth_bytes};

pub type ApiResult<T> = Result<T, ApiError>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{1}")]
    Invalid(&'static str, String),
    #[error("authentication required")]
    Unauthenticated,
    #[error("{1}")]
    Unauthorized(&'static str, String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A 404 with a code of its own (e.g. `method_not_found`).
    #[error("{1}")]
    NoSuch(&'static str, String),
    #[error("{1}")]
    TooManyRequests(&'static str, String),
    #[error("{1}")]
    Conflict(&'static str, String),
    /// A conditional request (`If-Match`) whose condition does not hold (412).
    #[error("{1}")]
    PreconditionFailed(&'static str, String),
    /// A request that must be conditional and is not (428).
    #[error("{1}")]
    PreconditionRequired(&'static str, String),
    #[error("request body too large")]
    PayloadTooLarge,
    /// A JSON body nested deeper than [`MAX_JSON_DEPTH`].
    #[error(transparent)]
    TooDeep(#[from] DepthError),
    #[error("expected `Content-Type: application/json`")]
    UnsupportedMediaType,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("{1}")]
    Unavailable(&'static str, String),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Invalid(code, message.into())
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::Forbidden(message.into())
    }
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Unauthorized(code, message.into())
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Conflict(code, message.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::TooDeep(_) => StatusCode::BAD_REQUEST,
            ApiError::Invalid(..) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthenticated | ApiError::Unauthorized(..) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) | ApiError::NoSuch(..) => StatusCode::NOT_FOUND,
            ApiError::TooManyRequests(..) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Conflict(..) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed(..) => StatusCode::PRECONDITION_FAILED,
            ApiError::PreconditionRequired(..) => StatusCode::PRECONDITION_REQUIRED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(..) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code clients branch on; documented in the OpenAPI document.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Invalid(code, _)
            | ApiError::Unauthorized(code, _)
            | ApiError::Conflict(code, _)
            | ApiError::PreconditionFailed(code, _)
            | ApiError::PreconditionRequired(code, _)
            | ApiError::Unavailable(code, _)
            | ApiError::NoSuch(code, _)
            | ApiError::TooManyRequests(code, _) => code,
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::TooDeep(_) => "too_deep",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(e.into())
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: String,
}

/// The error body every error response carries:
/// `{"error":{"code":…,"message":…}}`.
fn error_response(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        Json(ErrorBody {
            error: ErrorDetail { code, message },
        }),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(e) = &self {
            tracing::error!(error = ?e, "request failed");
        }
        let mut response = error_response(self.status(), self.code(), self.to_string());
        if matches!(self, ApiError::Unauthenticated | ApiError::Unauthorized(..)) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Whether the request says its body is JSON: `Content-Type:
/// application/json`, with optional parameters (`; charset=utf-8`).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// The whole body, within the body limit.
async fn read_body<S: Send + Sync>(req: Request, state: &S) -> ApiResult<Bytes> {
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BadRequest(e.body_text())
        }
    })
}

/// Parses a JSON request body: refused when nested deeper than
/// [`MAX_JSON_DEPTH`] (400 `too_deep`), malformed (400 `bad_request`) or of
/// the wrong shape (422 `invalid_body`). Every REST body is parsed through
/// here, by the extractors below or by a handler holding the raw bytes.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    check_depth_bytes(body, MAX_JSON_DEPTH)?;
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::invalid("invalid_body", e.to_string()),
        _ => ApiError::BadRequest(format!("malformed JSON: {e}")),
    })
}

/// A JSON body, parsed with [`parse_json`] after checking its content type
/// (415 `unsupported_media_type` without `Content-Type: application/json`).
/// Rejections use our error format instead of axum's plain-text ones.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let JsonBody(body) = JsonBody::from_request(req, state).await?;
        parse_json(&body).map(ApiJson)
    }
}

/// The raw bytes of a body that must be JSON, for handlers that keep them
/// (to fingerprint them, or to parse them later with [`parse_json`]): the
/// content type and the body limit are checked, the JSON itself is not.
pub struct JsonBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        read_body(req, state).await.map(JsonBody)
    }
}

/// An optional JSON body: `None` when the body is empty (or blank), else
/// parsed as [`ApiJson`] does, content type included.
pub struct OptionalJson<T>(pub Option<T>);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(req.headers());
        let body = read_body(req, state).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(None));
        }
        if !json {
            return Err(ApiError::UnsupportedMediaType);
        }
        parse_json(&body).map(|v| OptionalJson(Some(v)))
    }
}

/// Query-string errors in our format rather than axum's plain text.
pub fn query<T>(
    q: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<T> {
    q.map(|axum::extract::Query(q)| q)
        .map_err(|e| ApiError::invalid("invalid_query", e.body_text()))
}

/// A response layer (`axum::middleware::map_response`) that gives every
/// error response not already in our format the JSON error body: those the
/// framework makes itself (a path or query it cannot parse, a refused
/// WebSocket upgrade, a 405), keeping their status and headers.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || has_json_body(&response) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_request",
        StatusCode::UPGRADE_REQUIRED => "upgrade_required",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let message = text
        .or_else(|| status.canonical_reason().map(str::to_owned))
        .unwrap_or_default();
    let body = error_response(status, code, message).into_body();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, body)
}

fn has_json_body(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// Checks that each domain error maps to the REST status, code and message
/// listed with it, and that its own code (`own_code`) agrees (unit tests of
/// each domain's error enum).
#[cfg(test)]
pub fn assert_maps_to<E>(
    cases: impl IntoIterator<Item = (E, u16, &'static str, &'static str)>,
    own_code: impl Fn(&E) -> &'static str,
) where
    E: Into<ApiError>,
{
    for (error, status, code, message) in cases {
        assert_eq!(own_code(&error), code);
        let api: ApiError = error.into();
        assert_eq!(api.status().as_u16(), status, "{code}");
        assert_eq!(api.code(), code);
        assert_eq!(api.to_string(), message);
    }
}
