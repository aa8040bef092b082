//! etcd's client libraries against kvserver: Go's clientv3 with its
//! `concurrency` package (locks with contenders, an election with a
//! failover, the server-side Lock and Election services, paging a
//! 100,000-key range at one revision while writes go on; and, through
//! etcd's generated Watch client, many watches of one stream across
//! replay, lag, cancel and compaction), and python-etcd3. Each program prints what it saw; the same program runs
//! against a real etcd, and the outputs must be equal.
//!
//! The Go program (`tests/etcd_clients/clientv3.go`) is built here, once
//! per test run, with Debian's Go in GOPATH mode against Debian's etcd
//! sources (`golang-etcd-server-dev`); the Python one
//! (`tests/etcd_clients/etcd3_scenario.py`) runs on the system python,
//! where Debian's `python3-etcd3` is.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::etcd::gateway;
use crate::etcd_process::EtcdCluster;
use crate::harness::Server;

/// Builds the Go scenario into the test's scratch dir; returns its path.
fn build_go_scenario() -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("etcd-clients");
    let package = root.join("src/kvtest");
    std::fs::create_dir_all(&package).unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/etcd_clients/clientv3.go");
    std::fs::copy(&source, package.join("main.go")).unwrap();
    let binary = root.join("clientv3");
    let output = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg("kvtest")
        .env("GO111MODULE", "off")
        .env("GOPATH", format!("{}:/usr/share/gocode", root.display()))
        .env("GOFLAGS", "")
        .output()
        .expect("go runs (Debian's golang-go; scripts/test installs it)");
    assert!(
        output.status.success(),
        "go build of the clientv3 scenario: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    binary
}

