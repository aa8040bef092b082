//! The `kv` command line: its flags, its commands, and how each prints.
//!
//! `src/bin/kv.rs` only calls [`main`]. Every command talks to the server
//! through [`crate::client::Client`] (the full API), prints its answer as text
//! or, with `--json`, as JSON for scripts, and reports a failure as one line on
//! stderr with an exit code from [`exit`].

mod backup;
mod bench;
mod encoding;
mod lease;
mod output;
use output::outln;
mod txn_file;

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use serde_json::{Value as Json, json};
use tokio_stream::StreamExt;

use crate::client::{Client, ClientError, ClientTls, ConnectOptions};
use crate::duration::parse_duration;
use crate::http::json::BytesAs;
use crate::proto::keyvalue::v1 as pb;
pub use encoding::Encoding;

/// Exit codes, as `kv --help` documents them.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The key does not exist.
    pub const KEY_NOT_FOUND: u8 = 1;
    /// The command line is wrong.
    pub const USAGE: u8 = 2;
    /// The server could not be reached, did not answer in time, or answered
    /// that it cannot serve now (UNAVAILABLE: its etcd cluster is down).
    pub const UNREACHABLE: u8 = 3;
    /// The server refused the request.
    pub const REFUSED: u8 = 4;
    /// `kv bench` saw a wrong answer or a failed request.
    pub const BENCH_FAILED: u8 = 5;
    /// `kv cas`: the key was not at the expected revision.
    pub const COMPARE_FAILED: u8 = 6;
    /// The output could not be written: stdout (other than a closed pipe,
    /// which ends `kv` quietly with 0), or the file of `kv backup`.
    pub const OUTPUT_FAILED: u8 = 7;
}

