//! etcd's v3 gRPC API over our [`Store`], on the same listener as our two
//! APIs, so that etcd's own clients (`etcdctl`, Go's clientv3 and its
//! `concurrency` package, python-etcd3) work against kvserver unchanged.
//!
//! Each service is a thin adapter, as our own API's are: `convert` turns
//! etcd's requests into storage ops (through the same [`Checks`] of limits
//! and token scope) and answers back into etcd's messages; the store
//! decides what they mean (`storage::apply`); `errors` renders failures
//! with etcd's exact messages, which etcd's clients match to typed errors.
//! What etcd serves and kvserver does not is refused by name
//! (`docs/ETCD.md` lists every RPC and field).
//!
//! - `kv`: `etcdserverpb.KV` (Range, Put, DeleteRange, Txn, Compact).
//! - `watch`: `etcdserverpb.Watch`, many watches over one stream.
//! - `lease`: `etcdserverpb.Lease`.
//! - `lock`, `election`: etcd's server-side `v3lockpb.Lock` and
//!   `v3electionpb.Election`, the `clientv3/concurrency` recipes run in the
//!   server (`concurrency`).
//! - `auth`: `etcdserverpb.Auth`'s Authenticate over `--auth-token-file`.
//! - `maintenance`: `etcdserverpb.Maintenance` and `etcdserverpb.Cluster`:
//!   this server as a one-member cluster (`identity`).
//!
//! [`Store`]: crate::storage::Store
//! [`Checks`]: crate::grpc::Checks

mod auth;
mod concurrency;
mod convert;
mod election;
mod errors;
mod identity;
mod kv;
mod lease;
mod lock;
mod maintenance;
mod nested;
mod txn_rules;
mod watch;

use std::sync::Arc;

use crate::shutdown::Stopping;

use tonic::transport::server::Router;

use crate::grpc::{Limits, Tokens};
use crate::proto::etcd::etcdserverpb::auth_server::AuthServer;
use crate::proto::etcd::etcdserverpb::cluster_server::ClusterServer;
use crate::proto::etcd::etcdserverpb::kv_server::KvServer;
use crate::proto::etcd::etcdserverpb::lease_server::LeaseServer;
use crate::proto::etcd::etcdserverpb::maintenance_server::MaintenanceServer;
use crate::proto::etcd::etcdserverpb::watch_server::WatchServer;
use crate::proto::etcd::v3electionpb::election_server::ElectionServer;
use crate::proto::etcd::v3lockpb::lock_server::LockServer;
use crate::storage::{Revision, Store};

pub(crate) use identity::Identity;

/// What every etcd service shares: the store, the limits and who we are.
pub(crate) struct Api<S> {
    store: Arc<S>,
    limits: Limits,
    identity: Arc<Identity>,
    tokens: Option<Arc<Tokens>>,
    /// Ends open watch streams when the server stops.
    stopping: Stopping,
}

impl<S> Clone for Api<S> {
    fn clone(&self) -> Self {
        Api {
            store: Arc::clone(&self.store),
            limits: self.limits,
            identity: Arc::clone(&self.identity),
            tokens: self.tokens.clone(),
            stopping: self.stopping.clone(),
        }
    }
}

impl<S: Store> Api<S> {
    pub(crate) fn new(
        store: Arc<S>,
        limits: Limits,
        identity: Identity,
        tokens: Option<Arc<Tokens>>,
    ) -> Api<S> {
        Api {
            store,
            limits,
            identity: Arc::new(identity),
            tokens,
            stopping: Stopping::never(),
        }
    }

    /// The API, whose watch streams end with `UNAVAILABLE` as soon as
    /// `stopping` says the server stops.
    pub(crate) fn with_stopping(self, stopping: Stopping) -> Api<S> {
        Api { stopping, ..self }
    }

    /// Every etcd service, added to `router`.
    pub(crate) fn add_to<L>(self, router: Router<L>) -> Router<L> {
        let max = self.limits.max_message_bytes();
        router
            .add_service(KvServer::new(kv::KvApi(self.clone())).max_decoding_message_size(max))
            .add_service(
                WatchServer::new(watch::WatchApi(self.clone())).max_decoding_message_size(max),
            )
            .add_service(LeaseServer::new(lease::LeaseApi(self.clone())))
            .add_service(MaintenanceServer::new(maintenance::MaintenanceApi(
                self.clone(),
            )))
            .add_service(ClusterServer::new(maintenance::ClusterApi(self.clone())))
            .add_service(LockServer::new(lock::LockApi(self.clone())))
            .add_service(ElectionServer::new(election::ElectionApi(self.clone())))
            .add_service(AuthServer::new(auth::AuthApi {
                tokens: self.tokens.clone(),
                api: self,
            }))
    }

    /// The store's revision now: a read of one key, which every backend
    /// answers with its current revision.
    async fn current_revision(&self) -> Result<Revision, tonic::Status> {
        let mut query = crate::storage::ops::RangeQuery::all(crate::storage::ops::KeyRange::key(
            bytes::Bytes::from_static(b"\0"),
        ));
        query.count_only = true;
        let result = self
            .store
            .range(query)
            .await
            .map_err(errors::from_store_error)?;
        Ok(result.revision)
    }
}
