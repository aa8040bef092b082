//! Starting and stopping real etcd members on loopback for tests: one member
//! for the conformance suite, three for the cluster tests.
//!
//! Shared, by `#[path]`, between the storage layer's unit tests and the
//! integration tests, so there is one way to run etcd in tests. It needs only
//! the standard library, `tempfile` and `serde_json`, and Debian's `etcd`
//! and `etcdctl` on the PATH (`scripts/test` installs them).
//!
//! Every member listens on ports picked free just before it starts; a member
//! that lost that race is started again on new ones. A test waits for etcd's
//! own "ready to serve client requests" line, not for a fixed time. Members
//! are killed when the cluster drops.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a member may take to become ready.
const PATIENCE: Duration = Duration::from_secs(30);

/// Raft timing for tests: fast elections (a killed leader is replaced in a
/// fraction of a second), yet slow enough for a busy 2-core machine.
const HEARTBEAT_MS: &str = "50";
const ELECTION_MS: &str = "500";

/// A running etcd cluster on 127.0.0.1.
pub struct EtcdCluster {
    members: Vec<Member>,
    /// Extra `etcdctl` flags (certificates, credentials) for this cluster.
    etcdctl_flags: Vec<String>,
    _dir: tempfile::TempDir,
}

/// How clients reach the members: plaintext, or TLS with these PEM files
/// (the members require client certificates signed by `ca`).
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// The members' certificate and key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA of the members' and the clients' certificates.
    pub ca: PathBuf,
    /// A client certificate and key for etcdctl.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    tls: Option<ClientTls>,
    data_dir: PathBuf,
    process: Option<Child>,
    log: Arc<(Mutex<Vec<String>>, Condvar)>,
    /// While the member is down, its ports, held so that another test's
    /// etcd cannot take them before [`EtcdCluster::restart`].
    reserved: Vec<TcpListener>,
}

impl EtcdCluster {
    /// A single-member cluster.
    pub fn single() -> EtcdCluster {
        EtcdCluster::start(1)
    }

    /// A cluster of `size` members, each ready to serve.
    pub fn start(size: usize) -> EtcdCluster {
        EtcdCluster::start_with(size, None)
    }

    /// A cluster of `size` members that serve clients over `tls`, if given.
    pub fn start_with(size: usize, tls: Option<ClientTls>) -> EtcdCluster {
        let dir = tempfile::tempdir().expect("temporary directory for etcd");
        for _attempt in 0..3 {
            let mut members: Vec<Member> = (0..size)
                .map(|i| Member {
                    name: format!("m{i}"),
                    client_port: free_port(),
                    peer_port: free_port(),
                    tls: tls.clone(),
                    data_dir: dir.path().join(format!("m{i}-{}", free_port())),
                    process: None,
                    log: Arc::new((Mutex::new(Vec::new()), Condvar::new())),
                    reserved: Vec::new(),
                })
                .collect();
            let initial = initial_cluster(&members);
            for member in &mut members {
                member.spawn(&initial, "new");
            }
            if members.iter().all(Member::wait_ready) {
                let etcdctl_flags = match &tls {
                    Some(tls) => vec![
                        format!("--cacert={}", tls.ca.display()),
                        format!("--cert={}", tls.client_cert.display()),
                        format!("--key={}", tls.client_key.display()),
                    ],
                    None => Vec::new(),
                };
                return EtcdCluster {
                    members,
                    etcdctl_flags,
                    _dir: dir,
                };
            }
            // A port was taken between picking and binding: start over.
            for member in &mut members {
                member.kill();
            }
        }
        panic!("etcd did not start in three attempts");
    }

    /// The members' client URLs, comma-separated (for `--etcd-endpoints`).
    pub fn endpoints(&self) -> String {
        self.urls().join(",")
    }

