//! The figures of a run: per-worker results merged into one [`Report`],
//! printed as text (with a small latency histogram) or JSON.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::config::{Api, BenchConfig};
use super::mix::{OP_KINDS, OpKind};

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
pub(super) struct WorkerResult {
    pub(super) by_kind: [u64; 5],
    pub(super) errors: u64,
    pub(super) mismatches: u64,
    pub(super) problems: Vec<String>,
    pub(super) latency_us: Histogram<u64>,
}

impl WorkerResult {
    pub(super) fn new() -> WorkerResult {
        WorkerResult {
            by_kind: [0; 5],
            errors: 0,
            mismatches: 0,
            problems: Vec::new(),
            latency_us: Histogram::new(3).expect("3 significant figures is valid"),
        }
    }

    pub(super) fn problem(&mut self, text: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(text);
        }
    }
}
