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
//!
//! Answers count too, from the moment the handler's answer is encoded until
//! the connection has written it: a client that asks and never reads (its
//! HTTP/2 window closed) leaves its answers in the server's memory, and
//! four such clients asking for 100 Range pages each held 800 MiB. Each
//! data frame of an answer takes its bytes from the budget and gives them
//! back when its buffer is dropped, which HTTP/2 does once the bytes are
//! written to the socket. A frame that does not fit ends the answer with
//! `RESOURCE_EXHAUSTED` naming the flag instead of its data.
//!
//! Every answer frame passes here, so the accounting is kept cheap: the
//! budget is one atomic counter (nothing ever waits for it, so it needs no
//! semaphore, whose release takes a lock), and a frame tells its connection
//! that it was written with two atomic updates and no clock read (the
//! connection's `Deadline` reads the clock when it looks).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

use super::is_health_check;
use crate::connection::{Activity, activity_of};

/// The default budget: sixteen requests of the largest default size.
pub const DEFAULT_MAX_REQUEST_BYTES_IN_FLIGHT: usize = 256 << 20;

/// The layer: one budget for every request it serves.
#[derive(Clone)]
pub(crate) struct BudgetLayer {
    pool: Arc<Pool>,
}

impl BudgetLayer {
    /// At most `limit` bytes of requests in flight at once.
    pub(crate) fn new(limit: usize) -> BudgetLayer {
        BudgetLayer {
            pool: Arc::new(Pool {
                held: AtomicUsize::new(0),
                limit,
            }),
        }
    }
}

/// The budget's bytes: how many are held, of the limit.
struct Pool {
    held: AtomicUsize,
    limit: usize,
}

impl Pool {
    /// `bytes` more held, or `None` if they would pass the limit.
    fn take(self: &Arc<Pool>, bytes: usize) -> Option<Taken> {
        let mut held = self.held.load(Ordering::Relaxed);
        loop {
            let after = held
                .checked_add(bytes)
                .filter(|&after| after <= self.limit)?;
            match self
                .held
                .compare_exchange_weak(held, after, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Some(Taken {
                        pool: Arc::clone(self),
                        bytes,
                    });
                }
                Err(now) => held = now,
            }
        }
    }
}

/// Bytes held in the budget, given back when dropped.
pub(crate) struct Taken {
    pool: Arc<Pool>,
    bytes: usize,
}

impl Taken {
    /// Holds `other`'s bytes too, until this one drops.
    fn merge(&mut self, mut other: Taken) {
        self.bytes += std::mem::take(&mut other.bytes);
    }

    /// `bytes` of these, held apart from now on; `None` if there are fewer.
    fn split(&mut self, bytes: usize) -> Option<Taken> {
        self.bytes = self.bytes.checked_sub(bytes)?;
        Some(Taken {
            pool: Arc::clone(&self.pool),
            bytes,
        })
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.pool.held.fetch_sub(self.bytes, Ordering::AcqRel);
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
    taken: Option<Taken>,
    /// The answer has started: from now on only the latest frame is held.
    answered: bool,
}

impl<S, RB> Service<http::Request<Body>> for Budget<S>
where
    S: Service<http::Request<Body>, Response = http::Response<RB>>,
    RB: http_body::Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Budgeted<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if is_health_check(request.uri().path()) {
            return Budgeted {
                response: self.inner.call(request),
                answered: None,
                answer: None,
            };
        }
        let activity = activity_of(&request).cloned();
        let (request, answered) = self.layer.counted(request);
        Budgeted {
            response: self.inner.call(request),
            answered: Some(answered),
            answer: Some((self.layer.clone(), activity)),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's response, its request's bytes given back when it
    /// starts and its body counted from then on (none of it for a health
    /// check): a future of its own rather than a boxed one, since every
    /// request passes here.
    pub(crate) struct Budgeted<F> {
        #[pin]
        response: F,
        answered: Option<Answered>,
        answer: Option<(BudgetLayer, Option<Arc<Activity>>)>,
    }
}

impl<F, RB, E> Future for Budgeted<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
    RB: http_body::Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Output = Result<http::Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.response.poll(cx));
        this.answered.take();
        let answer = this.answer.take();
        Poll::Ready(response.map(|response| {
            response.map(|inner| match answer {
                Some((layer, activity)) => Body::new(Answer {
                    inner: Body::new(inner),
                    layer,
                    activity,
                    refused: false,
                    prepaid: None,
                    trailers: true,
                }),
                None => Body::new(inner),
            })
        }))
    }
}

