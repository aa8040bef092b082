//! `etcdserverpb.Maintenance` and `etcdserverpb.Cluster`: kvserver as a
//! cluster of one member (`identity`), always its own leader, with no
//! alarms. What changes a cluster (members, leaders) or reads etcd's own
//! files (snapshot, hashes, defragment) is refused by name: kvserver has
//! neither raft nor bbolt.

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::identity::{ETCD_VERSION, RAFT_TERM};
use super::{Api, errors};
use crate::proto::etcd::etcdserverpb as pb;
use crate::proto::etcd::etcdserverpb::cluster_server::Cluster;
use crate::proto::etcd::etcdserverpb::maintenance_server::Maintenance;
use crate::storage::Store;

/// The handlers of `etcdserverpb.Maintenance`.
pub(crate) struct MaintenanceApi<S>(pub(crate) Api<S>);

/// The handlers of `etcdserverpb.Cluster`.
pub(crate) struct ClusterApi<S>(pub(crate) Api<S>);

fn no_raft(method: &str) -> Status {
    errors::unsupported(
        method,
        "kvserver is a cluster of one member without raft (replicate with --backend etcd)",
    )
}

fn not_bbolt(method: &str) -> Status {
    errors::unsupported(
        method,
        "kvserver does not store etcd's database file; back up with `kv backup`",
    )
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<S: Store> Maintenance for MaintenanceApi<S> {
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        use pb::alarm_request::AlarmAction;
        match AlarmAction::try_from(request.into_inner().action) {
            // Nothing raises an alarm here; deactivating none is a no-op,
            // as etcd's is for an alarm that is not raised.
            Ok(AlarmAction::Get) | Ok(AlarmAction::Deactivate) => {}
            Ok(AlarmAction::Activate) => {
                return Err(errors::unsupported(
                    "Maintenance.Alarm ACTIVATE",
                    "kvserver raises no alarms (a full disk is refused per write instead)",
                ));
            }
            Err(_) => return Err(Status::invalid_argument("unknown alarm action")),
        }
        Ok(Response::new(pb::AlarmResponse {
            header: self.0.identity.header(self.0.store.stats().revision),
            alarms: Vec::new(),
        }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let stats = self.0.store.stats();
        let size = i64::try_from(stats.disk_bytes).unwrap_or(i64::MAX);
        Ok(Response::new(pb::StatusResponse {
            header: self.0.identity.header(stats.revision),
            version: ETCD_VERSION.to_owned(),
            db_size: size,
            leader: self.0.identity.member_id,
            // Each write is one entry of the log kvserver does not have.
            raft_index: stats.revision,
            raft_term: RAFT_TERM,
            raft_applied_index: stats.revision,
            errors: Vec::new(),
            db_size_in_use: size,
            is_learner: false,
        }))
    }

    async fn defragment(
        &self,
        _request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        Err(not_bbolt("Maintenance.Defragment"))
    }

    async fn hash(
        &self,
        _request: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        Err(not_bbolt("Maintenance.Hash"))
    }

    async fn hash_kv(
        &self,
        _request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        Err(not_bbolt("Maintenance.HashKV"))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(not_bbolt("Maintenance.Snapshot"))
    }

    async fn move_leader(
        &self,
        _request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        Err(no_raft("Maintenance.MoveLeader"))
    }
}

#[tonic::async_trait]
impl<S: Store> Cluster for ClusterApi<S> {
    async fn member_add(
        &self,
        _request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        Err(no_raft("Cluster.MemberAdd"))
    }

    async fn member_remove(
        &self,
        _request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        Err(no_raft("Cluster.MemberRemove"))
    }

    async fn member_update(
        &self,
        _request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Err(no_raft("Cluster.MemberUpdate"))
    }

    async fn member_list(
        &self,
        _request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let identity = &self.0.identity;
        Ok(Response::new(pb::MemberListResponse {
            header: identity.header(self.0.store.stats().revision),
            members: vec![pb::Member {
                id: identity.member_id,
                name: "kvserver".to_owned(),
                peer_ur_ls: Vec::new(),
                client_ur_ls: identity.client_urls.clone(),
                is_learner: false,
            }],
        }))
    }

    async fn member_promote(
        &self,
        _request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        Err(no_raft("Cluster.MemberPromote"))
    }
}
