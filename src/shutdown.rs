//! The shutdown signal: a future that resolves on the first SIGINT or SIGTERM.
//!
//! Shutdown is explicit: `kvserver` passes this future to [`crate::server::run`],
//! which stops accepting connections when it resolves and returns once in-flight
//! requests are done. Tests pass a future of their own instead.

use std::future::Future;
use std::io;

use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

/// Installs the SIGINT and SIGTERM handlers now (so a signal that arrives while
/// the server starts is not lost) and returns a future that resolves on the first
/// of them.
pub fn on_signal() -> io::Result<impl Future<Output = ()>> {
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
