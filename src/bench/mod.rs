//! `kv bench`: a closed-loop load generator that checks every answer.
//!
//! `concurrency` workers share `conns` HTTP/2 connections; each keeps one
//! request in flight, and starts the next when the answer arrives. The key
//! space is split among the workers, so each worker knows the exact value its
//! keys must hold: a Get that returns anything but the last acknowledged Set of
//! its key is a *mismatch*, and a benchmark with a mismatch has failed (a
//! benchmark that does not check answers measures nothing). Keys carry a
//! random per-run prefix, so earlier runs on a durable server never interfere.
//!
//! With `--api v1` the load may mix in the full API's operations: Range over
//! a window of keys, BatchGet, and Txn (a compare-and-set on the key's
//! revision, which must win, since nobody else writes the worker's keys).
//! Each is verified the same way, on the worker's own keys.
//!
//! Latencies go into an HDR histogram; [`Report`] holds the figures and prints
//! them as text or JSON.
//!
//! The module is split by concept: [`mix`] (operations and shares),
//! [`config`] (what to run, checked before connecting), `worker` (one
//! verifying closed-loop worker), [`report`] (the merged figures) and
//! [`error`]; [`watch`] is the watch fan-out (`--watchers`), `watch_etcd` its
//! etcd-API side (`--api etcd`). This file
//! wires the request load together.

mod config;
mod error;
mod mix;
mod report;
mod watch;
mod watch_etcd;
mod worker;

use std::time::Instant;

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};

use crate::client::AuthorizedChannel;
use crate::proto::keyvalue::v1::kv_client::KvClient;
use crate::proto::simplekeyvalue::key_value_client::KeyValueClient;

pub use config::{Api, BenchConfig, Stop};
pub use error::BenchError;
pub use mix::{Mix, OpKind, RANGE_WINDOW};
pub use report::Report;
pub use watch::{WatchApi, WatchConfig, WatchReport, run as run_watch};

use config::validate;
use report::WorkerResult;
use worker::{Conn, WorkerSpec};

/// Runs the benchmark and returns its report.
pub async fn run(config: &BenchConfig) -> Result<Report, BenchError> {
    let prefix = config
        .key_prefix
        .clone()
        .unwrap_or_else(|| format!("{:04x}/", seed() as u16));
    validate(config, &prefix)?;
    let channels = connect(config).await?;
    let keys: Vec<String> = (0..config.keys)
        .map(|i| {
            let key = format!("{prefix}{i}");
            let padding = config.key_size.saturating_sub(key.len());
            format!("{prefix}{}{i}", "0".repeat(padding))
        })
        .collect();

    // Each worker owns the keys i with i % concurrency == worker.
    let mut owned: Vec<Vec<String>> = vec![Vec::new(); config.concurrency];
    for (i, key) in keys.iter().enumerate() {
        owned[i % config.concurrency].push(key.clone());
    }
    let all_keys = std::sync::Arc::new(keys);

    let progress = progress_bar(config.stop);
    let deadline = match config.stop {
        Stop::After(duration) => Some(duration),
        Stop::Requests(_) => None,
    };
    let per_worker = match config.stop {
        Stop::Requests(total) => {
            let base = total / config.concurrency as u64;
            let extra = total % config.concurrency as u64;
            (0..config.concurrency as u64)
                .map(|w| Some(base + u64::from(w < extra)))
                .collect()
        }
        Stop::After(_) => vec![None; config.concurrency],
    };

    let mut workers = Vec::with_capacity(config.concurrency);
    let start_line = std::sync::Arc::new(tokio::sync::Barrier::new(config.concurrency + 1));
    for (worker, (keys, limit)) in owned.into_iter().zip(per_worker).enumerate() {
        let channel = channels[worker % channels.len()].clone();
        let client = match config.api {
            Api::Tutorial => {
                Conn::Tutorial(KeyValueClient::new(channel).max_decoding_message_size(usize::MAX))
            }
            Api::V1 => Conn::V1(KvClient::new(channel).max_decoding_message_size(usize::MAX)),
        };
        let spec = WorkerSpec {
            id: worker,
            workers: config.concurrency,
            wire_keys: keys.iter().map(|key| Bytes::from(key.clone())).collect(),
            keys,
            all_keys: std::sync::Arc::clone(&all_keys),
            value_size: config.value_size,
            mix: config.mix,
            batch_size: config.batch_size.max(1),
            preload: config.preload,
            limit,
            deadline,
        };
        let progress = progress.clone();
        let start_line = std::sync::Arc::clone(&start_line);
        workers.push(tokio::spawn(async move {
            spec.run(client, start_line, progress).await
        }));
    }
    start_line.wait().await;
    let started = Instant::now();
    let mut total = WorkerResult::new();
    for worker in workers {
        let result = worker
            .await
            .map_err(|e| BenchError::Failed(format!("a worker failed: {e}")))?;
        for (sum, count) in total.by_kind.iter_mut().zip(result.by_kind) {
            *sum += count;
        }
        total.errors += result.errors;
        total.mismatches += result.mismatches;
        for problem in result.problems {
            total.problem(problem);
        }
        total
            .latency_us
            .add(&result.latency_us)
            .map_err(|e| BenchError::Failed(format!("merging latencies: {e}")))?;
    }
    let elapsed = started.elapsed();
    progress.finish_and_clear();
    Ok(Report {
        ops: total.by_kind.iter().sum(),
        by_kind: total.by_kind,
        elapsed,
        errors: total.errors,
        mismatches: total.mismatches,
        problems: total.problems,
        latency_us: total.latency_us,
    })
}

/// `conns` connections, each of them its own HTTP/2 connection.
async fn connect(config: &BenchConfig) -> Result<Vec<AuthorizedChannel>, BenchError> {
    let mut channels = Vec::with_capacity(config.conns);
    for _ in 0..config.conns {
        channels.push(crate::client::authorized_channel(&config.addr, &config.connect).await?);
    }
    Ok(channels)
}

fn progress_bar(stop: Stop) -> ProgressBar {
    let (length, template) = match stop {
        Stop::After(duration) => (
            duration.as_millis() as u64,
            "{spinner} [{elapsed_precise}] {wide_bar} {msg}",
        ),
        Stop::Requests(total) => (
            total,
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} ops",
        ),
    };
    let bar = ProgressBar::new(length);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// A per-run random number (no dependency for one number).
pub(crate) fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32) | 1
}
