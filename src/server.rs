//! Building and running kvserver.
//!
//! [`run`] is the one entry point: `kvserver`'s `main` and the tests both bind a
//! listener first (so port 0 works and the caller knows the real address), then
//! hand it over together with a store and a shutdown future.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};

use crate::grpc::{KvService, Limits, TutorialService, oversize_layer};
use crate::storage::Store;

/// How the server behaves, independent of where it listens and what it stores.
#[derive(Clone, Debug)]
pub struct Config {
    /// Key and value size limits.
    pub limits: Limits,
    /// Log one line per request, with the tutorial's wording.
    pub log_requests: bool,
    /// After shutdown starts, how long in-flight requests and idle connections
    /// get to finish before the server stops anyway.
    pub shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: Limits::default(),
            log_requests: false,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Serves every gRPC service over `store` on `listener` until `shutdown`
/// resolves, then stops accepting connections, lets in-flight requests finish
/// (for at most `config.shutdown_grace`), and returns.
pub async fn run<S: Store>(
    listener: TcpListener,
    store: S,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let store = Arc::new(store);
    let tutorial = TutorialService::new(Arc::clone(&store), config.limits, config.log_requests);
    let kv = KvService::new(Arc::clone(&store), config.limits);
    let expiry = tokio::spawn(expire_leases(Arc::clone(&store)));
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));

    // tonic's graceful shutdown waits for every connection to close, and a
    // client that never answers the server's GOAWAY would hold it forever; the
    // grace timer starts when shutdown does and bounds that wait.
    let (shutdown_started, grace_starts) = oneshot::channel::<()>();
    let serve = Server::builder()
        .layer(oversize_layer(config.limits))
        .add_service(tutorial.into_server())
        .add_service(kv.into_server())
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            let _ = shutdown_started.send(());
        });
    let grace_over = async move {
        if grace_starts.await.is_ok() {
            tokio::time::sleep(config.shutdown_grace).await;
        } else {
            // The server ended without a shutdown (an error): nothing to time.
            std::future::pending::<()>().await;
        }
    };
    let served = tokio::select! {
        result = serve => {
            result.map(|()| info!("all connections closed"))
        }
        () = grace_over => {
            warn!(
                "shutdown grace of {:?} is over: closing the remaining connections",
                config.shutdown_grace
            );
            Ok(())
        }
    };
    expiry.abort();
    // Whatever ended the serving, acknowledged writes must reach the disk
    // before the process exits.
    if let Err(error) = store.flush().await {
        warn!("flushing the store at shutdown failed: {error}");
    }
    served
}

/// How often expired leases are deleted. Readers stop seeing their keys at
/// the deadline anyway; this only bounds how late watchers hear of it.
const EXPIRY_INTERVAL: Duration = Duration::from_millis(100);

/// Deletes the keys of expired leases, forever (the server aborts it).
async fn expire_leases<S: Store>(store: Arc<S>) {
    let mut ticks = tokio::time::interval(EXPIRY_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match store.expire_leases().await {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!(deleted, "deleted the keys of expired leases"),
            Err(error) => warn!("expiring leases failed: {error}"),
        }
    }
}
