//! `kv`: the command-line client of kvserver.
//!
//! Thin on purpose: parse the command, call `keyvalue::client`, print the result.
//! Every failure is one line on stderr and an exit code a script can test.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use keyvalue::bench::{BenchConfig, Stop};
use keyvalue::client::{Client, ClientError};
use keyvalue::duration::parse_duration;

/// Command-line client of kvserver.
///
/// Exit codes: 0 success, 1 key not found, 2 usage error, 3 server unreachable
/// (or no answer within --timeout), 4 request refused by the server, 5 `kv
/// bench` saw a wrong answer or a failed request.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Cli {
    /// Server address, host:port.
    #[arg(
        long,
        global = true,
        env = "KV_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    addr: String,

    /// How long to wait for the server, per request (e.g. 5s, 500ms).
    #[arg(long, global = true, env = "KV_TIMEOUT", default_value = "5s",
          value_parser = parse_timeout)]
    timeout: Duration,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Store VALUE under KEY.
    Set {
        /// The key.
        key: String,
        /// The value (may start with '-').
        #[arg(allow_hyphen_values = true)]
        value: String,
    },
    /// Print the value of KEY and a newline, nothing else.
    Get {
        /// The key.
        key: String,
    },
    /// Load the server and measure it: closed loop, every answer verified.
    ///
    /// Each worker keeps one request in flight and owns its share of the keys,
    /// so every Get is checked against the last acknowledged Set of its key.
    /// Exits 5 if any answer was wrong or any request failed.
    Bench(BenchArgs),
}

#[derive(clap::Args, Debug)]
struct BenchArgs {
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
    /// Operation mix in percent, e.g. get=90,set=10 or set=100.
    #[arg(long, default_value = "get=90,set=10", value_parser = parse_mix)]
    mix: u32,
    /// Do not set every key before measuring (Gets of unset keys expect NOT_FOUND).
    #[arg(long)]
    no_preload: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Parses `get=90,set=10` into the percentage of gets.
fn parse_mix(text: &str) -> Result<u32, String> {
    let (mut get, mut set) = (None, None);
    for part in text.split(',') {
        let (op, share) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected op=percent, e.g. get=90"))?;
        let share: u32 = share
            .trim()
            .parse()
            .map_err(|_| format!("{part:?}: the share must be a whole percentage"))?;
        match op.trim() {
            "get" => get = Some(share),
            "set" => set = Some(share),
            other => return Err(format!("unknown operation {other:?} (use get and set)")),
        }
    }
    let (get, set) = match (get, set) {
        (Some(get), Some(set)) => (get, set),
        (Some(get), None) => (get, 100u32.saturating_sub(get)),
        (None, Some(set)) => (100u32.saturating_sub(set), set),
        (None, None) => return Err("empty mix".into()),
    };
    if get + set != 100 {
        return Err(format!("the shares add up to {}, not 100", get + set));
    }
    Ok(get)
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err("the timeout must be above zero".to_owned()),
        timeout => Ok(timeout),
    }
}

/// Exit code for each kind of failure, as documented in `kv --help`.
fn exit_code(error: &ClientError) -> u8 {
    match error {
        ClientError::KeyNotFound { .. } => 1,
        ClientError::InvalidAddress { .. } => 2,
        ClientError::Unreachable { .. } => 3,
        ClientError::Rejected { .. } => 4,
    }
}

/// Exit code of a benchmark with wrong answers or failed requests.
const EXIT_BENCH_FAILED: u8 = 5;

async fn bench(addr: String, args: BenchArgs) -> ExitCode {
    let config = BenchConfig {
        addr,
        conns: args.conns,
        concurrency: args.concurrency,
        stop: match args.requests {
            Some(requests) => Stop::Requests(requests),
            None => Stop::After(args.duration),
        },
        keys: args.keys,
        key_size: args.key_size,
        value_size: args.value_size,
        get_percent: args.mix,
        preload: !args.no_preload,
    };
    match keyvalue::bench::run(&config).await {
        Ok(report) => {
            if args.json {
                println!("{}", report.to_json(&config));
            } else {
                print!("{}", report.to_text());
            }
            if report.clean() {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "kv bench: {} errors and {} mismatches",
                    report.errors, report.mismatches
                );
                ExitCode::from(EXIT_BENCH_FAILED)
            }
        }
        Err(error) => {
            eprintln!("kv bench: {error}");
            ExitCode::from(3)
        }
    }
}

async fn execute(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Bench(args) => return bench(cli.addr, args).await,
        Command::Set { key, value } => match Client::connect(&cli.addr, cli.timeout).await {
            Ok(mut client) => client.set(&key, &value).await,
            Err(error) => Err(error),
        },
        Command::Get { key } => match Client::connect(&cli.addr, cli.timeout).await {
            Ok(mut client) => client.get(&key).await.map(|value| println!("{value}")),
            Err(error) => Err(error),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(exit_code(&error))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One request needs one thread; a benchmark's workers use every core.
    let mut builder = match cli.command {
        Command::Bench(_) => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("kv: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(execute(cli))
}
