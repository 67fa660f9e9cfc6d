//! The web app and the developer console (`web/`), embedded in the binary so
//! the hub stays a single file to deploy.
//!
//! - `/`: the web app (sign-in, inbox, preferences, moderation, planning,
//!   chat, assistant, operator view), plain ES modules under `/app/` using
//!   the SDK's browser bundle at `/vendor/relais.js`;
//! - `/widget.js`: the assistant widget a client's site embeds with a
//!   script tag (loaded cross-origin: a script needs no CORS, and the CSP
//!   below applies to documents, not to a script other pages run);
//! - `/console/`: the developer console (`/app.js` and `/style.css` stay
//!   as aliases of its files for links made before it moved).
//!
//! Every file of `web/` that is served is listed in [`ASSETS`]; nothing else
//! is. For work on the pages, set `RELAIS_WEB_DIR` to the `web/` folder of a
//! checkout: the same files are then read from disk at each request, so an
//! edit shows on reload without rebuilding the hub.

use std::path::PathBuf;

use axum::{
    Router,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};

use crate::app::AppState;

/// The pages talk only to their own origin (REST, WebSocket, SSE).
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                   object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One served file: its URL path, its path under `web/`, its bytes.
struct Asset {
    route: &'static str,
    file: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($route:literal, $file:literal) => {
        Asset {
            route: $route,
            file: $file,
            body: include_bytes!(concat!("../../web/", $file)),
        }
    };
}

const ASSETS: &[Asset] = &[
    // The web app.
    asset!("/", "index.html"),
    asset!("/app/main.js", "app/main.js"),
    asset!("/app/session.js", "app/session.js"),
    asset!("/app/live.js", "app/live.js"),
    asset!("/app/i18n.js", "app/i18n.js"),
    asset!("/app/ui.js", "app/ui.js"),
    asset!("/app/style.css", "app/style.css"),
    asset!("/app/pages/signin.js", "app/pages/signin.js"),
    asset!("/app/pages/inbox.js", "app/pages/inbox.js"),
    asset!("/app/pages/preferences.js", "app/pages/preferences.js"),
    asset!("/app/pages/moderation.js", "app/pages/moderation.js"),
    asset!("/app/pages/planning.js", "app/pages/planning.js"),
    asset!("/app/pages/chat.js", "app/pages/chat.js"),
    asset!("/app/pages/assistant.js", "app/pages/assistant.js"),
    asset!("/app/pages/operator.js", "app/pages/operator.js"),
    asset!("/app/icon.svg", "app/icon.svg"),
    // The SDK's browser bundle, copied here by client-sdk/scripts/build.mjs.
    asset!("/vendor/relais.js", "vendor/relais.js"),
    // The embeddable assistant widget, for other sites' pages.
    asset!("/widget.js", "widget/widget.js"),
    // The developer console.
    asset!("/console/", "console/index.html"),
    asset!("/console/app.js", "console/app.js"),
    asset!("/console/style.css", "console/style.css"),
    asset!("/app.js", "console/app.js"),
    asset!("/style.css", "console/style.css"),
];

fn content_type(file: &str) -> &'static str {
    match file.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

pub fn router() -> Router<AppState> {
    // Read once: the variable is a development switch, not configuration.
    let dir = std::env::var_os("RELAIS_WEB_DIR").map(PathBuf::from);
    let mut router = Router::new().route(
        "/console",
        get(|| async { Redirect::permanent("/console/") }),
    );
    for asset in ASSETS {
        let dir = dir.clone();
        router = router.route(asset.route, get(move || serve(asset, dir.clone())));
    }
    router
}

async fn serve(asset: &'static Asset, dir: Option<PathBuf>) -> Response {
    let body = match dir {
        None => asset.body.to_vec(),
        Some(dir) => match tokio::fs::read(dir.join(asset.file)).await {
            Ok(bytes) => bytes,
            Err(e) => {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("RELAIS_WEB_DIR: cannot read {}: {e}", asset.file),
                )
                    .into_response();
            }
        },
    };
    let mut res = body.into_response();
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(asset.file)),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    // Revalidate each time: an upgraded hub serves the new files at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_known_type_and_a_unique_route() {
        let mut routes = std::collections::HashSet::new();
        for a in ASSETS {
            assert_ne!(
                content_type(a.file),
                "application/octet-stream",
                "{}",
                a.file
            );
            assert!(routes.insert(a.route), "{} listed twice", a.route);
            assert!(!a.body.is_empty(), "{} is empty", a.file);
        }
    }
}
