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
//! Latencies go into an HDR histogram; [`Report`] holds the figures and prints
//! them as text or JSON.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::proto::simplekeyvalue::key_value_client::KeyValueClient;
use crate::proto::simplekeyvalue::{GetRequest, SetRequest};

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Server address, `host:port`.
    pub addr: String,
    /// HTTP/2 connections.
    pub conns: usize,
    /// Requests in flight (workers), spread over the connections.
    pub concurrency: usize,
    /// When to stop.
    pub stop: Stop,
    /// Distinct keys.
    pub keys: usize,
    /// Bytes per key (at least what the run prefix and key number need).
    pub key_size: usize,
    /// Bytes per value.
    pub value_size: usize,
    /// Share of Gets among operations, in percent (the rest are Sets).
    pub get_percent: u32,
    /// Set every key once before measuring, so Gets find values.
    pub preload: bool,
}

/// When a run ends.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// After this long.
    After(Duration),
    /// After this many operations in all.
    Requests(u64),
}

/// Why a run could not start.
#[derive(Debug)]
pub struct BenchError(pub String);

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BenchError {}

/// The figures of a run.
#[derive(Debug)]
pub struct Report {
    /// Operations completed (answered, whatever the answer).
    pub ops: u64,
    /// Gets and Sets among them.
    pub gets: u64,
    /// Sets among them.
    pub sets: u64,
    /// Wall time of the measured phase.
    pub elapsed: Duration,
    /// Operations answered with an error status.
    pub errors: u64,
    /// Gets whose answer was not the last acknowledged value of the key.
    pub mismatches: u64,
    /// The first few problems, for the reader.
    pub problems: Vec<String>,
    /// Latency of every operation, in microseconds.
    pub latency_us: Histogram<u64>,
}

/// Most problems quoted in a report.
const MAX_PROBLEMS: usize = 5;

impl Report {
    /// Operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// Whether every answer was right.
    pub fn clean(&self) -> bool {
        self.errors == 0 && self.mismatches == 0
    }

    /// The report as one JSON object.
    pub fn to_json(&self, config: &BenchConfig) -> serde_json::Value {
        let h = &self.latency_us;
        serde_json::json!({
            "addr": config.addr,
            "conns": config.conns,
            "concurrency": config.concurrency,
            "keys": config.keys,
            "key_size": config.key_size,
            "value_size": config.value_size,
            "get_percent": config.get_percent,
            "ops": self.ops,
            "gets": self.gets,
            "sets": self.sets,
            "secs": self.elapsed.as_secs_f64(),
            "ops_per_sec": self.ops_per_sec(),
            "errors": self.errors,
            "mismatches": self.mismatches,
            "problems": self.problems,
            "latency_us": {
                "p50": h.value_at_quantile(0.50),
                "p90": h.value_at_quantile(0.90),
                "p99": h.value_at_quantile(0.99),
                "p999": h.value_at_quantile(0.999),
                "max": h.max(),
                "mean": h.mean(),
            },
        })
    }

    /// The report as text: totals, percentiles and a small histogram.
    pub fn to_text(&self) -> String {
        let h = &self.latency_us;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} ops in {:.2}s: {:.0} ops/s ({} gets, {} sets)",
            self.ops,
            self.elapsed.as_secs_f64(),
            self.ops_per_sec(),
            self.gets,
            self.sets
        );
        let _ = writeln!(
            out,
            "errors {}, mismatches {}",
            self.errors, self.mismatches
        );
        let _ = writeln!(
            out,
            "latency µs: p50 {} p90 {} p99 {} p99.9 {} max {}",
            h.value_at_quantile(0.50),
            h.value_at_quantile(0.90),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
        out.push_str(&text_histogram(h));
        for problem in &self.problems {
            let _ = writeln!(out, "problem: {problem}");
        }
        out
    }
}

