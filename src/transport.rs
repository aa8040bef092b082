//! Accepting connections, for every listener of the server (gRPC and HTTP).
//!
//! One place decides what happens between `accept` and a protocol: a failed
//! accept pauses instead of spinning ([`pause_after_failed_accepts`]), the
//! connection limit closes one connection too many at once ([`Admission`],
//! one limit shared by every listener), and an admitted connection is
//! [`Tracked`]: counted open in the metrics while it lives and holding its
//! place under the limit. TLS comes after admission (`tls::incoming`), so a
//! flood of connections beyond the limit costs no handshakes.
//!
//! An admitted connection may be served on another thread than the one that
//! accepted it (`serving`, the gRPC listener's serving threads): it is
//! [`Admitted`] where it is accepted and [`Tracked`] where it is served, so
//! that its deadline timer belongs to the runtime that serves it.
//!
//! The arrows point one way: `server`, `serving` and `http` use this module
//! (`serving` only lends it the count a connection keeps of its thread,
//! `ServedBy`), this module uses `metrics` (to count connections), and
//! `metrics` uses neither.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::TcpIncoming;
use tracing::warn;

use crate::connection::{Activity, Deadline, Deadlines, WithActivity};
use crate::metrics::{ConnectionGuard, Listener, Metrics};
use crate::serving::ServedBy;

/// The connection limit: a connection beyond it is closed as soon as it is
/// accepted (its client sees UNAVAILABLE and may try another server).
/// Clones share the limit.
#[derive(Clone)]
pub(crate) struct Admission {
    places: Option<(Arc<tokio::sync::Semaphore>, usize)>,
    refusals: Arc<ThrottledWarning>,
    metrics: Option<Arc<Metrics>>,
}

impl Admission {
    /// At most `limit` connections at once (none: no limit); each counted in
    /// `metrics` if there are any.
    pub(crate) fn new(limit: Option<usize>, metrics: Option<Arc<Metrics>>) -> Admission {
        Admission {
            places: limit.map(|limit| (Arc::new(tokio::sync::Semaphore::new(limit)), limit)),
            refusals: Arc::default(),
            metrics,
        }
    }

    /// The accepted connection, counted, or `None` if it is one too many.
    fn admit<T, E>(
        &self,
        accepted: Result<T, E>,
        listener: Listener,
    ) -> Option<Result<Admitted<T>, E>> {
        let io = match accepted {
            Ok(io) => io,
            Err(error) => return Some(Err(error)),
        };
        let place = match &self.places {
            None => None,
            Some((places, limit)) => match Arc::clone(places).try_acquire_owned() {
                Ok(place) => Some(place),
                Err(_) => {
                    if let Some(refused) = self.refusals.occurred() {
                        warn!(
                            refused,
                            "{limit} connections are open, the limit (--max-connections): \
                             closed {refused} new one(s) since the last warning"
                        );
                    }
                    return None;
                }
            },
        };
        Some(Ok(Admitted {
            io,
            guard: self
                .metrics
                .as_ref()
                .map(|metrics| metrics.connection(listener)),
            place,
        }))
    }

    /// The connections of `socket` that this admission lets in (TCP, with
    /// no delay), in the order they arrive, counted as `listener`'s, not yet
    /// [`Tracked`]: the gRPC listener hands them to its serving threads
    /// (`serving`), which track them there, so that their deadline timers
    /// are the serving thread's.
    pub(crate) fn admitted(
        self,
        socket: TcpListener,
        listener: Listener,
    ) -> impl Stream<Item = io::Result<Admitted<TcpStream>>> + Send + 'static {
        pause_after_failed_accepts(TcpIncoming::from(socket).with_nodelay(Some(true)))
            .filter_map(move |stream| self.admit(stream, listener))
    }

    /// The connections of `socket` that this admission lets in, as
    /// [`admitted`](Self::admitted) gives them, each [`Tracked`] on the
    /// runtime that polls the stream: closed when it carries no request for
    /// `deadlines` (if any).
    pub(crate) fn connections(
        self,
        socket: TcpListener,
        listener: Listener,
        deadlines: Option<Deadlines>,
    ) -> impl Stream<Item = io::Result<Tracked<TcpStream>>> + Send + 'static {
        self.admitted(socket, listener)
            .map(move |admitted| admitted.map(|admitted| admitted.track(deadlines)))
    }
}

