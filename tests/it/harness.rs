//! Starting and stopping a real `kvserver` for a test.
//!
//! The server listens on `127.0.0.1:0`; the harness reads the `listening on`
//! line from its stderr to learn the port, so there are no fixed ports and no
//! sleeps. Every server a test starts is stopped when its [`Server`] drops.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keyvalue::proto::keyvalue::v1::kv_client::KvClient;
use keyvalue::proto::simplekeyvalue::key_value_client::KeyValueClient;
use keyvalue::proto::simplekeyvalue::{GetRequest, SetRequest};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Generates, for each async test function named, one `#[tokio::test]` per
/// backend listed (`memory`, `disk`, `etcd`: a kvserver over a fresh
/// single-member etcd), each in a module `on_<backend>` and given a fresh
/// [`Server`]: `on_backends!(memory, etcd; test_a, test_b);`.
macro_rules! on_backends {
    ($($backend:ident),+ ; $($test:ident),* $(,)?) => {
        $crate::harness::on_backends!(@each [$($backend),+] [$($test),*]);
    };
    (@each [$first:ident $(, $rest:ident)*] $tests:tt) => {
        $crate::harness::on_backends!(@one $first $tests);
        $crate::harness::on_backends!(@each [$($rest),*] $tests);
    };
    (@each [] $tests:tt) => {};
    (@one memory [$($test:ident),*]) => {
        mod on_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(crate::harness::Server::start()).await;
                }
            )*
        }
    };
    (@one disk [$($test:ident),*]) => {
        mod on_disk {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$test(crate::harness::Server::start_on_disk(dir.path(), &[])).await;
                }
            )*
        }
    };
    (@one etcd [$($test:ident),*]) => {
        mod on_etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let etcd = tokio::task::spawn_blocking(
                        crate::etcd_process::EtcdCluster::single,
                    )
                    .await
                    .unwrap();
                    super::$test(crate::etcd::gateway(&etcd.endpoints(), &[])).await;
                }
            )*
        }
    };
}
pub(crate) use on_backends;

/// How long a server may take to start or to stop before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// A running `kvserver` process.
pub(crate) struct Server {
    child: Child,
    addr: String,
    stderr: Arc<Mutex<Vec<String>>>,
    stderr_reader: Option<JoinHandle<()>>,
}

/// What a stopped server left behind.
pub(crate) struct Stopped {
    /// How the process exited.
    pub(crate) status: ExitStatus,
    /// Every line it wrote to stderr.
    pub(crate) stderr: Vec<String>,
}

impl Server {
    /// A server with the in-memory backend and default settings.
    pub(crate) fn start() -> Server {
        Server::start_with(&[])
    }

    /// A server with the in-memory backend and extra command-line arguments.
    pub(crate) fn start_with(args: &[&str]) -> Server {
        let mut command = kvserver();
        command.args(["--listen", "127.0.0.1:0", "--backend", "memory"]);
        command.args(args);
        Server::spawn(command).unwrap_or_else(|output| panic!("kvserver did not start: {output}"))
    }

    /// A server with the disk backend on `data_dir`, and extra arguments.
    pub(crate) fn start_on_disk(data_dir: &Path, args: &[&str]) -> Server {
        let mut command = kvserver();
        command.args(["--listen", "127.0.0.1:0", "--backend", "disk", "--data-dir"]);
        command.arg(data_dir).args(args);
        Server::spawn(command).unwrap_or_else(|output| panic!("kvserver did not start: {output}"))
    }

