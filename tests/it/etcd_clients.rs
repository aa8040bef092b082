//! etcd's client libraries against kvserver: Go's clientv3 with its
//! `concurrency` package (locks with contenders, an election with a
//! failover, the server-side Lock and Election services, paging a
//! 100,000-key range at one revision while writes go on), and
//! python-etcd3. Each program prints what it saw; the same program runs
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