/// A connection let in by [`Admission`], counted and holding its place,
/// before it is [`Tracked`].
pub(crate) struct Admitted<T> {
    io: T,
    guard: Option<ConnectionGuard>,
    place: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl<T> Admitted<T> {
    /// The same connection, counted and placed, over `change(io)`: a
    /// tokio socket taken off its runtime to be handed to another, say.
    pub(crate) fn try_map<U>(
        self,
        change: impl FnOnce(T) -> io::Result<U>,
    ) -> io::Result<Admitted<U>> {
        Ok(Admitted {
            io: change(self.io)?,
            guard: self.guard,
            place: self.place,
        })
    }

    /// Tracked from now on: its [`Activity`] starts, and its [`Deadline`]
    /// (if `deadlines`) is a timer of the runtime this is called on.
    pub(crate) fn track(self, deadlines: Option<Deadlines>) -> Tracked<T> {
        Tracked {
            inner: self.io,
            activity: Arc::new(Activity::new()),
            deadline: deadlines.map(Deadline::new),
            _guard: self.guard,
            _place: self.place,
            _served_by: None,
        }
    }
}

/// A warning that may recur often, given at most once per [`WARN_EVERY`]
/// with how many times its cause happened since the last: a client that
/// reconnects in a loop, or a listener out of file descriptors, must not
/// flood the log.
#[derive(Default)]
pub(crate) struct ThrottledWarning {
    /// When the last warning went out, and the occurrences since.
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

/// The least time between two warnings about the same cause.
const WARN_EVERY: Duration = Duration::from_secs(10);

impl ThrottledWarning {
    /// Counts one occurrence; returns how many to report if a warning is due.
    pub(crate) fn occurred(&self) -> Option<u64> {
        let mut state = self.state.lock().expect("throttled warning lock");
        let (last_warning, unreported) = &mut *state;
        *unreported += 1;
        let now = std::time::Instant::now();
        if last_warning.is_some_and(|last| now.duration_since(last) < WARN_EVERY) {
            return None;
        }
        *last_warning = Some(now);
        Some(std::mem::take(unreported))
    }
}

/// Pause after a failed accept before the next.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// The accepted connections, where a failed accept is followed by a pause
/// (and a warning, now and then). A failure such as EMFILE (out of file
/// descriptors) lasts, and the listener stays readable meanwhile: retrying at
/// once, which is what tonic does after skipping the error, spins a core
/// until a descriptor frees up.
fn pause_after_failed_accepts<T>(
    accepted: impl Stream<Item = io::Result<T>>,
) -> impl Stream<Item = io::Result<T>> {
    let failures = Arc::new(ThrottledWarning::default());
    accepted.then(move |accepted| {
        let failures = Arc::clone(&failures);
        async move {
            if let Err(error) = &accepted {
                if let Some(failed) = failures.occurred() {
                    warn!(
                        failed,
                        "accepting a connection failed: {error} ({failed} time(s) since the \
                         last warning); if out of file descriptors, raise the limit (ulimit \
                         -n, LimitNOFILE) or lower --max-connections"
                    );
                }
                tokio::time::sleep(ACCEPT_PAUSE).await;
            }
            accepted
        }
    })
}

/// A connection counted open for as long as it lives (when metrics are on),
/// holding its place under the connection limit (when there is one), with
/// its requests' [`Activity`] (which the request layers find in its connect
/// info) and the [`Deadline`] that closes it when it carries none.
pub(crate) struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
    /// `None`: no deadlines (`--first-request-timeout 0` and
    /// `--idle-timeout 0`).
    deadline: Option<Deadline>,
    _guard: Option<ConnectionGuard>,
    _place: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The serving thread's count of its connections (`serving`), when
    /// one serves it.
    _served_by: Option<ServedBy>,
}

impl<T> Tracked<T> {
    /// Counted among `thread`'s connections for as long as it lives.
    pub(crate) fn served_by(mut self, thread: ServedBy) -> Tracked<T> {
        self._served_by = Some(thread);
        self
    }

    /// `progress` of a write, or the error that ends the connection if the
    /// write cannot go on past the connection's deadline.
    fn stalled<R>(
        &mut self,
        progress: Poll<std::io::Result<R>>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<R>> {
        if progress.is_pending()
            && let Some(deadline) = &mut self.deadline
            && let Some(error) = deadline.write_stalled(&self.activity, cx)
        {
            return Poll::Ready(Err(error));
        }
        progress
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Tracked<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match &mut this.deadline {
            Some(deadline) => deadline.poll_read(&this.activity, &mut this.inner, cx, buf),
            None => Pin::new(&mut this.inner).poll_read(cx, buf),
        }
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.stalled(written, cx)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let flushed = Pin::new(&mut self.inner).poll_flush(cx);
        self.stalled(flushed, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.stalled(written, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for Tracked<T> {
    type ConnectInfo = WithActivity<T::ConnectInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        WithActivity {
            inner: self.inner.connect_info(),
            activity: Arc::clone(&self.activity),
        }
    }
}