    /// The members' client URLs.
    pub fn urls(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// The client URL of member `i`.
    pub fn url(&self, i: usize) -> String {
        self.members[i].client_url()
    }

    /// The process id of member `i` (to stop it with SIGSTOP, say).
    pub fn pid(&self, i: usize) -> u32 {
        self.members[i]
            .process
            .as_ref()
            .expect("member is running")
            .id()
    }

    /// Kills member `i` with SIGKILL (its data dir stays, for a restart).
    pub fn kill(&mut self, i: usize) {
        let member = &mut self.members[i];
        member.kill();
        member.reserved = [member.client_port, member.peer_port]
            .into_iter()
            .filter_map(|port| TcpListener::bind(("127.0.0.1", port)).ok())
            .collect();
    }

    /// Starts member `i` again on its data dir and ports, and waits until it
    /// has rejoined and serves.
    pub fn restart(&mut self, i: usize) {
        let initial = initial_cluster(&self.members);
        let member = &mut self.members[i];
        member.spawn(&initial, "existing");
        assert!(member.wait_ready(), "etcd member {i} did not come back");
    }

    /// The index of the member that is the leader now, as the members that
    /// are up report it.
    pub fn leader(&self) -> usize {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(leader) = self.find_leader() {
                return leader;
            }
            assert!(Instant::now() < deadline, "the etcd cluster has no leader");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn find_leader(&self) -> Option<usize> {
        let up: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.process.is_some())
            .map(Member::client_url)
            .collect();
        let output = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &up.join(","),
                "endpoint",
                "status",
                "-w",
                "json",
            ])
            .output()
            .ok()?;
        let statuses: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
        let statuses = statuses.as_array()?;
        for status in statuses {
            let member = status["Status"]["header"]["member_id"].as_u64()?;
            let leader = status["Status"]["leader"].as_u64()?;
            if member == leader && leader != 0 {
                let endpoint = status["Endpoint"].as_str()?;
                return self
                    .members
                    .iter()
                    .position(|m| m.client_url().ends_with(endpoint));
            }
        }
        None
    }

    /// Adds a flag to every later `etcdctl` call (`--user=root:pw`, say).
    pub fn add_etcdctl_flag(&mut self, flag: &str) {
        self.etcdctl_flags.push(flag.to_owned());
    }

    /// Runs `etcdctl` against the whole cluster; returns its stdout.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let output = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.endpoints())
            .args(&self.etcdctl_flags)
            .args(args)
            .output()
            .expect("etcdctl runs");
        assert!(
            output.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl EtcdCluster {
    /// Runs `etcdctl` against member `i` alone; its stdout if it succeeded,
    /// `None` if not (the member may be down, or still catching up).
    pub fn etcdctl_on(&self, i: usize, args: &[&str]) -> Option<String> {
        let output = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.url(i))
            .args(&self.etcdctl_flags)
            .args(args)
            .output()
            .expect("etcdctl runs");
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            member.kill();
        }
    }
}

impl Member {
    fn client_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn spawn(&mut self, initial_cluster: &str, state: &str) {
        // A fresh log: the last process's lines (and its exit) are history.
        self.log = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        self.reserved.clear();
        let mut command = Command::new("etcd");
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        let mut child = command
            .args(["--name", &self.name])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &self.client_url()])
            .args(["--advertise-client-urls", &self.client_url()])
            .args(["--listen-peer-urls", &self.peer_url()])
            .args(["--initial-advertise-peer-urls", &self.peer_url()])
            .args(["--initial-cluster", initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", "kvserver-tests"])
            .args(["--heartbeat-interval", HEARTBEAT_MS])
            .args(["--election-timeout", ELECTION_MS])
            // As many operations per transaction as kvserver's batches.
            .args(["--max-txn-ops", "1000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("etcd runs (install Debian's etcd-server)");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::clone(&self.log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let (lines, changed) = &*log;
                lines.lock().expect("log lock").push(line);
                changed.notify_all();
            }
            // The process is gone: wake anyone still waiting.
            log.0.lock().expect("log lock").push("<exited>".to_owned());
            log.1.notify_all();
        });
        self.process = Some(child);
    }

    /// Waits for "ready to serve client requests"; false if the member
    /// exited first (a port was taken) or took too long.
    fn wait_ready(&self) -> bool {
        let (lines, changed) = &*self.log;
        let deadline = Instant::now() + PATIENCE;
        let mut lines = lines.lock().expect("log lock");
        loop {
            if lines
                .iter()
                .any(|l| l.contains("ready to serve client requests"))
            {
                return true;
            }
            if lines.iter().any(|l| l == "<exited>") {
                eprintln!("etcd {} exited:\n{}", self.name, lines.join("\n"));
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                eprintln!("etcd {} not ready:\n{}", self.name, lines.join("\n"));
                return false;
            }
            lines = changed.wait_timeout(lines, left).expect("log lock").0;
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn initial_cluster(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url()))
        .collect::<Vec<_>>()
        .join(",")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}
