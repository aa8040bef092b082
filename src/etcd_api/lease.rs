//! `etcdserverpb.Lease`: grant, revoke, keep alive, time to live.
//!
//! TTLs are whole seconds, as in etcd, and a TTL below etcd's minimum (two
//! seconds, what etcd's default election timeout allows) is raised to it,
//! as etcd does. An unknown lease is TTL 0 in the keep-alive stream and
//! TTL -1 from TimeToLive, never an error: that is how etcd's clients learn
//! a lease is gone.

use std::pin::Pin;
use std::time::Duration;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::{Api, errors};
use crate::grpc::{Checks, scope_of};
use crate::proto::etcd::etcdserverpb as pb;
use crate::proto::etcd::etcdserverpb::lease_server::Lease;
use crate::storage::ops::{KeyRange, page_bytes};
use crate::storage::{LeaseInfo, MAX_TTL, Store, StoreError};

/// etcd's smallest TTL, in seconds (with its default election timeout).
pub(crate) const MIN_TTL_SECONDS: i64 = 2;

/// The handlers of `etcdserverpb.Lease`.
pub(crate) struct LeaseApi<S>(pub(crate) Api<S>);

/// A TTL in whole seconds, as etcd reports it.
fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

/// The TTL a grant asks for, as etcd takes it.
fn granted_ttl(ttl: i64) -> Result<Duration, Status> {
    let ttl = Duration::from_secs(ttl.max(MIN_TTL_SECONDS) as u64);
    if ttl > MAX_TTL {
        return Err(errors::lease_ttl_too_large());
    }
    Ok(ttl)
}

impl<S: Store> LeaseApi<S> {
    fn header(&self) -> Option<pb::ResponseHeader> {
        self.0.identity.header(self.0.store.stats().revision)
    }
}

type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<S: Store> Lease for LeaseApi<S> {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let request = request.into_inner();
        let ttl = granted_ttl(request.ttl)?;
        // ID 0: the server chooses; anything else is the client's choice.
        let granted = match request.id {
            0 => self.0.store.lease_grant(ttl).await,
            id => self.0.store.lease_grant_as(id, ttl).await,
        };
        let lease = granted.map_err(errors::from_store_error)?;
        Ok(Response::new(pb::LeaseGrantResponse {
            header: self.header(),
            id: lease.id,
            ttl: seconds(lease.ttl),
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        // Revoking deletes the lease's keys: a scoped token may revoke only
        // a lease whose keys are all in its scope (etcd's rule).
        let scope = scope_of(&request);
        let id = request.into_inner().id;
        Checks::new(&self.0.limits, scope.as_ref())
            .lease(&*self.0.store, id, "revoke")
            .await
            .map_err(errors::from_store_error)??;
        let (_, revision) = self
            .0
            .store
            .lease_revoke(id)
            .await
            .map_err(errors::from_store_error)?;
        Ok(Response::new(pb::LeaseRevokeResponse {
            header: self.0.identity.header(revision),
        }))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let api = self.0.clone();
        let scope = scope_of(&request);
        let answers = request.into_inner().then(move |request| {
            let api = api.clone();
            let scope = scope.clone();
            async move {
                let id = request?.id;
                Checks::new(&api.limits, scope.as_ref())
                    .lease(&*api.store, id, "keep alive")
                    .await
                    .map_err(errors::from_store_error)??;
                let ttl = match api.store.lease_keep_alive(id).await {
                    Ok(lease) => seconds(lease.ttl),
                    Err(StoreError::LeaseNotFound(_)) => 0,
                    Err(error) => return Err(errors::from_store_error(error)),
                };
                Ok(pb::LeaseKeepAliveResponse {
                    header: api.identity.header(api.store.stats().revision),
                    id,
                    ttl,
                })
            }
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let scope = scope_of(&request);
        let request = request.into_inner();
        let lease: LeaseInfo = match self.0.store.lease_info(request.id).await {
            Ok(lease) => lease,
            Err(StoreError::LeaseNotFound(_)) => {
                return Ok(Response::new(pb::LeaseTimeToLiveResponse {
                    header: self.header(),
                    id: request.id,
                    ttl: -1,
                    granted_ttl: 0,
                    keys: Vec::new(),
                }));
            }
            Err(error) => return Err(errors::from_store_error(error)),
        };
        let keys = if request.keys {
            // As etcd 3.5's checkLeaseTimeToLive: the keys only for a token
            // that may read every one of them, else etcd's refusal.
            Checks::new(&self.0.limits, scope.as_ref())
                .lease(&*self.0.store, request.id, "list the keys of")
                .await
                .map_err(errors::from_store_error)?
                .map_err(|_| errors::permission_denied())?;
            // All of them, as etcd answers, from the store's index of the
            // lease's keys (keyvalue.v1's LeaseInfo reads the same, in
            // pages), up to one page of keys: past it the answer is
            // refused, never cut.
            let prefix = scope.map(|scope| scope.prefix).unwrap_or_default();
            let limits = &self.0.limits;
            let keys = match self
                .0
                .store
                .lease_keys(request.id, KeyRange::prefix(prefix), limits.max_range_page)
                .await
            {
                Ok((keys, false)) => keys,
                Ok((_, true)) => return Err(too_many_keys(request.id, "--max-range-page")),
                // Expired between the two reads: no keys left.
                Err(StoreError::LeaseNotFound(_)) => Vec::new(),
                Err(error) => return Err(errors::from_store_error(error)),
            };
            let bytes: usize = keys.iter().map(|key| page_bytes(key.len(), 0)).sum();
            if bytes > limits.max_range_page_bytes {
                return Err(too_many_keys(request.id, "--max-range-page-bytes"));
            }
            keys
        } else {
            Vec::new()
        };
        Ok(Response::new(pb::LeaseTimeToLiveResponse {
            header: self.header(),
            id: lease.id,
            ttl: seconds(lease.remaining),
            granted_ttl: seconds(lease.ttl),
            keys,
        }))
    }

    async fn lease_leases(
        &self,
        _request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let ids = self
            .0
            .store
            .lease_ids()
            .await
            .map_err(errors::from_store_error)?;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: self.header(),
            leases: ids.into_iter().map(|id| pb::LeaseStatus { id }).collect(),
        }))
    }
}

/// The refusal of a LeaseTimeToLive whose keys pass a page's `bound`: etcd
/// answers them all at once, and a cut list would read as the whole.
fn too_many_keys(id: i64, bound: &str) -> Status {
    Status::resource_exhausted(format!(
        "lease {id} holds more keys than {bound} allows in one answer: list them in pages \
         (keyvalue.v1 LeaseInfo with keys_limit, kv lease info --keys), or raise {bound}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_below_etcds_minimum_are_raised_and_above_ours_refused() {
        assert_eq!(granted_ttl(1).unwrap(), Duration::from_secs(2));
        assert_eq!(granted_ttl(-5).unwrap(), Duration::from_secs(2));
        assert_eq!(granted_ttl(60).unwrap(), Duration::from_secs(60));
        let status = granted_ttl(i64::MAX).unwrap_err();
        assert_eq!(status.message(), "etcdserver: too large lease TTL");
    }
}
