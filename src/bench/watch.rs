//! `kv bench --watchers N`: watch fan-out on the full API.
//!
//! N watchers of one prefix share M connections; one writer puts to keys
//! under the prefix at a fixed rate for a duration. Every watcher must see
//! every write, in revision order, exactly once: a missing, repeated or
//! reordered event is a *mismatch*, as a wrong read is for the request load.
//! The delivery latency of an event is from the moment its Put was sent to
//! the moment a watcher received it (so it includes the Put itself); with
//! `--server-pid`, the server's CPU (utime+stime from /proc/PID/stat over the
//! run) is divided by the events delivered.
//!
//! Kept apart from the request workers: the load is open-loop (a fixed rate,
//! not one request in flight per worker) and what is checked is a sequence
//! per watcher, not a value per key. With `--api etcd` the watchers and the
//! writer use etcd's v3 API instead (`watch_etcd`), so that kvserver and a
//! real etcd are measured by the same client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use tokio::sync::Mutex;
use tokio_stream::StreamExt;

use crate::client::{AuthorizedChannel, ConnectOptions};
use crate::proto::keyvalue::v1 as pb;
use crate::proto::keyvalue::v1::kv_client::KvClient;

use super::BenchError;
use super::watch_etcd;

/// Which API a watch fan-out uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchApi {
    /// keyvalue.v1.KV: a Watch call per watcher.
    V1,
    /// etcd's v3 API: one Watch stream per connection, holding its watchers.
    Etcd,
}

/// What one watcher received (each revision and when), and the error that
/// ended its stream, if one did.
pub(super) type Watched = (Vec<(u64, Instant)>, Option<String>);

/// A task reading the events of this many watchers, answering what each
/// received.
pub(super) type Receiver = (usize, tokio::task::JoinHandle<Vec<Watched>>);

/// What a watch fan-out run does.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// Server address, `host:port`.
    pub addr: String,
    /// How to connect.
    pub connect: ConnectOptions,
    /// Watchers, spread over the connections.
    pub watchers: usize,
    /// HTTP/2 connections the watchers share (the writer has its own).
    pub conns: usize,
    /// Puts per second.
    pub rate: u32,
    /// How long the writer writes.
    pub duration: Duration,
    /// Bytes per value.
    pub value_size: usize,
    /// The server's process id, to measure its CPU per delivered event.
    pub server_pid: Option<u32>,
    /// The API the watchers and the writer use.
    pub api: WatchApi,
}

/// The figures of a watch fan-out run.
#[derive(Debug)]
pub struct WatchReport {
    /// Puts acknowledged.
    pub puts: u64,
    /// Events received, over all watchers.
    pub delivered: u64,
    /// Events missing, repeated or out of order, over all watchers.
    pub mismatches: u64,
    /// Watch streams that ended with an error.
    pub errors: u64,
    /// The first few problems.
    pub problems: Vec<String>,
    /// Put sent to event received, in microseconds.
    pub latency_us: Histogram<u64>,
    /// The writer's wall time.
    pub elapsed: Duration,
    /// Server CPU seconds over the run, with `server_pid`.
    pub server_cpu_s: Option<f64>,
}

impl WatchReport {
    /// Whether every watcher saw every event in order.
    pub fn clean(&self) -> bool {
        self.mismatches == 0 && self.errors == 0
    }

    /// Server CPU microseconds per delivered event, with `server_pid`.
    pub fn cpu_us_per_event(&self) -> Option<f64> {
        self.server_cpu_s
            .map(|cpu| cpu * 1e6 / self.delivered.max(1) as f64)
    }

    /// The report as one JSON object.
    pub fn to_json(&self, config: &WatchConfig) -> serde_json::Value {
        let h = &self.latency_us;
        serde_json::json!({
            "addr": config.addr,
            "api": match config.api {
                WatchApi::V1 => "v1",
                WatchApi::Etcd => "etcd",
            },
            "watchers": config.watchers,
            "conns": config.conns,
            "rate": config.rate,
            "secs": self.elapsed.as_secs_f64(),
            "puts": self.puts,
            "delivered": self.delivered,
            "mismatches": self.mismatches,
            "errors": self.errors,
            "problems": self.problems,
            "latency_us": {
                "p50": h.value_at_quantile(0.50),
                "p90": h.value_at_quantile(0.90),
                "p99": h.value_at_quantile(0.99),
                "p999": h.value_at_quantile(0.999),
                "max": h.max(),
            },
            "server_cpu_s": self.server_cpu_s,
            "server_cpu_us_per_event": self.cpu_us_per_event(),
        })
    }

