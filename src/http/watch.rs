//! `GET /v1/watch`: a watch as Server-Sent Events.
//!
//! Each change is one event: `id` is its revision, `event` its kind (`put`,
//! `delete`, `expire`), `data` the JSON object `kv --json watch` prints. A
//! browser's `EventSource` that reconnects sends the last id it saw as
//! `Last-Event-ID`, and the watch resumes after that revision (from the
//! server's event history, `--watch-history`), so nothing is lost or seen
//! twice. The stream ends when the server shuts down; a failure after the
//! start is one `error` event, then the end.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::Shared;
use super::error::ApiError;
use super::json::{self, BytesAs};
use super::query::key_query;
use crate::proto::keyvalue::v1 as pb;
use crate::proto::keyvalue::v1::kv_server::Kv;
use crate::storage::Store;

/// How often an idle stream carries a comment, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// A watch's parameters other than its keys: `prefix` (watch the keys
/// that start with it) or `key` (watch this one key), which are bytes, read
/// by `query::key_query`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct WatchQuery {
    /// Start from this revision (from the history) instead of now.
    from_revision: Option<u64>,
}

pub(super) async fn watch<S: Store>(
    State(shared): State<Arc<Shared<S>>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (query, [key, prefix]) = key_query::<WatchQuery, 2>(&uri, ["key", "prefix"])?;
    let resume_after = match headers.get("last-event-id") {
        Some(id) => Some(
            id.to_str()
                .ok()
                .and_then(|id| id.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request("Last-Event-ID must be a revision (a number)")
                })?,
        ),
        None => None,
    };
    let (key, prefix) = match (key, prefix) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("give either key or prefix, not both"));
        }
        (Some(key), None) => (key, false),
        (None, prefix) => (prefix.unwrap_or_default(), true),
    };
    let start_revision = match resume_after {
        Some(seen) => seen + 1,
        None => query.from_revision.unwrap_or(0),
    };
    let request = pb::WatchRequest {
        key,
        prefix,
        start_revision,
        ..Default::default()
    };
    let (request, place) = shared.call("/keyvalue.v1.KV/Watch", &headers, request)?;
    let responses = shared.kv.watch(request).await?.into_inner();
    // Like a gRPC watch, it holds an in-flight place only until it is set up.
    drop(place);
    let stopping = shared.stopping.clone();
    let stopped = async move { stopping.stopped().await };
    let events = responses
        .flat_map(|response| {
            let events: Vec<Event> = match response {
                Ok(response) => response.events.iter().filter_map(sse_event).collect(),
                Err(status) => vec![
                    Event::default().event("error").data(
                        json!({"error": status.message(), "code": crate::client::status_name(status.code())})
                            .to_string(),
                    ),
                ],
            };
            futures_util::stream::iter(events)
        })
        .map(Ok::<_, Infallible>)
        .take_until(stopped);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

fn sse_event(event: &pb::Event) -> Option<Event> {
    let data = json::event(event, BytesAs::TextOrBase64)?;
    let revision = event.kv.as_ref()?.mod_revision;
    Some(
        Event::default()
            .id(revision.to_string())
            .event(json::event_kind(event))
            .data(data.to_string()),
    )
}
