//! Code generated from the contracts under `proto/` by `build.rs`.
//!
//! Nothing here is written by hand; change the `.proto` files instead (and never
//! `proto/api.proto`, the tutorial's frozen contract).

/// The tutorial's service, `proto/api.proto` (package `simplekeyvalue`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod simplekeyvalue {
    tonic::include_proto!("simplekeyvalue");
}

/// The full API, `proto/keyvalue/v1/kv.proto` (package `keyvalue.v1`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod keyvalue {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("keyvalue.v1");
    }
}

/// etcd's v3 API, `proto/etcd/`: served by `etcd_api`, called by the etcd
/// storage backend.
#[allow(
    missing_docs,
    unreachable_pub,
    dead_code,
    clippy::all,
    clippy::pedantic
)]
pub(crate) mod etcd {
    /// etcd's services and their messages.
    pub(crate) mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    /// etcd's key/value records and watch events.
    pub(crate) mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    /// etcd's users and roles (named by the Auth service's messages).
    pub(crate) mod authpb {
        tonic::include_proto!("authpb");
    }
    /// etcd's server-side lock service.
    pub(crate) mod v3lockpb {
        tonic::include_proto!("v3lockpb");
    }
    /// etcd's server-side election service.
    pub(crate) mod v3electionpb {
        tonic::include_proto!("v3electionpb");
    }
}

/// Every contract above, as an encoded `FileDescriptorSet`, for server
/// reflection (`grpcurl list` without proto files).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));
