//! The one registry of every gRPC method the server answers, and what each
//! may do: read, write, or be called without a token.
//!
//! The auth layer decides from it alone, and fails closed: a method that is
//! not here is refused, so a service added later cannot be called by a
//! read-only token by accident (as a method missing from a list of writes
//! once could). The health service's list of services derives from it too.
//! A test checks it against the descriptors of every served proto, so a
//! method added to a `.proto` without a line here fails the build's tests.

/// What a method may do, for authorization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Reads only: any valid token.
    Read,
    /// Changes data (or the server): a read-write token.
    Write,
    /// Needs no token: health checks, and etcd's Authenticate (which is how
    /// an etcd client gets one).
    Open,
}

use Access::{Open, Read, Write};

/// Every method served, as `(service, method, access)`.
pub(crate) const METHODS: &[(&str, &str, Access)] = &[
    ("simplekeyvalue.KeyValue", "Set", Write),
    ("simplekeyvalue.KeyValue", "Get", Read),
    ("keyvalue.v1.KV", "Get", Read),
    ("keyvalue.v1.KV", "Put", Write),
    ("keyvalue.v1.KV", "Delete", Write),
    ("keyvalue.v1.KV", "Range", Read),
    ("keyvalue.v1.KV", "Txn", Write),
    ("keyvalue.v1.KV", "BatchGet", Read),
    ("keyvalue.v1.KV", "BatchPut", Write),
    ("keyvalue.v1.KV", "Watch", Read),
    ("keyvalue.v1.KV", "LeaseGrant", Write),
    ("keyvalue.v1.KV", "LeaseKeepAlive", Write),
    ("keyvalue.v1.KV", "LeaseRevoke", Write),
    ("keyvalue.v1.KV", "LeaseInfo", Read),
    ("keyvalue.v1.KV", "LeaseList", Read),
    ("keyvalue.v1.KV", "Snapshot", Read),
    ("keyvalue.v1.KV", "Compact", Write),
    ("etcdserverpb.KV", "Range", Read),
    ("etcdserverpb.KV", "Put", Write),
    ("etcdserverpb.KV", "DeleteRange", Write),
    ("etcdserverpb.KV", "Txn", Write),
    ("etcdserverpb.KV", "Compact", Write),
    ("etcdserverpb.Watch", "Watch", Read),
    ("etcdserverpb.Lease", "LeaseGrant", Write),
    ("etcdserverpb.Lease", "LeaseRevoke", Write),
    ("etcdserverpb.Lease", "LeaseKeepAlive", Write),
    ("etcdserverpb.Lease", "LeaseTimeToLive", Read),
    ("etcdserverpb.Lease", "LeaseLeases", Read),
    ("etcdserverpb.Cluster", "MemberAdd", Write),
    ("etcdserverpb.Cluster", "MemberRemove", Write),
    ("etcdserverpb.Cluster", "MemberUpdate", Write),
    ("etcdserverpb.Cluster", "MemberList", Read),
    ("etcdserverpb.Cluster", "MemberPromote", Write),
    ("etcdserverpb.Maintenance", "Alarm", Write),
    ("etcdserverpb.Maintenance", "Status", Read),
    ("etcdserverpb.Maintenance", "Defragment", Write),
    ("etcdserverpb.Maintenance", "Hash", Read),
    ("etcdserverpb.Maintenance", "HashKV", Read),
    ("etcdserverpb.Maintenance", "Snapshot", Read),
    ("etcdserverpb.Maintenance", "MoveLeader", Write),
    ("etcdserverpb.Auth", "AuthEnable", Write),
    ("etcdserverpb.Auth", "AuthDisable", Write),
    ("etcdserverpb.Auth", "Authenticate", Open),
    ("etcdserverpb.Auth", "UserAdd", Write),
    ("etcdserverpb.Auth", "UserGet", Read),
    ("etcdserverpb.Auth", "UserList", Read),
    ("etcdserverpb.Auth", "UserDelete", Write),
    ("etcdserverpb.Auth", "UserChangePassword", Write),
    ("etcdserverpb.Auth", "UserGrantRole", Write),
    ("etcdserverpb.Auth", "UserRevokeRole", Write),
    ("etcdserverpb.Auth", "RoleAdd", Write),
    ("etcdserverpb.Auth", "RoleGet", Read),
    ("etcdserverpb.Auth", "RoleList", Read),
    ("etcdserverpb.Auth", "RoleDelete", Write),
    ("etcdserverpb.Auth", "RoleGrantPermission", Write),
    ("etcdserverpb.Auth", "RoleRevokePermission", Write),
    ("v3lockpb.Lock", "Lock", Write),
    ("v3lockpb.Lock", "Unlock", Write),
    ("v3electionpb.Election", "Campaign", Write),
    ("v3electionpb.Election", "Proclaim", Write),
    ("v3electionpb.Election", "Leader", Read),
    ("v3electionpb.Election", "Observe", Read),
    ("v3electionpb.Election", "Resign", Write),
    ("grpc.health.v1.Health", "Check", Open),
    ("grpc.health.v1.Health", "Watch", Open),
    (
        "grpc.reflection.v1.ServerReflection",
        "ServerReflectionInfo",
        Read,
    ),
    (
        "grpc.reflection.v1alpha.ServerReflection",
        "ServerReflectionInfo",
        Read,
    ),
];

