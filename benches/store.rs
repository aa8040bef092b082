//! Microbenchmarks of the storage backends, without the network: point get,
//! put, a 100-key range, a compare-and-set transaction, and 64 concurrent
//! puts (which on disk is group commit at work). `cargo bench --bench store`.
//!
//! Criterion reports times; compare backends against each other within one
//! run (the machine is shared and noisy), as `docs/PERFORMANCE.md` explains.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::sync::Arc;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use keyvalue::storage::ops::{Compare, CompareOp, CompareTarget, KeyRange, Op, RangeQuery, Txn};
use keyvalue::storage::{DiskStore, MemoryStore, Store, SyncPolicy};
use tokio::runtime::Runtime;

const KEYS: usize = 10_000;

fn key(i: usize) -> Bytes {
    Bytes::from(format!("key/{i:08}"))
}

fn value() -> Bytes {
    Bytes::from(vec![b'v'; 100])
}

async fn fill<S: Store>(store: &S) {
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1000) {
        let puts = chunk
            .iter()
            .map(|&i| Op::Put {
                key: key(i),
                value: value(),
                lease: 0,
                prev: false,
            })
            .collect();
        store.txn(Txn::of(puts)).await.unwrap();
    }
}

fn bench_store<S: Store>(c: &mut Criterion, name: &str, store: Arc<S>, runtime: &Runtime) {
    runtime.block_on(fill(&*store));
    let mut group = c.benchmark_group(name);
    let mut i = 0usize;
    group.bench_function("get", |b| {
        b.to_async(runtime).iter(|| {
            i = (i + 7919) % KEYS;
            let store = Arc::clone(&store);
            async move { store.get(&key(i), 0).await.unwrap() }
        })
    });
    group.bench_function("put", |b| {
        b.to_async(runtime).iter(|| {
            i = (i + 7919) % KEYS;
            let store = Arc::clone(&store);
            async move { store.put(key(i), value()).await.unwrap() }
        })
    });
    group.bench_function("range_100", |b| {
        b.to_async(runtime).iter(|| {
            i = (i + 7919) % (KEYS - 100);
            let store = Arc::clone(&store);
            async move {
                let query = RangeQuery {
                    limit: 100,
                    ..RangeQuery::all(KeyRange::between(key(i), key(KEYS)))
                };
                store.range(query).await.unwrap()
            }
        })
    });
    group.bench_function("cas_txn", |b| {
        b.to_async(runtime).iter(|| {
            i = (i + 7919) % KEYS;
            let store = Arc::clone(&store);
            async move {
                let txn = Txn {
                    compares: vec![Compare::key(
                        key(i),
                        CompareTarget::Version(0),
                        CompareOp::Greater,
                    )],
                    success: vec![Op::Put {
                        key: key(i),
                        value: value(),
                        lease: 0,
                        prev: false,
                    }],
                    failure: Vec::new(),
                };
                store.txn(txn).await.unwrap()
            }
        })
    });
    group.bench_function("64_concurrent_puts", |b| {
        b.to_async(runtime).iter_batched(
            || Arc::clone(&store),
            |store| async move {
                let tasks: Vec<_> = (0..64)
                    .map(|n| {
                        let store = Arc::clone(&store);
                        tokio::spawn(async move { store.put(key(n * 97), value()).await.unwrap() })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn backends(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    bench_store(c, "memory", Arc::new(MemoryStore::new()), &runtime);
    // The same without the history's retention (`--watch-history 0`): its
    // puts against `memory`'s show what compaction costs per write.
    let unbounded = keyvalue::storage::WatchLimits {
        history: 0,
        ..Default::default()
    };
    bench_store(
        c,
        "memory_no_retention",
        Arc::new(MemoryStore::with_watch_limits(unbounded)),
        &runtime,
    );
    let dir = tempfile::tempdir().unwrap();
    let durable = DiskStore::open(&dir.path().join("always"), SyncPolicy::Always).unwrap();
    bench_store(c, "disk_sync_always", Arc::new(durable), &runtime);
    let interval = SyncPolicy::Interval(std::time::Duration::from_millis(100));
    let relaxed = DiskStore::open(&dir.path().join("interval"), interval).unwrap();
    bench_store(c, "disk_sync_interval", Arc::new(relaxed), &runtime);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .measurement_time(std::time::Duration::from_secs(2))
        .warm_up_time(std::time::Duration::from_millis(500));
    targets = backends
}
criterion_main!(benches);
