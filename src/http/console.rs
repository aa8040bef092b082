//! The browser console at `/`: three static files embedded in the binary
//! with `include_str!` (no CDN, no build step: plain HTML, CSS and
//! JavaScript that the browser runs as written). Everything it shows it gets
//! from the JSON API and `/metrics`, with the token the user gives it.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// The console's routes (they need no state).
pub(super) fn routes<T: Clone + Send + Sync + 'static>() -> Router<T> {
    Router::new()
        .route("/", get(|| asset("text/html; charset=utf-8", INDEX)))
        .route(
            "/console/console.js",
            get(|| asset("text/javascript; charset=utf-8", SCRIPT)),
        )
        .route(
            "/console/console.css",
            get(|| asset("text/css; charset=utf-8", STYLE)),
        )
}

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // The files change with the binary only; a reload after an
            // upgrade must not keep an old script.
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::HeaderName::from_static("content-security-policy"),
                "default-src 'self'; img-src 'self' data:",
            ),
        ],
        body,
    )
}