    /// Spawns `command` and waits for its `listening on` line; on failure,
    /// returns everything the process wrote to stderr.
    pub(crate) fn spawn(mut command: Command) -> Result<Server, String> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn kvserver");
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (announce, announced) = mpsc::channel();
        let stderr_reader = {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                // Keep draining after the announcement so the server never
                // blocks on a full pipe.
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(addr) = line.strip_prefix("listening on ") {
                        let _ = announce.send(addr.to_owned());
                    }
                    lines.lock().expect("stderr lines").push(line);
                }
            })
        };
        match announced.recv_timeout(PATIENCE) {
            Ok(addr) => Ok(Server {
                child,
                addr,
                stderr: lines,
                stderr_reader: Some(stderr_reader),
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(lines.lock().expect("stderr lines").join("\n"))
            }
        }
    }

    /// What the server wrote to stderr so far.
    pub(crate) fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().expect("stderr lines").clone()
    }

    /// Waits until the server has written a line to stderr that contains
    /// `needle` (a log line after a signal, say); fails the test after
    /// [`PATIENCE`].
    pub(crate) fn wait_for_log_line(&self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.stderr_lines().iter().any(|line| line.contains(needle)) {
            assert!(
                Instant::now() < deadline,
                "kvserver wrote no line with {needle:?}: {:?}",
                self.stderr_lines()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server with SIGKILL, as a crash would, and waits for it.
    pub(crate) fn crash(mut self) {
        self.child.kill().expect("SIGKILL kvserver");
        self.child.wait().expect("reap kvserver");
    }

    /// `host:port` of the server.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// A client on a new connection, straight from the generated stubs.
    pub(crate) async fn client(&self) -> KeyValueClient<Channel> {
        KeyValueClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect to kvserver")
    }

    /// A client of the full API (`keyvalue.v1.KV`) on a new connection.
    pub(crate) async fn kv_client(&self) -> KvClient<Channel> {
        KvClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect to kvserver")
    }

    /// A client of the standard health service on a new connection.
    pub(crate) async fn health_client(&self) -> HealthClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .expect("a valid address")
            .connect()
            .await
            .expect("connect to kvserver");
        HealthClient::new(channel)
    }

    /// What the health service says of `service` ("": the whole server).
    pub(crate) async fn health(&self, service: &str) -> Result<ServingStatus, tonic::Status> {
        let answer = self
            .health_client()
            .await
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await?
            .into_inner();
        Ok(ServingStatus::try_from(answer.status).expect("a known status"))
    }

    /// Sends `signal` (e.g. "TERM", "INT"), waits for the process to exit and
    /// collects all it wrote to stderr.
    ///
    /// Async because a graceful shutdown needs the test's own client
    /// connections to answer the server's GOAWAY: the waiting happens on a
    /// blocking thread while the test's runtime keeps driving them.
    pub(crate) async fn stop(self, signal: &'static str) -> Stopped {
        tokio::task::spawn_blocking(move || self.stop_blocking(signal))
            .await
            .expect("stop kvserver")
    }

    /// [`Server::stop`] for tests without a runtime.
    pub(crate) fn stop_blocking(mut self, signal: &str) -> Stopped {
        send_signal(self.child.id(), signal);
        let status = wait_with_patience(&mut self.child).expect("kvserver exits after a signal");
        if let Some(reader) = self.stderr_reader.take() {
            reader.join().expect("stderr reader");
        }
        let stderr = self.stderr.lock().expect("stderr lines").clone();
        Stopped { status, stderr }
    }
}

impl Drop for Server {
    /// A test that did not stop its server explicitly has nothing left to check
    /// about it: kill it outright rather than wait out a graceful shutdown.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command that runs the `kvserver` binary under test.
pub(crate) fn kvserver() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kvserver"))
}

/// A command that runs the `kv` binary under test, with none of the
/// environment variables that would point it at another server or change how
/// it connects (a test sets the ones it means to).
pub(crate) fn kv_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kv"));
    for name in [
        "KV_ADDR",
        "KV_TIMEOUT",
        "KV_TOKEN",
        "KV_CA_FILE",
        "KV_CERT",
        "KV_KEY",
    ] {
        command.env_remove(name);
    }
    command
}

/// Runs `kv --addr <addr> <args>` and collects what it printed.
pub(crate) fn kv(addr: &str, args: &[&str]) -> Output {
    kv_command()
        .args(["--addr", addr])
        .args(args)
        .output()
        .expect("run kv")
}

/// [`kv`] with `stdin` as its input.
pub(crate) fn kv_with_input(addr: &str, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = kv_command()
        .args(["--addr", addr])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kv");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("kv output")
}

/// Output bytes as text, for assertions and messages.
pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Sends a signal by name without `unsafe` (the crate forbids it).
pub(crate) fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -s {signal} {pid} failed");
}

/// Waits for `child` to exit, for at most [`PATIENCE`]; `None` if it is
/// still running (the caller decides whether to kill it).
pub(crate) fn wait_with_patience(child: &mut Child) -> Option<ExitStatus> {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// `text` as the bytes of a key or value of the full API.
pub(crate) fn b(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// Sets `key` to `value`, panicking on any error.
pub(crate) async fn set(client: &mut KeyValueClient<Channel>, key: &str, value: &str) {
    client
        .set(SetRequest {
            key: key.to_owned(),
            value: value.to_owned(),
        })
        .await
        .unwrap_or_else(|status| panic!("set {key:?}: {status}"));
}

/// The result of getting `key`.
pub(crate) async fn get(
    client: &mut KeyValueClient<Channel>,
    key: &str,
) -> Result<String, tonic::Status> {
    client
        .get(GetRequest {
            key: key.to_owned(),
        })
        .await
        .map(|reply| reply.into_inner().value)
}

/// A small deterministic generator, so that a failure can be replayed.
pub(crate) struct XorShift(pub(crate) u64);

impl XorShift {
    /// The next pseudo-random number (never 0 for a non-zero seed).
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Waits until `acks` grows by `more` (writes go on), within `within`.
pub(crate) async fn until_more_acks(acks: &AtomicU64, more: u64, within: Duration, when: &str) {
    let start = acks.load(Ordering::Relaxed);
    let deadline = Instant::now() + within;
    while acks.load(Ordering::Relaxed) < start + more {
        assert!(
            Instant::now() < deadline,
            "writes stopped {when}: {} acknowledged in {within:?}",
            acks.load(Ordering::Relaxed) - start
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
