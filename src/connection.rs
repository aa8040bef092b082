//! What the server tracks per connection: its deadlines (a connection that
//! carries no request is closed) and its requests in flight (a limit per
//! connection, checked before the server-wide one, so that one client
//! cannot take every place).
//!
//! A peer that connects and then says nothing (an idle socket, half an HTTP/2
//! preface, a client that went away without a FIN) would otherwise hold one
//! of `--max-connections`'s places, a file descriptor and its buffers for
//! good; a hundred of them locked every other client out. HTTP/2 keepalive
//! pings (set in `server.rs`) find peers that are gone; this finds peers that
//! are there and do nothing.
//!
//! Two parts meet through the connection's [`Activity`]:
//! - [`Deadline`], held by the connection's byte stream
//!   (`transport::Tracked`, the one wrapper of every accepted connection).
//!   When the connection
//!   has had no request open for the deadline (`--first-request-timeout`
//!   before its first request, `--idle-timeout` after), its next read ends
//!   the connection.
//! - [`ActivityLayer`], a tower layer, counts each request open from its
//!   headers until its response body ends (so a watch that streams nothing
//!   for an hour keeps its connection), and finds the connection's
//!   [`Activity`] in the connect info tonic attaches to every request. The
//!   HTTP listener (`http::serve`) attaches the same connect info and counts
//!   with [`request_opened`], so a Server-Sent Events watch keeps its
//!   connection too.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Sleep;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

use crate::grpc::LayerFuture;

/// How long a connection may go without a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// From accept to the first request's headers.
    pub first_request: Duration,
    /// From the end of the last request (with its response) to the next.
    pub idle: Duration,
    /// While answers wait unwritten (their client reads none of them), from
    /// the last answer byte written (or the first waiting): the bytes they
    /// hold count in `--max-request-bytes-in-flight`, so a client that asks
    /// and never reads must not hold them for good.
    pub answer_stall: Duration,
}

/// What a connection is doing, shared by its byte stream and its requests.
#[derive(Debug)]
pub struct Activity {
    /// Requests whose response has not ended.
    open: AtomicUsize,
    /// Requests whose response has not started (what admission limits: a
    /// watch holds its place only until it is set up).
    in_flight: AtomicUsize,
    /// Whether a request ever came.
    requested: AtomicBool,
    /// When `open` last went to zero (or the connection was accepted), in
    /// milliseconds since `epoch`.
    quiet_since: AtomicU64,
    /// Answer frames encoded and not yet written (`grpc::budget`).
    unwritten: AtomicUsize,
    /// Answer frames written so far: the [`Deadline`] notes when it sees
    /// this change, so that no frame reads the clock.
    written: AtomicU64,
    epoch: Instant,
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity {
            open: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            requested: AtomicBool::new(false),
            quiet_since: AtomicU64::new(0),
            unwritten: AtomicUsize::new(0),
            written: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn now_millis(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn started(self: &Arc<Self>) -> RequestGuard {
        self.requested.store(true, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::AcqRel);
        RequestGuard(Arc::clone(self))
    }

    /// An answer frame begins to wait to be written.
    pub(crate) fn answer_waits(&self) {
        self.unwritten.fetch_add(1, Ordering::AcqRel);
    }

    /// An answer frame was written (or dropped with its stream).
    pub(crate) fn answer_written(&self) {
        self.written.fetch_add(1, Ordering::AcqRel);
        self.unwritten.fetch_sub(1, Ordering::AcqRel);
    }

    /// When the connection's deadline falls, or `None` while a request is
    /// open (and no answer waits unwritten). `answers_since`: while answers
    /// wait, when the [`Deadline`] last saw one written, or saw the first
    /// begin to wait.
    fn deadline(&self, deadlines: Deadlines, answers_since: Option<Instant>) -> Option<Instant> {
        if let Some(since) = answers_since {
            return Some(since + deadlines.answer_stall);
        }
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        let allowed = if self.requested.load(Ordering::Relaxed) {
            deadlines.idle
        } else {
            deadlines.first_request
        };
        let quiet_since = Duration::from_millis(self.quiet_since.load(Ordering::Acquire));
        Some(self.epoch + quiet_since + allowed)
    }
}

impl Activity {
    /// A place among the connection's requests in flight, or `None` if it
    /// already has `limit`.
    pub(crate) fn enter(self: &Arc<Self>, limit: usize) -> Option<InFlight> {
        let entered = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            });
        entered.ok().map(|_| InFlight(Arc::clone(self)))
    }
}

