//! A bound on the memory of all requests in flight together
//! (`--max-request-bytes-in-flight`): every byte of a request's body takes
//! a place in one budget shared by all requests as it arrives, before tonic
//! buffers and decodes it, and gives it back once the handler has answered.
//! A byte beyond the budget ends its request with `RESOURCE_EXHAUSTED`
//! naming the flag, at once, instead of waiting.
//!
//! The other limits bound one request (its size, `--max-*`; its decoded
//! cost, the codec's count of repeated fields; its time,
//! `--request-timeout`) or the number of requests (`--max-in-flight`); not
//! how much memory many large requests hold together. Eight stalled 16 MiB
//! bodies held 150 MiB until their timeout, and many concurrent maximal
//! batches could hold any amount. With the budget, that memory is at most
//! the budget (plus what decoding adds, a small multiple of it: see
//! `codec.rs`).
//!
//! A unary request holds its bytes until its answer is ready; a stream
//! from the client (etcd's watch and keep-alive streams) holds them until
//! its answer starts, and from then on only its latest frame's, so a
//! stream that lasts for hours holds almost nothing. Health checks are
//! never counted.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http_body::Frame;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

use super::{LayerFuture, is_health_check};

/// The default budget: sixteen requests of the largest default size.
pub const DEFAULT_MAX_REQUEST_BYTES_IN_FLIGHT: usize = 256 << 20;

/// The layer: one budget for every request it serves.
#[derive(Clone)]
pub(crate) struct BudgetLayer {
    bytes: Arc<Semaphore>,
    limit: usize,
}

impl BudgetLayer {
    /// At most `limit` bytes of requests in flight at once.
    pub(crate) fn new(limit: usize) -> BudgetLayer {
        let limit = limit.min(Semaphore::MAX_PERMITS);
        BudgetLayer {
            bytes: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }
}

impl<S> Layer<S> for BudgetLayer {
    type Service = Budget<S>;

    fn layer(&self, inner: S) -> Budget<S> {
        Budget {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`BudgetLayer`].
#[derive(Clone)]
pub(crate) struct Budget<S> {
    inner: S,
    layer: BudgetLayer,
}

/// The bytes one request holds.
#[derive(Default)]
struct Held {
    permit: Option<OwnedSemaphorePermit>,
    /// The answer has started: from now on only the latest frame is held.
    answered: bool,
}

impl<S, RB> Service<http::Request<Body>> for Budget<S>
where
    S: Service<http::Request<Body>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = LayerFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if is_health_check(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        let held = Arc::new(Mutex::new(Held::default()));
        let layer = self.layer.clone();
        let counted = Arc::clone(&held);
        let request = request.map(move |inner| {
            Body::new(Counted {
                inner,
                layer,
                held: counted,
            })
        });
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            let mut held = held.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            held.answered = true;
            held.permit = None;
            response
        })
    }
}

/// A request body whose bytes take places in the budget as they arrive.
struct Counted {
    inner: Body,
    layer: BudgetLayer,
    held: Arc<Mutex<Held>>,
}

impl Counted {
    fn take(&self, bytes: usize) -> Result<(), Status> {
        let refused = || {
            Status::resource_exhausted(format!(
                "requests in flight hold {} bytes, the limit (--max-request-bytes-in-flight); \
                 retry with backoff, or send smaller requests",
                self.layer.limit
            ))
        };
        let bytes = u32::try_from(bytes).map_err(|_| refused())?;
        let permit = Arc::clone(&self.layer.bytes)
            .try_acquire_many_owned(bytes)
            .map_err(|_| refused())?;
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let answered = held.answered;
        match &mut held.permit {
            Some(earlier) if !answered => earlier.merge(permit),
            slot => *slot = Some(permit),
        }
        Ok(())
    }
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &frame
            && let Some(data) = frame.data_ref()
            && let Err(status) = self.take(data.len())
        {
            return Poll::Ready(Some(Err(status)));
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
