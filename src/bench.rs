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

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tonic::{Code, Status};

use bytes::Bytes;

use crate::client::{AuthorizedChannel, ClientError, ConnectOptions};
use crate::proto::keyvalue::v1 as pb;
use crate::proto::keyvalue::v1::kv_client::KvClient;
use crate::proto::simplekeyvalue::key_value_client::KeyValueClient;
use crate::proto::simplekeyvalue::{GetRequest, SetRequest};

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Server address, `host:port`.
    pub addr: String,
    /// How to connect: TLS, token, and the timeout of connecting and of
    /// every request (as for every other `kv` command).
    pub connect: ConnectOptions,
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
    /// Which service to load.
    pub api: Api,
    /// The share of each operation.
    pub mix: Mix,
    /// Set every key once before measuring, so Gets find values.
    pub preload: bool,
    /// What every key starts with; `None`: a random prefix per run, so runs
    /// never see each other's keys.
    pub key_prefix: Option<String>,
    /// Keys per BatchGet (`batch` in the mix).
    pub batch_size: usize,
}

/// The service a benchmark loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// `simplekeyvalue.KeyValue`: Get and Set only.
    Tutorial,
    /// `keyvalue.v1.KV`: Get, Put, Range, BatchGet, Txn.
    V1,
}

/// An operation of the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    // In the order of OP_KINDS: `index` relies on it.
    /// Read one key.
    Get,
    /// Write one key.
    Set,
    /// Read a window of [`RANGE_WINDOW`] consecutive keys (v1).
    Range,
    /// Read `batch_size` keys in one call (v1).
    Batch,
    /// Compare-and-set one key on its revision (v1).
    Txn,
}

const OP_KINDS: [OpKind; 5] = [
    OpKind::Get,
    OpKind::Set,
    OpKind::Range,
    OpKind::Batch,
    OpKind::Txn,
];

impl OpKind {
    /// The place of this kind in [`OP_KINDS`], a [`Mix`] and `by_kind`.
    fn index(self) -> usize {
        self as usize
    }

    fn plural(self) -> &'static str {
        match self {
            OpKind::Batch => "batches",
            OpKind::Get => "gets",
            OpKind::Set => "sets",
            OpKind::Range => "ranges",
            OpKind::Txn => "txns",
        }
    }

    fn name(self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::Set => "set",
            OpKind::Range => "range",
            OpKind::Batch => "batch",
            OpKind::Txn => "txn",
        }
    }
}

/// Keys one Range reads.
pub const RANGE_WINDOW: usize = 10;

/// The share of each operation, in percent, adding up to 100.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix([u32; 5]);

impl Mix {
    /// Parses `get=90,set=10`: each operation at most once, and the shares
    /// add up to exactly 100. No share is filled in to make up the rest:
    /// `get=50` would quietly run as many sets as gets.
    pub fn parse(text: &str) -> Result<Mix, String> {
        let mut shares: [Option<u32>; 5] = [None; 5];
        for part in text.split(',') {
            let (op, share) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected op=percent, e.g. get=90"))?;
            let share: u32 = share
                .trim()
                .parse()
                .ok()
                .filter(|share| *share <= 100)
                .ok_or_else(|| {
                    format!("{part:?}: the share must be a whole percentage, 0 to 100")
                })?;
            let op = op.trim();
            let index = OP_KINDS
                .iter()
                .position(|kind| kind.name() == op)
                .ok_or_else(|| {
                    format!("unknown operation {op:?} (use get, set, range, batch, txn)")
                })?;
            if shares[index].replace(share).is_some() {
                return Err(format!("{op} is given more than once"));
            }
        }
        let mix = Mix(shares.map(|share| share.unwrap_or(0)));
        let total: u32 = mix.0.iter().sum();
        if total != 100 {
            return Err(format!(
                "the shares add up to {total}, not 100 (e.g. get=90,set=10)"
            ));
        }
        Ok(mix)
    }