impl BudgetLayer {
    /// `request` with a body whose bytes take places as they arrive, held
    /// until the returned [`Answered`] is dropped (when the request is
    /// answered); from then on only the latest frame's. The HTTP listener
    /// counts its requests' bodies with it too.
    pub(crate) fn counted<B>(&self, request: http::Request<B>) -> (http::Request<Body>, Answered)
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let held = Arc::new(Mutex::new(Held::default()));
        let layer = self.clone();
        let counted = Arc::clone(&held);
        let request = request.map(move |inner| {
            Body::new(Counted {
                inner: Body::new(inner),
                layer,
                held: counted,
            })
        });
        (request, Answered(held))
    }

    /// An answer of the HTTP listener, counted as gRPC answers are: each
    /// data frame holds its places from when the handler built it until the
    /// connection has written it (hyper keeps a frame's buffer until then),
    /// and tells `activity`, so a client that stops reading is closed after
    /// `--answer-stall-timeout`. `prepaid` holds places already taken for
    /// its first bytes (a whole JSON answer, refused before its headers if
    /// it did not fit); a later frame that does not fit ends the answer
    /// with an error (HTTP has no trailers to say why), which closes an
    /// HTTP/1.1 connection and resets an HTTP/2 stream.
    pub(crate) fn http_answer<B>(
        &self,
        body: B,
        activity: Option<Arc<Activity>>,
        prepaid: Option<Taken>,
    ) -> Body
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        Body::new(Answer {
            inner: Body::new(body),
            layer: self.clone(),
            activity,
            refused: false,
            prepaid,
            trailers: false,
        })
    }

    /// `bytes` places, or `RESOURCE_EXHAUSTED` naming the flag.
    pub(crate) fn take(&self, bytes: usize) -> Result<Taken, Status> {
        self.pool.take(bytes).ok_or_else(|| {
            Status::resource_exhausted(format!(
                "requests and answers in flight hold {} bytes, the limit \
                 (--max-request-bytes-in-flight); retry with backoff, or send smaller requests \
                 and ask for smaller pages",
                self.pool.limit
            ))
        })
    }
}

/// An answer whose data frames hold places in the budget until written.
struct Answer {
    inner: Body,
    layer: BudgetLayer,
    /// The connection's, which closes the connection when its answers wait
    /// unwritten for too long (`--answer-stall-timeout`).
    activity: Option<Arc<Activity>>,
    /// A frame did not fit: the answer ended with its status.
    refused: bool,
    /// Places taken before the answer started, used by its first frames.
    prepaid: Option<Taken>,
    /// Whether a refusal ends the answer as gRPC trailers (else an error).
    trailers: bool,
}

impl Answer {
    /// Places for a frame of `bytes`: from what was prepaid while it
    /// lasts, else from the budget.
    fn places(&mut self, bytes: usize) -> Result<Taken, Status> {
        if let Some(part) = self
            .prepaid
            .as_mut()
            .and_then(|prepaid| prepaid.split(bytes))
        {
            return Ok(part);
        }
        self.layer.take(bytes)
    }
}

/// A frame's bytes with their places in the budget: dropped (written, or
/// dropped with their stream), both go, and the connection learns that an
/// answer frame was written.
struct Placed {
    bytes: Bytes,
    _taken: Taken,
    activity: Option<Arc<Activity>>,
}

impl Placed {
    fn new(bytes: Bytes, taken: Taken, activity: Option<Arc<Activity>>) -> Placed {
        if let Some(activity) = &activity {
            activity.answer_waits();
        }
        Placed {
            bytes,
            _taken: taken,
            activity,
        }
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        if let Some(activity) = &self.activity {
            activity.answer_written();
        }
    }
}

impl AsRef<[u8]> for Placed {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl http_body::Body for Answer {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if self.refused {
            return Poll::Ready(None);
        }
        let frame = match std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(error)) => return Poll::Ready(Some(Err(error))),
            None => return Poll::Ready(None),
        };
        let bytes = match frame.into_data() {
            Ok(bytes) if !bytes.is_empty() => bytes,
            Ok(empty) => return Poll::Ready(Some(Ok(Frame::data(empty)))),
            Err(frame) => return Poll::Ready(Some(Ok(frame))),
        };
        match self.places(bytes.len()) {
            Ok(taken) => {
                let placed = Placed::new(bytes, taken, self.activity.clone());
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_owner(placed)))))
            }
            Err(status) if !self.trailers => {
                self.refused = true;
                Poll::Ready(Some(Err(status)))
            }
            Err(status) => {
                // The headers are gone; the status ends the answer as
                // trailers, and what the handler answered is dropped.
                self.refused = true;
                let mut trailers = http::HeaderMap::new();
                Poll::Ready(Some(
                    status
                        .add_header(&mut trailers)
                        .map(|()| Frame::trailers(trailers)),
                ))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.refused || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Gives back a request's places when dropped: the request is answered.
pub(crate) struct Answered(Arc<Mutex<Held>>);

impl Drop for Answered {
    fn drop(&mut self) {
        let mut held = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        held.answered = true;
        held.taken = None;
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
        let taken = self.layer.take(bytes)?;
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let answered = held.answered;
        match &mut held.taken {
            Some(earlier) if !answered => earlier.merge(taken),
            slot => *slot = Some(taken),
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
