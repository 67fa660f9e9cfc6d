//! The developer console (`web/`), embedded in the binary so the hub stays a
//! single file to deploy: `/`, `/app.js`, `/style.css`.

use axum::{Router, http::header, response::IntoResponse, routing::get};

use crate::app::AppState;

const INDEX: &str = include_str!("../../web/index.html");
const SCRIPT: &str = include_str!("../../web/app.js");
const STYLE: &str = include_str!("../../web/style.css");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| page("text/html; charset=utf-8", INDEX)))
        .route(
            "/app.js",
            get(|| page("text/javascript; charset=utf-8", SCRIPT)),
        )
        .route("/style.css", get(|| page("text/css; charset=utf-8", STYLE)))
}

async fn page(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // The console talks only to its own origin.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}
