//! Multi-version storage through the real binaries: reads at a past
//! revision (Get, Range, BatchGet, `kv get --rev`, `kv ls --rev`), listings
//! whose pages are one snapshot, `Compact` and `kv compact`, and the errors
//! that name the compacted revision; on the memory, disk and etcd backends.

use keyvalue::proto::keyvalue::v1 as pb;
use keyvalue::proto::keyvalue::v1::kv_client::KvClient;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;

use crate::harness::{Server, b, kv, on_backends, text};

on_backends!(
    memory, disk, etcd;
    get_range_and_batch_get_read_at_a_past_revision,
    the_pages_of_a_listing_are_one_snapshot_while_keys_change,
    compact_refuses_older_reads_and_watches_naming_the_revision,
    kv_get_and_ls_read_at_a_revision_and_kv_compact_compacts,
);

async fn put(client: &mut KvClient<Channel>, key: &str, value: &str) -> u64 {
    client
        .put(pb::PutRequest {
            key: b(key),
            value: b(value),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("put {key}: {status}"))
        .into_inner()
        .header
        .unwrap()
        .revision
}

async fn get_at(
    client: &mut KvClient<Channel>,
    key: &str,
    revision: u64,
) -> Result<Option<Vec<u8>>, tonic::Status> {
    let reply = client
        .get(pb::GetRequest {
            key: b(key),
            revision,
        })
        .await?;
    Ok(reply.into_inner().kv.map(|kv| kv.value.to_vec()))
}

async fn get_range_and_batch_get_read_at_a_past_revision(server: Server) {
    let mut kv = server.kv_client().await;
    let first = put(&mut kv, "m/a", "1").await;
    put(&mut kv, "m/b", "1").await;
    let second = put(&mut kv, "m/a", "2").await;
    kv.delete(pb::DeleteRequest {
        key: b("m/b"),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        get_at(&mut kv, "m/a", first).await.unwrap(),
        Some(b"1".to_vec())
    );
    assert_eq!(
        get_at(&mut kv, "m/a", second).await.unwrap(),
        Some(b"2".to_vec())
    );
    assert_eq!(
        get_at(&mut kv, "m/b", second).await.unwrap(),
        Some(b"1".to_vec())
    );
    assert_eq!(get_at(&mut kv, "m/b", 0).await.unwrap(), None);
    let range = kv
        .range(pb::RangeRequest {
            key: b("m/"),
            prefix: true,
            revision: second,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let listed: Vec<_> = range
        .kvs
        .iter()
        .map(|kv| (kv.key.to_vec(), kv.value.to_vec()))
        .collect();
    assert_eq!(
        listed,
        [
            (b"m/a".to_vec(), b"2".to_vec()),
            (b"m/b".to_vec(), b"1".to_vec())
        ]
    );
    assert_eq!(range.revision, second, "the revision read at");
    assert!(
        range.header.unwrap().revision > second,
        "the header is the store's"
    );
    let batch = kv
        .batch_get(pb::BatchGetRequest {
            keys: vec![b("m/a"), b("m/b")],
            revision: first,
        })
        .await
        .unwrap()
        .into_inner();
    let values: Vec<_> = batch
        .results
        .iter()
        .map(|r| r.kv.as_ref().map(|kv| kv.value.to_vec()))
        .collect();
    assert_eq!(values, [Some(b"1".to_vec()), None]);
    // A revision not reached yet is refused, naming both revisions.
    let future = get_at(&mut kv, "m/a", second + 100).await.unwrap_err();
    assert_eq!(future.code(), Code::OutOfRange, "{future:?}");
    assert!(
        future.message().contains("future revision"),
        "{}",
        future.message()
    );
}

async fn the_pages_of_a_listing_are_one_snapshot_while_keys_change(server: Server) {
    const KEYS: usize = 3000;
    let mut kv = server.kv_client().await;
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(500) {
        let puts = chunk
            .iter()
            .map(|i| pb::PutRequest {
                key: b(&format!("s/{i:05}")),
                value: b("before"),
                ..Default::default()
            })
            .collect();
        kv.batch_put(pb::BatchPutRequest { puts }).await.unwrap();
    }
    let mut listed = Vec::new();
    let mut token = bytes::Bytes::new();
    let mut first_revision = None;
    let mut pages = 0;
    loop {
        let page = kv
            .range(pb::RangeRequest {
                key: b("s/"),
                prefix: true,
                limit: 250,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        let listed_at = *first_revision.get_or_insert(page.revision);
        assert_eq!(
            page.revision, listed_at,
            "every page at the first page's revision"
        );
        assert_eq!(page.count, page.kvs.len() as u64, "counted only when asked");
        listed.extend(page.kvs.into_iter().map(|kv| (kv.key, kv.value)));
        // Between pages, keys change: after the cursor, before it, new ones.
        let i = pages * 211 % KEYS;
        put(&mut kv, &format!("s/{i:05}"), "after").await;
        put(&mut kv, &format!("s/{i:05}-new"), "after").await;
        kv.delete(pb::DeleteRequest {
            key: b(&format!("s/{:05}", (i * 7 + 3) % KEYS)),
            ..Default::default()
        })
        .await
        .unwrap();
        if !page.more {
            break;
        }
        token = page.next_page_token;
    }
    assert!(pages > 10);
    assert_eq!(
        listed.len(),
        KEYS,
        "exactly the keys of the first page's revision"
    );
    for (i, (key, value)) in listed.iter().enumerate() {
        assert_eq!(key, &b(&format!("s/{i:05}")));
        assert_eq!(value, &b("before"));
    }
    // Asked for, the count covers the rest of the range.
    let counted = kv
        .range(pb::RangeRequest {
            key: b("s/"),
            prefix: true,
            limit: 10,
            count_all: true,
            revision: first_revision.unwrap(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(counted.count, KEYS as u64);
    // A token continues its own revision: another one is refused.
    let refused = kv
        .range(pb::RangeRequest {
            key: b("s/"),
            prefix: true,
            limit: 10,
            page_token: counted.next_page_token,
            revision: first_revision.unwrap() + 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("page_token"),
        "{}",
        refused.message()
    );
}

async fn compact_refuses_older_reads_and_watches_naming_the_revision(server: Server) {
    let mut kv = server.kv_client().await;
    let old = put(&mut kv, "c/k", "old").await;
    let kept = put(&mut kv, "c/k", "kept").await;
    put(&mut kv, "c/k", "new").await;
    let compacted = kv
        .compact(pb::CompactRequest { revision: kept })
        .await
        .unwrap()
        .into_inner();
    assert!(compacted.header.unwrap().revision > kept);
    assert_eq!(
        get_at(&mut kv, "c/k", kept).await.unwrap(),
        Some(b"kept".to_vec())
    );
    let error = get_at(&mut kv, "c/k", old).await.unwrap_err();
    assert_eq!(error.code(), Code::OutOfRange, "{error:?}");
    assert!(
        error
            .message()
            .contains(&format!("required revision {old} has been compacted")),
        "{}",
        error.message()
    );
    let watch = kv
        .watch(pb::WatchRequest {
            key: b("c/k"),
            start_revision: old,
            ..Default::default()
        })
        .await;
    let status = match watch {
        Err(status) => status,
        Ok(stream) => stream.into_inner().next().await.unwrap().unwrap_err(),
    };
    assert_eq!(status.code(), Code::OutOfRange);
    assert!(
        status.message().contains("compacted"),
        "{}",
        status.message()
    );
    // A watch from the compacted revision on replays what is kept.
    let mut stream = kv
        .watch(pb::WatchRequest {
            key: b("c/k"),
            start_revision: kept + 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let event = stream.next().await.unwrap().unwrap();
    assert_eq!(event.events[0].kv.as_ref().unwrap().value, b("new"));
    // Compacting again, at the future, or at 0: refused with a reason.
    for (revision, code, says) in [
        (kept, Code::OutOfRange, "compacted"),
        (kept + 1000, Code::OutOfRange, "future revision"),
        (0, Code::InvalidArgument, "revision is required"),
    ] {
        let status = kv
            .compact(pb::CompactRequest { revision })
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(says), "{}", status.message());
    }
}

async fn kv_get_and_ls_read_at_a_revision_and_kv_compact_compacts(server: Server) {
    let addr = server.addr();
    let run = |args: &[&str]| kv(addr, args);
    assert!(run(&["set", "cli/a", "one"]).status.success());
    let mut client = server.kv_client().await;
    let first = put(&mut client, "cli/b", "two").await;
    assert!(run(&["set", "cli/a", "three"]).status.success());
    let rev = first.to_string();
    assert_eq!(text(&run(&["get", "--rev", &rev, "cli/a"]).stdout), "one\n");
    assert_eq!(text(&run(&["get", "cli/a"]).stdout), "three\n");
    assert_eq!(
        text(&run(&["ls", "--rev", &rev, "cli/"]).stdout),
        "cli/a\tone\ncli/b\ttwo\n"
    );
    let compacted = run(&["compact", &(first + 1).to_string()]);
    assert!(compacted.status.success(), "{}", text(&compacted.stderr));
    assert_eq!(
        text(&compacted.stdout),
        format!("compacted revision {}\n", first + 1)
    );
    let refused = run(&["get", "--rev", &rev, "cli/a"]);
    assert_eq!(refused.status.code(), Some(4), "refused by the server");
    let message = text(&refused.stderr);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.contains("has been compacted"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_the_past_replays_from_disk_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let server = Server::start_on_disk(dir.path(), &[]);
        let mut kv = server.kv_client().await;
        let first = put(&mut kv, "r/k", "1").await;
        put(&mut kv, "r/k", "2").await;
        server.stop("TERM").await;
        first
    };
    let server = Server::start_on_disk(dir.path(), &[]);
    let mut kv = server.kv_client().await;
    assert_eq!(
        get_at(&mut kv, "r/k", first).await.unwrap(),
        Some(b"1".to_vec())
    );
    let mut stream = kv
        .watch(pb::WatchRequest {
            key: b("r/k"),
            start_revision: first,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut values = Vec::new();
    while values.len() < 2 {
        let response = stream.next().await.unwrap().unwrap();
        values.extend(
            response
                .events
                .into_iter()
                .map(|e| e.kv.unwrap().value.to_vec()),
        );
    }
    assert_eq!(values, [b"1".to_vec(), b"2".to_vec()]);
}

/// The server's peak resident memory so far, in bytes (VmHWM).
fn peak_rss(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kib * 1024
}

/// The history of a key overwritten with large values lives on disk, not
/// in memory: before the multi-version store, the watch history kept every
/// event in memory, and 300 overwrites of a 1 MiB value took the server
/// from 20 to 365 MiB (and to 700 MiB with redb's default 1 GiB page
/// cache). Every version stays readable.
#[tokio::test]
async fn overwrites_of_a_large_value_keep_their_history_on_disk_not_in_memory() {
    const VALUE: usize = 1 << 20;
    const WRITES: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_on_disk(dir.path(), &["--max-value-bytes", &VALUE.to_string()]);
    let mut kv = server.kv_client().await;
    let before = peak_rss(&server);
    let mut first = 0;
    for i in 0..WRITES {
        let value = vec![b'a' + (i % 26) as u8; VALUE];
        let reply = kv
            .put(pb::PutRequest {
                key: b("big"),
                value: value.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if i == 0 {
            first = reply.header.unwrap().revision;
        }
    }
    let grown = peak_rss(&server).saturating_sub(before);
    let written = (VALUE * WRITES) as u64;
    eprintln!(
        "peak RSS grew by {} MiB for {} MiB written",
        grown >> 20,
        written >> 20
    );
    assert!(
        grown < written / 2,
        "peak RSS grew by {} MiB for {} MiB of overwrites",
        grown >> 20,
        written >> 20
    );
    let oldest = get_at(&mut kv, "big", first).await.unwrap().unwrap();
    assert_eq!((oldest.len(), oldest[0]), (VALUE, b'a'));
}

/// Waits until a read of `key` at `revision` is refused as compacted.
async fn until_compacted(kv: &mut KvClient<Channel>, key: &str, revision: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match get_at(kv, key, revision).await {
            Err(status) if status.code() == Code::OutOfRange => {
                assert!(status.message().contains("compacted"), "{status}");
                return;
            }
            other => assert!(
                std::time::Instant::now() < deadline,
                "revision {revision} still readable after 10 s: {other:?}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// `--auto-compaction-mode periodic` keeps its retention of history, and
/// no more: a revision older than it becomes unreadable by itself, a newer
/// one stays.
#[tokio::test]
async fn periodic_auto_compaction_forgets_what_is_older_than_its_retention() {
    let server = Server::start_with(&[
        "--auto-compaction-mode",
        "periodic",
        "--auto-compaction-retention",
        "1s",
    ]);
    let mut kv = server.kv_client().await;
    let old = put(&mut kv, "p/k", "old").await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let new = put(&mut kv, "p/k", "new").await;
    until_compacted(&mut kv, "p/k", old).await;
    assert_eq!(
        get_at(&mut kv, "p/k", new).await.unwrap(),
        Some(b"new".to_vec())
    );
}

/// `--history-max-bytes` bounds the history in bytes whatever the time
/// retention: 100 KB of overwrites against a bound of 20 KB.
#[tokio::test]
async fn the_history_is_compacted_to_its_bound_in_bytes() {
    let server = Server::start_with(&["--history-max-bytes", "20000"]);
    let mut kv = server.kv_client().await;
    let value = "x".repeat(5000);
    let mut revisions = Vec::new();
    for _ in 0..20 {
        revisions.push(put(&mut kv, "b/k", &value).await);
    }
    until_compacted(&mut kv, "b/k", revisions[0]).await;
    let last = *revisions.last().unwrap();
    assert_eq!(
        get_at(&mut kv, "b/k", last).await.unwrap().map(|v| v.len()),
        Some(5000)
    );
}

#[test]
fn a_bad_auto_compaction_flag_is_a_usage_error_that_names_it() {
    for (args, says) in [
        (
            &["--auto-compaction-mode", "sometimes"][..],
            "--auto-compaction-mode",
        ),
        (
            &[
                "--auto-compaction-mode",
                "revision",
                "--auto-compaction-retention",
                "1h",
            ][..],
            "number of revisions",
        ),
    ] {
        let output = crate::harness::kvserver()
            .args(["--backend", "memory", "--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
}
