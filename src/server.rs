//! Building and running kvserver.
//!
//! [`run`] is the one entry point: `kvserver`'s `main` and the tests both bind a
//! listener first (so port 0 works and the caller knows the real address), then
//! hand it over together with a store and a shutdown future.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tracing::info;

use crate::grpc::{Limits, TutorialService};
use crate::storage::Store;

/// How the server behaves, independent of where it listens and what it stores.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Key and value size limits.
    pub limits: Limits,
    /// Log one line per request, with the tutorial's wording.
    pub log_requests: bool,
}

/// Serves every gRPC service over `store` on `listener` until `shutdown`
/// resolves, then stops accepting connections, lets in-flight requests finish,
/// and returns.
pub async fn run<S: Store>(
    listener: TcpListener,
    store: S,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let store = Arc::new(store);
    let tutorial = TutorialService::new(Arc::clone(&store), config.limits, config.log_requests);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .add_service(tutorial.into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    info!("all connections closed");
    Ok(())
}
