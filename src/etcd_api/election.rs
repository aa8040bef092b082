//! `v3electionpb.Election`: etcd's server-side leader election, the
//! `concurrency.Election` recipe run for the caller (`concurrency`).
//!
//! A candidate's key is `NAME/LEASE-IN-HEX`, holding its value; the leader
//! is the candidate whose key was created first. Campaign answers once the
//! caller leads; Proclaim and Resign act only while the caller's key is
//! the one it was elected with (same create revision), else "election: not
//! leader"; Observe streams each leader's value as it changes. Errors that
//! etcd's recipe returns as plain Go errors keep their text and etcd's
//! code for them (UNKNOWN).

use std::pin::Pin;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::concurrency::{Withdraw, contender_key, prefix_of};
use super::convert::key_value;
use super::{Api, errors};
use crate::grpc::{Checks, scope_of};
use crate::proto::etcd::v3electionpb as pb;
use crate::proto::etcd::v3electionpb::election_server::Election;
use crate::storage::ops::{
    Compare, CompareOp, CompareTarget, EventKind, KeyRange, KeyValue, Op, Txn,
};
use crate::storage::{Revision, Store};

/// The handlers of `v3electionpb.Election`.
pub(crate) struct ElectionApi<S>(pub(crate) Api<S>);

fn not_leader() -> Status {
    Status::unknown("election: not leader")
}

fn no_leader() -> Status {
    Status::unknown("election: no leader")
}

fn missing_leader_key() -> Status {
    Status::unknown("\"leader\" field must be provided")
}

/// The compare that holds while `leader` is still the key it was elected
/// with.
fn still_leader(leader: &pb::LeaderKey) -> Compare {
    Compare::key(
        leader.key.clone(),
        CompareTarget::CreateRevision(leader.rev.max(0) as Revision),
        CompareOp::Equal,
    )
}