    /// The share of `kind`.
    pub fn share(&self, kind: OpKind) -> u32 {
        self.0[kind.index()]
    }

    /// The operation for a roll in `0..100`.
    fn pick(&self, roll: u32) -> OpKind {
        let mut below = 0;
        for (kind, share) in OP_KINDS.iter().zip(self.0) {
            below += share;
            if roll < below {
                return *kind;
            }
        }
        OpKind::Get
    }

    /// Whether the tutorial API can run this mix (only get and set).
    pub fn tutorial_only(&self) -> bool {
        self.share(OpKind::Range) + self.share(OpKind::Batch) + self.share(OpKind::Txn) == 0
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = OP_KINDS
            .iter()
            .zip(self.0)
            .filter(|(_, share)| *share > 0)
            .map(|(kind, share)| format!("{}={share}", kind.name()))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// When a run ends.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// After this long.
    After(Duration),
    /// After this many operations in all.
    Requests(u64),
}

/// Why a run could not start, or could not finish.
#[derive(Debug)]
pub enum BenchError {
    /// The configuration cannot work (zero connections, keys too short for
    /// their number, fewer keys than workers, an invalid address, ...).
    Usage(String),
    /// The server could not be reached.
    Unreachable(String),
    /// The run itself broke (a worker panicked).
    Failed(String),
}

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BenchError::Usage(text) | BenchError::Unreachable(text) | BenchError::Failed(text) => {
                f.write_str(text)
            }
        }
    }
}

impl std::error::Error for BenchError {}

impl From<ClientError> for BenchError {
    fn from(error: ClientError) -> BenchError {
        match error {
            ClientError::InvalidAddress { .. } | ClientError::Config { .. } => {
                BenchError::Usage(error.to_string())
            }
            _ => BenchError::Unreachable(error.to_string()),
        }
    }
}