/// Command-line client of kvserver.
///
/// Exit codes: 0 success, 1 key not found, 2 usage error, 3 server unreachable
/// (or no answer within --timeout, or UNAVAILABLE), 4 request refused by the
/// server, 5 `kv bench` saw a wrong answer or a failed request, 6 `kv cas`
/// found another revision, 7 the output could not be written (stdout, or the
/// file of `kv backup`). When stdout is a pipe that closes (`kv watch | head
/// -1`), kv ends quietly with 0 within a second, even if nothing more comes.
#[derive(Parser, Debug)]
#[command(name = "kv", version)]
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

    /// Token for a server that checks them (sent as authorization: Bearer).
    #[arg(long, global = true, env = "KV_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// Speak TLS, trusting the server certificate's CA in this PEM file.
    #[arg(long, global = true, env = "KV_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,

    /// Client certificate (PEM) for a server that requires one (with --key).
    #[arg(long = "cert", global = true, env = "KV_CERT", requires = "key_file")]
    cert_file: Option<std::path::PathBuf>,

    /// The PEM private key of --cert.
    #[arg(long = "key", global = true, env = "KV_KEY", requires = "cert_file")]
    key_file: Option<std::path::PathBuf>,

    /// Print answers as JSON (one object, or one per line for watch).
    #[arg(long, global = true)]
    json: bool,

    /// Keys and values, in arguments and output, are hexadecimal.
    #[arg(long, global = true, conflicts_with = "base64")]
    hex: bool,

    /// Keys and values, in arguments and output, are base64.
    #[arg(long, global = true)]
    base64: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the value of KEY and a newline (with -w, its revisions too).
    Get {
        /// The key.
        key: String,
        /// Show the revisions: create_revision, mod_revision, version, lease.
        #[arg(short = 'w', long = "with-revisions")]
        with_revisions: bool,
        /// Read the key as it was at this revision (0: now).
        #[arg(long, default_value_t = 0)]
        rev: u64,
    },
    /// Store VALUE under KEY; without VALUE, the value is read from --file
    /// or else from stdin, as raw bytes (so a value of any size and any bytes
    /// can be set: `kv set KEY < file`).
    Set {
        /// The key.
        key: String,
        /// The value (may start with '-').
        #[arg(allow_hyphen_values = true)]
        value: Option<String>,
        /// Read the value from this file, as raw bytes.
        #[arg(long, conflicts_with = "value")]
        file: Option<std::path::PathBuf>,
        /// Delete the key after this long unless its lease is kept alive (e.g.
        /// 30s); prints the lease id.
        #[arg(long, value_parser = parse_timeout, conflicts_with = "lease")]
        ttl: Option<Duration>,
        /// Attach the key to this lease.
        #[arg(long)]
        lease: Option<i64>,
    },
    /// Delete KEY, every key from KEY to --to, or every key under a prefix;
    /// prints how many went.
    Del {
        /// The key, or the prefix with --prefix.
        key: String,
        /// Delete every key that starts with KEY.
        #[arg(long, conflicts_with = "to")]
        prefix: bool,
        /// Delete keys from KEY up to this one (exclusive).
        #[arg(long)]
        to: Option<String>,
    },
    /// List keys (all, or under PREFIX) with their values, in key order.
    Ls {
        /// Only keys that start with this.
        #[arg(default_value = "")]
        prefix: String,
        /// Print keys only.
        #[arg(long)]
        keys_only: bool,
        /// At most this many keys.
        #[arg(long)]
        limit: Option<u64>,
        /// List the keys as they were at this revision (0: now; every page
        /// is read at the first page's revision either way).
        #[arg(long, default_value_t = 0)]
        rev: u64,
    },
    /// Set KEY to VALUE only if it is still at revision --expect-rev (0: only
    /// if it does not exist); exits 6 and prints the current state if not.
    Cas {
        /// The key.
        key: String,
        /// The new value.
        #[arg(allow_hyphen_values = true)]
        value: String,
        /// The mod_revision the key must have (see `kv get -w`).
        #[arg(long)]
        expect_rev: u64,
    },
    /// Run a transaction read from FILE (or stdin): compares, a blank line,
    /// operations if they hold, a blank line, operations if not.
    ///
    /// Compares: value|mod|create|ver("key") =|!=|<|> "operand". Operations:
    /// put KEY VALUE, del KEY [END], del --prefix P, get KEY [END],
    /// get --prefix P (--prefix may also follow P). Quote tokens with spaces,
    /// and keys or values that start with --; # starts a comment line.
    Txn {
        /// The file; stdin if absent or "-".
        file: Option<String>,
    },
    /// Print changes to KEY (or under a prefix) as they happen, until Ctrl-C.
    Watch {
        /// The key, or the prefix with --prefix.
        key: String,
        /// Watch every key that starts with KEY.
        #[arg(long)]
        prefix: bool,
        /// Start from this revision (replaying what happened since), not now.
        #[arg(long)]
        from_rev: Option<u64>,
    },
    /// Write a consistent copy of every key and lease to FILE, while the
    /// server goes on serving (restore with `kvserver restore FILE`).
    Backup {
        /// The file to write: a new path, or a regular file, replaced only once
        /// the backup is complete.
        file: std::path::PathBuf,
    },
    /// Forget the history before REVISION: reads (--rev) and watches
    /// (--from-rev) below it fail from then on, and its space is reclaimed.
    Compact {
        /// The oldest revision to keep.
        revision: u64,
    },
    /// Leases: grant one, keep it alive, look at it, revoke it.
    #[command(subcommand)]
    Lease(lease::LeaseCommand),
    /// Print kv's shell completion script (e.g. `kv completions bash >
    /// /usr/share/bash-completion/completions/kv`).
    Completions {
        /// The shell.
        shell: crate::cli_docs::Shell,
    },
    /// Print kv's man page (roff: `kv man | man -l -`).
    Man,
    /// Load the server and measure it: closed loop, every answer verified.
    ///
    /// Each worker keeps one request in flight and owns its share of the keys,
    /// so every Get is checked against the last acknowledged Set of its key.
    /// Exits 5 if any answer was wrong or any request failed.
    Bench(bench::BenchArgs),
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err("the duration must be above zero".to_owned()),
        duration => Ok(duration),
    }
}

/// Why a command failed: one line for stderr and an exit code.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: exit::USAGE,
            message: message.into(),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Failure {
        let code = match &error {
            ClientError::KeyNotFound { .. } => exit::KEY_NOT_FOUND,
            ClientError::InvalidAddress { .. } | ClientError::Config { .. } => exit::USAGE,
            ClientError::Unreachable { .. } | ClientError::Unavailable { .. } => exit::UNREACHABLE,
            ClientError::LeaseNotFound { .. } | ClientError::Rejected { .. } => exit::REFUSED,
        };
        Failure {
            code,
            message: error.to_string(),
        }
    }
}

type Outcome = Result<(), Failure>;

/// What every command needs: the client, and how to read and print.
struct Context {
    client: Client,
    json: bool,
    encoding: Encoding,
}

