//! Thread-per-core serving of the gRPC listener (`--serve-threads`).
//!
//! On tokio's work-stealing runtime a connection's request tasks wake and
//! run on whichever worker is free, so a request pays for cross-thread
//! wake-ups, futexes and cache misses; with empty handlers that was
//! 14-22 % of tonic's CPU per request (`docs/PERFORMANCE.md`, "Below
//! tonic's default floor"). Here each serving thread runs a current-thread
//! runtime and serves the connections handed to it wholly: the connection,
//! its request tasks, its deadline timer and its TLS handshake. The disk
//! store's committer answers each thread's writes in one wake-up per commit
//! (`storage::answer_here`).
//!
//! The acceptor stays on the shared runtime (`server::run`): it admits a
//! connection (`transport::Admission`: `--max-connections`, the connection
//! metrics), takes the socket off its runtime and hands it to the serving
//! thread with the fewest connections open (ties in turn), which tracks it
//! there (`transport::Tracked`, so its [`Deadline`](crate::connection)
//! timer is that thread's). `SO_REUSEPORT` listeners would leave the spread
//! to the kernel's hash of the peers (4 connections on 2 threads: 3 and 1,
//! or 4 and 0). The store's background work (lease expiry, compaction, the
//! disk store's committer thread, the etcd backend's channels) stays off
//! the serving threads: it is started on the shared runtime before they
//! are.
//!
//! Shutdown comes in two steps: [`ServeThreads::drain`] (every thread stops
//! taking connections and finishes its requests, as tonic's graceful
//! shutdown does) and [`ServeThreads::stop`] (after the drain or the grace:
//! each thread's runtime is shut down, closing whatever is left).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tracing::warn;

use crate::connection::Deadlines;
use crate::metrics::Metrics;
use crate::transport::{Admitted, Tracked};

/// The connections a server is given to serve (on one thread).
pub(crate) type Connections =
    Pin<Box<dyn Stream<Item = io::Result<Tracked<TcpStream>>> + Send + 'static>>;

/// When it resolves, the server stops accepting and finishes its requests.
pub(crate) type Signal = Pin<Box<dyn Future<Output = ()> + 'static>>;

/// A server serving its connections until its signal, and then until they
/// are done.
pub(crate) type Served<'a> =
    Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + 'a>>;

/// How long a stopping thread waits for its blocking tasks (a disk scan in
/// progress) before it leaves them.
const BLOCKING_WAIT: Duration = Duration::from_secs(1);

/// How long [`ServeThreads::stop`] waits for the threads to end.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// What the serving threads are told to do, in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Serving,
    Draining,
    Stopped,
}

/// One serving thread, as the acceptor sees it.
struct Thread {
    queue: mpsc::UnboundedSender<(Admitted<std::net::TcpStream>, ServedBy)>,
    open: Arc<AtomicUsize>,
    gauge: Option<Gauge>,
    /// Its server's outcome once drained; taken by [`ServeThreads::drain`].
    drained: Option<oneshot::Receiver<Result<(), tonic::transport::Error>>>,
    /// Dropped when the thread ends.
    ended: oneshot::Receiver<()>,
}

/// The serving threads of the gRPC listener.
pub(crate) struct ServeThreads {
    threads: Vec<Thread>,
    phase: watch::Sender<Phase>,
    /// Where the search for the least busy thread starts.
    next: usize,
}

/// A connection counted among its serving thread's for as long as it lives
/// (held by its `Tracked`).
pub(crate) struct ServedBy {
    open: Arc<AtomicUsize>,
    gauge: Option<Gauge>,
}

impl Drop for ServedBy {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(gauge) = &self.gauge {
            gauge.dec();
        }
    }
}