    /// The report as text.
    pub fn to_text(&self) -> String {
        let h = &self.latency_us;
        let mut out = format!(
            "{} puts in {:.2}s, {} events delivered\nerrors {}, mismatches {}\n\
             delivery latency µs: p50 {} p90 {} p99 {} p99.9 {} max {}\n",
            self.puts,
            self.elapsed.as_secs_f64(),
            self.delivered,
            self.errors,
            self.mismatches,
            h.value_at_quantile(0.50),
            h.value_at_quantile(0.90),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
        if let (Some(cpu), Some(per_event)) = (self.server_cpu_s, self.cpu_us_per_event()) {
            out.push_str(&format!(
                "server cpu {cpu:.2}s, {per_event:.2} µs per delivered event\n"
            ));
        }
        for problem in &self.problems {
            out.push_str(&format!("problem: {problem}\n"));
        }
        out
    }
}

/// Most problems quoted in a report.
const MAX_PROBLEMS: usize = 5;
/// How long watchers may take to receive the last events after the writer stops.
const DRAIN: Duration = Duration::from_secs(10);

/// What the writer sent: each revision and when its Put was sent.
type Sent = Arc<Mutex<Vec<(u64, Instant)>>>;

/// Runs the watch fan-out and returns its report.
pub async fn run(config: &WatchConfig) -> Result<WatchReport, BenchError> {
    if config.watchers == 0 || config.conns == 0 || config.rate == 0 {
        return Err(BenchError::Usage(
            "--watchers, --conns and --rate must be above zero".into(),
        ));
    }
    let prefix = format!("watchbench/{:04x}/", super::seed() as u16);
    let mut channels = Vec::with_capacity(config.conns);
    for _ in 0..config.conns {
        channels.push(crate::client::authorized_channel(&config.addr, &config.connect).await?);
    }
    let writer_channel = crate::client::authorized_channel(&config.addr, &config.connect).await?;

    // Every watch is created (the server answered) before the first write.
    let (done_tx, done_rx) = tokio::sync::watch::channel(None::<u64>);
    let receivers = match config.api {
        WatchApi::V1 => start_v1(&channels, config.watchers, &prefix, &done_rx).await?,
        WatchApi::Etcd => watch_etcd::start(&channels, config.watchers, &prefix, &done_rx).await?,
    };
    let cpu_before = config.server_pid.map(process_cpu_s).transpose()?;

    // The writer: open loop at `rate`, one Put at a time.
    let sent: Sent = Arc::new(Mutex::new(Vec::new()));
    let mut writer = KvClient::new(writer_channel.clone());
    let mut etcd_writer =
        crate::proto::etcd::etcdserverpb::kv_client::KvClient::new(writer_channel);
    let value = Bytes::from("v".repeat(config.value_size));
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(config.rate)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    let mut write_errors = Vec::new();
    while started.elapsed() < config.duration {
        ticks.tick().await;
        let at = Instant::now();
        let key = format!("{prefix}{}", n % 100);
        let reply = match config.api {
            WatchApi::V1 => writer
                .put(pb::PutRequest {
                    key: Bytes::from(key),
                    value: value.clone(),
                    ..Default::default()
                })
                .await
                .map(|reply| reply.into_inner().header.map_or(0, |h| h.revision))
                .map_err(|status| format!("put: {:?}: {}", status.code(), status.message())),
            WatchApi::Etcd => watch_etcd::put(&mut etcd_writer, key, value.clone()).await,
        };
        n += 1;
        match reply {
            Ok(revision) => sent.lock().await.push((revision, at)),
            Err(error) => write_errors.push(error),
        }
    }
    let elapsed = started.elapsed();
    let sent = std::mem::take(&mut *sent.lock().await);
    let _ = done_tx.send(sent.last().map(|(rev, _)| *rev));
    let deadline = tokio::time::Instant::now() + DRAIN;

    let mut report = WatchReport {
        puts: sent.len() as u64,
        delivered: 0,
        mismatches: 0,
        errors: write_errors.len() as u64,
        problems: write_errors.into_iter().take(MAX_PROBLEMS).collect(),
        latency_us: Histogram::new(3).expect("3 significant figures is valid"),
        elapsed,
        server_cpu_s: None,
    };
    let when: std::collections::HashMap<u64, Instant> = sent.iter().copied().collect();
    let expected: Vec<u64> = sent.iter().map(|(rev, _)| *rev).collect();
    let mut watched = Vec::with_capacity(config.watchers);
    for (count, receiver) in receivers {
        match tokio::time::timeout_at(deadline, receiver).await {
            Ok(Ok(results)) => watched.extend(results),
            Ok(Err(e)) => return Err(BenchError::Failed(format!("a watcher failed: {e}"))),
            // Every watcher of the task is counted, as missing its events.
            Err(_) => watched.extend((0..count).map(|_| {
                (
                    Vec::new(),
                    Some(format!("did not receive every event within {DRAIN:?}")),
                )
            })),
        }
    }
    for (watcher, (seen, error)) in watched.into_iter().enumerate() {
        if let Some(error) = error {
            report.errors += 1;
            problem(&mut report.problems, format!("watcher {watcher}: {error}"));
        }
        report.delivered += seen.len() as u64;
        let revisions: Vec<u64> = seen.iter().map(|(rev, _)| *rev).collect();
        if revisions != expected {
            report.mismatches += 1;
            let first = revisions
                .iter()
                .zip(&expected)
                .position(|(got, want)| got != want)
                .unwrap_or(revisions.len().min(expected.len()));
            problem(
                &mut report.problems,
                format!(
                    "watcher {watcher}: {} events, {} expected; first difference at #{first}: got {:?}, expected {:?}",
                    revisions.len(),
                    expected.len(),
                    revisions.get(first),
                    expected.get(first)
                ),
            );
        }
        for (rev, at) in seen {
            if let Some(sent_at) = when.get(&rev) {
                let micros = at.saturating_duration_since(*sent_at).as_micros() as u64;
                let _ = report.latency_us.record(micros.max(1));
            }
        }
    }
    if let (Some(pid), Some(before)) = (config.server_pid, cpu_before) {
        report.server_cpu_s = Some(process_cpu_s(pid)? - before);
    }
    Ok(report)
}

/// Starts `watchers` keyvalue.v1 watches of `prefix` over `channels`; one
/// task per watcher answers its events once `done` names the last revision
/// and it has it.
async fn start_v1(
    channels: &[AuthorizedChannel],
    watchers: usize,
    prefix: &str,
    done: &tokio::sync::watch::Receiver<Option<u64>>,
) -> Result<Vec<Receiver>, BenchError> {
    let mut streams = Vec::with_capacity(watchers);
    for watcher in 0..watchers {
        let channel: AuthorizedChannel = channels[watcher % channels.len()].clone();
        let mut client = KvClient::new(channel).max_decoding_message_size(usize::MAX);
        let stream = client
            .watch(pb::WatchRequest {
                key: Bytes::from(prefix.to_owned()),
                prefix: true,
                ..Default::default()
            })
            .await
            .map_err(|status| {
                BenchError::Failed(format!(
                    "watch {watcher} could not start: {:?}: {}",
                    status.code(),
                    status.message()
                ))
            })?
            .into_inner();
        streams.push(stream);
    }
    // Each watcher records the revisions it receives and when.
    let mut receivers = Vec::with_capacity(streams.len());
    for mut stream in streams {
        let mut done = done.clone();
        receivers.push((
            1,
            tokio::spawn(async move {
                let mut seen: Vec<(u64, Instant)> = Vec::new();
                loop {
                    let last = *done.borrow();
                    if last.is_some_and(|last| seen.last().is_some_and(|(rev, _)| *rev >= last)) {
                        return vec![(seen, None)];
                    }
                    tokio::select! {
                        message = stream.next() => match message {
                            Some(Ok(response)) => {
                                let now = Instant::now();
                                seen.extend(response.events.iter().map(|event| {
                                    (event.kv.as_ref().map_or(0, |kv| kv.mod_revision), now)
                                }));
                            }
                            Some(Err(status)) => {
                                let error = format!("{:?}: {}", status.code(), status.message());
                                return vec![(seen, Some(error))];
                            }
                            None => return vec![(seen, Some("the stream ended".to_owned()))],
                        },
                        changed = done.changed() => {
                            if changed.is_err() {
                                return vec![(seen, Some("the run was abandoned".to_owned()))];
                            }
                        }
                    }
                }
            }),
        ));
    }
    Ok(receivers)
}

fn problem(problems: &mut Vec<String>, text: String) {
    if problems.len() < MAX_PROBLEMS {
        problems.push(text);
    }
}

/// A process's user+system CPU seconds so far, from /proc/PID/stat.
fn process_cpu_s(pid: u32) -> Result<f64, BenchError> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| BenchError::Usage(format!("--server-pid {pid}: cannot read {path}: {e}")))?;
    // The command name may hold spaces: fields are counted after its ')'.
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    match (ticks(11), ticks(12)) {
        (Some(utime), Some(stime)) => Ok((utime + stime) as f64 / clock_ticks() as f64),
        _ => Err(BenchError::Usage(format!(
            "--server-pid {pid}: {path} is not in the expected format"
        ))),
    }
}

/// Clock ticks per second of /proc's times (USER_HZ: 100 on Linux).
fn clock_ticks() -> u64 {
    100
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_used_some_cpu() {
        let cpu = process_cpu_s(std::process::id()).unwrap();
        assert!(cpu >= 0.0 && cpu.is_finite(), "{cpu}");
        let error = process_cpu_s(u32::MAX).unwrap_err();
        assert!(error.to_string().contains("--server-pid"), "{error}");
    }
}