/// What the Go scenario printed for `sections` against `endpoint`.
fn go_scenario(binary: &Path, endpoint: &str, sections: &[&str]) -> String {
    let output = Command::new(binary)
        .arg(endpoint)
        .args(sections)
        .output()
        .expect("the scenario runs");
    assert!(
        output.status.success(),
        "the Go scenario failed against {endpoint}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every section of the Go scenario that kvserver serves as etcd does.
const GO_SECTIONS: &[&str] = &[
    "kv",
    "leases",
    "watches",
    "mutex",
    "election",
    "lock-service",
    "election-service",
    "history",
];

#[test]
fn go_clientv3_and_its_concurrency_package_see_kvserver_as_etcd() {
    let binary = build_go_scenario();
    let etcd = EtcdCluster::single();
    let reference = go_scenario(
        &binary,
        etcd.url(0).trim_start_matches("http://"),
        GO_SECTIONS,
    );
    // The scenario is shown right by etcd itself.
    for expected in [
        "m2 waits while m1 holds the lock",
        "m2 holds the lock after m1 unlocked",
        "after the leader's lease expired, leader: two",
        "observed the failover: two",
        "lock 2 holds it after the holder's lease went",
        "two leads after one resigned",
        "watch without puts: DELETE gw/a=",
        "nested txn: succeeded=true inner succeeded=false inner responses=2",
        "every key of go/ has a version: true",
        "grant the same id again: error: etcdserver: lease already exists",
        "leases lists both: true",
        "at r1+2: hist/k=two,hist/other=x count=2",
        "at r1+3: hist/other=x count=1",
        "hist/k at r1+1: version=2 created=r1+0 modified=r1+1",
        "get at a future revision: error: etcdserver: mvcc: required revision is a future revision",
        "replay with prev_kv: PUT hist/k=one (prev none), PUT hist/k=two (prev one), PUT hist/other=x (prev none), DELETE hist/k= (prev two), PUT hist/k=three (prev none)",
        "get below the compaction: error: etcdserver: mvcc: required revision has been compacted",
        "watch from a compacted revision: canceled=true compact_revision=r1+2",
    ] {
        assert!(
            reference.contains(expected),
            "{expected:?} not in:\n{reference}"
        );
    }
    let memory = Server::start();
    assert_eq!(go_scenario(&binary, memory.addr(), GO_SECTIONS), reference);
    let dir = tempfile::tempdir().unwrap();
    let disk = Server::start_on_disk(dir.path(), &[]);
    assert_eq!(go_scenario(&binary, disk.addr(), GO_SECTIONS), reference);
    let through = gateway(&etcd.endpoints(), &["--etcd-prefix", "gw-go/"]);
    assert_eq!(go_scenario(&binary, through.addr(), GO_SECTIONS), reference);
}

#[test]
fn go_clientv3_pages_a_100k_key_range_at_one_revision_while_writes_go_on() {
    let binary = build_go_scenario();
    let etcd = EtcdCluster::single();
    let reference = go_scenario(
        &binary,
        etcd.url(0).trim_start_matches("http://"),
        &["paging"],
    );
    // Shown right by etcd: every key, each as it was at the first page,
    // with writes between the pages.
    assert!(
        reference.contains(
            "paged at one revision: 100000 keys in 10 pages, 0 not as at the first page; \
             27 writes between pages"
        ),
        "{reference}"
    );
    let dir = tempfile::tempdir().unwrap();
    let disk = Server::start_on_disk(dir.path(), &[]);
    assert_eq!(go_scenario(&binary, disk.addr(), &["paging"]), reference);
    let memory = Server::start();
    assert_eq!(go_scenario(&binary, memory.addr(), &["paging"]), reference);
}

/// What the Python scenario printed against `addr` (host:port).
fn python_scenario(addr: &str) -> String {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/etcd_clients/etcd3_scenario.py");
    // The system python: Debian's python3-etcd3 is there, not in a venv.
    let output = Command::new("/usr/bin/python3")
        .arg(script)
        .args([host, port])
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the Python scenario failed against {addr}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn python_etcd3_sees_kvserver_as_etcd() {
    let etcd = EtcdCluster::single();
    let reference = python_scenario(etcd.url(0).trim_start_matches("http://"));
    for expected in [
        "replace (right): True",
        "txn: True ['ResponseOp', [(b'4', b'py/d')]]",
        "lease ttl: 30 keys: [b'py/leased']",
        "unknown lease: StatusCode.NOT_FOUND etcdserver: requested lease not found",
        "watch: [('PutEvent', b'py/w/probe', b'p'), ('DeleteEvent', b'py/w/probe', b'')]",
        "second after release: True False",
    ] {
        assert!(
            reference.contains(expected),
            "{expected:?} not in:\n{reference}"
        );
    }
    let memory = Server::start();
    assert_eq!(python_scenario(memory.addr()), reference);
    let through = gateway(&etcd.endpoints(), &["--etcd-prefix", "gw-py/"]);
    assert_eq!(python_scenario(through.addr()), reference);
}

/// The raw-stream watch sections of the Go scenario (etcd's generated
/// client, so each answer is seen as sent and a stream can stop reading),
/// from the review of b935f8b (watch fan-out, one task per stream):
/// `watch-lag`, four watches of one stream (live, from the past, prev_kv
/// with a filter, later in the past) not read while 1,500 two-key writes go
/// by, far past the broadcast buffer; `watch-cancel-compact`, a stream not
/// read, then a cancel and a compaction; `watch-handover`, 40 watches added
/// to one stream read all along, while writes go on, from revisions in the
/// past and about the newest.
#[test]
fn go_watches_of_one_stream_get_every_revision_once_in_order_across_replay_lag_cancel_and_compaction()
 {
    let binary = build_go_scenario();
    let etcd = EtcdCluster::single();
    let sections = &["watch-lag", "watch-cancel-compact", "watch-handover"];
    let reference = go_scenario(&binary, etcd.url(0).trim_start_matches("http://"), sections);
    // Shown right by etcd.
    let mut expected: Vec<String> = [3000, 3300, 1500, 1500]
        .iter()
        .enumerate()
        .map(|(id, events)| {
            format!(
                "watch lag: watch {id}: {events} events, 0 missing, 0 duplicate or out of order, \
                 0 revisions split across answers, 0 prev_kv wrong"
            )
        })
        .collect();
    expected.extend([
        "cancel compact: watch 0 canceled true, 0 out of order or missing, 0 events after its cancel"
            .to_owned(),
        "cancel compact: watch 1 0 out of order or missing, reached the end or a right \
         compact_revision true"
            .to_owned(),
        "handover: 0 of 40 watches did not get exactly their events".to_owned(),
    ]);
    for line in &expected {
        assert!(
            reference.contains(line.as_str()),
            "{line:?} not in:\n{reference}"
        );
    }
    let memory = Server::start();
    assert_eq!(go_scenario(&binary, memory.addr(), sections), reference);
    let dir = tempfile::tempdir().unwrap();
    let disk = Server::start_on_disk(dir.path(), &[]);
    assert_eq!(go_scenario(&binary, disk.addr(), sections), reference);
    // The etcd backend, where the stream is read all along: a stream not
    // read stalls it (the ignored test below).
    let through = gateway(&etcd.endpoints(), &["--etcd-prefix", "gw-wh/"]);
    let seen = go_scenario(&binary, through.addr(), &["watch-handover"]);
    assert!(seen.contains(expected.last().unwrap().as_str()), "{seen}");
}

/// etcd answers a watch without a start revision with `created` at the
/// revision `wsrev` it read, and watches from `wsrev + 1` exactly
/// (v3rpc/watch.go); clientv3 resumes such a watch from that revision. So
/// while writes go on, its first event is at the created revision + 1.
#[test]
fn go_a_watch_from_now_starts_right_after_its_created_revision_while_writes_go_on() {
    let binary = build_go_scenario();
    let etcd = EtcdCluster::single();
    let reference = go_scenario(
        &binary,
        etcd.url(0).trim_start_matches("http://"),
        &["watch-created-revision"],
    );
    let expected = "watch created revision: 0 of 300 watches missed revisions after their \
                    created revision, 0 began at or before it";
    assert!(reference.contains(expected), "{reference}");
    let memory = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let disk = Server::start_on_disk(dir.path(), &[]);
    let through = gateway(&etcd.endpoints(), &["--etcd-prefix", "gw-wc/"]);
    for (backend, addr) in [
        ("memory", memory.addr()),
        ("disk", disk.addr()),
        ("etcd", through.addr()),
    ] {
        let seen = go_scenario(&binary, addr, &["watch-created-revision"]);
        assert_eq!(seen, reference, "on the {backend} backend");
    }
}

/// A client whose watch stream (four watches) is not read must not hold
/// back another client's writes (1,000 of 8 KiB under the watched prefix),
/// and once it reads again its watches go on: so on etcd and on the local
/// backends.
#[test]
fn go_a_watch_stream_not_read_does_not_stall_other_clients_writes_on_the_etcd_backend() {
    let binary = build_go_scenario();
    let etcd = EtcdCluster::single();
    let sections = &["watch-stalled-reader"];
    let reference = go_scenario(&binary, etcd.url(0).trim_start_matches("http://"), sections);
    assert!(
        reference.contains("stalled reader: 0 puts of another client failed"),
        "{reference}"
    );
    let memory = Server::start();
    assert_eq!(go_scenario(&binary, memory.addr(), sections), reference);
    let through = gateway(&etcd.endpoints(), &["--etcd-prefix", "gw-ws/"]);
    assert_eq!(go_scenario(&binary, through.addr(), sections), reference);
}

/// A progress answer names a revision the stream's watches have all been
/// sent: etcd >= 3.4.24 / 3.5.8 defer it while a watch is unsynced
/// (Kubernetes relies on it). etcd 3.4.23, the reference here, does not
/// either, so this is checked on kvserver alone.
#[test]
#[ignore = "divergence from etcd >= 3.4.24 (same as the 3.4.23 reference): \
            etcd_api::watch Session::progress answers the store's current revision at once, \
            while a watch of the stream still replays or has events queued (Watches::ready)"]
fn go_a_progress_answer_comes_after_the_events_at_or_below_its_revision() {
    let binary = build_go_scenario();
    let memory = Server::start();
    let seen = go_scenario(&binary, memory.addr(), &["watch-progress-order"]);
    assert!(
        seen.contains(
            "watch progress order: 0 events at or below a progress answer's revision came after it"
        ),
        "{seen}"
    );
}
