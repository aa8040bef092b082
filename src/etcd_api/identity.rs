//! Who answers: the cluster id, member id and raft term that etcd puts in
//! every response header, and the member that `Cluster.MemberList` and
//! `Maintenance.Status` describe.
//!
//! kvserver is a one-member cluster. Its member id is derived from a seed
//! that names its data (the data dir, or the etcd cluster and prefix a
//! gateway serves), so it stays the same across restarts, as an etcd
//! member's does; clients that remember a member id (clientv3's balancer,
//! `etcdctl endpoint status`) see one member, not a new one per restart.

use crate::proto::etcd::etcdserverpb as pb;
use crate::storage::Revision;

/// The raft term of every answer: a one-member cluster never elects again.
pub(crate) const RAFT_TERM: u64 = 1;

/// The etcd version kvserver's etcd API answers as (`Maintenance.Status`):
/// the release whose API it matches, so clients enable what 3.4 has.
pub(crate) const ETCD_VERSION: &str = "3.4.23";

/// The ids of this server as an etcd member.
#[derive(Clone, Debug)]
pub(crate) struct Identity {
    pub(crate) cluster_id: u64,
    pub(crate) member_id: u64,
    /// The URLs clients reach this member at (`MemberList`).
    pub(crate) client_urls: Vec<String>,
}

impl Identity {
    /// The identity of the member whose data `seed` names, reachable at
    /// `client_urls`.
    pub(crate) fn new(seed: &str, client_urls: Vec<String>) -> Identity {
        let member_id = nonzero(fnv1a(seed.as_bytes()));
        Identity {
            cluster_id: nonzero(fnv1a(format!("kvserver cluster {seed}").as_bytes())),
            member_id,
            client_urls,
        }
    }

    /// The header of an answer that reflects the store at `revision`.
    pub(crate) fn header(&self, revision: Revision) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision: revision_number(revision),
            raft_term: RAFT_TERM,
        })
    }
}

/// A revision as etcd's signed number.
pub(crate) fn revision_number(revision: Revision) -> i64 {
    i64::try_from(revision).unwrap_or(i64::MAX)
}

/// FNV-1a, 64 bits: stable across Rust releases and platforms, unlike std's
/// hasher, so an id derived from it never changes with the compiler.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// etcd never uses 0 as an id (it means "none").
fn nonzero(id: u64) -> u64 {
    id.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_ids_and_another_seed_others() {
        let a = Identity::new("/var/lib/kvserver", Vec::new());
        let again = Identity::new("/var/lib/kvserver", Vec::new());
        let b = Identity::new("/srv/other", Vec::new());
        assert_eq!(
            (a.cluster_id, a.member_id),
            (again.cluster_id, again.member_id)
        );
        assert_ne!(a.member_id, b.member_id);
        assert_ne!(a.cluster_id, a.member_id);
        // Known value, so a change of the hash (and of every member id) fails here.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
