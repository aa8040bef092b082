//! Crash safety of the disk backend: concurrent writers, `SIGKILL` at a random
//! moment, restart, and every acknowledged write must be there.
//!
//! Each writer owns its keys and writes increasing sequence numbers, so after a
//! restart the value of a key must be at least its last acknowledged number
//! (nothing acknowledged was lost) and at most the last number sent (nothing
//! was invented; a write in flight at the crash may or may not have landed).
//! The rounds share one data dir, so each restart recovers from the crash
//! before it, on top of all the rounds before that (under `--sync always`,
//! most of each round's writes are only in the write-ahead log when the
//! kill comes, and the restart replays them). At the end the whole history
//! is read back through a watch from revision 1: one write per revision,
//! no revision skipped, and each key's sequence numbers strictly rising
//! (a write replayed twice would repeat one at a later revision).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::harness::{Server, XorShift, get, set};

const ROUNDS: usize = 20;
const WRITERS: usize = 16;
const KEYS_PER_WRITER: u64 = 8;
/// The whole history kept, for the check at the end.
const KEEP_HISTORY: &[&str] = &[
    "--watch-history",
    "0",
    "--history-max-bytes",
    "0",
    "--auto-compaction-retention",
    "0",
];

/// What the writers know of one key: the highest sequence number the server
/// acknowledged, and the highest sent.
#[derive(Clone, Copy, Default, Debug)]
struct KeyState {
    acknowledged: u64,
    sent: u64,
}

type Model = Arc<Mutex<HashMap<String, KeyState>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_write_survives_sigkill() {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |elapsed| elapsed.as_nanos() as u64 | 1);
    println!("crash test seed: {seed}");
    let mut rng = XorShift(seed);
    let dir = tempfile::tempdir().unwrap();
    let model: Model = Arc::default();
    let mut next_sequence = 1;

    let mut replays = 0;
    for round in 0..ROUNDS {
        let server = Server::start_on_disk(dir.path(), KEEP_HISTORY);
        verify(&server, &model, round).await;
        // The restart replayed acknowledged writes from the log (the line
        // comes before `listening on`).
        if (server.stderr_lines().iter()).any(|line| line.contains("replaying")) {
            replays += 1;
        }

        let mut writers = Vec::new();
        for writer in 0..WRITERS {
            let mut client = server.client().await;
            let model = Arc::clone(&model);
            let first = next_sequence + writer as u64 * 1_000_000;
            let mut keys = XorShift(rng.next());
            writers.push(tokio::spawn(async move {
                for sequence in first.. {
                    let key = format!("w{writer}/k{}", keys.next() % KEYS_PER_WRITER);
                    model.lock().unwrap().entry(key.clone()).or_default().sent = sequence;
                    let request = keyvalue::proto::simplekeyvalue::SetRequest {
                        key: key.clone(),
                        value: sequence.to_string(),
                    };
                    if client.set(request).await.is_err() {
                        return; // the server is gone
                    }
                    model.lock().unwrap().get_mut(&key).unwrap().acknowledged = sequence;
                }
            }));
        }
        next_sequence += WRITERS as u64 * 1_000_000;

        tokio::time::sleep(Duration::from_millis(20 + rng.next() % 400)).await;
        tokio::task::spawn_blocking(move || server.crash())
            .await
            .unwrap();
        for writer in writers {
            writer.await.unwrap();
        }
    }
    let server = Server::start_on_disk(dir.path(), KEEP_HISTORY);
    verify(&server, &model, ROUNDS).await;
    every_revision_once(&server).await;
    assert!(replays > 0, "no restart replayed the write-ahead log");
    println!("{replays} of {ROUNDS} restarts after a kill replayed the log");
    let acknowledged = model
        .lock()
        .unwrap()
        .values()
        .filter(|k| k.acknowledged > 0)
        .count();
    assert!(acknowledged > 0, "the writers got writes acknowledged");
    // The server still takes writes after all those crashes.
    let mut client = server.client().await;
    set(&mut client, "after-the-crashes", "fine").await;
    assert_eq!(get(&mut client, "after-the-crashes").await.unwrap(), "fine");
}

