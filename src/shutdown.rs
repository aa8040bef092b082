//! The shutdown signal: a future that resolves on the first SIGINT or SIGTERM.
//!
//! Shutdown is explicit: `kvserver` passes this future to [`crate::server::run`],
//! which stops accepting connections when it resolves and returns once in-flight
//! requests are done. Tests pass a future of their own instead.
//!
//! SIGHUP is taken over here too, before the server announces its address:
//! its default action ends the process, and a `systemctl reload` that comes
//! as soon as the server is up must not kill it. The server's own SIGHUP
//! listener (which reloads TLS) starts later, in [`crate::server::run`].

use std::future::Future;
use std::io;

use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

/// Installs the SIGINT, SIGTERM and SIGHUP handlers now (so a signal that arrives while
/// the server starts is not lost) and returns a future that resolves on the first
/// of them.
pub fn on_signal() -> io::Result<impl Future<Output = ()>> {
    // Once tokio listens for a signal, the default action is off for the
    // rest of the process's life, whether or not the listener is kept.
    drop(signal(SignalKind::hangup())?);
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        info!("received {name}: finishing in-flight requests, then exiting");
    })
}

/// Whether the server is stopping, for the streams that would otherwise
/// hold a graceful shutdown open until its grace runs out (a watch has no
/// end of its own), and for the HTTP listener (which stops accepting, and
/// whose `/healthz` turns 503). Cheap to clone; one per long-lived stream.
#[derive(Clone, Debug)]
pub struct Stopping(tokio::sync::watch::Receiver<bool>);

/// Tells every [`Stopping`] that the server stops.
#[derive(Debug)]
pub struct StopAll(tokio::sync::watch::Sender<bool>);

/// A pair: the [`StopAll`] the server keeps, and the [`Stopping`] it hands
/// to its services.
pub fn stopping() -> (StopAll, Stopping) {
    let (sender, receiver) = tokio::sync::watch::channel(false);
    (StopAll(sender), Stopping(receiver))
}

impl StopAll {
    /// Every stream under a [`Stopping`] ends now.
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

impl Stopping {
    /// A handle that never stops (tests, and services built without a server).
    pub fn never() -> Stopping {
        let (sender, receiver) = tokio::sync::watch::channel(false);
        // Dropping the sender leaves the value false for good.
        drop(sender);
        Stopping(receiver)
    }

    /// Whether the server has started to stop.
    pub fn is_stopping(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the server starts to stop (never, for
    /// [`Stopping::never`]).
    pub async fn stopped(&self) {
        let mut receiver = self.0.clone();
        // An error means the sender is gone without a stop: never.
        if receiver.wait_for(|stopping| *stopping).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// `stream`, ended early when the server stops: then one last item,
    /// `farewell()` (a status that tells the client to reconnect), and the
    /// end.
    pub fn interrupt<S, T>(
        &self,
        stream: S,
        farewell: impl FnOnce() -> T + Send + Unpin + 'static,
    ) -> impl tokio_stream::Stream<Item = T> + Send + 'static
    where
        S: tokio_stream::Stream<Item = T> + Send + 'static,
        T: Send + 'static,
    {
        let stopping = self.clone();
        let stopped = Box::pin(async move { stopping.stopped().await });
        Interrupted {
            inner: Box::pin(stream),
            stopped,
            farewell: Some(farewell),
        }
    }
}

/// See [`Stopping::interrupt`].
struct Interrupted<T, F> {
    inner: std::pin::Pin<Box<dyn tokio_stream::Stream<Item = T> + Send>>,
    stopped: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    /// `None` once the farewell went out: the stream has ended.
    farewell: Option<F>,
}

impl<T, F: FnOnce() -> T + Unpin> tokio_stream::Stream for Interrupted<T, F> {
    type Item = T;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        use std::task::Poll;
        if self.farewell.is_none() {
            return Poll::Ready(None);
        }
        if self.stopped.as_mut().poll(cx).is_ready() {
            let farewell = self.farewell.take().expect("checked above");
            return Poll::Ready(Some(farewell()));
        }
        self.inner.as_mut().poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_stream::StreamExt;

    use super::*;

    #[tokio::test]
    async fn a_stream_ends_with_its_farewell_when_the_server_stops() {
        let (stop, stopping) = stopping();
        let endless = tokio_stream::iter(0..).then(|n| async move {
            tokio::task::yield_now().await;
            n
        });
        let mut stream = Box::pin(stopping.interrupt(endless, || -1));
        assert_eq!(stream.next().await, Some(0));
        stop.stop();
        assert_eq!(stream.next().await, Some(-1));
        assert_eq!(stream.next().await, None);
    }

    #[tokio::test]
    async fn never_never_stops() {
        let stopping = Stopping::never();
        let mut stream = Box::pin(stopping.interrupt(tokio_stream::pending::<i32>(), || -1));
        let waited = tokio::time::timeout(Duration::from_millis(100), stream.next()).await;
        assert!(waited.is_err());
    }
}
