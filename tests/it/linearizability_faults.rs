//! Linearizability under faults, through the real binary: concurrent clients
//! (one connection each) read, write and compare-and-set a few shared keys
//! through `keyvalue.v1.KV` (Put with a condition, and Txn compares) while
//! servers are killed and restarted, and etcd members killed and paused;
//! the recorded history must be linearizable (`support/linearizability.rs`).
//!
//! Every value written is unique, so a read names the write it saw. An
//! operation that errs or times out is of unknown outcome if it could have
//! written, and dropped if it was a read. Each test also checks that the
//! checker rejects two corrupted copies of its own recorded history (a
//! stale read and an acknowledged write gone), so a passing run means the
//! history was examined, not that any history would pass.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keyvalue::proto::keyvalue::v1 as pb;
use keyvalue::proto::keyvalue::v1::kv_client::KvClient;
use tonic::transport::{Channel, Endpoint};

use crate::etcd::gateway;
use crate::etcd_process::EtcdCluster;
use crate::harness::{Server, XorShift, b, send_signal};
use crate::linearizability::{Call, Operation, Outcome, Recorder, check};

const CLIENTS: usize = 6;
const KEYS: u64 = 3;
/// A call that takes longer is abandoned as of unknown outcome.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the clients find the server: a restarted server has a new port.
type Address = Arc<Mutex<String>>;