/// The figures of a run.
#[derive(Debug)]
pub struct Report {
    /// Operations completed (answered, whatever the answer).
    pub ops: u64,
    /// Completed operations of each kind, in the order of [`OpKind`].
    pub by_kind: [u64; 5],
    /// Wall time of the measured phase.
    pub elapsed: Duration,
    /// Operations answered with an error status.
    pub errors: u64,
    /// Answers that contradict what the worker's own writes imply (a value
    /// other than the last acknowledged one, a lost key, a lost CAS).
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
            "batch_size": config.batch_size,
            "key_size": config.key_size,
            "value_size": config.value_size,
            "api": match config.api { Api::Tutorial => "tutorial", Api::V1 => "v1" },
            "mix": config.mix.to_string(),
            "ops": self.ops,
            "gets": self.by_kind[0],
            "sets": self.by_kind[1],
            "ranges": self.by_kind[2],
            "batches": self.by_kind[3],
            "txns": self.by_kind[4],
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
        let kinds: Vec<String> = OP_KINDS
            .iter()
            .zip(self.by_kind)
            .filter(|(kind, count)| *count > 0 || matches!(kind, OpKind::Get | OpKind::Set))
            .map(|(kind, count)| format!("{count} {}", kind.plural()))
            .collect();
        let _ = writeln!(
            out,
            "{} ops in {:.2}s: {:.0} ops/s ({})",
            self.ops,
            self.elapsed.as_secs_f64(),
            self.ops_per_sec(),
            kinds.join(", ")
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
    by_kind: [u64; 5],
    errors: u64,
    mismatches: u64,
    problems: Vec<String>,
    latency_us: Histogram<u64>,
}

impl WorkerResult {
    fn new() -> WorkerResult {
        WorkerResult {
            by_kind: [0; 5],
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

/// Checks that `config` can run as asked, before connecting.
fn validate(config: &BenchConfig, prefix: &str) -> Result<(), BenchError> {
    if config.conns == 0 || config.concurrency == 0 || config.keys == 0 {
        return Err(BenchError::Usage(
            "--conns, --concurrency and --keys must be above zero".into(),
        ));
    }
    if config.keys < config.concurrency {
        // Each worker owns its own keys: a worker without any would do
        // nothing, and its share of --requests would silently go unrun.
        return Err(BenchError::Usage(format!(
            "--keys {} is fewer than --concurrency {}: every worker needs a key of its own",
            config.keys, config.concurrency
        )));
    }
    if config.api == Api::Tutorial && !config.mix.tutorial_only() {
        return Err(BenchError::Usage(format!(
            "--mix {} needs --api v1: the tutorial API has only get and set",
            config.mix
        )));
    }
    if format!("{prefix}{}", config.keys - 1).len() > config.key_size.max(1) {
        return Err(BenchError::Usage(format!(
            "--key-size {} is too small for {} keys (keys look like {prefix}00123)",
            config.key_size, config.keys
        )));
    }
    Ok(())
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
fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32) | 1
}

/// A worker's connection, to the service under load.
enum Conn {
    Tutorial(KeyValueClient<AuthorizedChannel>),
    V1(KvClient<AuthorizedChannel>),
}

/// What one worker does.
struct WorkerSpec {
    id: usize,
    workers: usize,
    /// The keys this worker owns: global index `id + slot * workers`.
    keys: Vec<String>,
    /// The same keys as the full API sends them (a clone is a reference
    /// count, not a copy: a batch names a thousand keys per request).
    wire_keys: Vec<Bytes>,
    /// Every key of the run, in order (for Range windows).
    all_keys: std::sync::Arc<Vec<String>>,
    value_size: usize,
    mix: Mix,
    batch_size: usize,
    preload: bool,
    limit: Option<u64>,
    deadline: Option<Duration>,
}

/// What a worker knows of its keys.
struct Expected {
    /// The value each owned key must hold: `None` until set in this run.
    values: Vec<Option<String>>,
    /// The mod_revision of each owned key (v1 only; 0: never set).
    revisions: Vec<u64>,
}

impl WorkerSpec {
    async fn run(
        self,
        mut conn: Conn,
        start_line: std::sync::Arc<tokio::sync::Barrier>,
        progress: ProgressBar,
    ) -> WorkerResult {
        let mut result = WorkerResult::new();
        let mut expected = Expected {
            values: vec![None; self.keys.len()],
            revisions: vec![0; self.keys.len()],
        };
        let mut counter = 0u64;
        if self.preload {
            for slot in 0..self.keys.len() {
                let value = self.value(&mut counter);
                self.set(&mut conn, slot, value, &mut expected, &mut result)
                    .await;
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
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut done = 0u64;
        while self.limit.is_none_or(|limit| done < limit)
            && self.deadline.is_none_or(|d| started.elapsed() < d)
            && !self.keys.is_empty()
        {
            let roll = next();
            let slot = (roll % self.keys.len() as u64) as usize;
            let kind = self.mix.pick(((roll >> 32) % 100) as u32);
            let began = Instant::now();
            match kind {
                OpKind::Get => self.get(&mut conn, slot, &expected, &mut result).await,
                OpKind::Set => {
                    let value = self.value(&mut counter);
                    self.set(&mut conn, slot, value, &mut expected, &mut result)
                        .await;
                }
                OpKind::Range => {
                    let start = (next() % self.all_keys.len() as u64) as usize;
                    self.range(&mut conn, start, &expected, &mut result).await;
                }
                OpKind::Batch => {
                    let slots: Vec<usize> = (0..self.batch_size)
                        .map(|_| (next() % self.keys.len() as u64) as usize)
                        .collect();
                    self.batch(&mut conn, &slots, &expected, &mut result).await;
                }
                OpKind::Txn => {
                    let value = self.value(&mut counter);
                    self.txn(&mut conn, slot, value, &mut expected, &mut result)
                        .await;
                }
            }
            result.by_kind[kind.index()] += 1;
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

    /// The owned slot of global key index `index`, if this worker owns it.
    fn slot_of(&self, index: usize) -> Option<usize> {
        (index % self.workers == self.id).then(|| index / self.workers)
    }

    async fn set(
        &self,
        conn: &mut Conn,
        slot: usize,
        value: String,
        expected: &mut Expected,
        result: &mut WorkerResult,
    ) {
        let answer = match conn {
            Conn::Tutorial(client) => client
                .set(SetRequest {
                    key: self.keys[slot].clone(),
                    value: value.clone(),
                })
                .await
                .map(|_| 0),
            Conn::V1(client) => client
                .put(pb::PutRequest {
                    key: self.wire_keys[slot].clone(),
                    value: Bytes::from(value.clone()),
                    ..Default::default()
                })
                .await
                .map(|reply| reply.into_inner().header.map_or(0, |h| h.revision)),
        };
        match answer {
            Ok(revision) => {
                expected.values[slot] = Some(value);
                expected.revisions[slot] = revision;
            }
            Err(status) => self.failed(status, "set", &self.keys[slot], result),
        }
    }

    async fn get(
        &self,
        conn: &mut Conn,
        slot: usize,
        expected: &Expected,
        result: &mut WorkerResult,
    ) {
        let answer = match conn {
            Conn::Tutorial(client) => match client
                .get(GetRequest {
                    key: self.keys[slot].clone(),
                })
                .await
            {
                Ok(reply) => Ok(Some(reply.into_inner().value.into_bytes())),
                Err(status) if status.code() == Code::NotFound => Ok(None),
                Err(status) => Err(status),
            },
            Conn::V1(client) => client
                .get(pb::GetRequest {
                    key: self.wire_keys[slot].clone(),
                })
                .await
                .map(|reply| reply.into_inner().kv.map(|kv| kv.value.to_vec())),
        };
        match answer {
            Ok(got) => self.check(slot, got.as_deref(), expected, result),
            Err(status) => self.failed(status, "get", &self.keys[slot], result),
        }
    }

    async fn range(
        &self,
        conn: &mut Conn,
        start: usize,
        expected: &Expected,
        result: &mut WorkerResult,
    ) {
        let Conn::V1(client) = conn else { return };
        let end = (start + RANGE_WINDOW).min(self.all_keys.len());
        let range_end = match self.all_keys.get(end) {
            Some(key) => Bytes::from(key.clone()),
            None => Bytes::from(format!("{}\0", self.all_keys[end - 1])),
        };
        let request = pb::RangeRequest {
            key: Bytes::from(self.all_keys[start].clone()),
            range_end,
            ..Default::default()
        };
        let reply = match client.range(request).await {
            Ok(reply) => reply.into_inner(),
            Err(status) => return self.failed(status, "range", &self.all_keys[start], result),
        };
        for index in start..end {
            let Some(slot) = self.slot_of(index) else {
                continue;
            };
            let got = reply
                .kvs
                .iter()
                .find(|kv| kv.key.as_ref() == self.keys[slot].as_bytes())
                .map(|kv| kv.value.as_ref());
            self.check(slot, got, expected, result);
        }
    }

    async fn batch(
        &self,
        conn: &mut Conn,
        slots: &[usize],
        expected: &Expected,
        result: &mut WorkerResult,
    ) {
        let Conn::V1(client) = conn else { return };
        let keys = slots
            .iter()
            .map(|&slot| self.wire_keys[slot].clone())
            .collect();
        match client.batch_get(pb::BatchGetRequest { keys }).await {
            Ok(reply) => {
                for (&slot, got) in slots.iter().zip(reply.into_inner().results) {
                    self.check(
                        slot,
                        got.kv.as_ref().map(|kv| kv.value.as_ref()),
                        expected,
                        result,
                    );
                }
            }
            Err(status) => self.failed(status, "batch", &self.keys[slots[0]], result),
        }
    }

    async fn txn(
        &self,
        conn: &mut Conn,
        slot: usize,
        value: String,
        expected: &mut Expected,
        result: &mut WorkerResult,
    ) {
        let Conn::V1(client) = conn else { return };
        let key = self.wire_keys[slot].clone();
        let request = pb::TxnRequest {
            compare: vec![pb::Compare {
                key: key.clone(),
                op: pb::compare::Op::Equal.into(),
                target: Some(pb::compare::Target::ModRevision(expected.revisions[slot])),
            }],
            success: vec![pb::Op {
                op: Some(pb::op::Op::Put(pb::PutRequest {
                    key,
                    value: Bytes::from(value.clone()),
                    ..Default::default()
                })),
            }],
            failure: Vec::new(),
        };
        match client.txn(request).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                if reply.succeeded {
                    expected.values[slot] = Some(value);
                    expected.revisions[slot] = reply.header.map_or(0, |h| h.revision);
                } else {
                    // Only this worker writes the key: its revision cannot move.
                    result.mismatches += 1;
                    result.problem(format!(
                        "txn {}: compare on mod_revision {} failed",
                        self.keys[slot], expected.revisions[slot]
                    ));
                }
            }
            Err(status) => self.failed(status, "txn", &self.keys[slot], result),
        }
    }

    /// Compares what a read returned for an owned key with what it must hold.
    fn check(
        &self,
        slot: usize,
        got: Option<&[u8]>,
        expected: &Expected,
        result: &mut WorkerResult,
    ) {
        let want = expected.values[slot].as_deref().map(str::as_bytes);
        if got != want {
            result.mismatches += 1;
            result.problem(format!(
                "read {}: got {:?}, expected {:?}",
                self.keys[slot],
                got.map(|g| shorten(&String::from_utf8_lossy(g)).to_owned()),
                want.map(|w| shorten(&String::from_utf8_lossy(w)).to_owned()),
            ));
        }
    }

    /// Counts a failed request; `key` is the (first) key it named.
    fn failed(&self, status: Status, op: &str, key: &str, result: &mut WorkerResult) {
        result.errors += 1;
        result.problem(format!(
            "{op} {key}: {:?}: {}",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_names_every_share() {
        let mix = Mix::parse("get=90, set=10").unwrap();
        assert_eq!((mix.share(OpKind::Get), mix.share(OpKind::Set)), (90, 10));
        let mix = Mix::parse("set=100").unwrap();
        assert_eq!((mix.share(OpKind::Get), mix.share(OpKind::Set)), (0, 100));
        let mix = Mix::parse("get=40,range=30,batch=20,txn=10,set=0").unwrap();
        assert_eq!(mix.to_string(), "get=40,range=30,batch=20,txn=10");
    }

    #[test]
    fn shares_that_do_not_add_up_to_100_are_refused() {
        for (text, total) in [("get=50", 50), ("get=90,set=20", 110), ("set=0", 0)] {
            let error = Mix::parse(text).unwrap_err();
            assert!(
                error.starts_with(&format!("the shares add up to {total}, not 100")),
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn an_operation_given_twice_is_refused() {
        for text in ["get=100,get=0", "get=50,set=0,get=50"] {
            assert_eq!(
                Mix::parse(text).unwrap_err(),
                "get is given more than once",
                "{text}"
            );
        }
    }

    #[test]
    fn a_share_is_a_percentage() {
        // Shares above 100 would overflow the sum into 100 again.
        for text in [
            "get=4294967295,set=101",
            "get=101",
            "get=-1,set=101",
            "get=x",
        ] {
            let error = Mix::parse(text).unwrap_err();
            assert!(
                error.contains("whole percentage, 0 to 100"),
                "{text}: {error}"
            );
        }
    }
}
