//! The conformance suite: the behaviour every [`Store`] backend must show.
//!
//! Each backend's test module instantiates the whole suite with
//! `conformance_suite!(<expression that makes a fresh, empty store>)`; the
//! expression is evaluated inside an async test, so it may `.await`. A new
//! operation on the trait gets its checks here, once, and every backend runs them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::ops::{KeyRange, LeaseId, RangeQuery, RangeResult, Txn, TxnResult};
use super::{EventStream, LeaseInfo, Record, Revision, Store, StoreError};

/// Generates one `#[tokio::test]` per check below, each on a fresh store.
macro_rules! conformance_suite {
    ($make_store:expr) => {
        $crate::storage::conformance::conformance_suite!(@checks $make_store;
            get_of_missing_key_is_none,
            put_then_get_returns_the_value,
            put_overwrites_and_counts_versions,
            revisions_increase_across_keys,
            empty_value_is_a_value,
            keys_and_values_are_binary_safe,
            concurrent_writers_of_one_key_are_serialized,
            concurrent_writers_of_many_keys_keep_their_last_write,
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

/// A store together with the temporary directory it lives in, so the directory
/// outlives the store (for backends that keep files).
pub(crate) struct WithDir<S> {
    pub(crate) store: S,
    pub(crate) _dir: tempfile::TempDir,
}

impl<S: Store> Store for WithDir<S> {
    async fn get(&self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        self.store.get(key).await
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

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<LeaseInfo, StoreError> {
        self.store.lease_keep_alive(id).await
    }

    async fn lease_info(&self, id: LeaseId) -> Result<LeaseInfo, StoreError> {
        self.store.lease_info(id).await
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<u64, StoreError> {
        self.store.lease_revoke(id).await
    }

    async fn expire_leases(&self) -> Result<u64, StoreError> {
        self.store.expire_leases().await
    }

    async fn watch(
        &self,
        range: KeyRange,
        from: Option<Revision>,
    ) -> Result<EventStream, StoreError> {
        self.store.watch(range, from).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.store.flush().await
    }
}

fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub(crate) async fn get_of_missing_key_is_none<S: Store>(store: Arc<S>) {
    assert_eq!(store.get(b"never-set").await.unwrap(), None);
}

pub(crate) async fn put_then_get_returns_the_value<S: Store>(store: Arc<S>) {
    let revision = store.put(bytes("weather"), bytes("sunny")).await.unwrap();
    let record = store
        .get(b"weather")
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
    let record = store.get(b"k").await.unwrap().expect("record after put");
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
        .get(b"empty")
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
        store.get(&key).await.unwrap().expect("binary key").value,
        value
    );
    // A key that is a prefix of another is a different key.
    assert_eq!(store.get(&key[..5]).await.unwrap(), None);
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
    let record = store.get(b"hot").await.unwrap().expect("hot key");
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
                .get(format!("writer-{w}/key-{k}").as_bytes())
                .await
                .unwrap()
                .expect("written key");
            assert_eq!(record.value, bytes(&(90 + k).to_string()));
            assert_eq!(record.version, 10);
        }
    }
}
