//! The conformance suite: the behaviour every [`Store`] backend must show.
//!
//! Each backend's test module instantiates the whole suite with
//! `conformance_suite!(<expression that makes a fresh, empty store>)`; the
//! expression is evaluated inside an async test, so it may `.await`. A new
//! operation on the trait gets its checks here, once, and every backend runs them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use tokio_stream::StreamExt;

use super::ops::{
    Compare, CompareOp, CompareTarget, Event, EventKind, KeyRange, KeyValue, LeaseId, Op, OpResult,
    RangeQuery, RangeResult, Txn, TxnResult, page_bytes,
};
use super::{EventStream, LeaseInfo, Record, Revision, Store, StoreError};

/// Generates one `#[tokio::test]` per check below, each on a fresh store.
macro_rules! conformance_suite {
    ($make_store:expr) => {
        $crate::storage::conformance::conformance_suite!(
            $make_store,
            $crate::storage::conformance::Expiry::Local
        );
    };
    ($make_store:expr, $expiry:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn keys_of_an_expired_lease_vanish_and_are_deleted() {
            let store = $make_store;
            $crate::storage::conformance::keys_of_an_expired_lease_vanish_and_are_deleted(
                std::sync::Arc::new(store),
                $expiry,
            )
            .await;
        }
        $crate::storage::conformance::conformance_suite!(@checks $make_store;
            get_of_missing_key_is_none,
            put_then_get_returns_the_value,
            put_overwrites_and_counts_versions,
            revisions_increase_across_keys,
            empty_value_is_a_value,
            keys_and_values_are_binary_safe,
            concurrent_writers_of_one_key_are_serialized,
            concurrent_writers_of_many_keys_keep_their_last_write,
            range_is_sorted_and_pages_with_limit_more_and_count,
            range_by_prefix_between_keys_only_and_count_only,
            a_range_that_holds_no_key_reads_and_deletes_nothing,
            delete_of_a_key_and_of_a_range_counts_and_returns_what_went,
            a_deleted_key_starts_over_when_put_again,
            put_can_return_the_previous_record,
            compare_and_set_wins_only_against_the_expected_revision,
            a_failed_compare_runs_the_failure_branch_and_changes_nothing,
            value_version_and_existence_compares,
            a_transaction_is_one_revision_for_all_its_writes,
            read_only_transactions_read_many_keys_without_a_revision,
            racing_compare_and_sets_have_exactly_one_winner,
            a_put_with_an_unknown_lease_fails_and_changes_nothing,
            keep_alive_keeps_keys_and_revoke_deletes_them,
            watch_reports_puts_and_deletes_in_revision_order,
            watch_from_a_past_revision_replays_exactly_what_was_missed,
            watch_filters_by_range,
            watch_from_before_the_history_is_compacted,
            range_compares_hold_for_every_key_and_an_empty_range_as_a_missing_key,
            leases_with_chosen_ids_are_granted_once_and_listed,
            leases_are_listed_in_pages_with_their_keys,
            an_empty_store_is_at_revision_1_and_its_first_write_gets_2,
            reads_at_every_revision_of_a_scripted_history_equal_a_model,
            compaction_at_each_point_keeps_what_is_after_it_and_names_itself,
            a_key_written_twice_in_one_transaction_reads_right_at_every_revision,
            reads_above_the_current_revision_are_future_revisions,
            a_page_that_stops_at_its_limit_counts_only_when_asked,
            a_page_stops_at_its_byte_bound_with_at_least_one_record,
            a_whole_read_past_its_cap_is_refused,
            paging_at_one_revision_while_writers_change_the_keys_sees_one_snapshot,
            compaction_under_concurrent_reads_and_watches,
            reads_and_replays_span_flushes_at_every_revision,
            a_lease_whose_keys_span_a_flush_is_listed_and_revoked_whole,
        );
    };
    (@checks $make_store:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                let store = $make_store;
                $crate::storage::conformance::$check(std::sync::Arc::new(store)).await;
            }
        )*
    };
}
pub(crate) use conformance_suite;

/// How a backend expires leases: the one behaviour in which backends differ
/// (`docs/DEPLOYMENT.md` explains why).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// Keys vanish for readers at the deadline; `expire_leases` deletes them
    /// and watchers see `Expire` events (the local backends).
    Local,
    /// The cluster expires leases itself, soon after the deadline, and
    /// watchers see deletes (etcd).
    Remote,
}

/// A store together with what must outlive it: the temporary directory it
/// keeps its files in, or the etcd process it talks to.
pub(crate) struct Alongside<S, T> {
    pub(crate) store: S,
    pub(crate) _kept: T,
}

impl<S: Store, T: Send + Sync + 'static> Store for Alongside<S, T> {
    async fn get(&self, key: &[u8], revision: Revision) -> Result<Option<Record>, StoreError> {
        self.store.get(key, revision).await
    }

    async fn put(&self, key: Bytes, value: Bytes) -> Result<Revision, StoreError> {
        self.store.put(key, value).await
    }

    async fn range(&self, query: RangeQuery) -> Result<RangeResult, StoreError> {
        self.store.range(query).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        self.store.txn(txn).await
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseInfo, StoreError> {
        self.store.lease_grant(ttl).await
    }

    async fn lease_grant_as(&self, id: LeaseId, ttl: Duration) -> Result<LeaseInfo, StoreError> {
        self.store.lease_grant_as(id, ttl).await
    }

    async fn lease_ids(&self) -> Result<Vec<LeaseId>, StoreError> {
        self.store.lease_ids().await
    }

    async fn leases(
        &self,
        after: Option<LeaseId>,
        limit: usize,
    ) -> Result<Vec<LeaseInfo>, StoreError> {
        self.store.leases(after, limit).await
    }

    async fn lease_keys(
        &self,
        id: LeaseId,
        range: KeyRange,
        limit: usize,
    ) -> Result<(Vec<Bytes>, bool), StoreError> {
        self.store.lease_keys(id, range, limit).await
    }

    async fn lease_holds_foreign_keys(&self, id: LeaseId) -> Result<bool, StoreError> {
        self.store.lease_holds_foreign_keys(id).await
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<LeaseInfo, StoreError> {
        self.store.lease_keep_alive(id).await
    }

    async fn lease_info(&self, id: LeaseId) -> Result<LeaseInfo, StoreError> {
        self.store.lease_info(id).await
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<(u64, Revision), StoreError> {
        self.store.lease_revoke(id).await
    }

    async fn expire_leases(&self) -> Result<u64, StoreError> {
        self.store.expire_leases().await
    }

    async fn compact(&self, revision: Revision) -> Result<Revision, StoreError> {
        self.store.compact(revision).await
    }

    async fn watch(
        &self,
        range: KeyRange,
        from: Option<Revision>,
    ) -> Result<EventStream, StoreError> {
        self.store.watch(range, from).await
    }

    fn stats(&self) -> super::StoreStats {
        self.store.stats()
    }

    async fn snapshot(&self) -> Result<super::Snapshot, StoreError> {
        self.store.snapshot().await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.store.flush().await
    }
}

fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub(crate) async fn get_of_missing_key_is_none<S: Store>(store: Arc<S>) {
    assert_eq!(store.get(b"never-set", 0).await.unwrap(), None);
}

pub(crate) async fn put_then_get_returns_the_value<S: Store>(store: Arc<S>) {
    let revision = store.put(bytes("weather"), bytes("sunny")).await.unwrap();
    let record = store
        .get(b"weather", 0)
        .await
        .unwrap()
        .expect("record after put");
    assert_eq!(record.value, bytes("sunny"));
    assert_eq!(record.mod_revision, revision);
    assert_eq!(record.create_revision, revision);
    assert_eq!(record.version, 1);
}

pub(crate) async fn put_overwrites_and_counts_versions<S: Store>(store: Arc<S>) {
    let first = store.put(bytes("k"), bytes("one")).await.unwrap();
    let second = store.put(bytes("k"), bytes("two")).await.unwrap();
    assert!(second > first, "revision {second} not after {first}");
    let record = store.get(b"k", 0).await.unwrap().expect("record after put");
    assert_eq!(record.value, bytes("two"));
    assert_eq!(record.create_revision, first);
    assert_eq!(record.mod_revision, second);
    assert_eq!(record.version, 2);
}

pub(crate) async fn revisions_increase_across_keys<S: Store>(store: Arc<S>) {
    let mut last = 0;
    for i in 0..50 {
        let revision = store
            .put(bytes(&format!("key-{i}")), bytes("v"))
            .await
            .unwrap();
        assert!(revision > last, "revision {revision} not after {last}");
        last = revision;
    }
}

pub(crate) async fn empty_value_is_a_value<S: Store>(store: Arc<S>) {
    store.put(bytes("empty"), Bytes::new()).await.unwrap();
    let record = store
        .get(b"empty", 0)
        .await
        .unwrap()
        .expect("empty value is stored");
    assert!(record.value.is_empty());
}

pub(crate) async fn keys_and_values_are_binary_safe<S: Store>(store: Arc<S>) {
    let key = Bytes::from_static(&[0, 159, 146, 150, 255, b'\n']);
    let value = Bytes::from_static(&[255, 0, 0, 1]);
    store.put(key.clone(), value.clone()).await.unwrap();
    assert_eq!(
        store.get(&key, 0).await.unwrap().expect("binary key").value,
        value
    );
    // A key that is a prefix of another is a different key.
    assert_eq!(store.get(&key[..5], 0).await.unwrap(), None);
}

pub(crate) async fn concurrent_writers_of_one_key_are_serialized<S: Store>(store: Arc<S>) {
    const WRITERS: u64 = 8;
    const PUTS: u64 = 200;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut max = 0;
                for i in 0..PUTS {
                    max = store
                        .put(bytes("hot"), bytes(&format!("{w}-{i}")))
                        .await
                        .unwrap();
                }
                max
            })
        })
        .collect();
    let mut highest = 0;
    for task in tasks {
        highest = highest.max(task.await.unwrap());
    }
    let record = store.get(b"hot", 0).await.unwrap().expect("hot key");
    assert_eq!(record.version, WRITERS * PUTS, "every put counted once");
    assert_eq!(
        record.mod_revision, highest,
        "the last write carries the highest revision"
    );
}