impl ServeThreads {
    /// `count` threads (named `kv-serve-N`), each with a current-thread
    /// runtime on which `serve` serves the connections handed to it, each
    /// connection closed when it carries no request for `deadlines`. Each
    /// thread's open connections are counted in `metrics`, if any.
    pub(crate) fn start<F>(
        count: usize,
        deadlines: Option<Deadlines>,
        metrics: Option<&Arc<Metrics>>,
        serve: F,
    ) -> io::Result<ServeThreads>
    where
        F: Fn(Connections, Signal) -> Served<'static> + Clone + Send + 'static,
    {
        let (phase, phases) = watch::channel(Phase::Serving);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            let (queue, handed) = mpsc::unbounded_channel();
            let (drained_tx, drained) = oneshot::channel();
            let (ended_tx, ended) = oneshot::channel::<()>();
            // Built here, so that a failure is the caller's error.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let phases = phases.clone();
            let serve = serve.clone();
            std::thread::Builder::new()
                .name(format!("kv-serve-{index}"))
                .spawn(move || {
                    serve_thread(runtime, handed, phases, deadlines, serve, drained_tx);
                    drop(ended_tx);
                })?;
            threads.push(Thread {
                queue,
                open: Arc::new(AtomicUsize::new(0)),
                gauge: metrics.map(|metrics| metrics.serve_thread(index)),
                drained: Some(drained),
                ended,
            });
        }
        Ok(ServeThreads {
            threads,
            phase,
            next: 0,
        })
    }

    /// Hands each connection of `admitted` to the thread with the fewest
    /// open (ties in turn), until `stop` resolves.
    pub(crate) async fn hand_out(
        &mut self,
        admitted: impl Stream<Item = io::Result<Admitted<TcpStream>>>,
        stop: impl Future<Output = ()>,
    ) {
        let mut admitted = std::pin::pin!(admitted);
        let mut stop = std::pin::pin!(stop);
        loop {
            let connection = tokio::select! {
                () = &mut stop => return,
                next = admitted.next() => match next {
                    Some(Ok(connection)) => connection,
                    // Already reported, after a pause (`transport`).
                    Some(Err(_)) => continue,
                    None => return,
                },
            };
            // Off this runtime's reactor, to be registered with the
            // serving thread's.
            let connection = match connection.try_map(TcpStream::into_std) {
                Ok(connection) => connection,
                Err(error) => {
                    warn!("cannot hand an accepted connection to a serving thread: {error}");
                    continue;
                }
            };
            let chosen = self.least_busy();
            let thread = &self.threads[chosen];
            thread.open.fetch_add(1, Ordering::Relaxed);
            if let Some(gauge) = &thread.gauge {
                gauge.inc();
            }
            let served_by = ServedBy {
                open: Arc::clone(&thread.open),
                gauge: thread.gauge.clone(),
            };
            // A thread that ended (it cannot, before it is told to) drops
            // the connection, which closes it.
            let _ = thread.queue.send((connection, served_by));
        }
    }

    /// The thread with the fewest connections open, the first in turn
    /// among equals; the turn moves past it. A thread that ended (its
    /// runtime panicked) is passed over: with no connections open it
    /// would otherwise be chosen for every other one, and close it.
    fn least_busy(&mut self) -> usize {
        let count = self.threads.len();
        let chosen = (0..count)
            .map(|offset| (self.next + offset) % count)
            .min_by_key(|&index| {
                let thread = &self.threads[index];
                (
                    thread.queue.is_closed(),
                    thread.open.load(Ordering::Relaxed),
                )
            })
            .expect("at least one serving thread");
        self.next = (chosen + 1) % count;
        chosen
    }

    /// Tells every thread to stop taking connections and to finish its
    /// requests; resolves when every thread has (with the first error of
    /// any).
    pub(crate) async fn drain(&mut self) -> Result<(), tonic::transport::Error> {
        self.phase.send_replace(Phase::Draining);
        let mut outcome = Ok(());
        for thread in &mut self.threads {
            let Some(drained) = thread.drained.take() else {
                continue;
            };
            match drained.await {
                Ok(Err(error)) if outcome.is_ok() => outcome = Err(error),
                Ok(_) => {}
                // A thread that ended without an outcome panicked.
                Err(_) => warn!("a serving thread ended before its connections were done"),
            }
        }
        outcome
    }

    /// Ends every thread, closing the connections still open, and waits
    /// for them to end (for a few seconds at most).
    pub(crate) async fn stop(mut self) {
        self.phase.send_replace(Phase::Stopped);
        let threads = std::mem::take(&mut self.threads);
        let ended = futures_util::future::join_all(threads.into_iter().map(|thread| thread.ended));
        if tokio::time::timeout(STOP_WAIT, ended).await.is_err() {
            warn!("serving threads still busy {STOP_WAIT:?} after the server stopped");
        }
    }
}