/// Latency buckets by powers of two, one bar each.
fn text_histogram(h: &Histogram<u64>) -> String {
    let mut out = String::new();
    if h.is_empty() {
        return out;
    }
    let total = h.len() as f64;
    let mut low = 0u64;
    let mut high = 16u64;
    while low <= h.max() {
        let count = h.count_between(low, high - 1);
        if count > 0 {
            let share = count as f64 / total;
            let bar = "#".repeat((share * 50.0).round() as usize);
            let _ = writeln!(
                out,
                "  {:>8}..{:<8} µs {:>6.2}% {bar}",
                low,
                high,
                share * 100.0
            );
        }
        low = high;
        high *= 2;
    }
    out
}

/// One worker's results.
struct WorkerResult {
    gets: u64,
    sets: u64,
    errors: u64,
    mismatches: u64,
    problems: Vec<String>,
    latency_us: Histogram<u64>,
}

impl WorkerResult {
    fn new() -> WorkerResult {
        WorkerResult {
            gets: 0,
            sets: 0,
            errors: 0,
            mismatches: 0,
            problems: Vec::new(),
            latency_us: Histogram::new(3).expect("3 significant figures is valid"),
        }
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(text);
        }
    }
}

/// Runs the benchmark and returns its report.
pub async fn run(config: &BenchConfig) -> Result<Report, BenchError> {
    if config.conns == 0 || config.concurrency == 0 || config.keys == 0 {
        return Err(BenchError(
            "--conns, --concurrency and --keys must be above zero".into(),
        ));
    }
    let channels = connect(config).await?;
    let prefix = format!("{:04x}/", seed() as u16);
    if format!("{prefix}{}", config.keys - 1).len() > config.key_size.max(1) {
        return Err(BenchError(format!(
            "--key-size {} is too small for {} keys (keys look like {prefix}00123)",
            config.key_size, config.keys
        )));
    }
    let keys: Vec<String> = (0..config.keys)
        .map(|i| {
            let key = format!("{prefix}{i}");
            let padding = config.key_size.saturating_sub(key.len());
            format!("{prefix}{}{i}", "0".repeat(padding))
        })
        .collect();

    // Each worker owns the keys i with i % concurrency == worker.
    let mut owned: Vec<Vec<String>> = vec![Vec::new(); config.concurrency];
    for (i, key) in keys.into_iter().enumerate() {
        owned[i % config.concurrency].push(key);
    }

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
        let client = KeyValueClient::new(channels[worker % channels.len()].clone())
            .max_decoding_message_size(usize::MAX);
        let spec = WorkerSpec {
            id: worker,
            keys,
            value_size: config.value_size,
            get_percent: config.get_percent,
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
            .map_err(|e| BenchError(format!("a worker failed: {e}")))?;
        total.gets += result.gets;
        total.sets += result.sets;
        total.errors += result.errors;
        total.mismatches += result.mismatches;
        for problem in result.problems {
            total.problem(problem);
        }
        total
            .latency_us
            .add(&result.latency_us)
            .map_err(|e| BenchError(format!("merging latencies: {e}")))?;
    }
    let elapsed = started.elapsed();
    progress.finish_and_clear();
    Ok(Report {
        ops: total.gets + total.sets,
        gets: total.gets,
        sets: total.sets,
        elapsed,
        errors: total.errors,
        mismatches: total.mismatches,
        problems: total.problems,
        latency_us: total.latency_us,
    })
}

async fn connect(config: &BenchConfig) -> Result<Vec<Channel>, BenchError> {
    let uri = if config.addr.contains("://") {
        config.addr.clone()
    } else {
        format!("http://{}", config.addr)
    };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|e| BenchError(format!("invalid server address {:?}: {e}", config.addr)))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    let mut channels = Vec::with_capacity(config.conns);
    for _ in 0..config.conns {
        let channel = endpoint.connect().await.map_err(|e| {
            BenchError(format!(
                "cannot reach kvserver at {}: {}",
                config.addr,
                crate::client::root_cause(&e)
            ))
        })?;
        channels.push(channel);
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
fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32) | 1
}

/// What one worker does.
struct WorkerSpec {
    id: usize,
    keys: Vec<String>,
    value_size: usize,
    get_percent: u32,
    preload: bool,
    limit: Option<u64>,
    deadline: Option<Duration>,
}