pub(crate) async fn concurrent_writers_of_many_keys_keep_their_last_write<S: Store>(store: Arc<S>) {
    let tasks: Vec<_> = (0..16)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for i in 0..100 {
                    let key = bytes(&format!("writer-{w}/key-{}", i % 10));
                    store.put(key, bytes(&i.to_string())).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    for w in 0..16 {
        for k in 0..10 {
            let record = store
                .get(format!("writer-{w}/key-{k}").as_bytes(), 0)
                .await
                .unwrap()
                .expect("written key");
            assert_eq!(record.value, bytes(&(90 + k).to_string()));
            assert_eq!(record.version, 10);
        }
    }
}

fn put_op(key: &str, value: &str) -> Op {
    Op::Put {
        key: bytes(key),
        value: bytes(value),
        lease: 0,
        prev: false,
    }
}

fn delete_op(range: KeyRange) -> Op {
    Op::Delete { range, prev: true }
}

fn keys(result: &RangeResult) -> Vec<String> {
    result
        .kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

async fn fill<S: Store>(store: &S, names: &[&str]) {
    for name in names {
        store
            .put(bytes(name), bytes(&format!("v-{name}")))
            .await
            .unwrap();
    }
}

pub(crate) async fn range_is_sorted_and_pages_with_limit_more_and_count<S: Store>(store: Arc<S>) {
    fill(&*store, &["b", "a", "d", "c", "e"]).await;
    let mut query = RangeQuery::all(KeyRange::prefix(Bytes::new()));
    query.limit = 2;
    let first = store.range(query.clone()).await.unwrap();
    assert_eq!(keys(&first), ["a", "b"]);
    assert!(first.more);
    assert_eq!(first.count, 5);
    assert_eq!(first.kvs[0].record.value, bytes("v-a"));
    // The next page starts just after the last key of this one.
    let mut next = first.kvs[1].key.to_vec();
    next.push(0);
    query.range = query.range.resumed_at(Bytes::from(next));
    let second = store.range(query.clone()).await.unwrap();
    assert_eq!(keys(&second), ["c", "d"]);
    assert!(second.more);
    let mut last = second.kvs[1].key.to_vec();
    last.push(0);
    query.range = query.range.resumed_at(Bytes::from(last));
    let third = store.range(query).await.unwrap();
    assert_eq!(keys(&third), ["e"]);
    assert!(!third.more);
    assert!(third.revision >= 5);
}

pub(crate) async fn range_by_prefix_between_keys_only_and_count_only<S: Store>(store: Arc<S>) {
    fill(&*store, &["user/1", "user/2", "user0", "use", "video/1"]).await;
    let users = store
        .range(RangeQuery::all(KeyRange::prefix(bytes("user/"))))
        .await
        .unwrap();
    assert_eq!(keys(&users), ["user/1", "user/2"]);
    let between = store
        .range(RangeQuery::all(KeyRange::between(
            bytes("user/2"),
            bytes("video/1"),
        )))
        .await
        .unwrap();
    assert_eq!(keys(&between), ["user/2", "user0"]);
    let mut keys_only = RangeQuery::all(KeyRange::prefix(bytes("user")));
    keys_only.keys_only = true;
    let result = store.range(keys_only).await.unwrap();
    assert_eq!(keys(&result), ["user/1", "user/2", "user0"]);
    assert!(result.kvs.iter().all(|kv| kv.record.value.is_empty()));
    assert!(result.kvs.iter().all(|kv| kv.record.version == 1));
    let mut count_only = RangeQuery::all(KeyRange::prefix(Bytes::new()));
    count_only.count_only = true;
    let counted = store.range(count_only).await.unwrap();
    assert!(counted.kvs.is_empty());
    assert_eq!(counted.count, 5);
    let single = store
        .range(RangeQuery::all(KeyRange::key(bytes("use"))))
        .await
        .unwrap();
    assert_eq!(keys(&single), ["use"]);
    let empty = store
        .range(RangeQuery::all(KeyRange::between(bytes("z"), bytes("a"))))
        .await
        .unwrap();
    assert_eq!(empty.count, 0);
}

pub(crate) async fn a_range_that_holds_no_key_reads_and_deletes_nothing<S: Store>(store: Arc<S>) {
    fill(&*store, &["\0", "a", "b"]).await;
    // ["", "\0") holds only the empty key, which is no key; the others end
    // at or before their start.
    for (start, end) in [("", "\0"), ("b", "a"), ("a", "a")] {
        let range = KeyRange::between(bytes(start), bytes(end));
        let read = store.range(RangeQuery::all(range.clone())).await.unwrap();
        assert_eq!((read.kvs.len(), read.count), (0, 0), "[{start:?}, {end:?})");
        let result = store.txn(Txn::of(vec![delete_op(range)])).await.unwrap();
        assert!(
            matches!(result.results[..], [OpResult::Delete { deleted: 0, .. }]),
            "[{start:?}, {end:?}) deleted {:?}",
            result.results
        );
    }
    let all = store
        .range(RangeQuery::all(KeyRange::prefix(Bytes::new())))
        .await
        .unwrap();
    assert_eq!(keys(&all), ["\0", "a", "b"]);
}

pub(crate) async fn delete_of_a_key_and_of_a_range_counts_and_returns_what_went<S: Store>(
    store: Arc<S>,
) {
    fill(&*store, &["a", "p/1", "p/2", "p/3", "q"]).await;
    let result = store
        .txn(Txn::of(vec![delete_op(KeyRange::key(bytes("a")))]))
        .await
        .unwrap();
    let OpResult::Delete { deleted, prev } = &result.results[0] else {
        panic!("a delete answers a delete: {result:?}")
    };
    assert_eq!(*deleted, 1);
    assert_eq!(prev[0].record.value, bytes("v-a"));
    assert_eq!(store.get(b"a", 0).await.unwrap(), None);

    let result = store
        .txn(Txn::of(vec![delete_op(KeyRange::prefix(bytes("p/")))]))
        .await
        .unwrap();
    let OpResult::Delete { deleted, prev } = &result.results[0] else {
        panic!("a delete answers a delete: {result:?}")
    };
    assert_eq!(*deleted, 3);
    assert_eq!(prev.len(), 3);
    let left = store
        .range(RangeQuery::all(KeyRange::prefix(Bytes::new())))
        .await
        .unwrap();
    assert_eq!(keys(&left), ["q"]);

    // Deleting nothing is an answer, not an error, and not a write: it takes
    // no revision (watchers would see a revision without an event).
    let before = left.revision;
    for range in [
        KeyRange::prefix(bytes("nothing/")),
        KeyRange::key(bytes("missing")),
    ] {
        let result = store.txn(Txn::of(vec![delete_op(range)])).await.unwrap();
        assert!(matches!(
            result.results[0],
            OpResult::Delete { deleted: 0, .. }
        ));
        assert_eq!(result.revision, before, "{:?}", result.results);
    }
    // The next write takes the next revision: none went missing.
    assert_eq!(store.put(bytes("r"), bytes("1")).await.unwrap(), before + 1);
}

pub(crate) async fn a_deleted_key_starts_over_when_put_again<S: Store>(store: Arc<S>) {
    store.put(bytes("k"), bytes("1")).await.unwrap();
    store.put(bytes("k"), bytes("2")).await.unwrap();
    store
        .txn(Txn::of(vec![delete_op(KeyRange::key(bytes("k")))]))
        .await
        .unwrap();
    let revision = store.put(bytes("k"), bytes("3")).await.unwrap();
    let record = store.get(b"k", 0).await.unwrap().unwrap();
    assert_eq!((record.version, record.create_revision), (1, revision));
}

pub(crate) async fn put_can_return_the_previous_record<S: Store>(store: Arc<S>) {
    let put = |value: &str| Op::Put {
        key: bytes("k"),
        value: bytes(value),
        lease: 0,
        prev: true,
    };
    let first = store.txn(Txn::of(vec![put("one")])).await.unwrap();
    assert_eq!(first.results, [OpResult::Put { prev: None }]);
    let second = store.txn(Txn::of(vec![put("two")])).await.unwrap();
    let OpResult::Put { prev: Some(prev) } = &second.results[0] else {
        panic!("the previous record: {second:?}")
    };
    assert_eq!(prev.key, bytes("k"));
    assert_eq!(prev.record.value, bytes("one"));
    assert_eq!(prev.record.mod_revision, first.revision);
}

fn cas(key: &str, expected_revision: Revision, value: &str) -> Txn {
    Txn {
        compares: vec![Compare::key(
            bytes(key),
            CompareTarget::ModRevision(expected_revision),
            CompareOp::Equal,
        )],
        success: vec![put_op(key, value)],
        failure: vec![Op::Get(RangeQuery::all(KeyRange::key(bytes(key))))],
    }
}

pub(crate) async fn compare_and_set_wins_only_against_the_expected_revision<S: Store>(
    store: Arc<S>,
) {
    let revision = store.put(bytes("k"), bytes("v1")).await.unwrap();
    let won = store.txn(cas("k", revision, "v2")).await.unwrap();
    assert!(won.succeeded);
    assert!(won.revision > revision);
    let lost = store.txn(cas("k", revision, "v3")).await.unwrap();
    assert!(!lost.succeeded);
    let OpResult::Get(current) = &lost.results[0] else {
        panic!("the failure branch reads the key: {lost:?}")
    };
    assert_eq!(current.kvs[0].record.value, bytes("v2"));
    assert_eq!(current.kvs[0].record.mod_revision, won.revision);
    // Creating only if absent: mod_revision 0.
    assert!(store.txn(cas("fresh", 0, "new")).await.unwrap().succeeded);
    assert!(!store.txn(cas("fresh", 0, "again")).await.unwrap().succeeded);
    assert_eq!(
        store.get(b"fresh", 0).await.unwrap().unwrap().value,
        bytes("new")
    );
}

pub(crate) async fn a_failed_compare_runs_the_failure_branch_and_changes_nothing<S: Store>(
    store: Arc<S>,
) {
    let revision = store.put(bytes("k"), bytes("v")).await.unwrap();
    let txn = Txn {
        compares: vec![Compare::key(
            bytes("k"),
            CompareTarget::Value(bytes("other")),
            CompareOp::Equal,
        )],
        success: vec![put_op("k", "changed"), put_op("side", "effect")],
        failure: vec![],
    };
    let result = store.txn(txn).await.unwrap();
    assert!(!result.succeeded);
    assert!(result.results.is_empty());
    assert_eq!(result.revision, revision, "no write, no new revision");
    assert_eq!(store.get(b"k", 0).await.unwrap().unwrap().value, bytes("v"));
    assert_eq!(store.get(b"side", 0).await.unwrap(), None);
}

pub(crate) async fn value_version_and_existence_compares<S: Store>(store: Arc<S>) {
    store.put(bytes("k"), bytes("b")).await.unwrap();
    store.put(bytes("k"), bytes("b")).await.unwrap();
    let check = |target: CompareTarget, op: CompareOp| Txn {
        compares: vec![Compare::key(bytes("k"), target, op)],
        ..Txn::default()
    };
    for (target, op, expected) in [
        (CompareTarget::Value(bytes("b")), CompareOp::Equal, true),
        (CompareTarget::Value(bytes("a")), CompareOp::Greater, true),
        (CompareTarget::Value(bytes("c")), CompareOp::Less, true),
        (CompareTarget::Value(bytes("b")), CompareOp::NotEqual, false),
        (CompareTarget::Version(2), CompareOp::Equal, true),
        (CompareTarget::Version(0), CompareOp::Greater, true),
        (CompareTarget::CreateRevision(0), CompareOp::Greater, true),
        // Numbers past i64::MAX (the API's are u64, etcd's i64) are above
        // every revision and version.
        (CompareTarget::ModRevision(u64::MAX), CompareOp::Less, true),
        (
            CompareTarget::CreateRevision(1 << 63),
            CompareOp::Greater,
            false,
        ),
        (CompareTarget::Version(u64::MAX), CompareOp::NotEqual, true),
    ] {
        let result = store.txn(check(target.clone(), op)).await.unwrap();
        assert_eq!(result.succeeded, expected, "{target:?} {op:?}");
    }
    let missing = |target: CompareTarget| Txn {
        compares: vec![Compare::key(bytes("missing"), target, CompareOp::Equal)],
        ..Txn::default()
    };
    assert!(
        store
            .txn(missing(CompareTarget::Version(0)))
            .await
            .unwrap()
            .succeeded
    );
    assert!(
        !store
            .txn(missing(CompareTarget::Value(Bytes::new())))
            .await
            .unwrap()
            .succeeded
    );
}

pub(crate) async fn a_transaction_is_one_revision_for_all_its_writes<S: Store>(store: Arc<S>) {
    let before = store.put(bytes("x"), bytes("0")).await.unwrap();
    let result = store
        .txn(Txn::of(vec![
            put_op("a", "1"),
            put_op("b", "2"),
            delete_op(KeyRange::key(bytes("x"))),
        ]))
        .await
        .unwrap();
    assert_eq!(result.revision, before + 1);
    for key in [&b"a"[..], b"b"] {
        assert_eq!(
            store.get(key, 0).await.unwrap().unwrap().mod_revision,
            before + 1
        );
    }
    assert_eq!(store.get(b"x", 0).await.unwrap(), None);
    assert_eq!(store.put(bytes("c"), bytes("3")).await.unwrap(), before + 2);
}

pub(crate) async fn read_only_transactions_read_many_keys_without_a_revision<S: Store>(
    store: Arc<S>,
) {
    fill(&*store, &["a", "b"]).await;
    let revision = store.put(bytes("c"), bytes("v-c")).await.unwrap();
    let gets = ["a", "b", "missing"]
        .iter()
        .map(|key| Op::Get(RangeQuery::all(KeyRange::key(bytes(key)))))
        .collect();
    let result = store.txn(Txn::of(gets)).await.unwrap();
    assert_eq!(result.revision, revision);
    let found: Vec<usize> = result
        .results
        .iter()
        .map(|r| match r {
            OpResult::Get(range) => range.kvs.len(),
            other => panic!("a get answers a get: {other:?}"),
        })
        .collect();
    assert_eq!(found, [1, 1, 0]);
}

pub(crate) async fn racing_compare_and_sets_have_exactly_one_winner<S: Store>(store: Arc<S>) {
    for round in 0..50 {
        let key = format!("race-{round}");
        let revision = store.put(bytes(&key), bytes("start")).await.unwrap();
        let racers: Vec<_> = (0..4)
            .map(|racer| {
                let store = Arc::clone(&store);
                let key = key.clone();
                tokio::spawn(async move {
                    store
                        .txn(cas(&key, revision, &format!("racer-{racer}")))
                        .await
                        .unwrap()
                        .succeeded
                })
            })
            .collect();
        let mut winners = 0;
        for racer in racers {
            winners += usize::from(racer.await.unwrap());
        }
        assert_eq!(winners, 1, "round {round}");
    }
}

pub(crate) async fn a_put_with_an_unknown_lease_fails_and_changes_nothing<S: Store>(store: Arc<S>) {
    let txn = Txn::of(vec![
        put_op("plain", "v"),
        Op::Put {
            key: bytes("leased"),
            value: bytes("v"),
            lease: 12345,
            prev: false,
        },
    ]);
    assert_eq!(
        store.txn(txn).await.unwrap_err(),
        StoreError::LeaseNotFound(12345)
    );
    assert_eq!(store.get(b"plain", 0).await.unwrap(), None);
    assert_eq!(
        store.lease_keep_alive(12345).await.unwrap_err(),
        StoreError::LeaseNotFound(12345)
    );
    assert_eq!(
        store.lease_revoke(12345).await.unwrap_err(),
        StoreError::LeaseNotFound(12345)
    );
}

fn leased(key: &str, lease: LeaseId) -> Op {
    Op::Put {
        key: bytes(key),
        value: bytes("temporary"),
        lease,
        prev: false,
    }
}

pub(crate) async fn keys_of_an_expired_lease_vanish_and_are_deleted<S: Store>(
    store: Arc<S>,
    expiry: Expiry,
) {
    let lease = store
        .lease_grant(Duration::from_millis(1000))
        .await
        .unwrap();
    assert_eq!(lease.ttl, Duration::from_millis(1000));
    store
        .txn(Txn::of(vec![
            leased("t/1", lease.id),
            leased("t/2", lease.id),
        ]))
        .await
        .unwrap();
    store.put(bytes("t/0"), bytes("permanent")).await.unwrap();
    store.put(bytes("t/3"), bytes("permanent")).await.unwrap();
    let mut events = store
        .watch(KeyRange::prefix(bytes("t/")), None)
        .await
        .unwrap();
    assert!(store.get(b"t/1", 0).await.unwrap().is_some());

    let expected_kind = match expiry {
        Expiry::Local => {
            tokio::time::sleep(Duration::from_millis(1400)).await;
            // Gone for every reader at the deadline, before any expiry ran.
            assert_eq!(store.get(b"t/1", 0).await.unwrap(), None);
            EventKind::Expire
        }
        Expiry::Remote => {
            // Gone soon after the deadline, whenever the cluster gets to it.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while store.get(b"t/1", 0).await.unwrap().is_some() {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the keys of a 1 s lease still exist after 10 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            EventKind::Delete
        }
    };
    let left = store
        .range(RangeQuery::all(KeyRange::prefix(bytes("t/"))))
        .await
        .unwrap();
    assert_eq!(keys(&left), ["t/0", "t/3"]);
    assert_eq!(left.count, 2);
    // A page: the expired keys past it (still stored, on a local expiry)
    // are not counted either.
    let mut page = RangeQuery::all(KeyRange::prefix(bytes("t/")));
    page.limit = 1;
    let page = store.range(page).await.unwrap();
    assert_eq!(keys(&page), ["t/0"]);
    assert!(page.more);
    assert_eq!(page.count, 2);
    assert_eq!(
        store.lease_info(lease.id).await.unwrap_err(),
        StoreError::LeaseNotFound(lease.id)
    );

    if expiry == Expiry::Local {
        assert_eq!(store.expire_leases().await.unwrap(), 2);
    }
    assert_eq!(store.expire_leases().await.unwrap(), 0);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.extend(next_events(&mut events).await);
    }
    let kinds: Vec<_> = seen.iter().map(|e| (e.kind, e.key.clone())).collect();
    assert_eq!(
        kinds,
        [(expected_kind, bytes("t/1")), (expected_kind, bytes("t/2"))]
    );
    assert_eq!(
        store.get(b"t/3", 0).await.unwrap().unwrap().value,
        bytes("permanent")
    );
}

pub(crate) async fn keep_alive_keeps_keys_and_revoke_deletes_them<S: Store>(store: Arc<S>) {
    let lease = store.lease_grant(Duration::from_millis(400)).await.unwrap();
    store
        .txn(Txn::of(vec![leased("k", lease.id)]))
        .await
        .unwrap();
    assert_eq!(store.get(b"k", 0).await.unwrap().unwrap().lease, lease.id);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let info = store.lease_keep_alive(lease.id).await.unwrap();
        assert_eq!(info.remaining, info.ttl);
    }
    assert!(
        store.get(b"k", 0).await.unwrap().is_some(),
        "kept alive past its TTL"
    );
    assert!(store.lease_info(lease.id).await.unwrap().remaining <= lease.ttl);
    assert_eq!(store.lease_revoke(lease.id).await.unwrap().0, 1);
    assert_eq!(store.get(b"k", 0).await.unwrap(), None);
    assert_eq!(
        store.lease_revoke(lease.id).await.unwrap_err(),
        StoreError::LeaseNotFound(lease.id)
    );
}