/// The running clients of a test.
struct Workload {
    recorder: Recorder,
    stop: Arc<AtomicBool>,
    /// Operations that succeeded (read, written, CAS answered), to wait for
    /// progress.
    answered: Arc<AtomicUsize>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Workload {
    fn start(address: &Address, seed: u64) -> Workload {
        let recorder = Recorder::new();
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let clients = (0..CLIENTS)
            .map(|id| {
                tokio::spawn(client(
                    id,
                    Arc::clone(address),
                    recorder.clone(),
                    Arc::clone(&stop),
                    Arc::clone(&answered),
                    XorShift(seed ^ (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                ))
            })
            .collect();
        Workload {
            recorder,
            stop,
            answered,
            clients,
        }
    }

    /// Waits until `more` operations have been answered (the service makes
    /// progress), within `within`.
    async fn progress(&self, more: usize, within: Duration, when: &str) {
        let start = self.answered.load(Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + within;
        while self.answered.load(Ordering::Relaxed) < start + more {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no progress {when}: {} answers in {within:?}",
                self.answered.load(Ordering::Relaxed) - start
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the clients; then one last read of every key (which must see
    /// every acknowledged write that was not overwritten), and the history.
    async fn finish(self, address: &Address) -> Vec<Operation> {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            client.await.unwrap();
        }
        let now = address.lock().unwrap().clone();
        let mut kv = connect(&now).await.expect("connect for the final reads");
        for key in 0..KEYS {
            let key = format!("k{key}");
            let id = self.recorder.invoke(CLIENTS, &key, Call::Read);
            let outcome = read(&mut kv, &key).await.expect("a final read");
            self.recorder.complete(id, outcome);
        }
        self.recorder.history()
    }
}

async fn connect(address: &str) -> Result<KvClient<Channel>, tonic::transport::Error> {
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .expect("a valid address")
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await?;
    Ok(KvClient::new(channel))
}

async fn read(kv: &mut KvClient<Channel>, key: &str) -> Result<Outcome, tonic::Status> {
    let answer = kv
        .get(pb::GetRequest {
            key: b(key),
            revision: 0,
        })
        .await?
        .into_inner();
    Ok(Outcome::Read(answer.kv.map(|kv| {
        String::from_utf8(kv.value.to_vec()).expect("values are text")
    })))
}

/// One client: its own connection, random operations on the shared keys,
/// a new connection (to the address of the day) after any error.
async fn client(
    id: usize,
    address: Address,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    mut rng: XorShift,
) {
    let mut kv: Option<KvClient<Channel>> = None;
    // The last value this client saw per key: what its next CAS expects.
    let mut last_seen: Vec<Option<String>> = vec![None; KEYS as usize];
    let mut sequence = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(client) = kv.as_mut() else {
            let now = address.lock().unwrap().clone();
            match connect(&now).await {
                Ok(client) => kv = Some(client),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
            continue;
        };
        let slot = (rng.next() % KEYS) as usize;
        let key = format!("k{slot}");
        sequence += 1;
        let value = format!("c{id}-{sequence}");
        let choice = rng.next() % 10;
        let call = match choice {
            0..=3 => Call::Read,
            4..=6 => Call::Write(value.clone()),
            _ => Call::Cas {
                expected: last_seen[slot].clone(),
                new: value.clone(),
            },
        };
        let op = recorder.invoke(id, &key, call.clone());
        let answer = tokio::time::timeout(CALL_TIMEOUT, perform(client, &key, &call, choice)).await;
        let outcome = match answer {
            Ok(Ok(outcome)) => outcome,
            // An error or a timeout: a read took no effect; a write may have.
            Ok(Err(_)) | Err(_) => {
                kv = None;
                if call == Call::Read {
                    Outcome::Failed
                } else {
                    Outcome::Unknown
                }
            }
        };
        match &outcome {
            Outcome::Read(seen) => last_seen[slot] = seen.clone(),
            Outcome::Written | Outcome::Cas(true) => last_seen[slot] = Some(value),
            _ => {}
        }
        if !matches!(outcome, Outcome::Unknown | Outcome::Failed) {
            answered.fetch_add(1, Ordering::Relaxed);
        }
        recorder.complete(op, outcome);
    }
}

/// Sends `call`: a CAS goes as a conditional Put or as a Txn (by `choice`).
async fn perform(
    kv: &mut KvClient<Channel>,
    key: &str,
    call: &Call,
    choice: u64,
) -> Result<Outcome, tonic::Status> {
    match call {
        Call::Read => read(kv, key).await,
        Call::Write(value) => {
            kv.put(pb::PutRequest {
                key: b(key),
                value: b(value),
                ..Default::default()
            })
            .await?;
            Ok(Outcome::Written)
        }
        Call::Cas { expected, new } if choice.is_multiple_of(2) => {
            let check = match expected {
                Some(value) => pb::condition::Check::Value(b(value)),
                None => pb::condition::Check::Exists(false),
            };
            let answer = kv
                .put(pb::PutRequest {
                    key: b(key),
                    value: b(new),
                    condition: Some(pb::Condition { check: Some(check) }),
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok(Outcome::Cas(answer.succeeded))
        }
        Call::Cas { expected, new } => {
            let target = match expected {
                Some(value) => pb::compare::Target::Value(b(value)),
                None => pb::compare::Target::Version(0),
            };
            let answer = kv
                .txn(pb::TxnRequest {
                    compare: vec![pb::Compare {
                        key: b(key),
                        op: pb::compare::Op::Equal as i32,
                        target: Some(target),
                    }],
                    success: vec![pb::Op {
                        op: Some(pb::op::Op::Put(pb::PutRequest {
                            key: b(key),
                            value: b(new),
                            ..Default::default()
                        })),
                    }],
                    failure: vec![],
                })
                .await?
                .into_inner();
            Ok(Outcome::Cas(answer.succeeded))
        }
    }
}

/// Checks `history`, prints what it held, and checks that corrupted copies
/// of it are rejected.
fn check_history(history: &[Operation], what: &str) {
    let summary = check(history).unwrap_or_else(|violation| panic!("{what}: {violation}"));
    let count = |f: &dyn Fn(&Operation) -> bool| history.iter().filter(|op| f(op)).count();
    let reads = count(&|op| matches!(op.outcome, Outcome::Read(_)));
    let writes = count(&|op| op.outcome == Outcome::Written);
    let cas_won = count(&|op| op.outcome == Outcome::Cas(true));
    let cas_lost = count(&|op| op.outcome == Outcome::Cas(false));
    eprintln!(
        "{what}: {} operations on {} keys: {reads} reads, {writes} writes, \
         {cas_won} CAS won, {cas_lost} CAS lost, {} unknown; {} search states",
        summary.operations, summary.keys, summary.unknown, summary.states
    );
    assert!(
        reads >= 50 && writes >= 20,
        "too little happened: {summary:?}"
    );
    assert!(
        cas_won >= 5 && cas_lost >= 1,
        "compare-and-sets both won and lost"
    );

    for (name, corrupt) in [
        ("a stale read", Some as fn(String) -> Option<String>),
        ("an acknowledged write gone", |_| None),
    ] {
        let corrupted = corrupt_a_read(history, corrupt)
            .unwrap_or_else(|| panic!("{what}: no read to corrupt"));
        let violation = check(&corrupted).expect_err(name);
        assert!(!violation.gave_up, "{what}, {name}: {violation}");
    }
}

/// A copy of `history` in which one read, invoked after two acknowledged
/// writes of its key one after the other, answers `corrupt(first value)`
/// instead: either the older value (stale) or absent (lost). Neither can be
/// linearizable, since values are unique and nothing deletes.
fn corrupt_a_read(
    history: &[Operation],
    corrupt: fn(String) -> Option<String>,
) -> Option<Vec<Operation>> {
    let written = |op: &Operation| match (&op.call, &op.outcome) {
        (Call::Write(value), Outcome::Written) => Some(value.clone()),
        _ => None,
    };
    for first in history {
        let (Some(value), Some(first_done)) = (written(first), first.completed) else {
            continue;
        };
        let Some(second_done) = history
            .iter()
            .filter(|op| op.key == first.key && op.invoked > first_done && written(op).is_some())
            .filter_map(|op| op.completed)
            .min()
        else {
            continue;
        };
        let stale = Outcome::Read(corrupt(value));
        if let Some(i) = history.iter().position(|op| {
            op.key == first.key
                && op.invoked > second_done
                && matches!(op.outcome, Outcome::Read(_))
                && op.outcome != stale
        }) {
            let mut corrupted = history.to_vec();
            corrupted[i].outcome = stale;
            return Some(corrupted);
        }
    }
    None
}

fn seed() -> u64 {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |elapsed| elapsed.as_nanos() as u64 | 1);
    eprintln!("linearizability seed: {seed}");
    seed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disk_server_killed_and_restarted_under_load_stays_linearizable() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_on_disk(dir.path(), &[]);
    let address: Address = Arc::new(Mutex::new(server.addr().to_owned()));
    let workload = Workload::start(&address, seed());
    let mut server = Some(server);
    for round in 0..3 {
        workload
            .progress(150, Duration::from_secs(20), &format!("in round {round}"))
            .await;
        let running = server.take().unwrap();
        tokio::task::spawn_blocking(move || running.crash())
            .await
            .unwrap();
        let restarted = Server::start_on_disk(dir.path(), &[]);
        *address.lock().unwrap() = restarted.addr().to_owned();
        server = Some(restarted);
    }
    workload
        .progress(150, Duration::from_secs(20), "after the last restart")
        .await;
    let history = workload.finish(&address).await;
    check_history(&history, "disk, 3 kills");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_etcd_gateway_through_member_kills_pauses_and_its_own_restart_stays_linearizable() {
    let mut etcd = tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .unwrap();
    let args = ["--etcd-timeout", "2s"];
    let server = gateway(&etcd.endpoints(), &args);
    let address: Address = Arc::new(Mutex::new(server.addr().to_owned()));
    let workload = Workload::start(&address, seed());
    let patience = Duration::from_secs(30);
    workload.progress(100, patience, "at the start").await;

    // A follower is killed, then restarted.
    let leader = etcd.leader();
    let follower = (leader + 1) % 3;
    etcd.kill(follower);
    workload
        .progress(100, patience, "with a follower killed")
        .await;
    tokio::task::block_in_place(|| etcd.restart(follower));
    workload.progress(100, patience, "after its restart").await;

    // The leader is paused (SIGSTOP) long enough for an election, then
    // resumed: it comes back as a stale leader and must step down.
    let leader = etcd.leader();
    send_signal(etcd.pid(leader), "STOP");
    workload
        .progress(100, patience, "with the leader paused")
        .await;
    send_signal(etcd.pid(leader), "CONT");
    workload.progress(100, patience, "after it resumed").await;

    // The gateway itself is killed and another started.
    tokio::task::spawn_blocking(move || server.crash())
        .await
        .unwrap();
    let server = gateway(&etcd.endpoints(), &args);
    *address.lock().unwrap() = server.addr().to_owned();
    workload
        .progress(100, patience, "through the new gateway")
        .await;

    let history = workload.finish(&address).await;
    check_history(&history, "etcd gateway, kills and a pause");
}
