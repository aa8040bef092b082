//! The gRPC layer: services that turn wire requests into [`Store`] calls.
//!
//! Every handler has the same three steps, as in etcd's `v3rpc`: validate the
//! request against the configured [`Limits`], delegate to the store, and map a
//! [`StoreError`] to a status through the one table in `status`. Handlers hold no
//! state of their own beyond the store and their configuration.
//!
//! [`Store`]: crate::storage::Store
//! [`StoreError`]: crate::storage::StoreError

mod access;
mod auth;
mod budget;
pub(crate) mod codec;
mod convert;
mod kv;
mod leases;
pub(crate) mod methods;
mod oversize;
mod request_log;
mod shed;
mod status;
mod tutorial;
mod validate;

pub(crate) use access::{Checks, scope_of};
pub(crate) use auth::{AuthLayer, authorize, identify};
pub use auth::{Role, Scope, Tokens};
pub(crate) use budget::BudgetLayer;
pub use budget::DEFAULT_MAX_REQUEST_BYTES_IN_FLIGHT;
pub use kv::{DEFAULT_SNAPSHOT_STALL, KvService};
pub(crate) use oversize::layer as oversize_layer;
pub(crate) use request_log::layer as request_log_layer;
pub(crate) use shed::{Place, ShedLayer};
pub use tutorial::TutorialService;
pub use validate::Limits;

/// The future of a request through one of the server's tower layers (auth,
/// shedding, metrics): boxed, since each layer may answer without the inner
/// service.
pub(crate) type LayerFuture<R, E> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<R, E>> + Send>>;

/// Whether `path` is a health check, which no token guards and no limit
/// sheds: probes must see a busy or locked-down server as alive.
pub(crate) fn is_health_check(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
}