/// A request's place among its connection's requests in flight.
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One open request; the connection is quiet again once every guard drops.
pub(crate) struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let now = self.0.now_millis();
        self.0.quiet_since.store(now, Ordering::Release);
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connect info of a connection (`transport::Tracked`): the inner
/// one's, and the connection's [`Activity`].
#[derive(Clone)]
pub struct WithActivity<I> {
    /// What the wrapped connection reports (its peer address).
    pub inner: I,
    pub(crate) activity: Arc<Activity>,
}

impl<I: std::fmt::Debug> std::fmt::Debug for WithActivity<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

/// A connection's deadline: the timer, and the check its reads make. The
/// connection's byte stream (`transport::Tracked`) holds one and reads
/// through [`Deadline::poll_read`].
pub(crate) struct Deadline {
    deadlines: Deadlines,
    timer: Pin<Box<Sleep>>,
    /// While answers wait unwritten: the count of frames written when last
    /// looked at, and when it was first seen at that count.
    answers: Option<(u64, Instant)>,
}

impl Deadline {
    /// The deadline of a connection accepted now.
    pub(crate) fn new(deadlines: Deadlines) -> Deadline {
        let first = tokio::time::Instant::now() + deadlines.first_request;
        Deadline {
            deadlines,
            timer: Box::pin(tokio::time::sleep_until(first)),
            answers: None,
        }
    }

    /// How often the timer looks at waiting answers: a connection whose
    /// answers stall is closed between `--answer-stall-timeout` and 1.25
    /// times it after the last was written.
    fn answers_check(&self) -> Duration {
        self.deadlines.answer_stall / 4
    }

    /// Notes whether answers wait unwritten and whether any was written
    /// since the last look; an answer that began to wait brings the timer
    /// forward.
    fn look_at_answers(&mut self, activity: &Activity) {
        if activity.unwritten.load(Ordering::Acquire) == 0 {
            self.answers = None;
            return;
        }
        let written = activity.written.load(Ordering::Acquire);
        if matches!(self.answers, Some((seen, _)) if seen == written) {
            return;
        }
        let now = Instant::now();
        self.answers = Some((written, now));
        let check = tokio::time::Instant::from_std(now + self.answers_check());
        if check < self.timer.deadline() {
            self.timer.as_mut().reset(check);
        }
    }

