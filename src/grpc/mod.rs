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
mod convert;
mod kv;
mod oversize;
mod shed;
mod status;
mod tutorial;
mod validate;

pub(crate) use auth::AuthLayer;
pub use auth::{Role, Scope, Tokens};
pub use kv::KvService;
pub(crate) use oversize::layer as oversize_layer;
pub(crate) use shed::ShedLayer;
pub use tutorial::TutorialService;
pub use validate::Limits;
