//! `kv backup` and `kvserver restore` through the real binaries: a
//! consistent copy taken while writes go on, restored into a new data dir.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use keyvalue::proto::keyvalue::v1 as pb;

use crate::harness::{Server, kv, kvserver, text};

/// Every key with its counters, through paging.
async fn everything(server: &Server) -> Vec<pb::KeyValue> {
    let mut client = server.kv_client().await;
    let mut all = Vec::new();
    let mut token = Bytes::new();
    loop {
        let page = client
            .range(pb::RangeRequest {
                key: Bytes::new(),
                prefix: true,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        all.extend(page.kvs);
        if !page.more {
            return all;
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_of_100000_keys_taken_under_writes_restores_exactly() {
    let source = tempfile::tempdir().unwrap();
    let server = Server::start_on_disk(source.path(), &[]);
    let mut client = server.kv_client().await;
    for batch in 0..100 {
        let puts = (0..1000)
            .map(|i| pb::PutRequest {
                key: Bytes::from(format!("key/{:06}", batch * 1000 + i)),
                value: Bytes::from(format!("value {batch}-{i}")),
                ..Default::default()
            })
            .collect();
        client
            .batch_put(pb::BatchPutRequest { puts })
            .await
            .unwrap();
    }
    let lease = client
        .lease_grant(pb::LeaseGrantRequest { ttl_ms: 600_000 })
        .await
        .unwrap()
        .into_inner();
    client
        .put(pb::PutRequest {
            key: Bytes::from("leased"),
            value: Bytes::from("v"),
            lease: lease.id,
            ..Default::default()
        })
        .await
        .unwrap();

    // Writes go on during the backup: it must neither stop them nor be torn by them.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let writing = Arc::clone(&writing);
        let mut client = server.kv_client().await;
        tokio::spawn(async move {
            let mut writes = 0u64;
            while writing.load(Ordering::Relaxed) {
                let key = Bytes::from(format!("during/{writes}"));
                client
                    .put(pb::PutRequest {
                        key,
                        value: Bytes::from("x"),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                writes += 1;
            }
            writes
        })
    };
    let file = source.path().join("backup.kv");
    let addr = server.addr().to_owned();
    let file_arg = file.clone();
    let output = tokio::task::spawn_blocking(move || {
        kv(&addr, &["--json", "backup", file_arg.to_str().unwrap()])
    })
    .await
    .unwrap();
    writing.store(false, Ordering::Relaxed);
    let writes_during = writer.await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let revision = report["revision"].as_u64().unwrap();
    assert!(writes_during > 0, "writes went on during the backup");

    // What the backup must hold: exactly the keys at or before its revision.
    let live = everything(&server).await;
    let expected: Vec<pb::KeyValue> = live
        .into_iter()
        .filter(|kv| kv.mod_revision <= revision)
        .collect();
    assert_eq!(report["keys"].as_u64().unwrap(), expected.len() as u64);
    assert!(expected.len() > 100_000);
    drop(client);
    assert!(server.stop("TERM").await.status.success());

    let target = tempfile::tempdir().unwrap();
    let restored = kvserver()
        .arg("restore")
        .arg(&file)
        .arg("--data-dir")
        .arg(target.path())
        .output()
        .unwrap();
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    assert!(
        String::from_utf8_lossy(&restored.stderr)
            .contains(&format!("restored {} keys", expected.len()))
    );

    let server = Server::start_on_disk(target.path(), &[]);
    assert_eq!(
        everything(&server).await,
        expected,
        "every key with every counter"
    );
    let mut client = server.kv_client().await;
    // The store goes on from the backup's revision, and the lease is back.
    let next = client
        .put(pb::PutRequest {
            key: Bytes::from("after"),
            value: Bytes::from("v"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.header.unwrap().revision, revision + 1);
    let info = client
        .lease_info(pb::LeaseInfoRequest {
            id: lease.id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.ttl_ms, 600_000);
}

#[test]
fn restore_refuses_a_data_dir_with_a_database_and_a_damaged_backup() {
    let dir = tempfile::tempdir().unwrap();
    let damaged = dir.path().join("damaged.kv");
    std::fs::write(&damaged, b"keyvalue-backup/1\n\x05\x00\x00\x00abc").unwrap();
    let output = kvserver()
        .arg("restore")
        .arg(&damaged)
        .arg("--data-dir")
        .arg(dir.path().join("new"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cut short"));

    let occupied = tempfile::tempdir().unwrap();
    drop(Server::start_on_disk(occupied.path(), &[]));
    let backup = dir.path().join("empty.kv");
    let mut writer = keyvalue::backup::BackupWriter::new(Vec::new()).unwrap();
    writer
        .write(&pb::SnapshotChunk {
            header: Some(pb::Header { revision: 0 }),
            done: true,
            ..Default::default()
        })
        .unwrap();
    std::fs::write(&backup, writer.into_inner()).unwrap();
    let output = kvserver()
        .arg("restore")
        .arg(&backup)
        .arg("--data-dir")
        .arg(occupied.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("already holds a database"));
}

#[tokio::test]
async fn a_snapshot_of_a_store_with_leases_and_no_keys_names_the_leases() {
    use tokio_stream::StreamExt;
    let server = Server::start();
    let mut client = server.kv_client().await;
    let lease = client
        .lease_grant(pb::LeaseGrantRequest { ttl_ms: 60_000 })
        .await
        .unwrap()
        .into_inner();
    let mut chunks = client
        .snapshot(pb::SnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = chunks.next().await.unwrap().unwrap();
    let leases: Vec<_> = first.leases.iter().map(|l| (l.id, l.ttl_ms)).collect();
    assert_eq!(leases, [(lease.id, 60_000)]);
    let mut rest = Vec::new();
    while let Some(chunk) = chunks.next().await {
        rest.push(chunk.unwrap());
    }
    assert!(rest.last().unwrap().done);
    assert!(
        rest.iter()
            .all(|chunk| chunk.kvs.is_empty() && chunk.leases.is_empty())
    );
}

#[test]
fn a_failed_backup_leaves_no_partial_file_and_the_old_backup_untouched() {
    // A token confined to a prefix may not take a snapshot of every key: the
    // backup fails after its file was opened.
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "app-secret readwrite app/\n").unwrap();
    let server = Server::start_with(&["--auth-token-file", tokens.to_str().unwrap()]);
    let old = dir.path().join("x.kv");
    std::fs::write(&old, "an older backup").unwrap();
    let output = kv(
        server.addr(),
        &["--token", "app-secret", "backup", old.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(4), "{}", text(&output.stderr));
    assert_eq!(std::fs::read_to_string(&old).unwrap(), "an older backup");
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["tokens", "x.kv"]);
}

#[test]
fn a_target_that_is_not_a_regular_file_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start();
    assert!(kv(server.addr(), &["set", "k", "v"]).status.success());
    let directory = dir.path().join("a-directory");
    std::fs::create_dir(&directory).unwrap();
    let fifo = dir.path().join("a-fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let regular = dir.path().join("regular.kv");
    std::fs::write(&regular, "an older backup").unwrap();
    let link = dir.path().join("link.kv");
    std::os::unix::fs::symlink(&regular, &link).unwrap();
    // The partial file's path is checked too (were it a FIFO, kv would wait
    // for a reader; a directory fails the test rather than hanging it).
    let blocked = dir.path().join("blocked.kv");
    let blocked_partial = dir.path().join("blocked.kv.partial");
    std::fs::create_dir(&blocked_partial).unwrap();
    for (target, named) in [
        (&directory, &directory),
        (&fifo, &fifo),
        (&link, &link),
        (&blocked, &blocked_partial),
    ] {
        let output = kv(server.addr(), &["backup", target.to_str().unwrap()]);
        assert_eq!(
            (output.status.code(), text(&output.stderr)),
            (
                Some(2),
                format!(
                    "{} exists and is not a regular file; kv backup writes a new file or \
                     replaces a regular one\n",
                    named.display()
                )
            )
        );
    }
    assert!(std::fs::metadata(&directory).unwrap().is_dir());
    assert_eq!(std::fs::read_dir(&directory).unwrap().count(), 0);
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &std::fs::symlink_metadata(&fifo).unwrap().file_type()
    ));
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert_eq!(
        std::fs::read_to_string(&regular).unwrap(),
        "an older backup"
    );
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "a-directory",
            "a-fifo",
            "blocked.kv.partial",
            "link.kv",
            "regular.kv"
        ]
    );
    // A regular file and a new path are written as before.
    for target in [&regular, &dir.path().join("new.kv")] {
        let output = kv(server.addr(), &["backup", target.to_str().unwrap()]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        assert!(
            std::fs::read(target)
                .unwrap()
                .starts_with(b"keyvalue-backup/")
        );
    }
}