/// The access of the method at `path` (`/service/method`), or `None` for a
/// method the server does not know.
pub(crate) fn access(path: &str) -> Option<Access> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    METHODS
        .iter()
        .find(|(s, m, _)| *s == service && *m == method)
        .map(|(_, _, access)| *access)
}

/// Every method's path (`/service/method`): the metrics' method labels.
pub(crate) fn paths() -> Vec<String> {
    METHODS
        .iter()
        .map(|(service, method, _)| format!("/{service}/{method}"))
        .collect()
}

/// The services whose health is reported, in registry order, without the
/// health and reflection services themselves.
pub(crate) fn health_services() -> Vec<&'static str> {
    let mut services: Vec<&str> = Vec::new();
    for (service, _, _) in METHODS {
        if !service.starts_with("grpc.") && !services.contains(service) {
            services.push(service);
        }
    }
    services
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use prost::Message;

    use super::*;

    fn described(encoded: &[u8]) -> BTreeSet<(String, String)> {
        let set = prost_types::FileDescriptorSet::decode(encoded).expect("descriptors decode");
        let mut methods = BTreeSet::new();
        for file in set.file {
            for service in &file.service {
                for method in &service.method {
                    methods.insert((
                        format!("{}.{}", file.package(), service.name()),
                        method.name().to_owned(),
                    ));
                }
            }
        }
        methods
    }

    #[test]
    fn the_registry_names_every_described_method_and_nothing_else() {
        let mut descriptors = described(crate::proto::FILE_DESCRIPTOR_SET);
        descriptors.extend(described(tonic_health::pb::FILE_DESCRIPTOR_SET));
        descriptors.extend(described(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET));
        descriptors.extend(described(
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ));
        let registry: BTreeSet<(String, String)> = METHODS
            .iter()
            .map(|(s, m, _)| (s.to_string(), m.to_string()))
            .collect();
        let missing: Vec<_> = descriptors.difference(&registry).collect();
        let stale: Vec<_> = registry.difference(&descriptors).collect();
        assert!(
            missing.is_empty(),
            "methods without an access in grpc/methods.rs: {missing:?}"
        );
        assert!(
            stale.is_empty(),
            "registry entries no proto describes: {stale:?}"
        );
        assert_eq!(registry.len(), METHODS.len(), "a method is listed twice");
    }

    #[test]
    fn unknown_methods_have_no_access() {
        assert_eq!(access("/etcdserverpb.KV/Put"), Some(Write));
        assert_eq!(access("/keyvalue.v1.KV/Get"), Some(Read));
        assert_eq!(access("/etcdserverpb.Auth/Authenticate"), Some(Open));
        for path in [
            "/etcdserverpb.KV/Nope",
            "/other.Service/Get",
            "",
            "/",
            "KV/Get",
        ] {
            assert_eq!(access(path), None, "{path}");
        }
        assert!(health_services().contains(&"etcdserverpb.KV"));
        assert!(!health_services().contains(&"grpc.health.v1.Health"));
    }
}