impl Context {
    fn bytes(&self, text: &str) -> Result<Bytes, Failure> {
        self.encoding.decode(text).map_err(Failure::usage)
    }

    /// A key and its state as a JSON object, in the shape the HTTP API
    /// uses too (`http::json`): with --hex or --base64 every key and value
    /// in that encoding, else text, and base64 for bytes that are not UTF-8.
    fn kv_json(&self, kv: &pb::KeyValue, with_value: bool) -> Result<Json, Failure> {
        Ok(crate::http::json::key_value(
            kv,
            self.bytes_as(),
            with_value,
        ))
    }

    /// How JSON output writes keys and values.
    fn bytes_as(&self) -> BytesAs {
        match self.encoding {
            Encoding::Text => BytesAs::TextOrBase64,
            Encoding::Hex => BytesAs::Hex,
            Encoding::Base64 => BytesAs::Base64,
        }
    }

    /// `bytes` for plain text output: raw, or encoded.
    fn raw(&self, bytes: &[u8]) -> Vec<u8> {
        self.encoding.raw(bytes)
    }
}

/// Runs `kv` with the process's arguments; returns its exit code.
pub fn main() -> ExitCode {
    let cli = match crate::usage::parse::<Cli>(std::env::args_os()) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
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

async fn execute(cli: Cli) -> ExitCode {
    let options = ConnectOptions {
        timeout: cli.timeout,
        token: cli.token.clone(),
        tls: cli.ca_file.clone().map(|ca| ClientTls {
            ca,
            identity: cli.cert_file.clone().zip(cli.key_file.clone()),
        }),
    };
    match cli.command {
        Command::Bench(args) => return bench::bench(cli.addr, options, cli.json, args).await,
        Command::Completions { shell } => {
            return crate::cli_docs::print(&crate::cli_docs::completions(
                <Cli as clap::CommandFactory>::command(),
                shell,
            ));
        }
        Command::Man => {
            return crate::cli_docs::print(&crate::cli_docs::man_page(
                <Cli as clap::CommandFactory>::command(),
            ));
        }
        _ => {}
    }
    let encoding = if cli.hex {
        Encoding::Hex
    } else if cli.base64 {
        Encoding::Base64
    } else {
        Encoding::Text
    };
    let outcome = match Client::connect(&cli.addr, &options).await {
        Ok(client) => {
            let mut context = Context {
                client,
                json: cli.json,
                encoding,
            };
            run(&mut context, cli.command).await
        }
        Err(error) => Err(error.into()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("{}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

async fn run(cx: &mut Context, command: Command) -> Outcome {
    match command {
        Command::Get {
            key,
            with_revisions,
            rev,
        } => get(cx, &key, with_revisions, rev).await,
        Command::Set {
            key,
            value,
            file,
            ttl,
            lease,
        } => {
            let value = match (value, file) {
                (Some(value), _) => cx.bytes(&value)?,
                (None, Some(path)) => Bytes::from(std::fs::read(&path).map_err(|e| {
                    Failure::usage(format!(
                        "cannot read the value from {}: {e}",
                        path.display()
                    ))
                })?),
                (None, None) => {
                    let mut value = Vec::new();
                    std::io::stdin().read_to_end(&mut value).map_err(|e| {
                        Failure::usage(format!("cannot read the value from stdin: {e}"))
                    })?;
                    Bytes::from(value)
                }
            };
            set(cx, &key, value, ttl, lease).await
        }
        Command::Del { key, prefix, to } => del(cx, &key, prefix, to.as_deref()).await,
        Command::Ls {
            prefix,
            keys_only,
            limit,
            rev,
        } => ls(cx, &prefix, keys_only, limit, rev).await,
        Command::Cas {
            key,
            value,
            expect_rev,
        } => cas(cx, &key, &value, expect_rev).await,
        Command::Txn { file } => txn(cx, file.as_deref()).await,
        Command::Watch {
            key,
            prefix,
            from_rev,
        } => watch(cx, &key, prefix, from_rev).await,
        Command::Lease(command) => lease::run(cx, command).await,
        Command::Backup { file } => backup::backup(cx, &file).await,
        Command::Compact { revision } => compact(cx, revision).await,
        Command::Bench(_) | Command::Completions { .. } | Command::Man => {
            unreachable!("kv bench, completions and man run before connecting")
        }
    }
}

async fn get(cx: &mut Context, key: &str, with_revisions: bool, rev: u64) -> Outcome {
    let bytes = cx.bytes(key)?;
    let Some(kv) = cx.client.get(bytes, rev).await? else {
        return Err(ClientError::KeyNotFound {
            key: key.to_owned(),
        }
        .into());
    };
    if cx.json {
        output::json(&cx.kv_json(&kv, true)?);
    } else if with_revisions {
        output::line(&[b"key: ", &cx.raw(&kv.key)]);
        output::line(&[b"value: ", &cx.raw(&kv.value)]);
        outln!("create_revision: {}", kv.create_revision);
        outln!("mod_revision: {}", kv.mod_revision);
        outln!("version: {}", kv.version);
        outln!("lease: {}", kv.lease);
    } else {
        output::line(&[&cx.raw(&kv.value)]);
    }
    Ok(())
}

async fn set(
    cx: &mut Context,
    key: &str,
    value: Bytes,
    ttl: Option<Duration>,
    lease: Option<i64>,
) -> Outcome {
    let request = pb::PutRequest {
        key: cx.bytes(key)?,
        value,
        lease: lease.unwrap_or(0),
        ttl_ms: ttl.map_or(0, crate::client::ttl_ms),
        ..Default::default()
    };
    let reply = cx.client.put(request).await?;
    let revision = reply.header.map_or(0, |h| h.revision);
    if cx.json {
        output::json(&json!({"revision": revision, "lease": reply.lease}));
    } else if ttl.is_some() {
        // The bare id, as `kv lease grant` prints it, so either feeds
        // `kv lease keep-alive "$(...)"`.
        outln!("{}", reply.lease);
    }
    Ok(())
}

async fn del(cx: &mut Context, key: &str, prefix: bool, to: Option<&str>) -> Outcome {
    let request = pb::DeleteRequest {
        key: cx.bytes(key)?,
        range_end: match to {
            Some(end) => cx.bytes(end)?,
            None => Bytes::new(),
        },
        prefix,
        ..Default::default()
    };
    let reply = cx.client.delete(request).await?;
    if cx.json {
        output::json(&json!({
            "deleted": reply.deleted,
            "revision": reply.header.map_or(0, |h| h.revision),
        }));
    } else {
        outln!("{}", reply.deleted);
    }
    Ok(())
}

async fn ls(
    cx: &mut Context,
    prefix: &str,
    keys_only: bool,
    limit: Option<u64>,
    rev: u64,
) -> Outcome {
    let mut token = Bytes::new();
    let mut listed = Vec::new();
    let mut left = limit.unwrap_or(u64::MAX);
    let prefix = cx.bytes(prefix)?;
    while left > 0 {
        let page = cx
            .client
            .range(pb::RangeRequest {
                key: prefix.clone(),
                prefix: true,
                // The server's page size (--max-range-page): any other
                // could be above its limit.
                limit: 0,
                // Later pages carry the first page's revision in the token.
                revision: if token.is_empty() { rev } else { 0 },
                page_token: token,
                keys_only,
                ..Default::default()
            })
            .await?;
        let take = page
            .kvs
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        left -= take as u64;
        for kv in &page.kvs[..take] {
            if cx.json {
                listed.push(cx.kv_json(kv, !keys_only)?);
            } else if keys_only {
                output::line(&[&cx.raw(&kv.key)]);
            } else {
                output::line(&[&cx.raw(&kv.key), b"\t", &cx.raw(&kv.value)]);
            }
        }
        if !page.more {
            break;
        }
        token = page.next_page_token;
    }
    if cx.json {
        output::json(&Json::Array(listed));
    }
    Ok(())
}

async fn compact(cx: &mut Context, revision: u64) -> Outcome {
    let current = cx.client.compact(revision).await?;
    if cx.json {
        output::json(&json!({ "compacted": revision, "revision": current }));
    } else {
        outln!("compacted revision {revision}");
    }
    Ok(())
}

async fn cas(cx: &mut Context, key: &str, value: &str, expect_rev: u64) -> Outcome {
    let request = pb::PutRequest {
        key: cx.bytes(key)?,
        value: cx.bytes(value)?,
        condition: Some(pb::Condition {
            check: Some(pb::condition::Check::ModRevision(expect_rev)),
        }),
        ..Default::default()
    };
    let reply = cx.client.put(request).await?;
    let revision = reply.header.map_or(0, |h| h.revision);
    if cx.json {
        let current = match (&reply.prev_kv, reply.succeeded) {
            (Some(kv), false) => cx.kv_json(kv, true)?,
            _ => Json::Null,
        };
        output::json(
            &json!({"succeeded": reply.succeeded, "revision": revision, "current": current}),
        );
    }
    if reply.succeeded {
        return Ok(());
    }
    let now = match &reply.prev_kv {
        Some(kv) => format!("is at revision {}", kv.mod_revision),
        None => "does not exist".to_owned(),
    };
    Err(Failure {
        code: exit::COMPARE_FAILED,
        message: format!("compare failed: key {key:?} {now}, not at revision {expect_rev}"),
    })
}

async fn txn(cx: &mut Context, file: Option<&str>) -> Outcome {
    let text = match file {
        None | Some("-") => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map_err(|e| {
                Failure::usage(format!("cannot read the transaction from stdin: {e}"))
            })?;
            text
        }
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| Failure::usage(format!("cannot read {path}: {e}")))?,
    };
    let request = txn_file::parse(&text, cx.encoding).map_err(Failure::usage)?;
    let reply = cx.client.txn(request).await?;
    let revision = reply.header.map_or(0, |h| h.revision);
    let mut responses = Vec::new();
    if !cx.json {
        outln!(
            "{}",
            if reply.succeeded {
                "SUCCESS"
            } else {
                "FAILURE"
            }
        );
    }
    for response in &reply.responses {
        use pb::op_response::Response;
        match &response.response {
            Some(Response::Put(_)) if cx.json => responses.push(json!({"put": "ok"})),
            Some(Response::Put(_)) => outln!("OK"),
            Some(Response::Delete(delete)) if cx.json => {
                responses.push(json!({"deleted": delete.deleted}))
            }
            Some(Response::Delete(delete)) => outln!("{}", delete.deleted),
            Some(Response::Range(range)) if cx.json => {
                let kvs = range
                    .kvs
                    .iter()
                    .map(|kv| cx.kv_json(kv, true))
                    .collect::<Result<Vec<_>, _>>()?;
                responses.push(json!({"kvs": kvs}));
            }
            Some(Response::Range(range)) => {
                for kv in &range.kvs {
                    output::line(&[&cx.raw(&kv.key), b"\t", &cx.raw(&kv.value)]);
                }
            }
            None => {}
        }
    }
    if cx.json {
        output::json(
            &json!({"succeeded": reply.succeeded, "revision": revision, "responses": responses}),
        );
    }
    Ok(())
}

async fn watch(cx: &mut Context, key: &str, prefix: bool, from_rev: Option<u64>) -> Outcome {
    let request = pb::WatchRequest {
        key: cx.bytes(key)?,
        prefix,
        start_revision: from_rev.unwrap_or(0),
        ..Default::default()
    };
    let mut stream = cx.client.watch(request).await?;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let reader_gone = output::reader_gone();
    tokio::pin!(reader_gone);
    loop {
        let response = tokio::select! {
            _ = &mut interrupted => return Ok(()),
            () = &mut reader_gone => return Ok(()),
            next = stream.next() => match next {
                Some(Ok(response)) => response,
                Some(Err(status)) => return Err(cx.client.stream_error(status).into()),
                None => return Ok(()),
            },
        };
        for event in response.events {
            let Some(kv) = event.kv.as_ref() else {
                continue;
            };
            let kind = match pb::event::Kind::try_from(event.kind) {
                Ok(pb::event::Kind::Put) => "PUT",
                Ok(pb::event::Kind::Delete) => "DELETE",
                Ok(pb::event::Kind::Expire) => "EXPIRE",
                Err(_) => "UNKNOWN",
            };
            if cx.json {
                if let Some(object) = crate::http::json::event(&event, cx.bytes_as()) {
                    output::json(&object);
                }
            } else if kind == "PUT" {
                let revision = kv.mod_revision.to_string();
                output::line(&[
                    revision.as_bytes(),
                    b" PUT ",
                    &cx.raw(&kv.key),
                    b" ",
                    &cx.raw(&kv.value),
                ]);
            } else {
                let revision = kv.mod_revision.to_string();
                output::line(&[
                    revision.as_bytes(),
                    b" ",
                    kind.as_bytes(),
                    b" ",
                    &cx.raw(&kv.key),
                ]);
            }
        }
    }
}
