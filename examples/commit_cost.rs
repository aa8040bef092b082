//! What the disk backend's committer thread costs per durable write, with
//! no network and no serving threads in the way: `--clients` tasks, each
//! with one Put in flight (as etcd-benchmark's `put`), write 64-byte values
//! to random keys of `--keys` through `DiskStore` (`--sync always`), and the
//! committer thread's own CPU time (`/proc/self/task`, the thread named
//! `kv-committer`) is divided by the Puts. That thread's CPU is what the
//! whole-server benchmarks report as "committer thread CPU"; measured here it
//! is far less noisy on a shared machine, since nothing else of the server
//! runs. `docs/PERFORMANCE.md` has its figures.
//!
//! ```sh
//! cargo run --release --example commit_cost -- [--clients 64] [--keys 100000]
//!     [--puts 30000] [--rounds 5] [--dir DIR]
//! ```
//!
//! A first pass writes every key once (first writes, which replace
//! nothing); each round after it is measured and printed on a line of its
//! own, then the medians.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use keyvalue::storage::{DiskStore, Store, SyncPolicy};

struct Args {
    clients: usize,
    keys: u64,
    puts: u64,
    rounds: usize,
    dir: Option<PathBuf>,
}

fn args() -> Args {
    let mut args = Args {
        clients: 64,
        keys: 100_000,
        puts: 30_000,
        rounds: 5,
        dir: None,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let value = given
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        let number = || value.parse::<u64>().expect("a number");
        match flag.as_str() {
            "--clients" => args.clients = number() as usize,
            "--keys" => args.keys = number(),
            "--puts" => args.puts = number(),
            "--rounds" => args.rounds = number() as usize,
            "--dir" => args.dir = Some(PathBuf::from(value)),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

/// CPU seconds of this process's thread named `name`.
fn thread_cpu(name: &str) -> f64 {
    for task in std::fs::read_dir("/proc/self/task").expect("/proc") {
        let task = task.expect("/proc").path();
        if std::fs::read_to_string(task.join("comm")).is_ok_and(|comm| comm.trim() == name) {
            let stat = std::fs::read_to_string(task.join("stat")).expect("stat");
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .expect("stat")
                .1
                .split_whitespace()
                .collect();
            let ticks: u64 =
                fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
            // Clock ticks: USER_HZ, 100 on Linux.
            return ticks as f64 / 100.0;
        }
    }
    0.0
}

/// Puts `count` random keys of `keys` (every key once, in order, if `fill`)
/// from `clients` tasks.
async fn load(store: &Arc<DiskStore>, clients: usize, keys: u64, count: u64, fill: bool) {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (store, next) = (Arc::clone(store), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            // xorshift64*, one stream per client.
            let mut state =
                0x9e37_79b9_7f4a_7c15_u64 ^ (client as u64 + 1).wrapping_mul(0x2545_f491);
            let value = Bytes::from(vec![b'v'; 64]);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                let n = if fill {
                    i % keys
                } else {
                    state.wrapping_mul(0x2545_f491_4f6c_dd1d) % keys
                };
                let key = Bytes::from(format!("{n:08}"));
                store.put(key, value.clone()).await.expect("put");
            }
        }));
    }
    for task in tasks {
        task.await.expect("client");
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let args = args();
    let temp = tempfile::tempdir_in(args.dir.clone().unwrap_or_else(std::env::temp_dir))
        .expect("a temporary data dir");
    let store = Arc::new(DiskStore::open(temp.path(), SyncPolicy::Always).expect("open"));
    load(&store, args.clients, args.keys, args.keys, true).await;
    let (mut committer, mut per_commit, mut rates) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let (cpu, commits, started) = (
            thread_cpu("kv-committer"),
            store.stats().commits,
            Instant::now(),
        );
        load(&store, args.clients, args.keys, args.puts, false).await;
        let seconds = started.elapsed().as_secs_f64();
        let us = (thread_cpu("kv-committer") - cpu) / args.puts as f64 * 1e6;
        let writes = args.puts as f64 / (store.stats().commits - commits) as f64;
        let rate = args.puts as f64 / seconds;
        println!(
            "round {round}: committer {us:.1} us/Put, {writes:.1} Puts/commit, {rate:.0} Puts/s"
        );
        committer.push(us);
        per_commit.push(writes);
        rates.push(rate);
    }
    println!(
        "median: committer {:.1} us/Put, {:.1} Puts/commit, {:.0} Puts/s (load average {:.1})",
        median(committer),
        median(per_commit),
        median(rates),
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|load| load.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(f64::NAN),
    );
}