    /// Whether the deadline has passed; otherwise arms the timer for it (or
    /// for a check one idle period from now, while a request is open).
    fn expired(&mut self, activity: &Activity, cx: &mut Context<'_>) -> bool {
        self.look_at_answers(activity);
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            self.look_at_answers(activity);
            let now = Instant::now();
            let since = self.answers.map(|(_, since)| since);
            let next = match activity.deadline(self.deadlines, since) {
                Some(deadline) if deadline <= now => return true,
                // While answers wait, looked at again before it falls.
                Some(deadline) if since.is_some() => {
                    tokio::time::Instant::from_std(deadline.min(now + self.answers_check()))
                }
                Some(deadline) => tokio::time::Instant::from_std(deadline),
                // Checked again after an idle period, or sooner should an
                // answer begin to wait meanwhile.
                None => {
                    tokio::time::Instant::now()
                        + self.deadlines.idle.min(self.deadlines.answer_stall)
                }
            };
            self.timer.as_mut().reset(next);
        }
    }

    /// After a write that could not go on (`Pending`): the error that ends
    /// the connection if its deadline has passed, else `None` with the
    /// timer armed to wake the writer at the deadline. An HTTP/1.1
    /// connection blocked writing an answer its client does not read reads
    /// nothing meanwhile (its client's next requests are already buffered),
    /// so its reads alone would never see the deadline.
    pub(crate) fn write_stalled(
        &mut self,
        activity: &Activity,
        cx: &mut Context<'_>,
    ) -> Option<std::io::Error> {
        if !self.expired(activity, cx) {
            return None;
        }
        tracing::debug!("closing a connection whose answers went unread, for its deadline");
        Some(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "answers on this connection went unread for --answer-stall-timeout",
        ))
    }

    /// A read of `inner` that ends the connection (an error) once the
    /// deadline has passed with no request open.
    pub(crate) fn poll_read<T: AsyncRead + Unpin>(
        &mut self,
        activity: &Activity,
        inner: &mut T,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.expired(activity, cx) {
            return Pin::new(inner).poll_read(cx, buf);
        }
        // Bytes that already arrived (a request racing the deadline) are
        // read, not thrown away with the connection: the deadline counts
        // from them.
        let filled = buf.filled().len();
        match Pin::new(inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > filled => {
                activity
                    .quiet_since
                    .store(activity.now_millis(), Ordering::Release);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let requested = activity.requested.load(Ordering::Relaxed);
                tracing::debug!(
                    requested,
                    "closing a connection that carried no request, or whose answers went \
                     unread, for its deadline"
                );
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no request on this connection for the idle timeout, or its answers unread \
                     for --answer-stall-timeout",
                )))
            }
            closed_or_failed => closed_or_failed,
        }
    }
}

/// The connection's activity, from a request's extensions: plaintext, or
/// TLS over a tracked TCP connection; `None` for a connection the server
/// did not accept itself.
pub(crate) fn activity_of<B>(request: &http::Request<B>) -> Option<&Arc<Activity>> {
    let extensions = request.extensions();
    extensions
        .get::<WithActivity<TcpConnectInfo>>()
        .map(|info| &info.activity)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<WithActivity<TcpConnectInfo>>>()
                .map(|info| &info.get_ref().activity)
        })
}

/// Counts every request open on its connection until its response ends.
#[derive(Clone, Copy, Debug, Default)]
pub struct ActivityLayer;

impl<S> Layer<S> for ActivityLayer {
    type Service = CountActivity<S>;

    fn layer(&self, inner: S) -> CountActivity<S> {
        CountActivity { inner }
    }
}

/// See [`ActivityLayer`].
#[derive(Clone, Debug)]
pub struct CountActivity<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for CountActivity<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = LayerFuture<Self::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let guard = request_opened(&request);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(match guard {
                Some(guard) => {
                    response.map(|body| tonic::body::Body::new(guard.until_end_of(body)))
                }
                None => response,
            })
        })
    }
}

/// Counts `request` open on its connection (`None`: a connection the
/// server did not accept itself) until the guard, or the response body
/// it is moved into ([`RequestGuard::until_end_of`]), drops. The gRPC
/// listener counts through [`ActivityLayer`], the HTTP one through its
/// router's outermost layer (`http::count_activity`).
pub(crate) fn request_opened<B>(request: &http::Request<B>) -> Option<RequestGuard> {
    activity_of(request).map(Activity::started)
}

impl RequestGuard {
    /// `body`, keeping the request counted open until it is dropped (for a
    /// stream, when it ends).
    pub(crate) fn until_end_of<T>(self, body: T) -> GuardedBody<T> {
        GuardedBody {
            inner: body,
            _guard: self,
        }
    }
}

/// A response body that keeps its request counted open until it is dropped.
pub(crate) struct GuardedBody<T> {
    inner: T,
    _guard: RequestGuard,
}

impl<T: http_body::Body<Data = bytes::Bytes> + Unpin> http_body::Body for GuardedBody<T> {
    type Data = bytes::Bytes;
    type Error = T::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
