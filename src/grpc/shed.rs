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
//!
//! Every request passes here, so the places are one atomic counter, not a
//! semaphore: nothing ever waits for a place, and a semaphore's release
//! takes its lock, which every serving thread would share.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tonic::Status;
use tower::{Layer, Service};

use super::is_health_check;
use crate::connection::{InFlight, activity_of};

/// The layer (the server leaves it out when there is no limit).
#[derive(Clone)]
pub(crate) struct ShedLayer {
    places: Arc<Places>,
    per_connection: usize,
}

impl ShedLayer {
    /// At most `limit` requests in flight, and `per_connection` on any one
    /// connection.
    pub(crate) fn new(limit: usize, per_connection: usize) -> ShedLayer {
        ShedLayer {
            places: Arc::new(Places {
                taken: AtomicUsize::new(0),
                limit,
            }),
            per_connection,
        }
    }
}

/// The server's places: how many are taken, of the limit.
struct Places {
    taken: AtomicUsize,
    limit: usize,
}

/// A place under `--max-in-flight`, given back when dropped.
pub(crate) struct Place(Arc<Places>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::Release);
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Shed<S> {
        Shed {
            inner,
            places: Arc::clone(&self.places),
            per_connection: self.per_connection,
        }
    }
}

impl ShedLayer {
    /// A place for one request (the HTTP API's, which shares the limit with
    /// gRPC), held until dropped; `RESOURCE_EXHAUSTED` when there is none.
    pub(crate) fn enter(&self) -> Result<Place, Status> {
        enter(&self.places)
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

fn enter(places: &Arc<Places>) -> Result<Place, Status> {
    let limit = places.limit;
    match places
        .taken
        .fetch_update(Ordering::Acquire, Ordering::Relaxed, |taken| {
            (taken < limit).then_some(taken + 1)
        }) {
        Ok(_) => Ok(Place(Arc::clone(places))),
        Err(_) => Err(Status::resource_exhausted(format!(
            "the server is working on {limit} requests, its limit (--max-in-flight); \
             retry with backoff"
        ))),
    }
}

/// A service that sheds what is beyond its limit.
#[derive(Clone)]
pub(crate) struct Shed<S> {
    inner: S,
    places: Arc<Places>,
    per_connection: usize,
}

impl<S, B, RB> Service<http::Request<B>> for Shed<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    RB: Default,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = Shedding<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if is_health_check(request.uri().path()) {
            return Shedding::Inner {
                response: self.inner.call(request),
                places: None,
            };
        }
        let connection_place = match enter_connection(&request, self.per_connection) {
            Ok(place) => place,
            Err(status) => {
                return Shedding::Refused {
                    status: Some(status),
                };
            }
        };
        let place = match enter(&self.places) {
            Ok(place) => place,
            Err(status) => {
                return Shedding::Refused {
                    status: Some(status),
                };
            }
        };
        Shedding::Inner {
            response: self.inner.call(request),
            places: Some((place, connection_place)),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's future holding the request's places until it
    /// answers, or the refusal: a future of its own rather than a boxed
    /// one, since every request passes here.
    #[project = SheddingProjection]
    pub(crate) enum Shedding<F> {
        Inner {
            #[pin]
            response: F,
            places: Option<(Place, Option<InFlight>)>,
        },
        Refused { status: Option<Status> },
    }
}

impl<F, RB, E> Future for Shedding<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
    RB: Default,
{
    type Output = Result<http::Response<RB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            SheddingProjection::Inner { response, places } => {
                let answer = std::task::ready!(response.poll(cx));
                // The places go as the response starts, not when this
                // future is dropped.
                places.take();
                Poll::Ready(answer)
            }
            SheddingProjection::Refused { status } => {
                let status = status
                    .take()
                    .unwrap_or_else(|| Status::internal("a refused request was polled again"));
                Poll::Ready(Ok(status.into_http()))
            }
        }
    }
}