impl WorkerSpec {
    async fn run(
        self,
        mut client: KeyValueClient<Channel>,
        start_line: std::sync::Arc<tokio::sync::Barrier>,
        progress: ProgressBar,
    ) -> WorkerResult {
        let mut result = WorkerResult::new();
        // The value each owned key must hold: `None` until set in this run.
        let mut expected: Vec<Option<String>> = vec![None; self.keys.len()];
        let mut counter = 0u64;
        if self.preload {
            for (slot, expected) in expected.iter_mut().enumerate() {
                let value = self.value(&mut counter);
                if self.set(&mut client, slot, &value, &mut result).await {
                    *expected = Some(value);
                }
            }
            result = WorkerResult {
                errors: result.errors,
                problems: result.problems,
                ..WorkerResult::new()
            };
        }
        start_line.wait().await;
        let started = Instant::now();
        let mut rng = seed() ^ (self.id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut done = 0u64;
        while self.limit.is_none_or(|limit| done < limit)
            && self.deadline.is_none_or(|d| started.elapsed() < d)
            && !self.keys.is_empty()
        {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let slot = (rng % self.keys.len() as u64) as usize;
            let is_get = (rng >> 32) % 100 < u64::from(self.get_percent);
            let began = Instant::now();
            if is_get {
                self.get(&mut client, slot, expected[slot].as_deref(), &mut result)
                    .await;
                result.gets += 1;
            } else {
                let value = self.value(&mut counter);
                if self.set(&mut client, slot, &value, &mut result).await {
                    expected[slot] = Some(value);
                }
                result.sets += 1;
            }
            let micros = began.elapsed().as_micros() as u64;
            let _ = result.latency_us.record(micros.max(1));
            done += 1;
            match self.deadline {
                Some(_) if self.id == 0 => {
                    progress.set_position(started.elapsed().as_millis() as u64)
                }
                Some(_) => {}
                None => progress.inc(1),
            }
        }
        result
    }

    /// A value unique to this worker and moment, padded to `value_size`.
    fn value(&self, counter: &mut u64) -> String {
        *counter += 1;
        let mut value = format!("{}:{}:", self.id, counter);
        if value.len() < self.value_size {
            value.extend(std::iter::repeat_n('v', self.value_size - value.len()));
        }
        value
    }

    async fn set(
        &self,
        client: &mut KeyValueClient<Channel>,
        slot: usize,
        value: &str,
        result: &mut WorkerResult,
    ) -> bool {
        let request = SetRequest {
            key: self.keys[slot].clone(),
            value: value.to_owned(),
        };
        match client.set(request).await {
            Ok(_) => true,
            Err(status) => {
                self.failed(status, "set", slot, result);
                false
            }
        }
    }

    async fn get(
        &self,
        client: &mut KeyValueClient<Channel>,
        slot: usize,
        expected: Option<&str>,
        result: &mut WorkerResult,
    ) {
        let request = GetRequest {
            key: self.keys[slot].clone(),
        };
        let key = &self.keys[slot];
        match (client.get(request).await, expected) {
            (Ok(reply), Some(expected)) if reply.get_ref().value == expected => {}
            (Err(status), None) if status.code() == Code::NotFound => {}
            (Ok(reply), expected) => {
                result.mismatches += 1;
                let got = reply.into_inner().value;
                result.problem(format!(
                    "get {key}: got {:?}, expected {expected:?}",
                    shorten(&got)
                ));
            }
            (Err(status), Some(_)) if status.code() == Code::NotFound => {
                result.mismatches += 1;
                result.problem(format!("get {key}: NOT_FOUND after an acknowledged set"));
            }
            (Err(status), _) => self.failed(status, "get", slot, result),
        }
    }

    fn failed(&self, status: Status, op: &str, slot: usize, result: &mut WorkerResult) {
        result.errors += 1;
        result.problem(format!(
            "{op} {}: {:?}: {}",
            self.keys[slot],
            status.code(),
            status.message()
        ));
    }
}

fn shorten(text: &str) -> &str {
    match text.char_indices().nth(40) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}
