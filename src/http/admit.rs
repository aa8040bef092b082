//! The gRPC listener's limits on each request of the JSON API, so that an
//! HTTP client can hold no more than a gRPC one: a place among its
//! connection's requests in flight (`--max-in-flight-per-connection`,
//! before the server-wide `--max-in-flight` that `Shared::call` takes), its
//! body's bytes in the byte budget (`--max-request-bytes-in-flight`, held
//! until the handler answers), and `--request-timeout` for the handler, so
//! a body that never comes does not hold its places for good. Without it,
//! HTTP/2 streams on the HTTP listener were limited only by the server-wide
//! count, and a stalled body held its bytes for as long as the client
//! liked. Metrics, probes and the console are not API requests: their
//! answers are the server's own and small.
//!
//! Answers count in the byte budget too, as gRPC's do, from the moment the
//! handler has built them until the connection has written them
//! (`BudgetLayer::http_answer`): a whole JSON answer takes its places
//! before its headers go, and is answered 429 naming the flag if they are
//! not free; each event of a watch takes its own. A client that asks and
//! never reads (an HTTP/1.1 client pipelining requests, an HTTP/2 one whose
//! windows stay closed) held every answer it asked for: now they hold the
//! budget, and its connection is closed once none was written for
//! `--answer-stall-timeout` (`connection::Deadline`, which HTTP/1.1's
//! blocked writes check too).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::Body as _;
use tonic::Status;

use super::Shared;
use super::error::ApiError;
use crate::storage::Store;

/// Admits a request of the JSON API (`/v1/...`) under the limits above.
pub(super) async fn admit<S: Store>(
    State(shared): State<Arc<Shared<S>>>,
    request: Request,
    next: Next,
) -> Response {
    if !request.uri().path().starts_with("/v1/") {
        return next.run(request).await;
    }
    let _place = match shared
        .shed
        .as_ref()
        .map(|shed| shed.enter_connection(&request))
    {
        Some(Err(status)) => return ApiError::from(status).into_response(),
        Some(Ok(place)) => place,
        None => None,
    };
    let Some(budget) = shared.budget.clone() else {
        return answered(shared.request_timeout, next, request).await;
    };
    let activity = crate::connection::activity_of(&request).cloned();
    let (request, answered_request) = budget.counted(request);
    let response = answered(
        shared.request_timeout,
        next,
        request.map(axum::body::Body::new),
    )
    .await;
    drop(answered_request);
    // A whole answer takes its places before its headers go.
    let prepaid = match response.body().size_hint().exact() {
        Some(0) | None => None,
        Some(bytes) => match budget.take(usize::try_from(bytes).unwrap_or(usize::MAX)) {
            Ok(permit) => Some(permit),
            Err(status) => return ApiError::from(status).into_response(),
        },
    };
    response.map(|body| axum::body::Body::new(budget.http_answer(body, activity, prepaid)))
}

/// The handler's answer, or `DEADLINE_EXCEEDED` after `--request-timeout`.
async fn answered(timeout: Option<Duration>, next: Next, request: Request) -> Response {
    match timeout {
        Some(timeout) => match tokio::time::timeout(timeout, next.run(request)).await {
            Ok(response) => response,
            Err(_) => ApiError::from(Status::deadline_exceeded(format!(
                "the request was not answered within {timeout:?} (--request-timeout); \
                 send its body at once"
            )))
            .into_response(),
        },
        None => next.run(request).await,
    }
}

/// The status a body read failed with, if the budget refused it (its error
/// is somewhere in the chain of the read's error).
pub(super) fn refusal(error: &(dyn std::error::Error + 'static)) -> Option<Status> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(status) = error.downcast_ref::<Status>() {
            return Some(status.clone());
        }
        next = error.source();
    }
    None
}
