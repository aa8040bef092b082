//! `--log-requests` for every service but the tutorial's, which logs its own
//! lines (with the key and value, as the tutorial's server does).
//!
//! A tower layer sees every gRPC request, whatever service it is for (the
//! full API, and any service added later), by its path, before any check
//! refuses it; it cannot see the keys, which are inside the message, so its
//! line names the method: `serving keyvalue.v1.KV/Put request`. Health
//! checks, which probes send every few seconds, are left out.

use http::Request;
use tower::util::MapRequestLayer;
use tracing::info;

use super::is_health_check;

/// The path of the tutorial's service, whose handlers log for themselves.
const TUTORIAL: &str = "/simplekeyvalue.KeyValue/";

/// A server layer that logs one line per request.
pub(crate) fn layer<B>() -> MapRequestLayer<fn(Request<B>) -> Request<B>> {
    MapRequestLayer::new(log::<B>)
}

fn log<B>(request: Request<B>) -> Request<B> {
    let path = request.uri().path();
    if !path.starts_with(TUTORIAL) && !is_health_check(path) {
        info!("serving {} request", path.trim_start_matches('/'));
    }
    request
}
