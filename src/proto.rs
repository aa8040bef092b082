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

/// The part of etcd's v3 API that the etcd storage backend calls,
/// `proto/etcd/` (clients only).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub(crate) mod etcd {
    /// etcd's services and their messages.
    pub(crate) mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    /// etcd's key/value records and watch events.
    pub(crate) mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
}

/// Every contract above but etcd's, as an encoded `FileDescriptorSet`, for server
/// reflection (`grpcurl list` without proto files).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));
