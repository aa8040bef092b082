//! `v3lockpb.Lock`: etcd's server-side lock, the `concurrency.Mutex`
//! recipe run for the caller (`concurrency`).
//!
//! Lock puts `NAME/LEASE-IN-HEX` with the caller's lease and answers once
//! every key of `NAME/` created before it is gone, so the lock passes on
//! when its holder unlocks or its lease ends. A caller that gives up while
//! waiting leaves no key behind.

use std::time::Duration;

use bytes::Bytes;
use tonic::{Request, Response, Status};

use super::concurrency::{Withdraw, contender_key, prefix_of};
use super::{Api, errors};
use crate::grpc::{Checks, scope_of};
use crate::proto::etcd::v3lockpb as pb;
use crate::proto::etcd::v3lockpb::lock_server::Lock;
use crate::storage::Store;
use crate::storage::ops::{KeyRange, LeaseId, Op, Txn};

/// The handlers of `v3lockpb.Lock`.
pub(crate) struct LockApi<S>(pub(crate) Api<S>);

/// The TTL of the lease etcd grants a caller that brings none (lease 0):
/// `concurrency.NewSession`'s default.
const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(60);

impl<S: Store> Api<S> {
    /// `lease`, or a new lease of etcd's default session TTL if it is 0.
    pub(crate) async fn session_lease(&self, lease: LeaseId) -> Result<LeaseId, Status> {
        if lease != 0 {
            return Ok(lease);
        }
        let granted = self
            .store
            .lease_grant(DEFAULT_SESSION_TTL)
            .await
            .map_err(errors::from_store_error)?;
        Ok(granted.id)
    }
}

#[tonic::async_trait]
impl<S: Store> Lock for LockApi<S> {
    async fn lock(
        &self,
        request: Request<pb::LockRequest>,
    ) -> Result<Response<pb::LockResponse>, Status> {
        let scope = scope_of(&request);
        let request = request.into_inner();
        let prefix = prefix_of(&request.name);
        Checks::new(&self.0.limits, scope.as_ref()).range(&KeyRange::prefix(prefix.clone()))?;
        let lease = self.0.session_lease(request.lease).await?;
        let key = contender_key(&prefix, lease);
        let (mine, revision) = self.0.enter(&key, Bytes::new(), lease).await?;
        let withdraw = Withdraw::new(self.0.clone(), key.clone());
        let (holder, _) = self.0.holder(&prefix).await?;
        let revision = match holder {
            Some(holder) if holder.record.create_revision != mine.record.create_revision => {
                self.0
                    .wait_deletes(&prefix, mine.record.create_revision - 1)
                    .await?
            }
            _ => revision,
        };
        withdraw.disarm();
        Ok(Response::new(pb::LockResponse {
            header: self.0.identity.header(revision),
            key,
        }))
    }

    async fn unlock(
        &self,
        request: Request<pb::UnlockRequest>,
    ) -> Result<Response<pb::UnlockResponse>, Status> {
        let scope = scope_of(&request);
        let key = request.into_inner().key;
        Checks::new(&self.0.limits, scope.as_ref()).key(&key)?;
        let result = self
            .0
            .run(Txn::of(vec![Op::Delete {
                range: KeyRange::key(key),
                prev: false,
            }]))
            .await?;
        Ok(Response::new(pb::UnlockResponse {
            header: self.0.identity.header(result.revision),
        }))
    }
}