async fn next_events(stream: &mut EventStream) -> Vec<Event> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream goes on")
        .expect("events, not an error")
}

pub(crate) async fn watch_reports_puts_and_deletes_in_revision_order<S: Store>(store: Arc<S>) {
    let mut events = store
        .watch(KeyRange::prefix(Bytes::new()), None)
        .await
        .unwrap();
    let first = store.put(bytes("a"), bytes("1")).await.unwrap();
    store.put(bytes("a"), bytes("2")).await.unwrap();
    store
        .txn(Txn::of(vec![delete_op(KeyRange::key(bytes("a")))]))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.extend(next_events(&mut events).await);
    }
    let summary: Vec<_> = seen
        .iter()
        .map(|e| {
            (
                e.kind,
                e.revision(),
                e.record.value.clone(),
                e.record.version,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (EventKind::Put, first, bytes("1"), 1),
            (EventKind::Put, first + 1, bytes("2"), 2),
            (EventKind::Delete, first + 2, Bytes::new(), 0),
        ]
    );
}

pub(crate) async fn watch_from_a_past_revision_replays_exactly_what_was_missed<S: Store>(
    store: Arc<S>,
) {
    let mut revisions = Vec::new();
    for i in 0..20 {
        revisions.push(
            store
                .put(bytes(&format!("k{}", i % 3)), bytes(&i.to_string()))
                .await
                .unwrap(),
        );
    }
    // A client that saw up to revisions[9] resumes from the next one.
    let mut events = store
        .watch(KeyRange::prefix(Bytes::new()), Some(revisions[9] + 1))
        .await
        .unwrap();
    let live = store.put(bytes("k0"), bytes("live")).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 11 {
        seen.extend(next_events(&mut events).await);
    }
    let got: Vec<Revision> = seen.iter().map(Event::revision).collect();
    let mut expected = revisions[10..].to_vec();
    expected.push(live);
    assert_eq!(
        got, expected,
        "each missed event once, in order, then live ones"
    );
    assert_eq!(seen[0].record.value, bytes("10"));
}

