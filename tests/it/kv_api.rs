//! The full API, `keyvalue.v1.KV`, through the real binary: every RPC, its
//! errors and limits, and the guarantees docs/API.md promises. The tests that
//! hold on every backend run on the memory backend and over etcd.

use std::time::Duration;

use bytes::Bytes;
use keyvalue::proto::keyvalue::v1 as pb;
use keyvalue::proto::keyvalue::v1::kv_client::KvClient;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;

use crate::harness::{Server, b, get, on_backends, set};

on_backends!(
    memory, etcd;
    both_services_serve_the_same_data,
    get_and_put_carry_revisions_and_versions,
    a_failed_compare_and_set_answers_with_the_current_state,
    racing_compare_and_sets_have_exactly_one_winner_a_thousand_times,
    delete_of_a_key_a_prefix_and_a_range_counts_what_went,
    paging_through_100000_keys_returns_each_exactly_once,
    txn_applies_one_branch_atomically_at_one_revision,
    batches_get_and_put_many_keys_in_one_call,
    a_watch_from_an_old_revision_replays_exactly_the_missed_events_in_order,
    leases_are_kept_alive_shared_and_revoked,
    bad_requests_get_invalid_argument_naming_the_problem,
);

async fn put(client: &mut KvClient<Channel>, key: &str, value: &str) -> pb::PutResponse {
    client
        .put(pb::PutRequest {
            key: b(key),
            value: b(value),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("put {key}: {status}"))
        .into_inner()
}

async fn kv_get(client: &mut KvClient<Channel>, key: &str) -> Option<pb::KeyValue> {
    client
        .get(pb::GetRequest {
            key: b(key),
            revision: 0,
        })
        .await
        .unwrap_or_else(|status| panic!("get {key}: {status}"))
        .into_inner()
        .kv
}

fn revision(header: &Option<pb::Header>) -> u64 {
    header.as_ref().expect("a header").revision
}

async fn both_services_serve_the_same_data(server: Server) {
    let mut tutorial = server.client().await;
    let mut kv = server.kv_client().await;
    set(&mut tutorial, "weather", "sunny").await;
    let record = kv_get(&mut kv, "weather")
        .await
        .expect("set through the tutorial");
    assert_eq!(record.value, b("sunny"));
    assert_eq!(record.version, 1);
    put(&mut kv, "city", "Lisbon").await;
    assert_eq!(get(&mut tutorial, "city").await.unwrap(), "Lisbon");
    // A binary value cannot be a protobuf string: a clear refusal, not garbage.
    kv.put(pb::PutRequest {
        key: b("blob"),
        value: Bytes::from_static(&[0xff, 0x00, 0xfe]),
        ..Default::default()
    })
    .await
    .unwrap();
    let status = get(&mut tutorial, "blob").await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
}

async fn get_and_put_carry_revisions_and_versions(server: Server) {
    let mut kv = server.kv_client().await;
    assert_eq!(kv_get(&mut kv, "missing").await, None);
    let first = put(&mut kv, "k", "1").await;
    let second = kv
        .put(pb::PutRequest {
            key: b("k"),
            value: b("2"),
            prev_kv: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(revision(&second.header) > revision(&first.header));
    let prev = second.prev_kv.expect("prev_kv was asked for");
    assert_eq!((prev.value, prev.version), (b("1"), 1));
    let record = kv_get(&mut kv, "k").await.unwrap();
    assert_eq!(record.create_revision, revision(&first.header));
    assert_eq!(record.mod_revision, revision(&second.header));
    assert_eq!(record.version, 2);
    // Binary keys and values round-trip.
    let key = Bytes::from_static(&[0, 1, 0xff]);
    kv.put(pb::PutRequest {
        key: key.clone(),
        value: Bytes::from_static(&[0xfe; 3]),
        ..Default::default()
    })
    .await
    .unwrap();
    let got = kv
        .get(pb::GetRequest { key, revision: 0 })
        .await
        .unwrap()
        .into_inner()
        .kv
        .unwrap();
    assert_eq!(got.value, Bytes::from_static(&[0xfe; 3]));
}

fn cas(key: &str, mod_revision: u64, value: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: b(key),
        value: b(value),
        condition: Some(pb::Condition {
            check: Some(pb::condition::Check::ModRevision(mod_revision)),
        }),
        ..Default::default()
    }
}

async fn a_failed_compare_and_set_answers_with_the_current_state(server: Server) {
    let mut kv = server.kv_client().await;
    let created = revision(&put(&mut kv, "k", "v1").await.header);
    let won = kv.put(cas("k", created, "v2")).await.unwrap().into_inner();
    assert!(won.succeeded);
    let lost = kv.put(cas("k", created, "v3")).await.unwrap().into_inner();
    assert!(!lost.succeeded);
    let current = lost.prev_kv.expect("the current state");
    assert_eq!(current.value, b("v2"));
    assert_eq!(current.mod_revision, revision(&won.header));
    // Create-only: exists = false.
    let create = |value: &str| pb::PutRequest {
        key: b("new"),
        value: b(value),
        condition: Some(pb::Condition {
            check: Some(pb::condition::Check::Exists(false)),
        }),
        ..Default::default()
    };
    assert!(
        kv.put(create("first"))
            .await
            .unwrap()
            .into_inner()
            .succeeded
    );
    assert!(
        !kv.put(create("second"))
            .await
            .unwrap()
            .into_inner()
            .succeeded
    );
    // Conditional delete on the value.
    let delete = |value: &str| pb::DeleteRequest {
        key: b("new"),
        condition: Some(pb::Condition {
            check: Some(pb::condition::Check::Value(b(value))),
        }),
        ..Default::default()
    };
    let refused = kv.delete(delete("second")).await.unwrap().into_inner();
    assert!(!refused.succeeded);
    assert_eq!(refused.prev_kvs[0].value, b("first"));
    let done = kv.delete(delete("first")).await.unwrap().into_inner();
    assert!(done.succeeded);
    assert_eq!(done.deleted, 1);
}

async fn racing_compare_and_sets_have_exactly_one_winner_a_thousand_times(server: Server) {
    let mut first = server.kv_client().await;
    let mut second = server.kv_client().await;
    let mut setup = server.kv_client().await;
    for round in 0..1000 {
        let key = format!("race-{round}");
        let start = revision(&put(&mut setup, &key, "start").await.header);
        let (one, other) = tokio::join!(
            first.put(cas(&key, start, "first")),
            second.put(cas(&key, start, "second"))
        );
        let (one, other) = (one.unwrap().into_inner(), other.unwrap().into_inner());
        assert!(
            one.succeeded != other.succeeded,
            "round {round}: exactly one wins"
        );
        let winner = if one.succeeded { "first" } else { "second" };
        assert_eq!(kv_get(&mut setup, &key).await.unwrap().value, b(winner));
    }
}

async fn delete_of_a_key_a_prefix_and_a_range_counts_what_went(server: Server) {
    let mut kv = server.kv_client().await;
    for key in ["a", "p/1", "p/2", "p/3", "q", "r"] {
        put(&mut kv, key, "v").await;
    }
    let one = kv
        .delete(pb::DeleteRequest {
            key: b("a"),
            prev_kv: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((one.deleted, one.prev_kvs.len()), (1, 1));
    let prefix = kv
        .delete(pb::DeleteRequest {
            key: b("p/"),
            prefix: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(prefix.deleted, 3);
    let range = kv
        .delete(pb::DeleteRequest {
            key: b("q"),
            range_end: b("r"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(range.deleted, 1, "range_end is exclusive");
    let none = kv
        .delete(pb::DeleteRequest {
            key: b("missing"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(none.deleted, 0);
    assert_eq!(kv_get(&mut kv, "r").await.unwrap().value, b("v"));
    let status = kv
        .delete(pb::DeleteRequest {
            key: b("z"),
            range_end: b("a"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

async fn paging_through_100000_keys_returns_each_exactly_once(server: Server) {
    let mut kv = server.kv_client().await;
    const KEYS: usize = 100_000;
    for batch in 0..KEYS / 1000 {
        let puts = (0..1000)
            .map(|i| pb::PutRequest {
                key: b(&format!("item/{:06}", batch * 1000 + i)),
                value: b("x"),
                ..Default::default()
            })
            .collect();
        kv.batch_put(pb::BatchPutRequest { puts }).await.unwrap();
    }
    put(&mut kv, "itemz", "outside the prefix").await;
    let mut token = Bytes::new();
    let mut seen = Vec::with_capacity(KEYS);
    let mut pages = 0;
    loop {
        let page = kv
            .range(pb::RangeRequest {
                key: b("item/"),
                prefix: true,
                limit: 777,
                page_token: token.clone(),
                keys_only: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.kvs.len() <= 777);
        seen.extend(page.kvs.into_iter().map(|kv| kv.key));
        if !page.more {
            assert!(page.next_page_token.is_empty());
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, KEYS.div_ceil(777));
    assert_eq!(seen.len(), KEYS);
    let expected: Vec<Bytes> = (0..KEYS).map(|i| b(&format!("item/{i:06}"))).collect();
    assert_eq!(seen, expected, "each key once, in order");
    let counted = kv
        .range(pb::RangeRequest {
            key: b("item/"),
            prefix: true,
            count_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((counted.count, counted.kvs.len()), (KEYS as u64, 0));
}

async fn txn_applies_one_branch_atomically_at_one_revision(server: Server) {
    let mut kv = server.kv_client().await;
    let start = revision(&put(&mut kv, "balance", "100").await.header);
    let compare = pb::Compare {
        key: b("balance"),
        op: pb::compare::Op::Equal.into(),
        target: Some(pb::compare::Target::Value(b("100"))),
    };
    let op_put = |key: &str, value: &str| pb::Op {
        op: Some(pb::op::Op::Put(pb::PutRequest {
            key: b(key),
            value: b(value),
            ..Default::default()
        })),
    };
    let read = pb::Op {
        op: Some(pb::op::Op::Range(pb::RangeRequest {
            key: b("balance"),
            ..Default::default()
        })),
    };
    let txn = pb::TxnRequest {
        compare: vec![compare.clone()],
        success: vec![op_put("balance", "50"), op_put("spent", "50")],
        failure: vec![read.clone()],
    };
    let done = kv.txn(txn.clone()).await.unwrap().into_inner();
    assert!(done.succeeded);
    assert_eq!(revision(&done.header), start + 1);
    assert_eq!(done.responses.len(), 2);
    assert_eq!(
        kv_get(&mut kv, "spent").await.unwrap().mod_revision,
        start + 1
    );
    assert_eq!(
        kv_get(&mut kv, "balance").await.unwrap().mod_revision,
        start + 1
    );
    // The same again: the compare fails, the failure branch reads.
    let refused = kv.txn(txn).await.unwrap().into_inner();
    assert!(!refused.succeeded);
    let Some(pb::op_response::Response::Range(range)) = &refused.responses[0].response else {
        panic!("the failure branch's read: {refused:?}")
    };
    assert_eq!(range.kvs[0].value, b("50"));
    assert_eq!(revision(&refused.header), start + 1, "nothing written");
}

async fn batches_get_and_put_many_keys_in_one_call(server: Server) {
    let mut kv = server.kv_client().await;
    let puts = (0..10)
        .map(|i| pb::PutRequest {
            key: b(&format!("k{i}")),
            value: b(&i.to_string()),
            ..Default::default()
        })
        .collect();
    let written = kv
        .batch_put(pb::BatchPutRequest { puts })
        .await
        .unwrap()
        .into_inner();
    let keys = ["k3", "missing", "k9"].iter().map(|k| b(k)).collect();
    let got = kv
        .batch_get(pb::BatchGetRequest { keys, revision: 0 })
        .await
        .unwrap()
        .into_inner();
    let values: Vec<Option<Bytes>> = got
        .results
        .into_iter()
        .map(|r| r.kv.map(|kv| kv.value))
        .collect();
    assert_eq!(values, [Some(b("3")), None, Some(b("9"))]);
    // One revision for the whole batch.
    assert_eq!(
        kv_get(&mut kv, "k0").await.unwrap().mod_revision,
        revision(&written.header)
    );
    assert_eq!(
        kv_get(&mut kv, "k9").await.unwrap().mod_revision,
        revision(&written.header)
    );
}

async fn next_response(
    stream: &mut tonic::Streaming<pb::WatchResponse>,
) -> Result<pb::WatchResponse, tonic::Status> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a watch response within 10 s")
        .expect("the stream goes on")
}

async fn a_watch_from_an_old_revision_replays_exactly_the_missed_events_in_order(server: Server) {
    let mut kv = server.kv_client().await;
    let mut revisions = Vec::new();
    for i in 0..30 {
        revisions.push(revision(
            &put(&mut kv, &format!("w/{}", i % 4), &i.to_string())
                .await
                .header,
        ));
        put(&mut kv, "elsewhere", "ignored").await;
    }
    kv.delete(pb::DeleteRequest {
        key: b("w/0"),
        ..Default::default()
    })
    .await
    .unwrap();
    // A client that saw up to revisions[19] reconnects.
    let mut stream = kv
        .watch(pb::WatchRequest {
            key: b("w/"),
            prefix: true,
            start_revision: revisions[19] + 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while events.len() < 11 {
        events.extend(next_response(&mut stream).await.unwrap().events);
    }
    let kinds: Vec<(i32, String)> = events
        .iter()
        .map(|e| {
            (
                e.kind,
                String::from_utf8_lossy(&e.kv.as_ref().unwrap().value).into_owned(),
            )
        })
        .collect();
    let mut expected: Vec<(i32, String)> = (20..30)
        .map(|i| (pb::event::Kind::Put as i32, i.to_string()))
        .collect();
    expected.push((pb::event::Kind::Delete as i32, String::new()));
    assert_eq!(kinds, expected);
    let replayed: Vec<u64> = events[..10]
        .iter()
        .map(|e| e.kv.as_ref().unwrap().mod_revision)
        .collect();
    assert_eq!(replayed, revisions[20..]);
    // Then live events.
    put(&mut kv, "w/live", "now").await;
    let live = next_response(&mut stream).await.unwrap();
    assert_eq!(live.events[0].kv.as_ref().unwrap().key, b("w/live"));
}

#[tokio::test]
async fn a_watch_from_a_compacted_revision_is_told_to_re_read() {
    let server = Server::start_with(&["--watch-history", "5"]);
    let mut kv = server.kv_client().await;
    for i in 0..20 {
        put(&mut kv, "k", &i.to_string()).await;
    }
    let mut stream = kv
        .watch(pb::WatchRequest {
            key: b("k"),
            start_revision: 2,
            ..Default::default()
        })
        .await
        .map(|response| response.into_inner());
    let status = match &mut stream {
        Err(status) => status.clone(),
        Ok(stream) => next_response(stream).await.unwrap_err(),
    };
    assert_eq!(status.code(), Code::OutOfRange);
    assert!(
        status.message().contains("compacted"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("read the current state"),
        "{}",
        status.message()
    );
}

/// A watcher that does not read: the others get every event in order, and
/// the server cuts it off (freeing its place) once it is `--watch-max-lag`
/// revisions behind; when it reads at last, it gets the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_does_not_read_is_cut_off_and_holds_back_nobody() {
    const PUTS: usize = 600;
    let server = Server::start_with(&["--watch-max-lag", "50", "--max-watchers", "2"]);
    let watch = pb::WatchRequest {
        key: b("w/"),
        prefix: true,
        ..Default::default()
    };
    // Its own connection, never read: HTTP/2 flow control stops the server.
    let mut idle_client = server.kv_client().await;
    let mut idle = idle_client.watch(watch.clone()).await.unwrap().into_inner();
    let mut reader = server
        .kv_client()
        .await
        .watch(watch.clone())
        .await
        .unwrap()
        .into_inner();
    let reading = tokio::spawn(async move {
        let mut revisions = Vec::new();
        while revisions.len() < PUTS {
            let response = next_response(&mut reader).await.unwrap();
            revisions.extend(
                response
                    .events
                    .iter()
                    .map(|e| e.kv.as_ref().unwrap().mod_revision),
            );
        }
        revisions
    });
    // 16 KiB values: far more than the idle stream's HTTP/2 windows hold.
    let value = "v".repeat(16 * 1024);
    let mut kv = server.kv_client().await;
    let mut written = Vec::new();
    for i in 0..PUTS {
        let reply = put(&mut kv, &format!("w/{}", i % 10), &value).await;
        written.push(reply.header.unwrap().revision);
    }
    let seen = tokio::time::timeout(Duration::from_secs(60), reading)
        .await
        .expect("the reader got every event within 60 s")
        .unwrap();
    assert_eq!(
        seen, written,
        "every event, in order, to the reading watcher"
    );
    // The idle watcher's place is freed without it reading (--max-watchers 2).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let _third = loop {
        match kv.watch(watch.clone()).await {
            Ok(stream) => break stream,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the idle watcher was never cut off"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    // Reading at last: a prefix of the events, in order, then the reason.
    let mut got = Vec::new();
    let status = loop {
        match next_response(&mut idle).await {
            Ok(response) => got.extend(
                response
                    .events
                    .iter()
                    .map(|e| e.kv.as_ref().unwrap().mod_revision),
            ),
            Err(status) => break status,
        }
    };
    assert!(got.len() < PUTS, "it was cut off, not sent everything");
    assert_eq!(got, written[..got.len()], "what it got is in order");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(
        status.message().contains("--watch-max-lag"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn ttl_expiry_is_seen_by_get_range_and_watch() {
    let server = Server::start();
    let mut kv = server.kv_client().await;
    let mut stream = kv
        .watch(pb::WatchRequest {
            key: b("session/"),
            prefix: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let granted = kv
        .put(pb::PutRequest {
            key: b("session/1"),
            value: b("alive"),
            ttl_ms: 600,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(granted.lease, 0, "a lease of its own");
    put(&mut kv, "session/2", "permanent").await;
    let record = kv_get(&mut kv, "session/1").await.unwrap();
    assert_eq!(record.lease, granted.lease);
    let info = kv
        .lease_info(pb::LeaseInfoRequest {
            id: granted.lease,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(info.remaining_ms <= 600 && info.ttl_ms == 600);

    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(kv_get(&mut kv, "session/1").await, None);
    let range = kv
        .range(pb::RangeRequest {
            key: b("session/"),
            prefix: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        range
            .kvs
            .iter()
            .map(|kv| kv.key.clone())
            .collect::<Vec<_>>(),
        [b("session/2")]
    );
    let mut kinds = Vec::new();
    while !kinds.contains(&(pb::event::Kind::Expire as i32)) {
        let response = next_response(&mut stream).await.unwrap();
        kinds.extend(response.events.iter().map(|e| e.kind));
    }
    let status = kv
        .lease_keep_alive(pb::LeaseKeepAliveRequest { id: granted.lease })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

async fn leases_are_kept_alive_shared_and_revoked(server: Server) {
    let mut kv = server.kv_client().await;
    let lease = kv
        .lease_grant(pb::LeaseGrantRequest { ttl_ms: 1000 })
        .await
        .unwrap()
        .into_inner();
    for key in ["a", "b"] {
        kv.put(pb::PutRequest {
            key: b(key),
            value: b("v"),
            lease: lease.id,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        kv.lease_keep_alive(pb::LeaseKeepAliveRequest { id: lease.id })
            .await
            .unwrap();
    }
    assert!(kv_get(&mut kv, "a").await.is_some(), "alive past its TTL");
    let revoked = kv
        .lease_revoke(pb::LeaseRevokeRequest { id: lease.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.deleted, 2);
    assert_eq!(kv_get(&mut kv, "b").await, None);
    let status = kv
        .put(pb::PutRequest {
            key: b("c"),
            value: b("v"),
            lease: lease.id,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains(&lease.id.to_string()));
}

async fn bad_requests_get_invalid_argument_naming_the_problem(server: Server) {
    let mut kv = server.kv_client().await;
    let cases: Vec<(&str, tonic::Status)> = vec![
        (
            "empty key",
            kv.get(pb::GetRequest {
                key: Bytes::new(),
                revision: 0,
            })
            .await
            .unwrap_err(),
        ),
        (
            "lease and ttl",
            kv.put(pb::PutRequest {
                key: b("k"),
                lease: 5,
                ttl_ms: 5,
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
        (
            "zero ttl",
            kv.lease_grant(pb::LeaseGrantRequest { ttl_ms: 0 })
                .await
                .unwrap_err(),
        ),
        (
            "prefix and range_end",
            kv.range(pb::RangeRequest {
                key: b("a"),
                range_end: b("b"),
                prefix: true,
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
        (
            "foreign page token",
            kv.range(pb::RangeRequest {
                key: b("a/"),
                prefix: true,
                page_token: b("b"),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
        (
            "empty condition",
            kv.put(pb::PutRequest {
                key: b("k"),
                condition: Some(pb::Condition { check: None }),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
        (
            "condition on a range delete",
            kv.delete(pb::DeleteRequest {
                key: b("a"),
                prefix: true,
                condition: Some(pb::Condition {
                    check: Some(pb::condition::Check::Exists(true)),
                }),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
    ];
    for (case, status) in cases {
        assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
        assert!(!status.message().is_empty(), "{case}");
    }
}

#[tokio::test]
async fn every_limit_is_configurable_and_answers_clearly() {
    let server = Server::start_with(&[
        "--max-batch-keys",
        "3",
        "--max-range-page",
        "2",
        "--max-txn-ops",
        "2",
        "--max-watchers",
        "1",
    ]);
    let mut kv = server.kv_client().await;
    let keys = |n: usize| (0..n).map(|i| b(&format!("k{i}"))).collect::<Vec<_>>();
    kv.batch_get(pb::BatchGetRequest {
        keys: keys(3),
        revision: 0,
    })
    .await
    .unwrap();
    let status = kv
        .batch_get(pb::BatchGetRequest {
            keys: keys(4),
            revision: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("--max-batch-keys"),
        "{}",
        status.message()
    );
    let puts = keys(4)
        .into_iter()
        .map(|key| pb::PutRequest {
            key,
            ..Default::default()
        })
        .collect();
    let status = kv
        .batch_put(pb::BatchPutRequest { puts })
        .await
        .unwrap_err();
    assert!(
        status.message().contains("--max-batch-keys"),
        "{}",
        status.message()
    );

    for key in keys(5) {
        kv.put(pb::PutRequest {
            key,
            value: b("v"),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let page = kv
        .range(pb::RangeRequest {
            key: b("k"),
            prefix: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (page.kvs.len(), page.more),
        (2, true),
        "the page size when none is asked"
    );
    let page = kv
        .range(pb::RangeRequest {
            key: b("k"),
            prefix: true,
            limit: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (page.kvs.len(), page.more),
        (2, true),
        "a limit above --max-range-page is capped to it, and says more"
    );

    let get_op = || pb::Op {
        op: Some(pb::op::Op::Range(pb::RangeRequest {
            key: b("k0"),
            ..Default::default()
        })),
    };
    let status = kv
        .txn(pb::TxnRequest {
            success: vec![get_op(), get_op(), get_op()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        status.message().contains("--max-txn-ops"),
        "{}",
        status.message()
    );

    let _first = kv
        .watch(pb::WatchRequest {
            key: b("k"),
            ..Default::default()
        })
        .await
        .unwrap();
    let status = kv
        .watch(pb::WatchRequest {
            key: b("k"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("--max-watchers"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn the_full_api_works_on_the_disk_backend_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_on_disk(dir.path(), &[]);
    let mut kv = server.kv_client().await;
    let lease = kv
        .lease_grant(pb::LeaseGrantRequest { ttl_ms: 60_000 })
        .await
        .unwrap()
        .into_inner();
    kv.put(pb::PutRequest {
        key: b("leased"),
        value: b("v"),
        lease: lease.id,
        ..Default::default()
    })
    .await
    .unwrap();
    let batch = (0..5)
        .map(|i| pb::PutRequest {
            key: b(&format!("b/{i}")),
            value: b("v"),
            ..Default::default()
        })
        .collect();
    kv.batch_put(pb::BatchPutRequest { puts: batch })
        .await
        .unwrap();
    kv.delete(pb::DeleteRequest {
        key: b("b/0"),
        ..Default::default()
    })
    .await
    .unwrap();
    drop(kv);
    assert!(server.stop("TERM").await.status.success());

    let server = Server::start_on_disk(dir.path(), &[]);
    let mut kv = server.kv_client().await;
    let range = kv
        .range(pb::RangeRequest {
            key: b("b/"),
            prefix: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(range.count, 4);
    assert_eq!(kv_get(&mut kv, "leased").await.unwrap().lease, lease.id);
    let revoked = kv
        .lease_revoke(pb::LeaseRevokeRequest { id: lease.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.deleted, 1);
}