/// Reads the whole history through a watch from revision 1: every
/// revision up to the current one holds exactly one write, and each key's
/// sequence numbers rise strictly.
async fn every_revision_once(server: &Server) {
    use keyvalue::proto::keyvalue::v1 as pb;
    use tokio_stream::StreamExt;
    let mut kv = server.kv_client().await;
    let current = kv
        .range(pb::RangeRequest {
            key: "w".into(),
            prefix: true,
            count_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .revision;
    assert!(current > 1, "writes were made");
    let mut stream = kv
        .watch(pb::WatchRequest {
            key: "w".into(),
            prefix: true,
            start_revision: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut last_revision = 1;
    let mut last_sequence: HashMap<Vec<u8>, u64> = HashMap::new();
    while last_revision < current {
        let response = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("the history streams")
            .unwrap()
            .unwrap();
        for event in response.events {
            let kv = event.kv.unwrap();
            assert_eq!(
                kv.mod_revision,
                last_revision + 1,
                "revisions follow each other, one write each"
            );
            last_revision = kv.mod_revision;
            let sequence: u64 = String::from_utf8(kv.value.to_vec())
                .unwrap()
                .parse()
                .unwrap();
            let before = last_sequence.insert(kv.key.to_vec(), sequence);
            assert!(
                before.is_none_or(|before| before < sequence),
                "{}: {sequence} after {before:?} at revision {last_revision}: applied twice?",
                String::from_utf8_lossy(&kv.key)
            );
        }
    }
    assert_eq!(last_revision, current);
}

/// Checks every key the writers touched against the model, then makes what
/// was found the new baseline (an in-flight write that landed counts now).
async fn verify(server: &Server, model: &Model, round: usize) {
    let mut client = server.client().await;
    let keys: Vec<(String, KeyState)> = model
        .lock()
        .unwrap()
        .iter()
        .map(|(key, state)| (key.clone(), *state))
        .collect();
    for (key, state) in keys {
        let found = match get(&mut client, &key).await {
            Ok(value) => value.parse::<u64>().expect("a sequence number"),
            Err(status) if status.code() == tonic::Code::NotFound => 0,
            Err(status) => panic!("round {round}: get {key}: {status}"),
        };
        assert!(
            found >= state.acknowledged,
            "round {round}: {key} holds {found}, but {} was acknowledged",
            state.acknowledged
        );
        assert!(
            found <= state.sent,
            "round {round}: {key} holds {found}, but only up to {} was sent",
            state.sent
        );
        let mut model = model.lock().unwrap();
        let entry = model.get_mut(&key).unwrap();
        entry.acknowledged = found;
        entry.sent = found;
    }
}

/// Flips a bit in the checksum of the newest commit slot of redb's header
/// (redb 4's layout: a 9-byte magic number, the god byte whose lowest bit
/// names the primary slot, two 128-byte slots from offset 64): what a bad
/// sector or a torn header write does. redb then opens the commit before.
fn damage_latest_commit(db_file: &std::path::Path) {
    let mut bytes = std::fs::read(db_file).unwrap();
    let primary = usize::from(bytes[9] & 1);
    let slot = 64 + 128 * primary;
    bytes[slot + 120] ^= 1;
    std::fs::write(db_file, bytes).unwrap();
}

/// The last revision `keyvalue.acked` says was made durable in the
/// database (its layout: two 32-byte slots, a magic number, then `durable`
/// as a little-endian `u64`): where the last checkpoint got to.
fn durable_in_record(dir: &std::path::Path) -> u64 {
    let bytes = std::fs::read(dir.join(keyvalue::storage::ACK_FILE)).unwrap_or_default();
    bytes
        .chunks(32)
        .filter(|slot| slot.len() == 32 && slot.starts_with(b"kvacked1"))
        .map(|slot| u64::from_le_bytes(slot[8..16].try_into().unwrap()))
        .max()
        .unwrap_or(0)
}

/// Waits until a checkpoint (every second while writes flow) made
/// `revision` durable in the database, not only in the log.
async fn until_checkpointed(dir: &std::path::Path, revision: u64) {
    let began = std::time::Instant::now();
    while durable_in_record(dir) < revision {
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "no checkpoint reached revision {revision}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_damaged_latest_commit_is_refused_and_its_revision_never_reused() {
    use keyvalue::proto::keyvalue::v1 as pb;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_on_disk(dir.path(), &[]);
    let mut kv = server.kv_client().await;
    let mut last = 0;
    for i in 0..60 {
        let put = pb::PutRequest {
            key: format!("k{i:02}").into(),
            value: "v".into(),
            ..Default::default()
        };
        let answer = kv.put(put).await.unwrap().into_inner();
        last = answer.header.unwrap().revision;
        // Two checkpoints: the writes up to k29, then all of them.
        if i == 29 || i == 59 {
            until_checkpointed(dir.path(), last).await;
        }
    }
    // Killed, so that the last commit is the checkpoint's (a clean close
    // ends with a two-phase commit of redb's, whose damage redb refuses
    // outright).
    server.crash();
    let revision = |kv: &mut pb::kv_client::KvClient<tonic::transport::Channel>| {
        let mut kv = kv.clone();
        async move {
            let range = pb::RangeRequest {
                key: "k".into(),
                prefix: true,
                count_only: true,
                ..Default::default()
            };
            let answer = kv.range(range).await.unwrap().into_inner();
            (answer.header.unwrap().revision, answer.count)
        }
    };

    // The database comes back one commit older (the first checkpoint's),
    // but the write-ahead log still holds the writes since: replayed.
    let db_file = dir.path().join(keyvalue::storage::DB_FILE);
    damage_latest_commit(&db_file);
    let damaged = std::fs::read(&db_file).unwrap();
    let server = Server::start_on_disk(dir.path(), &[]);
    let mut kv = server.kv_client().await;
    assert_eq!(revision(&mut kv).await, (last, 60), "healed by the log");
    server.crash();

    // The same damaged database without the log is refused, with what to do.
    std::fs::write(&db_file, &damaged).unwrap();
    std::fs::write(dir.path().join(keyvalue::storage::LOG_FILE), b"").unwrap();
    let mut command = crate::harness::kvserver();
    command.args(["--listen", "127.0.0.1:0", "--data-dir"]);
    command.arg(dir.path());
    let refused = Server::spawn(command).err().expect("refused to start");
    assert!(
        refused.contains(&format!("revision {last} was acknowledged")),
        "{refused}"
    );
    assert!(refused.contains("accept-lost-writes"), "{refused}");

    // Accepting the loss: the store goes on after the lost revisions.
    let accepted = crate::harness::kvserver()
        .arg("accept-lost-writes")
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let said = crate::harness::text(&accepted.stderr);
    assert!(accepted.status.success(), "{said}");
    assert!(said.contains(&format!(" to {last}")), "{said}");
    let server = Server::start_on_disk(dir.path(), &[]);
    let mut kv = server.kv_client().await;
    let put = pb::PutRequest {
        key: "after".into(),
        value: "v".into(),
        ..Default::default()
    };
    let answer = kv.put(put).await.unwrap().into_inner();
    assert_eq!(answer.header.unwrap().revision, last + 1);
}