pub(crate) async fn watch_filters_by_range<S: Store>(store: Arc<S>) {
    let mut events = store
        .watch(KeyRange::prefix(bytes("user/")), None)
        .await
        .unwrap();
    store.put(bytes("other"), bytes("x")).await.unwrap();
    store.put(bytes("user/1"), bytes("y")).await.unwrap();
    let batch = next_events(&mut events).await;
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].key, bytes("user/1"));
}

pub(crate) async fn watch_from_before_the_history_is_compacted<S: Store>(store: Arc<S>) {
    // A fresh store's history starts at revision 1.
    store.put(bytes("k"), bytes("v")).await.unwrap();
    let error = store
        .watch(KeyRange::key(bytes("k")), Some(0))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::Compacted { requested: 0, .. }),
        "{error:?}"
    );
}

pub(crate) async fn an_empty_store_is_at_revision_1_and_its_first_write_gets_2<S: Store>(
    store: Arc<S>,
) {
    let empty = store
        .range(RangeQuery::all(KeyRange::prefix(Bytes::new())))
        .await
        .unwrap();
    assert_eq!(
        empty.revision, 1,
        "etcd's numbering: an empty store is at 1"
    );
    assert_eq!(store.put(bytes("k"), bytes("v")).await.unwrap(), 2);
    let at_1 = store.get(b"k", 1).await.unwrap();
    assert_eq!(at_1, None, "at revision 1 nothing was written");
}

