//! Load shedding: at most `--max-in-flight` requests are worked on at once;
//! one more is answered `RESOURCE_EXHAUSTED` at once, instead of waiting in a
//! queue that grows without bound (and with it, every caller's latency).
//!
//! A request holds its place until its response starts: a unary call for its
//! whole length, a watch until it is set up (watches have their own limit,
//! `--max-watchers`). Health checks are never shed, so a busy server is not
//! mistaken for a dead one.
//!
//! A request counts first against its connection's limit
//! (`--max-in-flight-per-connection`), then against the server's: one client
//! that opens thousands of streams and never finishes them fills only its
//! own connection's places, not everyone's.

use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tower::{Layer, Service};

use super::{LayerFuture, is_health_check};
use crate::connection::{InFlight, activity_of};

/// The layer (the server leaves it out when there is no limit).
#[derive(Clone)]
pub(crate) struct ShedLayer {
    places: Arc<Semaphore>,
    limit: usize,
    per_connection: usize,
}

impl ShedLayer {
    /// At most `limit` requests in flight, and `per_connection` on any one
    /// connection.
    pub(crate) fn new(limit: usize, per_connection: usize) -> ShedLayer {
        ShedLayer {
            places: Arc::new(Semaphore::new(limit)),
            limit,
            per_connection,
        }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Shed<S> {
        Shed {
            inner,
            places: Arc::clone(&self.places),
            limit: self.limit,
            per_connection: self.per_connection,
        }
    }
}

impl ShedLayer {
    /// A place for one request (the HTTP API's, which shares the limit with
    /// gRPC), held until dropped; `RESOURCE_EXHAUSTED` when there is none.
    pub(crate) fn enter(&self) -> Result<OwnedSemaphorePermit, Status> {
        enter(&self.places, self.limit)
    }

    /// A place among the requests in flight on `request`'s connection
    /// (`--max-in-flight-per-connection`), for the HTTP listener's requests
    /// (gRPC's take it in the layer); `RESOURCE_EXHAUSTED` when there is none.
    pub(crate) fn enter_connection<B>(
        &self,
        request: &http::Request<B>,
    ) -> Result<Option<InFlight>, Status> {
        enter_connection(request, self.per_connection)
    }
}

/// A place among the requests in flight on `request`'s connection (none
/// for a request that came on no counted connection).
fn enter_connection<B>(
    request: &http::Request<B>,
    per_connection: usize,
) -> Result<Option<InFlight>, Status> {
    let Some(activity) = activity_of(request) else {
        return Ok(None);
    };
    match activity.enter(per_connection) {
        Some(place) => Ok(Some(place)),
        None => Err(Status::resource_exhausted(format!(
            "this connection has {per_connection} requests in flight, its limit \
             (--max-in-flight-per-connection); wait for some to finish, or spread the load \
             over more connections"
        ))),
    }
}

fn enter(places: &Arc<Semaphore>, limit: usize) -> Result<OwnedSemaphorePermit, Status> {
    Arc::clone(places).try_acquire_owned().map_err(|_| {
        Status::resource_exhausted(format!(
            "the server is working on {limit} requests, its limit (--max-in-flight); \
             retry with backoff"
        ))
    })
}

/// A service that sheds what is beyond its limit.
#[derive(Clone)]
pub(crate) struct Shed<S> {
    inner: S,
    places: Arc<Semaphore>,
    limit: usize,
    per_connection: usize,
}

impl<S, B, RB> Service<http::Request<B>> for Shed<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = LayerFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if is_health_check(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        let connection_place = match enter_connection(&request, self.per_connection) {
            Ok(place) => place,
            Err(status) => return Box::pin(std::future::ready(Ok(status.into_http()))),
        };
        let place = match enter(&self.places, self.limit) {
            Ok(place) => place,
            Err(status) => return Box::pin(std::future::ready(Ok(status.into_http()))),
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            drop((place, connection_place));
            response
        })
    }
}
