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

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
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
    let (request, _answered) = match &shared.budget {
        Some(budget) => {
            let (request, answered) = budget.counted(request);
            (request.map(axum::body::Body::new), Some(answered))
        }
        None => (request, None),
    };
    match shared.request_timeout {
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