/// One step of a scripted history.
#[derive(Clone, Debug)]
enum Step {
    Put(String, String),
    Delete(KeyRange),
    Txn(Vec<Op>),
}

/// A model of the keyspace, one map per revision: what every read at a
/// revision must answer.
struct Model {
    /// `states[r]`: the keyspace at revision `r` (0 unused; 1 is empty).
    states: Vec<std::collections::BTreeMap<Bytes, Record>>,
    /// `events[r]`: the events of the write at `r`, in order.
    events: Vec<Vec<(EventKind, Bytes, Record)>>,
}

impl Model {
    fn new() -> Model {
        Model {
            states: vec![Default::default(), Default::default()],
            events: vec![Vec::new(), Vec::new()],
        }
    }

    fn current(&self) -> Revision {
        (self.states.len() - 1) as Revision
    }

    /// Applies `ops` as one transaction; whether it wrote.
    fn apply(&mut self, ops: &[Op]) -> bool {
        let before = self.states.last().unwrap().clone();
        let revision = self.current() + 1;
        let writes = ops.iter().any(|op| match op {
            Op::Put { .. } => true,
            Op::Delete { range, .. } => before.keys().any(|k| range.contains(k)),
            Op::Get(_) => false,
        });
        if !writes {
            return false;
        }
        let mut state = before;
        let mut events = Vec::new();
        for op in ops {
            match op {
                Op::Put { key, value, .. } => {
                    let record = Record::after_put(state.get(key), value.clone(), revision, 0);
                    state.insert(key.clone(), record.clone());
                    events.push((EventKind::Put, key.clone(), record));
                }
                Op::Delete { range, .. } => {
                    let doomed: Vec<Bytes> = state
                        .keys()
                        .filter(|k| range.contains(k))
                        .cloned()
                        .collect();
                    for key in doomed {
                        state.remove(&key);
                        let gone = Record {
                            value: Bytes::new(),
                            create_revision: 0,
                            mod_revision: revision,
                            version: 0,
                            lease: 0,
                        };
                        events.push((EventKind::Delete, key, gone));
                    }
                }
                Op::Get(_) => {}
            }
        }
        self.states.push(state);
        self.events.push(events);
        true
    }
}

/// A history of puts, overwrites, deletes, range deletes and multi-key
/// transactions over a few keys (no key written twice in one transaction,
/// which etcd refuses), from a fixed seed.
fn scripted_history(steps: usize) -> Vec<Step> {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let names = ["a", "b", "c", "d/1", "d/2", "d/3", "e"];
    (0..steps)
        .map(|i| {
            let key = names[next(names.len() as u64) as usize].to_owned();
            match next(10) {
                0..=4 => Step::Put(key, format!("v{i}")),
                5 | 6 => Step::Delete(KeyRange::key(bytes(&key))),
                7 => Step::Delete(KeyRange::prefix(bytes("d/"))),
                _ => {
                    let other = names[next(names.len() as u64) as usize];
                    let mut ops = vec![put_op(&key, &format!("t{i}"))];
                    if other != key {
                        ops.push(delete_op(KeyRange::key(bytes(other))));
                    }
                    Step::Txn(ops)
                }
            }
        })
        .collect()
}

/// The operations of one step.
fn ops_of(step: &Step) -> Vec<Op> {
    match step {
        Step::Put(key, value) => vec![put_op(key, value)],
        Step::Delete(range) => vec![delete_op(range.clone())],
        Step::Txn(ops) => ops.clone(),
    }
}

/// Runs `step` on `store` and on `model`, checking the revision it got.
async fn run_step<S: Store>(store: &S, model: &mut Model, step: &Step) {
    let ops = ops_of(step);
    let result = store.txn(Txn::of(ops.clone())).await.unwrap();
    let wrote = model.apply(&ops);
    assert_eq!(result.revision, model.current(), "{step:?} wrote: {wrote}");
}

/// Runs `steps` on `store` and on a model; returns the model.
async fn run_history<S: Store>(store: &S, steps: &[Step]) -> Model {
    let mut model = Model::new();
    for step in steps {
        run_step(store, &mut model, step).await;
    }
    model
}

/// Checks every kind of read at `revision` against the model.
async fn check_reads_at<S: Store>(store: &S, model: &Model, revision: Revision) {
    let expected = &model.states[revision as usize];
    let everything = RangeQuery::all(KeyRange::prefix(Bytes::new())).at(revision);
    let answer = store.range(everything.clone()).await.unwrap();
    let found: Vec<(Bytes, Record)> = answer
        .kvs
        .into_iter()
        .map(|kv| (kv.key, kv.record))
        .collect();
    let wanted: Vec<(Bytes, Record)> = expected
        .iter()
        .map(|(k, r)| (k.clone(), r.clone()))
        .collect();
    assert_eq!(found, wanted, "range at revision {revision}");
    assert_eq!(answer.count, expected.len() as u64);
    for name in ["a", "b", "c", "d/1", "d/2", "d/3", "e", "never"] {
        let got = store.get(name.as_bytes(), revision).await.unwrap();
        assert_eq!(
            got.as_ref(),
            expected.get(name.as_bytes()),
            "get {name} at revision {revision}"
        );
    }
    // In pages of two, each at the revision, and a prefix, counted.
    let mut paged = Vec::new();
    let mut query = everything;
    query.limit = 2;
    loop {
        let page = store.range(query.clone()).await.unwrap();
        paged.extend(page.kvs.iter().map(|kv| kv.key.clone()));
        let Some(last) = page.kvs.last().filter(|_| page.more) else {
            break;
        };
        let mut next = last.key.to_vec();
        next.push(0);
        query.range = query.range.resumed_at(Bytes::from(next));
    }
    assert_eq!(
        paged,
        expected.keys().cloned().collect::<Vec<_>>(),
        "pages at revision {revision}"
    );
    let mut count = RangeQuery::all(KeyRange::prefix(bytes("d/"))).at(revision);
    count.count_only = true;
    let prefixed = expected.keys().filter(|k| k.starts_with(b"d/")).count();
    assert_eq!(store.range(count).await.unwrap().count, prefixed as u64);
}