impl<S: Store> ElectionApi<S> {
    fn check_name(&self, scope: Option<&crate::grpc::Scope>, name: &[u8]) -> Result<Bytes, Status> {
        let prefix = prefix_of(name);
        Checks::new(&self.0.limits, scope).range(&KeyRange::prefix(prefix.clone()))?;
        Ok(prefix)
    }
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<pb::LeaderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<S: Store> Election for ElectionApi<S> {
    async fn campaign(
        &self,
        request: Request<pb::CampaignRequest>,
    ) -> Result<Response<pb::CampaignResponse>, Status> {
        let scope = scope_of(&request);
        let request = request.into_inner();
        let prefix = self.check_name(scope.as_ref(), &request.name)?;
        Checks::new(&self.0.limits, scope.as_ref()).value(&request.value)?;
        let lease = self.0.session_lease(request.lease).await?;
        let key = contender_key(&prefix, lease);
        let (mine, _) = self.0.enter(&key, request.value.clone(), lease).await?;
        let withdraw = Withdraw::new(self.0.clone(), key.clone());
        let rev = mine.record.create_revision;
        let leader = pb::LeaderKey {
            name: request.name.clone(),
            key: key.clone(),
            rev: rev as i64,
            lease,
        };
        if mine.record.value != request.value {
            // Campaigning again with a new value: say it, as etcd does.
            self.proclaim_as(&leader, request.value).await?;
        }
        let revision = self.0.wait_deletes(&prefix, rev - 1).await?;
        withdraw.disarm();
        Ok(Response::new(pb::CampaignResponse {
            header: self.0.identity.header(revision),
            leader: Some(leader),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<pb::ProclaimRequest>,
    ) -> Result<Response<pb::ProclaimResponse>, Status> {
        let scope = scope_of(&request);
        let request = request.into_inner();
        let leader = request.leader.ok_or_else(missing_leader_key)?;
        self.check_name(scope.as_ref(), &leader.name)?;
        Checks::new(&self.0.limits, scope.as_ref()).value(&request.value)?;
        let revision = self.proclaim_as(&leader, request.value).await?;
        Ok(Response::new(pb::ProclaimResponse {
            header: self.0.identity.header(revision),
        }))
    }

    async fn leader(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> Result<Response<pb::LeaderResponse>, Status> {
        let scope = scope_of(&request);
        let prefix = self.check_name(scope.as_ref(), &request.into_inner().name)?;
        let (holder, revision) = self.0.holder(&prefix).await?;
        let holder = holder.ok_or_else(no_leader)?;
        Ok(Response::new(pb::LeaderResponse {
            header: self.0.identity.header(revision),
            kv: Some(key_value(holder)),
        }))
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let scope = scope_of(&request);
        let prefix = self.check_name(scope.as_ref(), &request.into_inner().name)?;
        let (out, responses) = mpsc::channel(16);
        let api = self.0.clone();
        tokio::spawn(async move {
            if let Err(status) = observe(&api, &prefix, &out).await {
                let _ = out.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(responses))))
    }

    async fn resign(
        &self,
        request: Request<pb::ResignRequest>,
    ) -> Result<Response<pb::ResignResponse>, Status> {
        let scope = scope_of(&request);
        let leader = request.into_inner().leader.ok_or_else(missing_leader_key)?;
        self.check_name(scope.as_ref(), &leader.name)?;
        let result = self
            .0
            .run(Txn {
                compares: vec![still_leader(&leader)],
                success: vec![Op::Delete {
                    range: KeyRange::key(leader.key.clone()),
                    prev: false,
                }],
                failure: Vec::new(),
            })
            .await?;
        Ok(Response::new(pb::ResignResponse {
            header: self.0.identity.header(result.revision),
        }))
    }
}

impl<S: Store> ElectionApi<S> {
    /// Sets the leader's value if `leader` still leads; the revision after.
    async fn proclaim_as(&self, leader: &pb::LeaderKey, value: Bytes) -> Result<Revision, Status> {
        let result = self
            .0
            .run(Txn {
                compares: vec![still_leader(leader)],
                success: vec![Op::Put {
                    key: leader.key.clone(),
                    value,
                    lease: leader.lease,
                    prev: false,
                }],
                failure: Vec::new(),
            })
            .await?;
        if !result.succeeded {
            return Err(not_leader());
        }
        Ok(result.revision)
    }
}

type Out = mpsc::Sender<Result<pb::LeaderResponse, Status>>;

/// etcd's `Election.observe`: the leader now (or the first to come), then
/// each change of its value, until its key goes; then the next leader.
async fn observe<S: Store>(api: &Api<S>, prefix: &Bytes, out: &Out) -> Result<(), Status> {
    loop {
        let (holder, revision) = api.holder(prefix).await?;
        let (leader, revision): (KeyValue, Revision) = match holder {
            Some(holder) => (holder, revision),
            None => {
                // Wait for the first put of a candidate.
                let mut events = api
                    .store
                    .watch(KeyRange::prefix(prefix.clone()), Some(revision + 1))
                    .await
                    .map_err(errors::from_store_error)?;
                let mut first = None;
                while first.is_none() {
                    let Some(batch) = events.next().await else {
                        return Ok(());
                    };
                    let batch = batch.map_err(errors::from_store_error)?;
                    first = batch.into_iter().find(|event| event.kind == EventKind::Put);
                }
                let event = first.expect("found");
                let revision = event.record.mod_revision;
                (
                    KeyValue {
                        key: event.key,
                        record: event.record,
                    },
                    revision,
                )
            }
        };
        let key = leader.key.clone();
        let send = |kv: KeyValue, revision: Revision| pb::LeaderResponse {
            header: api.identity.header(revision),
            kv: Some(key_value(kv)),
        };
        if out.send(Ok(send(leader, revision))).await.is_err() {
            return Ok(());
        }
        let mut events = api
            .store
            .watch(KeyRange::key(key), Some(revision + 1))
            .await
            .map_err(errors::from_store_error)?;
        'leader: loop {
            let Some(batch) = events.next().await else {
                return Ok(());
            };
            for event in batch.map_err(errors::from_store_error)? {
                if event.kind != EventKind::Put {
                    break 'leader;
                }
                let revision = event.record.mod_revision;
                let kv = KeyValue {
                    key: event.key,
                    record: event.record,
                };
                if out.send(Ok(send(kv, revision))).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}
