//! What an idle HTTP/2 connection holds in kvserver, allocation by
//! allocation: serves `server::run` (memory store, kvserver's defaults but
//! no first-request deadline) on the system allocator, opens N idle
//! HTTP/2 connections to it (preface, SETTINGS, the ACK of the server's,
//! then nothing), waits, prints the RSS growth per connection and exits
//! with the connections still open, so that a heap profiler lists what
//! each one holds as alive at exit:
//!
//! ```sh
//! cargo build --release --example idle_connections
//! heaptrack target/release/examples/idle_connections 2000
//! heaptrack_print --print-leaks 1 heaptrack.idle_connections.*.zst | less
//! ```
//!
//! The system allocator (not kvserver's mimalloc) so that heaptrack sees
//! every allocation; the RSS figure is therefore glibc's, and
//! `scripts/bench-scale conns` is the one to compare with grpc-go.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use keyvalue::connection::Deadlines;
use keyvalue::server::{self, Config};
use keyvalue::storage::MemoryStore;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Opens `n` idle HTTP/2 connections to `port`, as `bench-scale conns` does.
fn open_idle(port: u16, n: usize) -> Vec<TcpStream> {
    let mut connections = Vec::with_capacity(n);
    for _ in 0..n {
        let mut socket = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        socket
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .expect("preface");
        connections.push(socket);
    }
    let mut settings = [0u8; 1024];
    for socket in &mut connections {
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let _ = socket.read(&mut settings).expect("the server's SETTINGS");
        socket
            .write_all(b"\0\0\0\x04\x01\0\0\0\0")
            .expect("SETTINGS ACK");
    }
    connections
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(2000, |n| n.parse().expect("N, a number of connections"));
    let never = Duration::from_secs(365 * 24 * 3600);
    let config = Config {
        max_connections: Some(n + 100),
        max_in_flight: Some(1024),
        deadlines: Some(Deadlines {
            first_request: never,
            idle: Duration::from_secs(300),
            answer_stall: Duration::from_secs(60),
        }),
        ..Config::default()
    };
    // `server::run` is not `Send`: it runs on this thread's runtime, as
    // kvserver's main does.
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let port = listener.local_addr().expect("address").port();
            port_tx.send(port).expect("main thread");
            server::run(listener, MemoryStore::new(), config, std::future::pending()).await
        })
    });
    let port = port_rx.recv().expect("the server's port");
    // A few connections first, so that what the server sets up once (its
    // first connection's lazily built parts) is not counted per connection.
    let warm = open_idle(port, 10);
    std::thread::sleep(Duration::from_secs(1));
    let before = rss_kib();
    let idle = open_idle(port, n);
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kib();
    println!(
        "{n} idle connections: RSS +{} KiB, {:.1} KiB per connection (system allocator)",
        after - before,
        (after - before) as f64 / n.max(1) as f64
    );
    // Exit with every connection open: what they hold is alive at exit.
    std::mem::forget((warm, idle));
    std::process::exit(0);
}