pub(crate) async fn reads_at_every_revision_of_a_scripted_history_equal_a_model<S: Store>(
    store: Arc<S>,
) {
    let model = run_history(&*store, &scripted_history(60)).await;
    assert!(model.current() > 30, "the script writes");
    for revision in 1..=model.current() {
        check_reads_at(&*store, &model, revision).await;
    }
    // 0 is the current revision.
    let now = store
        .range(RangeQuery::all(KeyRange::prefix(Bytes::new())))
        .await
        .unwrap();
    assert_eq!(now.kvs.len(), model.states.last().unwrap().len());
}

/// Flushes (on disk: a checkpoint, a durable commit after which the log
/// starts again) every third step, so that reads at past revisions and a
/// watch's replay span writes made durable at different points; the replay
/// must equal the memory store's of the same script.
pub(crate) async fn reads_and_replays_span_flushes_at_every_revision<S: Store>(store: Arc<S>) {
    let steps = scripted_history(60);
    let reference = crate::storage::MemoryStore::new();
    let mut model = Model::new();
    for (i, step) in steps.iter().enumerate() {
        run_step(&*store, &mut model, step).await;
        reference.txn(Txn::of(ops_of(step))).await.unwrap();
        if i % 3 == 0 {
            store.flush().await.unwrap();
        }
    }
    for revision in 1..=model.current() {
        check_reads_at(&*store, &model, revision).await;
    }
    let last = model.current();
    for from in [1, last / 3, last / 2, last] {
        assert_eq!(
            watched(&*store, from, last).await,
            watched(&reference, from, last).await,
            "a replay from revision {from}"
        );
    }
}

/// A lease's keys written before and after a flush, one of them moved off
/// the lease after it: listed and revoked as one set.
pub(crate) async fn a_lease_whose_keys_span_a_flush_is_listed_and_revoked_whole<S: Store>(
    store: Arc<S>,
) {
    let lease = store.lease_grant(Duration::from_secs(60)).await.unwrap().id;
    store
        .txn(Txn::of(vec![leased("l/1", lease), leased("l/2", lease)]))
        .await
        .unwrap();
    store.flush().await.unwrap();
    store.put(bytes("l/1"), bytes("free")).await.unwrap();
    store
        .txn(Txn::of(vec![leased("l/3", lease)]))
        .await
        .unwrap();
    let every = KeyRange::prefix(Bytes::new());
    let (listed, more) = store.lease_keys(lease, every.clone(), 10).await.unwrap();
    assert_eq!((listed, more), (vec![bytes("l/2"), bytes("l/3")], false));
    let granted = store.lease_ids().await.unwrap();
    assert!(granted.contains(&lease), "{granted:?}");
    assert_eq!(store.lease_revoke(lease).await.unwrap().0, 2);
    for flushed in [false, true] {
        if flushed {
            store.flush().await.unwrap();
        }
        assert_eq!(
            store.get(b"l/1", 0).await.unwrap().unwrap().value,
            bytes("free")
        );
        assert_eq!(store.get(b"l/2", 0).await.unwrap(), None);
        assert_eq!(store.get(b"l/3", 0).await.unwrap(), None);
        assert!(!store.lease_ids().await.unwrap().contains(&lease));
        assert_eq!(
            store.lease_revoke(lease).await.unwrap_err(),
            StoreError::LeaseNotFound(lease)
        );
    }
}

/// The events of a watch of everything from `from`, up to `to`.
async fn watched<S: Store>(
    store: &S,
    from: Revision,
    to: Revision,
) -> Vec<(EventKind, Bytes, Record)> {
    let mut stream = store
        .watch(KeyRange::prefix(Bytes::new()), Some(from))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen
        .last()
        .is_none_or(|(_, _, record): &(EventKind, Bytes, Record)| record.mod_revision < to)
    {
        for event in next_events(&mut stream).await {
            seen.push((event.kind, event.key, event.record));
        }
    }
    seen
}

pub(crate) async fn compaction_at_each_point_keeps_what_is_after_it_and_names_itself<S: Store>(
    store: Arc<S>,
) {
    let model = run_history(&*store, &scripted_history(30)).await;
    let current = model.current();
    for compacted in (2..=current).step_by(3) {
        store.compact(compacted).await.unwrap();
        // What is at or after the compacted revision reads as before...
        for revision in [compacted, (compacted + current) / 2, current] {
            check_reads_at(&*store, &model, revision).await;
        }
        // ... and watches replay what follows it from storage, event for
        // event (etcd drops the deletions at the compacted revision itself).
        if compacted < current {
            let expected: Vec<_> = (compacted + 1..=current)
                .flat_map(|r| model.events[r as usize].clone())
                .collect();
            assert_eq!(watched(&*store, compacted + 1, current).await, expected);
        }
        // What is before it is refused, naming what was asked.
        let below = compacted - 1;
        let error = store.get(b"a", below).await.unwrap_err();
        assert!(
            matches!(error, StoreError::Compacted { requested, .. } if requested == below),
            "{error:?}"
        );
        assert!(error.to_string().contains("compacted"), "{error}");
        let mut query = RangeQuery::all(KeyRange::prefix(Bytes::new())).at(below);
        query.limit = 1;
        assert!(matches!(
            store.range(query).await,
            Err(StoreError::Compacted { .. })
        ));
        let error = store
            .watch(KeyRange::prefix(Bytes::new()), Some(below))
            .await
            .unwrap_err();
        assert!(matches!(error, StoreError::Compacted { .. }), "{error:?}");
        // Compacting again at or below it is refused too.
        let again = store.compact(compacted).await.unwrap_err();
        assert!(matches!(again, StoreError::Compacted { .. }), "{again:?}");
    }
    let future = store.compact(current + 10).await.unwrap_err();
    assert!(
        matches!(future, StoreError::FutureRevision { .. }),
        "{future:?}"
    );
    // Writes go on after compaction, and their history with them.
    let revision = store.put(bytes("a"), bytes("after")).await.unwrap();
    assert_eq!(revision, current + 1);
    assert_eq!(
        store.get(b"a", current).await.unwrap().as_ref(),
        model.states[current as usize].get(&b"a"[..])
    );
}

pub(crate) async fn a_key_written_twice_in_one_transaction_reads_right_at_every_revision<
    S: Store,
>(
    store: Arc<S>,
) {
    let first = store.put(bytes("k"), bytes("old")).await.unwrap();
    // Put and delete in one transaction: the put was never visible.
    let both = store
        .txn(Txn::of(vec![
            put_op("k", "never seen"),
            delete_op(KeyRange::key(bytes("k"))),
        ]))
        .await;
    let Ok(both) = both else {
        // etcd refuses a transaction that writes a key twice: nothing to read.
        return;
    };
    let again = store.put(bytes("k"), bytes("new")).await.unwrap();
    let at = |revision| {
        let store = Arc::clone(&store);
        async move { store.get(b"k", revision).await.unwrap().map(|r| r.value) }
    };
    assert_eq!(at(first).await, Some(bytes("old")));
    assert_eq!(at(both.revision).await, None);
    assert_eq!(at(again).await, Some(bytes("new")));
    let record = store.get(b"k", again).await.unwrap().unwrap();
    assert_eq!(
        (record.create_revision, record.version),
        (again, 1),
        "recreated after the delete"
    );
}

