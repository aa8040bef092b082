//! `kv bench`: its flags, and the run of a request load or a watch fan-out
//! (`crate::bench`) with its report.

use std::process::ExitCode;
use std::time::Duration;

use super::output::{self, outln};
use super::{exit, parse_timeout};
use crate::bench::{Api, BenchConfig, BenchError, Mix, Stop};
use crate::client::ConnectOptions;

#[derive(clap::Args, Debug)]
pub(super) struct BenchArgs {
    /// HTTP/2 connections to open.
    #[arg(long, default_value_t = 4)]
    conns: usize,
    /// Requests in flight, spread over the connections.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to run (e.g. 10s); ignored with --requests.
    #[arg(long, default_value = "10s", value_parser = parse_timeout)]
    duration: Duration,
    /// Stop after this many operations instead of after --duration.
    #[arg(long)]
    requests: Option<u64>,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// Bytes per key.
    #[arg(long, default_value_t = 16)]
    key_size: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Operation mix in percent, adding up to 100, e.g. get=90,set=10 or set=100; with
    /// --api v1 also range (10 keys), batch (BatchGet of --batch-size) and txn (a CAS).
    #[arg(long, default_value = "get=90,set=10", value_parser = Mix::parse)]
    mix: Mix,
    /// Keys per BatchGet for `batch` in the mix.
    #[arg(long, default_value_t = 10)]
    batch_size: usize,
    /// Start every key with this (default: a random prefix per run, so runs
    /// never see each other's keys).
    #[arg(long)]
    key_prefix: Option<String>,
    /// Which service to load: the tutorial's or the full API; with --watchers,
    /// the full API (tutorial, v1) or etcd's v3 API (etcd).
    #[arg(long, value_enum, default_value_t = ApiArg::Tutorial)]
    api: ApiArg,
    /// Do not set every key before measuring (Gets of unset keys expect NOT_FOUND).
    #[arg(long)]
    no_preload: bool,
    /// Watch fan-out instead of a request load: this many watchers of one
    /// prefix over --conns connections, while one writer puts at --rate for
    /// --duration; checks every watcher got every event in order.
    #[arg(long)]
    watchers: Option<usize>,
    /// Puts per second of the --watchers writer.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// The server's process id: report its CPU per delivered event (--watchers).
    #[arg(long)]
    server_pid: Option<u32>,
}

/// `--api`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ApiArg {
    /// simplekeyvalue.KeyValue (get, set).
    Tutorial,
    /// keyvalue.v1.KV (get, set, range, batch, txn).
    V1,
    /// etcd's v3 API: Watch streams and Put (--watchers only).
    Etcd,
}

pub(super) async fn bench(
    addr: String,
    connect: ConnectOptions,
    json: bool,
    args: BenchArgs,
) -> ExitCode {
    if let Some(watchers) = args.watchers {
        let config = crate::bench::WatchConfig {
            addr,
            connect,
            watchers,
            conns: args.conns,
            rate: args.rate,
            duration: args.duration,
            value_size: args.value_size,
            server_pid: args.server_pid,
            api: match args.api {
                ApiArg::Tutorial | ApiArg::V1 => crate::bench::WatchApi::V1,
                ApiArg::Etcd => crate::bench::WatchApi::Etcd,
            },
        };
        return match crate::bench::run_watch(&config).await {
            Ok(report) => finish(
                json,
                || report.to_json(&config),
                || report.to_text(),
                (!report.clean()).then(|| {
                    format!(
                        "{} watch errors and {} watchers with missing or reordered events",
                        report.errors, report.mismatches
                    )
                }),
            ),
            Err(error) => bench_error(&error),
        };
    }
    let config = BenchConfig {
        addr,
        connect,
        conns: args.conns,
        concurrency: args.concurrency,
        stop: match args.requests {
            Some(requests) => Stop::Requests(requests),
            None => Stop::After(args.duration),
        },
        keys: args.keys,
        key_size: args.key_size,
        value_size: args.value_size,
        api: match args.api {
            ApiArg::Tutorial => Api::Tutorial,
            ApiArg::V1 => Api::V1,
            ApiArg::Etcd => {
                return bench_error(&BenchError::Usage(
                    "--api etcd is for the watch fan-out (--watchers) only; \
                     load etcd's API with etcd-benchmark"
                        .into(),
                ));
            }
        },
        mix: args.mix,
        key_prefix: args.key_prefix,
        batch_size: args.batch_size,
        preload: !args.no_preload,
    };
    match crate::bench::run(&config).await {
        Ok(report) => finish(
            json,
            || report.to_json(&config),
            || report.to_text(),
            (!report.clean()).then(|| {
                format!(
                    "{} errors and {} mismatches",
                    report.errors, report.mismatches
                )
            }),
        ),
        Err(error) => bench_error(&error),
    }
}

/// Prints a report (as JSON or text) and exits 0, or 5 with `failure` on
/// stderr if the run saw a wrong answer or a failed request.
fn finish(
    json: bool,
    as_json: impl FnOnce() -> serde_json::Value,
    as_text: impl FnOnce() -> String,
    failure: Option<String>,
) -> ExitCode {
    if json {
        outln!("{}", as_json());
    } else {
        output::verbatim(&as_text());
    }
    match failure {
        None => ExitCode::SUCCESS,
        Some(failure) => {
            eprintln!("kv bench: {failure}");
            ExitCode::from(exit::BENCH_FAILED)
        }
    }
}

fn bench_error(error: &BenchError) -> ExitCode {
    eprintln!("kv bench: {error}");
    ExitCode::from(match error {
        BenchError::Usage(_) => exit::USAGE,
        BenchError::Unreachable(_) => exit::UNREACHABLE,
        BenchError::Failed(_) => exit::BENCH_FAILED,
    })
}
