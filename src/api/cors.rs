//! CORS for the REST API: a web app on another origin listed in
//! `RELAIS_ALLOWED_ORIGINS` (`*`: any) may call it from the browser.
//!
//! Credentials travel as bearer tokens in `Authorization`, never as cookies,
//! so credentialed CORS is not offered.

use std::time::Duration;

use axum::http::{HeaderName, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::OriginPolicy;

/// How long a browser may cache a preflight answer.
const MAX_AGE: Duration = Duration::from_secs(600);

/// Routes any page may call from the browser, because their handlers
/// check the origin themselves: an embedded widget's routes (the widget's
/// origin list, then the origin its visitor token is bound to) and the SSE
/// stream (a visitor's bound origin, else the hub's origin policy).
fn open_to_any_origin(path: &str) -> bool {
    path.starts_with("/api/v1/widget/") || path == "/api/v1/sse"
}

/// Answers preflights and marks responses for the origins `origins` allows
/// (the hub's own origin, the listed ones, or any); other origins get no
/// `Access-Control-Allow-Origin`, so their browsers refuse the response.
pub fn layer(origins: &OriginPolicy) -> CorsLayer {
    let origins = origins.clone();
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, parts| {
            if open_to_any_origin(parts.uri.path()) {
                return true;
            }
            let host = parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok());
            origin
                .to_str()
                .is_ok_and(|origin| origins.allows(Some(origin), host))
        }))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([
            header::RETRY_AFTER,
            HeaderName::from_static("idempotent-replayed"),
        ])
        .max_age(MAX_AGE)
}