pub(crate) async fn reads_above_the_current_revision_are_future_revisions<S: Store>(store: Arc<S>) {
    let current = store.put(bytes("k"), bytes("v")).await.unwrap();
    let error = store.get(b"k", current + 1).await.unwrap_err();
    assert!(
        matches!(error, StoreError::FutureRevision { requested, .. } if requested == current + 1),
        "{error:?}"
    );
    assert!(error.to_string().contains("future revision"), "{error}");
    let query = RangeQuery::all(KeyRange::prefix(Bytes::new())).at(current + 5);
    assert!(matches!(
        store.range(query).await,
        Err(StoreError::FutureRevision { .. })
    ));
}

pub(crate) async fn a_page_that_stops_at_its_limit_counts_only_when_asked<S: Store>(store: Arc<S>) {
    fill(&*store, &["a", "b", "c", "d", "e"]).await;
    let mut query = RangeQuery::all(KeyRange::prefix(Bytes::new()));
    query.limit = 2;
    query.count_all = false;
    let page = store.range(query.clone()).await.unwrap();
    assert_eq!((page.kvs.len(), page.more, page.count), (2, true, 2));
    query.count_all = true;
    let counted = store.range(query).await.unwrap();
    assert_eq!(
        (counted.kvs.len(), counted.more, counted.count),
        (2, true, 5)
    );
}

pub(crate) async fn a_page_stops_at_its_byte_bound_with_at_least_one_record<S: Store>(
    store: Arc<S>,
) {
    // Ten 1,000-byte values, and one of 5,000 bytes in the middle.
    for i in 0..10 {
        let size = if i == 5 { 5000 } else { 1000 };
        let key = format!("b/{i}");
        store
            .put(bytes(&key), Bytes::from(vec![b'v'; size]))
            .await
            .unwrap();
    }
    let record = |value: usize| page_bytes(3, value);
    // Room for three small records and most of a fourth.
    let bound = 3 * record(1000) + 500;
    let mut query = RangeQuery::all(KeyRange::prefix(bytes("b/")));
    query.max_bytes = bound;
    let mut pages = Vec::new();
    loop {
        let page = store.range(query.clone()).await.unwrap();
        assert_eq!(page.count, 10 - pages.iter().flatten().count() as u64);
        let keys: Vec<_> = page.kvs.iter().map(|kv| kv.key.clone()).collect();
        assert!(!keys.is_empty(), "a page with nothing in it");
        let size: usize = page.kvs.iter().map(KeyValue::page_bytes).sum();
        assert!(size <= bound || keys.len() == 1, "{size} bytes in {keys:?}");
        let last = keys.last().unwrap().to_vec();
        pages.push(keys);
        if !page.more {
            break;
        }
        let mut next = last;
        next.push(0);
        query.range = query.range.resumed_at(Bytes::from(next));
    }
    // Three, then two (the large one does not fit beside them), the large
    // one alone, three, one.
    let sizes: Vec<_> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [3, 2, 1, 3, 1], "{pages:?}");
    assert_eq!(pages[2], [bytes("b/5")]);
    // Keys only: the values do not count.
    let mut keys_only = RangeQuery::all(KeyRange::prefix(bytes("b/")));
    keys_only.max_bytes = bound;
    keys_only.keys_only = true;
    let page = store.range(keys_only).await.unwrap();
    assert_eq!((page.kvs.len(), page.more), (10, false));
    // A count is not a page.
    let mut count = RangeQuery::all(KeyRange::prefix(bytes("b/")));
    count.max_bytes = 1;
    count.count_only = true;
    let counted = store.range(count).await.unwrap();
    assert_eq!((counted.count, counted.more), (10, false));
    // The Ranges of one transaction share the bound: the first answers
    // three, the next what is left (at least one record each).
    let mut first = RangeQuery::all(KeyRange::between(bytes("b/0"), bytes("b/5")));
    first.max_bytes = bound;
    let mut second = RangeQuery::all(KeyRange::between(bytes("b/6"), bytes("b/9")));
    second.max_bytes = bound;
    let third = second.clone();
    let answer = store
        .txn(Txn::of(vec![
            Op::Get(first),
            Op::Get(second),
            Op::Get(third),
        ]))
        .await
        .unwrap();
    let pages: Vec<(usize, bool)> = answer
        .results
        .iter()
        .map(|result| match result {
            OpResult::Get(page) => (page.kvs.len(), page.more),
            other => panic!("not a range answer: {other:?}"),
        })
        .collect();
    assert_eq!(pages, [(3, true), (1, true), (1, true)]);
}

/// A whole read (`whole_max_bytes`, etcd's sorted Range) holding more than
/// its cap is refused, and one that fits answers every record; a count
/// holds no records and is not capped.
pub(crate) async fn a_whole_read_past_its_cap_is_refused<S: Store>(store: Arc<S>) {
    for i in 0..3 {
        store
            .put(bytes(&format!("w/{i}")), Bytes::from(vec![b'v'; 1000]))
            .await
            .unwrap();
    }
    let capped = |cap: usize| {
        let mut query = RangeQuery::all(KeyRange::prefix(bytes("w/")));
        query.whole_max_bytes = cap;
        query
    };
    let all = 3 * page_bytes(3, 1000);
    let read = store.range(capped(all)).await.unwrap();
    assert_eq!((read.kvs.len(), read.more), (3, false));
    assert_eq!(
        store.range(capped(all - 1)).await,
        Err(StoreError::WholeReadTooLarge(all - 1))
    );
    let mut keys = capped(3 * page_bytes(3, 0));
    keys.keys_only = true;
    assert_eq!(store.range(keys).await.unwrap().kvs.len(), 3);
    let mut count = capped(1);
    count.count_only = true;
    assert_eq!(store.range(count).await.unwrap().count, 3);
}

pub(crate) async fn paging_at_one_revision_while_writers_change_the_keys_sees_one_snapshot<
    S: Store,
>(
    store: Arc<S>,
) {
    const KEYS: usize = 100_000;
    const PAGE: usize = 1000;
    let name = |i: usize| format!("p/{i:06}");
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(500) {
        let ops = chunk
            .iter()
            .map(|&i| put_op(&name(i), "original"))
            .collect();
        store.txn(Txn::of(ops)).await.unwrap();
    }
    let first = {
        let mut query = RangeQuery::all(KeyRange::prefix(bytes("p/")));
        query.limit = PAGE;
        store.range(query).await.unwrap()
    };
    let snapshot = first.revision;
    // Writers overwrite, delete and add keys while the pages are read.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (changed, deleted) = ((i * 7919) % KEYS, (i * 104_729) % KEYS);
                let mut ops = vec![
                    put_op(&name(changed), "changed"),
                    put_op(&format!("p/{:06}x", (i * 31) % KEYS), "added"),
                ];
                if deleted != changed {
                    ops.push(delete_op(KeyRange::key(bytes(&name(deleted)))));
                }
                store.txn(Txn::of(ops)).await.unwrap();
                i += 1;
            }
            i
        })
    };
    let mut listed: Vec<KeyValue> = first.kvs;
    let mut more = first.more;
    while more {
        let mut next = listed.last().unwrap().key.to_vec();
        next.push(0);
        let mut query =
            RangeQuery::all(KeyRange::prefix(bytes("p/")).resumed_at(Bytes::from(next)))
                .at(snapshot);
        query.limit = PAGE;
        let page = store.range(query).await.unwrap();
        more = page.more;
        listed.extend(page.kvs);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.await.unwrap();
    assert!(writes > 0, "the writers ran while the pages were read");
    // The union of the pages is exactly the keyspace at the first page.
    assert_eq!(listed.len(), KEYS);
    for (i, kv) in listed.iter().enumerate() {
        assert_eq!(kv.key, bytes(&name(i)));
        assert_eq!(kv.record.value, bytes("original"));
        assert!(kv.record.mod_revision <= snapshot);
    }
}