impl Drop for ServeThreads {
    fn drop(&mut self) {
        // Whatever ends the server (`stop`, or its future dropped), the
        // threads end with it.
        self.phase.send_replace(Phase::Stopped);
    }
}

/// One serving thread: `serve` on `runtime` over the connections `handed`
/// to it, until told to drain; its outcome into `drained`, and then it
/// waits to be stopped, so that what its requests left running (a store
/// call finishing after its client left) may finish.
fn serve_thread<F>(
    runtime: tokio::runtime::Runtime,
    handed: mpsc::UnboundedReceiver<(Admitted<std::net::TcpStream>, ServedBy)>,
    phases: watch::Receiver<Phase>,
    deadlines: Option<Deadlines>,
    serve: F,
    drained: oneshot::Sender<Result<(), tonic::transport::Error>>,
) where
    F: Fn(Connections, Signal) -> Served<'static>,
{
    runtime.block_on(async move {
        // The disk store's answers to this thread's writes, one wake-up per
        // commit (`storage::answer_here`).
        tokio::spawn(crate::storage::answer_here());
        let connections = UnboundedReceiverStream::new(handed)
            .map(move |(connection, served_by)| {
                let connection = connection.try_map(TcpStream::from_std)?;
                Ok(connection.track(deadlines).served_by(served_by))
            })
            // The server's connections end with its signal, not when the
            // acceptor stops (tonic would drain at once).
            .chain(tokio_stream::pending());
        let draining = reached(phases.clone(), Phase::Draining);
        let mut stopped = std::pin::pin!(reached(phases, Phase::Stopped));
        tokio::select! {
            outcome = serve(Box::pin(connections), Box::pin(draining)) => {
                let _ = drained.send(outcome);
                stopped.await;
            }
            () = &mut stopped => {}
        }
    });
    runtime.shutdown_timeout(BLOCKING_WAIT);
}

/// Resolves once `phases` reaches `phase` (or its sender is gone).
async fn reached(mut phases: watch::Receiver<Phase>, phase: Phase) {
    let _ = phases.wait_for(|now| *now >= phase).await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::metrics::Listener;
    use crate::transport::Admission;

    #[tokio::test]
    async fn a_thread_that_panicked_is_handed_no_more_connections() {
        // The first thread to start panics; the other answers each
        // connection with one byte.
        let panicked = Arc::new(AtomicBool::new(false));
        let serve = move |mut connections: Connections, signal: Signal| -> Served<'static> {
            let first = !panicked.swap(true, Ordering::SeqCst);
            Box::pin(async move {
                assert!(!first, "a serving thread's panic, on purpose");
                let mut signal = signal;
                loop {
                    tokio::select! {
                        () = &mut signal => return Ok(()),
                        next = connections.next() => {
                            if let Some(Ok(mut connection)) = next {
                                let _ = connection.write_all(b"k").await;
                            }
                        }
                    }
                }
            })
        };
        let mut threads = ServeThreads::start(2, None, None, serve).unwrap();
        let (ended, _, _) = futures_util::future::select_all(
            threads.threads.iter_mut().map(|thread| &mut thread.ended),
        )
        .await;
        assert!(ended.is_err(), "a thread ended with its sender dropped");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let admitted = Admission::new(None, None).admitted(listener, Listener::Grpc);
        let (stop, stopped) = oneshot::channel::<()>();
        let clients = async move {
            for client in 0..4 {
                let mut socket = TcpStream::connect(address).await.unwrap();
                let mut answer = Vec::new();
                socket.read_to_end(&mut answer).await.unwrap();
                assert_eq!(answer, b"k", "connection {client} was closed unserved");
            }
            drop(stop);
        };
        let handing = threads.hand_out(admitted, async {
            let _ = stopped.await;
        });
        tokio::join!(clients, handing);
    }
}