pub(crate) async fn compaction_under_concurrent_reads_and_watches<S: Store>(store: Arc<S>) {
    let model = run_history(&*store, &scripted_history(40)).await;
    let current = model.current();
    let watch_from = current / 2;
    let mut stream = store
        .watch(KeyRange::prefix(Bytes::new()), Some(watch_from))
        .await
        .unwrap();
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for _ in 0..20 {
                    match store.get(b"a", current).await {
                        // Read, or compacted under the read: never wrong.
                        Ok(_) | Err(StoreError::Compacted { .. }) => {}
                        Err(other) => panic!("{other:?}"),
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    store.compact(current).await.unwrap();
    for reader in readers {
        reader.await.unwrap();
    }
    // The watch either delivers every event from where it started or ends
    // with Compacted: never a gap.
    let mut next = watch_from;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(Ok(batch))) => {
                let revision = batch[0].revision();
                assert!(revision >= next, "revision {revision} after {next}");
                let expected: Vec<_> = model.events[revision as usize]
                    .iter()
                    .map(|(kind, key, _)| (*kind, key.clone()))
                    .collect();
                let got: Vec<_> = batch.iter().map(|e| (e.kind, e.key.clone())).collect();
                assert_eq!(got, expected);
                for skipped in next..revision {
                    assert!(model.events[skipped as usize].is_empty());
                }
                next = revision + 1;
                if revision == current {
                    break;
                }
            }
            Ok(Some(Err(StoreError::Compacted { .. }))) => break,
            other => panic!("{other:?}"),
        }
    }
    check_reads_at(&*store, &model, current).await;
}

pub(crate) async fn range_compares_hold_for_every_key_and_an_empty_range_as_a_missing_key<
    S: Store,
>(
    store: Arc<S>,
) {
    store.put(bytes("r/a"), bytes("1")).await.unwrap();
    store.put(bytes("r/b"), bytes("1")).await.unwrap();
    store.put(bytes("r/b"), bytes("2")).await.unwrap();
    let holds = |range: KeyRange, target: CompareTarget, op: CompareOp| {
        let store = Arc::clone(&store);
        async move {
            let txn = Txn {
                compares: vec![Compare {
                    key: range.start,
                    range_end: range.end,
                    target,
                    op,
                }],
                ..Txn::default()
            };
            store.txn(txn).await.unwrap().succeeded
        }
    };
    let r = || KeyRange::prefix(bytes("r/"));
    assert!(holds(r(), CompareTarget::Version(0), CompareOp::Greater).await);
    assert!(
        !holds(r(), CompareTarget::Version(1), CompareOp::Equal).await,
        "r/b is at 2"
    );
    assert!(holds(r(), CompareTarget::Value(bytes("3")), CompareOp::Less).await);
    assert!(!holds(r(), CompareTarget::Value(bytes("1")), CompareOp::Equal).await);
    let empty = || KeyRange::prefix(bytes("none/"));
    assert!(holds(empty(), CompareTarget::CreateRevision(0), CompareOp::Equal).await);
    assert!(
        !holds(
            empty(),
            CompareTarget::Value(Bytes::new()),
            CompareOp::Equal
        )
        .await,
        "a value compare on no key is false"
    );
}

pub(crate) async fn leases_with_chosen_ids_are_granted_once_and_listed<S: Store>(store: Arc<S>) {
    let chosen: LeaseId = 0x1234_abcd;
    let lease = store
        .lease_grant_as(chosen, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(lease.id, chosen);
    assert_eq!(
        store.lease_grant_as(chosen, Duration::from_secs(30)).await,
        Err(StoreError::LeaseExists(chosen))
    );
    let other = store.lease_grant(Duration::from_secs(30)).await.unwrap();
    let ids = store.lease_ids().await.unwrap();
    assert!(ids.contains(&chosen) && ids.contains(&other.id), "{ids:?}");
    store.lease_revoke(chosen).await.unwrap();
    store.lease_revoke(other.id).await.unwrap();
    let ids = store.lease_ids().await.unwrap();
    assert!(
        !ids.contains(&chosen) && !ids.contains(&other.id),
        "{ids:?}"
    );
}

pub(crate) async fn leases_are_listed_in_pages_with_their_keys<S: Store>(store: Arc<S>) {
    let a = store.lease_grant(Duration::from_secs(60)).await.unwrap();
    let b = store.lease_grant(Duration::from_secs(30)).await.unwrap();
    let c = store.lease_grant(Duration::from_secs(30)).await.unwrap();
    store
        .txn(Txn::of(vec![
            leased("lk/a", a.id),
            leased("lk/b", a.id),
            leased("lk/c", a.id),
            leased("other", a.id),
            leased("lk/d", b.id),
        ]))
        .await
        .unwrap();
    // Every lease, two a page (the etcd backend's cluster may hold others).
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = store.leases(after, 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        listed.extend(page);
    }
    let ids: Vec<LeaseId> = listed.iter().map(|lease| lease.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in id order: {ids:?}");
    let found = listed
        .iter()
        .find(|lease| lease.id == a.id)
        .expect("a listed");
    assert_eq!(found.ttl, Duration::from_secs(60));
    assert!(found.remaining <= found.ttl);
    assert!(ids.contains(&b.id) && ids.contains(&c.id), "{ids:?}");

    let names = |keys: Vec<Bytes>| -> Vec<String> {
        keys.iter()
            .map(|key| String::from_utf8_lossy(key).into_owned())
            .collect()
    };
    let (first, more) = store
        .lease_keys(a.id, KeyRange::prefix(bytes("lk/")), 2)
        .await
        .unwrap();
    assert_eq!(
        (names(first), more),
        (vec!["lk/a".into(), "lk/b".into()], true)
    );
    let rest = KeyRange::prefix(bytes("lk/")).resumed_at(bytes("lk/b\0"));
    let (second, more) = store.lease_keys(a.id, rest, 2).await.unwrap();
    assert_eq!((names(second), more), (vec!["lk/c".to_string()], false));
    let (all, _) = store
        .lease_keys(a.id, KeyRange::prefix(Bytes::new()), 10)
        .await
        .unwrap();
    assert_eq!(names(all), ["lk/a", "lk/b", "lk/c", "other"]);
    let (none, more) = store
        .lease_keys(c.id, KeyRange::prefix(Bytes::new()), 10)
        .await
        .unwrap();
    assert!(none.is_empty() && !more);

    // A key put without the lease, or deleted, leaves it.
    store.put(bytes("lk/b"), bytes("v")).await.unwrap();
    store
        .txn(Txn::of(vec![delete_op(KeyRange::key(bytes("lk/c")))]))
        .await
        .unwrap();
    let (left, _) = store
        .lease_keys(a.id, KeyRange::prefix(bytes("lk/")), 10)
        .await
        .unwrap();
    assert_eq!(names(left), ["lk/a"]);
    let (of_b, _) = store
        .lease_keys(b.id, KeyRange::prefix(Bytes::new()), 10)
        .await
        .unwrap();
    assert_eq!(names(of_b), ["lk/d"]);

    for lease in [a.id, b.id, c.id] {
        store.lease_revoke(lease).await.unwrap();
    }
    assert_eq!(
        store
            .lease_keys(a.id, KeyRange::prefix(Bytes::new()), 10)
            .await
            .unwrap_err(),
        StoreError::LeaseNotFound(a.id)
    );
    let after_revoke = store.leases(None, usize::MAX).await.unwrap();
    assert!(after_revoke.iter().all(|lease| lease.id != a.id));
}
