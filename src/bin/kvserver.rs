//! `kvserver`: the key/value gRPC server.
//!
//! Thin on purpose: parse flags, set up logging, bind the listener, announce the
//! address, and hand everything to `keyvalue::server::run`.

/// mimalloc instead of the system allocator: a request allocates and frees
/// dozens of small buffers (HTTP/2 frames, headers, messages), and glibc's
/// malloc took about a tenth of the server's CPU in profiles. Built without
/// transparent huge pages (`Cargo.toml`), which would make every byte it
/// allocates resident, idle connections' untouched buffers included.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::future::Future;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, Parser, ValueEnum};
use keyvalue::config_file;
use keyvalue::connection::Deadlines;
use keyvalue::duration::parse_duration;
use keyvalue::grpc::{Limits, Tokens};
use keyvalue::server::{self, Config, Listeners};
use keyvalue::shutdown;
use keyvalue::storage::{
    AutoCompaction, DiskStore, EtcdConfig, EtcdStore, MemoryStore, Store, SyncPolicy, WatchLimits,
};
use keyvalue::tls::{TlsFiles, TlsSetup};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// The key/value gRPC server.
///
/// Serves, over the same data, the tutorial's `simplekeyvalue.KeyValue` (Set,
/// Get) and the full API `keyvalue.v1.KV` (revisions, delete, range,
/// transactions, leases, watch, snapshots; docs/API.md), etcd's v3 API
/// (docs/ETCD.md), gRPC health and reflection, and gRPC-Web for browsers, all
/// on one port; with --http-listen, a browser console, a JSON API and
/// Prometheus metrics on another. Every flag can also be set by its environment variable or in
/// the --config file (flag > environment > file > default). Once it accepts
/// connections it prints `listening on <address>` on stderr. SIGINT or SIGTERM
/// stop it gracefully: in-flight requests finish, then it exits 0. Log
/// verbosity follows RUST_LOG (default `info`).
#[derive(Parser, Debug)]
#[command(name = "kvserver", version)]
struct Args {
    /// Address to listen on. The default is loopback only; use 0.0.0.0:50051 to
    /// serve all interfaces. Port 0 picks a free port.
    #[arg(long, env = "KVSERVER_LISTEN", default_value = "127.0.0.1:50051")]
    listen: String,

    /// Where keys are stored.
    #[arg(long, env = "KVSERVER_BACKEND", value_enum, default_value_t = Backend::Disk)]
    backend: Backend,

    /// Directory of the disk backend's data, created if missing. One kvserver
    /// at a time may use it.
    #[arg(
        long,
        env = "KVSERVER_DATA_DIR",
        default_value = "./kvdata",
        global = true
    )]
    data_dir: PathBuf,

    #[command(subcommand)]
    command: Option<ServerCommand>,

    /// Client URLs of the etcd cluster's members, comma-separated
    /// (--backend etcd). Name every member: calls move to the next one when
    /// one fails.
    #[arg(
        long,
        env = "KVSERVER_ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    etcd_endpoints: Vec<String>,

    /// Prefix of every key inside etcd, so that one cluster can serve other
    /// users too (e.g. `kv/`); clients never see it.
    #[arg(long, env = "KVSERVER_ETCD_PREFIX", default_value = "")]
    etcd_prefix: String,

    /// Longest one call to etcd may take, failover included; past it the
    /// client gets UNAVAILABLE.
    #[arg(long, env = "KVSERVER_ETCD_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    etcd_timeout: Duration,

    /// etcd user to authenticate as, when the cluster has auth enabled (with
    /// --etcd-password-file).
    #[arg(long, env = "KVSERVER_ETCD_USER", requires = "etcd_password_file")]
    etcd_user: Option<String>,

    /// File whose first line is the password of --etcd-user.
    #[arg(long, env = "KVSERVER_ETCD_PASSWORD_FILE", requires = "etcd_user")]
    etcd_password_file: Option<PathBuf>,

    /// PEM CA of the etcd members' certificates (https:// endpoints).
    #[arg(long, env = "KVSERVER_ETCD_CA_FILE")]
    etcd_ca_file: Option<PathBuf>,

    /// PEM client certificate for etcd members that require one (with
    /// --etcd-key).
    #[arg(long, env = "KVSERVER_ETCD_CERT", requires = "etcd_key")]
    etcd_cert: Option<PathBuf>,

    /// The PEM private key of --etcd-cert.
    #[arg(long, env = "KVSERVER_ETCD_KEY", requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,

    /// When the disk backend acknowledges a write: `always` (after fsync; writes
    /// that arrive together share one fsync), or `interval=<ms>` (before fsync,
    /// with an fsync at least every <ms>: a crash of the process or the machine
    /// can lose the writes of the last interval).
    #[arg(long, env = "KVSERVER_SYNC", default_value = "always", value_parser = SyncPolicy::parse)]
    sync: SyncPolicy,

    /// Longest accepted key, in bytes.
    #[arg(long, env = "KVSERVER_MAX_KEY_BYTES", default_value_t = Limits::default().max_key_bytes as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_key_bytes: u32,

    /// Longest accepted value, in bytes.
    #[arg(long, env = "KVSERVER_MAX_VALUE_BYTES", default_value_t = Limits::default().max_value_bytes as u32)]
    max_value_bytes: u32,

    /// Most keys in one BatchGet or BatchPut.
    #[arg(long, env = "KVSERVER_MAX_BATCH_KEYS", default_value_t = Limits::default().max_batch_keys as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_batch_keys: u32,

    /// Most keys in one page of Range (and the page size when none is asked).
    #[arg(long, env = "KVSERVER_MAX_RANGE_PAGE", default_value_t = Limits::default().max_range_page as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_range_page: u32,

    /// About the most bytes of keys and values in one page of Range: a page
    /// stops before the key that would pass it (saying there is more), with
    /// at least one key, however large.
    #[arg(long, env = "KVSERVER_MAX_RANGE_PAGE_BYTES", default_value_t = Limits::default().max_range_page_bytes as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_range_page_bytes: u32,

    /// Most operations in one branch of a Txn (and most compares).
    #[arg(long, env = "KVSERVER_MAX_TXN_OPS", default_value_t = Limits::default().max_txn_ops as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_txn_ops: u32,

    /// Most watches open at once, over all clients.
    #[arg(long, env = "KVSERVER_MAX_WATCHERS", default_value_t = WatchLimits::default().max_watchers as u32)]
    max_watchers: u32,

    /// Revisions of history kept, for reads at a past revision and watches
    /// from one: once the history holds twice this many revisions, it is
    /// compacted to this many. 0: only the Compact RPC (`kv compact`)
    /// compacts.
    #[arg(long, env = "KVSERVER_WATCH_HISTORY", default_value_t = WatchLimits::default().history as u32)]
    watch_history: u32,

    /// Revisions a watcher that does not read may fall behind the newest
    /// before its watch ends with RESOURCE_EXHAUSTED (it may resume).
    #[arg(long, env = "KVSERVER_WATCH_MAX_LAG", default_value_t = WatchLimits::default().max_lag,
          value_parser = clap::value_parser!(u64).range(1..))]
    watch_max_lag: u64,
    /// Automatic compaction, as etcd's: `periodic` keeps
    /// --auto-compaction-retention of history (a duration), `revision` that
    /// many revisions. Default: periodic, an hour (the disk and memory
    /// backends); none over etcd, whose own settings rule its history.
    #[arg(long, env = "KVSERVER_AUTO_COMPACTION_MODE", value_parser = ["periodic", "revision"])]
    auto_compaction_mode: Option<String>,

    /// What --auto-compaction-mode keeps: a duration for periodic (`30m`,
    /// `1h`; a bare number counts hours, as etcd's), a number of revisions
    /// for revision; 0 turns it off.
    #[arg(long, env = "KVSERVER_AUTO_COMPACTION_RETENTION")]
    auto_compaction_retention: Option<String>,

    /// Bytes of history kept at most (keys and values of the versions that
    /// reads at a past revision and watches from one can see): beyond it the
    /// oldest is compacted, whatever --auto-compaction-retention says. 0: no
    /// bound. Not applied over etcd (--backend etcd), whose own settings rule.
    #[arg(long, env = "KVSERVER_HISTORY_MAX_BYTES", default_value_t = keyvalue::storage::DEFAULT_HISTORY_MAX_BYTES)]
    history_max_bytes: u64,

    /// Requests worked on at once; one more gets RESOURCE_EXHAUSTED at once
    /// instead of waiting in a queue.
    #[arg(long, env = "KVSERVER_MAX_IN_FLIGHT", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_in_flight: u32,

    /// Bytes of gRPC requests held at once, over all requests in flight: a
    /// request whose body would take more gets RESOURCE_EXHAUSTED at once
    /// (bounds the memory of many large or stalled requests together).
    #[arg(long, env = "KVSERVER_MAX_REQUEST_BYTES_IN_FLIGHT",
          default_value_t = keyvalue::grpc::DEFAULT_MAX_REQUEST_BYTES_IN_FLIGHT as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_request_bytes_in_flight: u64,

    /// Client connections open at once; more are closed as they arrive.
    #[arg(long, env = "KVSERVER_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,

    /// Requests worked on at once on one connection; one more gets
    /// RESOURCE_EXHAUSTED at once. Counted before --max-in-flight, so one
    /// client cannot take every place.
    #[arg(long, env = "KVSERVER_MAX_IN_FLIGHT_PER_CONNECTION", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_in_flight_per_connection: u32,

    /// A new connection that sends no request for this long is closed (a
    /// silent socket, a half-sent preface). 0 turns it off.
    #[arg(long, env = "KVSERVER_FIRST_REQUEST_TIMEOUT", default_value = "20s",
          value_parser = parse_duration)]
    first_request_timeout: Duration,

    /// A connection with no request open for this long is closed (clients
    /// reconnect when they need to). 0 turns it off.
    #[arg(long, env = "KVSERVER_IDLE_TIMEOUT", default_value = "5m",
          value_parser = parse_duration)]
    idle_timeout: Duration,

    /// Longest a request may take from its headers to its answer, the
    /// arrival of its body included (a watch: until it is set up); past it
    /// the client gets CANCELLED. 0 turns it off.
    #[arg(long, env = "KVSERVER_REQUEST_TIMEOUT", default_value = "30s",
          value_parser = parse_duration)]
    request_timeout: Duration,

    /// A connection whose answers wait unread this long (its client reads
    /// none of them: they hold bytes of --max-request-bytes-in-flight) is
    /// closed. 0 turns it off.
    #[arg(long, env = "KVSERVER_ANSWER_STALL_TIMEOUT", default_value = "60s",
          value_parser = parse_duration)]
    answer_stall_timeout: Duration,

    /// How often the server pings each connection (HTTP/2 PING) to find
    /// peers that are gone. 0 turns pings off.
    #[arg(long, env = "KVSERVER_KEEPALIVE_INTERVAL", default_value = "60s",
          value_parser = parse_duration)]
    keepalive_interval: Duration,

    /// How long a ping may go unanswered before the connection is closed.
    #[arg(long, env = "KVSERVER_KEEPALIVE_TIMEOUT", default_value = "20s",
          value_parser = parse_duration)]
    keepalive_timeout: Duration,

    /// A snapshot (`kv backup`) whose client reads nothing for this long is
    /// ended (DEADLINE_EXCEEDED): an open snapshot keeps the store's pages
    /// from being reused.
    #[arg(long, env = "KVSERVER_SNAPSHOT_STALL_TIMEOUT", default_value = "60s",
          value_parser = parse_duration)]
    snapshot_stall_timeout: Duration,

    /// Concurrent requests (HTTP/2 streams) per connection.
    #[arg(long, env = "KVSERVER_MAX_CONCURRENT_STREAMS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrent_streams: u32,

    /// Worker threads of the shared runtime (default: one per core): the
    /// HTTP listener, the store's background work, the etcd backend's calls,
    /// and the gRPC listener's connections under --serve-threads 0. Also the
    /// default of --serve-threads.
    #[arg(long, env = "KVSERVER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,

    /// Threads that serve the gRPC port's connections, each connection
    /// wholly on one of them (thread-per-core; default: --threads, or one
    /// per core). 0 serves them on the shared runtime instead (tokio's
    /// work stealing), at more CPU per request (docs/PERFORMANCE.md).
    #[arg(long, env = "KVSERVER_SERVE_THREADS", value_parser = clap::value_parser!(u16))]
    serve_threads: Option<u16>,

    /// On SIGINT/SIGTERM, how long in-flight requests get to finish before the
    /// server exits anyway (e.g. 10s, 500ms).
    #[arg(long, env = "KVSERVER_SHUTDOWN_GRACE", default_value = "10s",
          value_parser = parse_duration)]
    shutdown_grace: Duration,

    /// Serve TLS with this PEM certificate chain (with --tls-key). Reloaded,
    /// with the key, on SIGHUP, without dropping the listener.
    #[arg(long, env = "KVSERVER_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, env = "KVSERVER_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Require client certificates signed by this PEM CA (mutual TLS).
    #[arg(long, env = "KVSERVER_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,

    /// Serve HTTP on ADDR (off by default): the browser console at /, the
    /// JSON API under /v1/ (docs/API.md), Prometheus metrics at /metrics, and
    /// /healthz and /readyz; with TLS and tokens as on the gRPC port. Port 0
    /// picks a free port, announced as `http on <url>`.
    #[arg(long, env = "KVSERVER_HTTP_LISTEN")]
    http_listen: Option<String>,

    /// Let browser pages from ORIGIN (`https://app.example.com`, or `*` for
    /// any) call the gRPC port with gRPC-Web: CORS preflights are answered
    /// and grpc-status is exposed. Repeat it or separate origins by commas.
    /// Off by default (no CORS headers: same-origin only). Tokens still apply.
    #[arg(
        long,
        env = "KVSERVER_GRPC_WEB_ALLOW_ORIGIN",
        value_delimiter = ',',
        value_parser = keyvalue::cors::parse_origin
    )]
    grpc_web_allow_origin: Vec<String>,

    /// The old name of --http-listen, kept so existing setups go on working.
    #[arg(long, env = "KVSERVER_METRICS_LISTEN", conflicts_with = "http_listen")]
    metrics_listen: Option<String>,

    /// Require a token: the file's lines are `TOKEN ROLE [PREFIX]`, ROLE `read`
    /// or `readwrite`, PREFIX confining the token to keys under it. Clients
    /// send `authorization: Bearer TOKEN`.
    #[arg(long, env = "KVSERVER_AUTH_TOKEN_FILE")]
    auth_token_file: Option<PathBuf>,

    /// Read settings from this TOML file (flag names as keys); flags and
    /// environment variables take precedence over it.
    #[arg(long, env = "KVSERVER_CONFIG")]
    config: Option<PathBuf>,

    /// Print the effective settings as a config file, and exit.
    #[arg(long)]
    print_config: bool,

    /// Log lines as text for people, or as one JSON object each for log
    /// pipelines.
    #[arg(long, env = "KVSERVER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Log every request (costs throughput): the tutorial's service with the
    /// tutorial's lines (`serving get request for key "weather"`), every other
    /// API by its method (`serving keyvalue.v1.KV/Put request`).
    #[arg(long, env = "KVSERVER_LOG_REQUESTS")]
    log_requests: bool,
}

/// What kvserver can do besides serving.
#[derive(clap::Subcommand, Debug)]
enum ServerCommand {
    /// Build a new data dir (--data-dir, which must not hold a database yet)
    /// from a backup written by `kv backup`, then exit.
    Restore {
        /// The backup file.
        file: PathBuf,
    },
    /// Let a data dir whose database lost writes that were acknowledged
    /// (kvserver refuses to start on it, and says so) start again: the
    /// store goes on after the last acknowledged revision, so none is
    /// given twice; the lost writes stay lost. Then exit.
    AcceptLostWrites,
    /// Verify the data dir (--data-dir) of a stopped kvserver: read every
    /// page of its database and check its checksum, its format, and that it
    /// holds every write acknowledged as durable. Prints one line and exits
    /// 0 if sound; 1 with the reason if not. A start verifies the whole file
    /// only when it was not closed cleanly or changed since; run this to
    /// look for damage at rest (a failing disk), e.g. before a backup.
    Check,
    /// Print kvserver's shell completion script, then exit.
    Completions {
        /// The shell.
        shell: keyvalue::cli_docs::Shell,
    },
    /// Print kvserver's man page (roff), then exit.
    Man,
}

/// Log formats.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Storage backends.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Backend {
    /// On disk in --data-dir: every acknowledged write survives a crash.
    Disk,
    /// In memory: fast, and lost when the server stops.
    Memory,
    /// In an etcd cluster (--etcd-endpoints): replicated, and shared by every
    /// kvserver pointed at it.
    Etcd,
}

fn main() -> ExitCode {
    let command = Args::command();
    let argv = match config_file::merge(&command, std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(message) => {
            // A mistake of the configuration, as a wrong flag is.
            eprintln!("kvserver: {message} (see kvserver --help)");
            return ExitCode::from(2);
        }
    };
    let args = match keyvalue::usage::parse::<Args>(argv.clone()) {
        Ok(args) => args,
        Err(code) => return code,
    };
    match &args.command {
        Some(ServerCommand::Completions { shell }) => {
            return keyvalue::cli_docs::print(&keyvalue::cli_docs::completions(
                Args::command(),
                *shell,
            ));
        }
        Some(ServerCommand::Man) => {
            return keyvalue::cli_docs::print(&keyvalue::cli_docs::man_page(Args::command()));
        }
        _ => {}
    }
    // Flags that depend on each other, checked before anything starts.
    if let Err(message) = auto_compaction(&args) {
        eprintln!("kvserver: {message} (see kvserver --help)");
        return ExitCode::from(2);
    }
    if args.print_config {
        // A reader that has gone (`| true`) is no error; Rust's print! would panic.
        let rendered = config_file::render(&command, argv);
        return match std::io::Write::write_all(&mut std::io::stdout(), rendered.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                eprintln!("kvserver: cannot write the configuration: {e}");
                ExitCode::FAILURE
            }
            _ => ExitCode::SUCCESS,
        };
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads as usize);
    }
    let outcome = match runtime.enable_all().build() {
        Ok(runtime) => runtime.block_on(serve(args)),
        Err(e) => Err(format!("cannot start the async runtime: {e}")),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("kvserver: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `kvserver restore FILE`: the backup becomes the data dir.
fn restore(file: &std::path::Path, data_dir: &std::path::Path) -> Result<(), String> {
    let input = std::fs::File::open(file)
        .map_err(|e| format!("cannot read the backup {}: {e}", file.display()))?;
    let backup = keyvalue::backup::read(std::io::BufReader::new(input))
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let revision = backup.revision;
    let keys = backup.restore_into(data_dir)?;
    eprintln!(
        "restored {keys} keys at revision {revision} into {}",
        data_dir.display()
    );
    Ok(())
}

/// `kvserver accept-lost-writes`: see `DiskStore::accept_lost_writes`.
fn accept_lost_writes(data_dir: &std::path::Path) -> Result<(), String> {
    match DiskStore::accept_lost_writes(data_dir).map_err(|e| e.to_string())? {
        Some((first, last)) => eprintln!(
            "revisions {first} to {last} were acknowledged and are lost; {} goes on after \
             revision {last}",
            data_dir.display()
        ),
        None => eprintln!(
            "{} lost no acknowledged write: nothing changed",
            data_dir.display()
        ),
    }
    Ok(())
}

async fn serve(args: Args) -> Result<(), String> {
    match &args.command {
        Some(ServerCommand::Restore { file }) => return restore(file, &args.data_dir),
        Some(ServerCommand::AcceptLostWrites) => return accept_lost_writes(&args.data_dir),
        Some(ServerCommand::Check) => {
            println!(
                "{}",
                DiskStore::check(&args.data_dir).map_err(|e| e.to_string())?
            );
            return Ok(());
        }
        _ => {}
    }
    let shutdown =
        shutdown::on_signal().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let auth = match &args.auth_token_file {
        Some(path) => Some(Arc::new(Tokens::load(path)?)),
        None => None,
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(TlsSetup::load(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.tls_client_ca.clone(),
        })?)),
        _ => None,
    };
    let watch_limits = WatchLimits {
        history: args.watch_history as usize,
        max_watchers: args.max_watchers as usize,
        max_lag: args.watch_max_lag,
    };
    // The store opens first: a data dir that cannot be used stops the server
    // before it ever announces an address.
    match args.backend {
        Backend::Disk => {
            let store = DiskStore::open_with(&args.data_dir, args.sync, watch_limits)
                .map_err(|e| e.to_string())?;
            serve_store(store, &args, auth, tls, shutdown).await
        }
        Backend::Memory => {
            let store = MemoryStore::with_watch_limits(watch_limits);
            serve_store(store, &args, auth, tls, shutdown).await
        }
        Backend::Etcd => {
            let store = EtcdStore::connect(&etcd_config(&args)?, watch_limits).await?;
            serve_store(store, &args, auth, tls, shutdown).await
        }
    }
}

/// `--auto-compaction-mode` and `--auto-compaction-retention`, with the
/// backend's default when neither is given.
fn auto_compaction(args: &Args) -> Result<AutoCompaction, String> {
    match (&args.auto_compaction_mode, &args.auto_compaction_retention) {
        (None, None) if matches!(args.backend, Backend::Etcd) => Ok(AutoCompaction::Off),
        (None, None) => Ok(AutoCompaction::DEFAULT),
        (mode, retention) => AutoCompaction::parse(
            mode.as_deref().unwrap_or("periodic"),
            retention.as_deref().unwrap_or("1h"),
        ),
    }
}

/// The `--etcd-*` flags.
fn etcd_config(args: &Args) -> Result<EtcdConfig, String> {
    let credentials = match (&args.etcd_user, &args.etcd_password_file) {
        (Some(user), Some(file)) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let password = text.lines().next().unwrap_or_default().to_owned();
            Some((user.clone(), password))
        }
        _ => None,
    };
    Ok(EtcdConfig {
        endpoints: args.etcd_endpoints.clone(),
        prefix: args.etcd_prefix.clone().into_bytes(),
        timeout: args.etcd_timeout,
        credentials,
        ca_file: args.etcd_ca_file.clone(),
        client_identity: args.etcd_cert.clone().zip(args.etcd_key.clone()),
    })
}

/// What names this server's data, for its etcd member id: the data dir
/// (canonical, so `./kvdata` and its full path are one member), or the etcd
/// cluster and prefix; the memory backend keeps nothing, so its id follows
/// the address.
fn member_seed(args: &Args) -> Option<String> {
    match args.backend {
        Backend::Disk => {
            let dir =
                std::fs::canonicalize(&args.data_dir).unwrap_or_else(|_| args.data_dir.clone());
            Some(format!("disk {}", dir.display()))
        }
        Backend::Etcd => Some(format!(
            "etcd {} prefix {}",
            args.etcd_endpoints.join(","),
            args.etcd_prefix
        )),
        Backend::Memory => None,
    }
}

/// `None` for a duration of zero (the flag's "off").
fn nonzero(duration: Duration) -> Option<Duration> {
    (!duration.is_zero()).then_some(duration)
}

/// The connection deadlines of the flags; a zero one never expires.
fn deadlines(first_request: Duration, idle: Duration, answer_stall: Duration) -> Option<Deadlines> {
    const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);
    if first_request.is_zero() && idle.is_zero() && answer_stall.is_zero() {
        return None;
    }
    Some(Deadlines {
        first_request: nonzero(first_request).unwrap_or(NEVER),
        idle: nonzero(idle).unwrap_or(NEVER),
        answer_stall: nonzero(answer_stall).unwrap_or(NEVER),
    })
}

async fn serve_store<S: Store>(
    store: S,
    args: &Args,
    auth: Option<Arc<Tokens>>,
    tls: Option<Arc<TlsSetup>>,
    shutdown: impl Future<Output = ()> + 'static,
) -> Result<(), String> {
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    let http = match args.http_listen.as_ref().or(args.metrics_listen.as_ref()) {
        Some(http_addr) => {
            let listener = TcpListener::bind(http_addr)
                .await
                .map_err(|e| format!("cannot listen on {http_addr} for HTTP: {e}"))?;
            let bound = listener
                .local_addr()
                .map_err(|e| format!("cannot read the HTTP address: {e}"))?;
            let scheme = if tls.is_some() { "https" } else { "http" };
            eprintln!("http on {scheme}://{bound}/");
            eprintln!("metrics on {scheme}://{bound}/metrics");
            Some(listener)
        }
        None => None,
    };
    // The one line scripts and tests wait for; printed plainly, not through the
    // logger, so its format never depends on RUST_LOG.
    eprintln!("listening on {addr}");
    if !addr.ip().is_loopback() && auth.is_none() && tls.is_none() {
        tracing::warn!(
            "{addr} is reachable from other machines and this server has no TLS or \
             authentication: anyone who can reach it can read and write every key \
             (see --auth-token-file)"
        );
    }

    let config = Config {
        limits: Limits {
            max_key_bytes: args.max_key_bytes as usize,
            max_value_bytes: args.max_value_bytes as usize,
            max_batch_keys: args.max_batch_keys as usize,
            max_range_page: args.max_range_page as usize,
            max_range_page_bytes: args.max_range_page_bytes as usize,
            max_txn_ops: args.max_txn_ops as usize,
        },
        log_requests: args.log_requests,
        auth,
        tls,
        max_in_flight: Some(args.max_in_flight as usize),
        max_connections: Some(args.max_connections as usize),
        max_in_flight_per_connection: args.max_in_flight_per_connection as usize,
        max_request_bytes_in_flight: Some(
            usize::try_from(args.max_request_bytes_in_flight).unwrap_or(usize::MAX),
        ),
        max_concurrent_streams: args.max_concurrent_streams,
        serve_threads: args
            .serve_threads
            .or(args.threads)
            .map_or_else(server::default_serve_threads, usize::from),
        deadlines: deadlines(
            args.first_request_timeout,
            args.idle_timeout,
            args.answer_stall_timeout,
        ),
        request_timeout: nonzero(args.request_timeout),
        keepalive_interval: nonzero(args.keepalive_interval),
        keepalive_timeout: args.keepalive_timeout,
        snapshot_stall: args.snapshot_stall_timeout,
        shutdown_grace: args.shutdown_grace,
        member_seed: member_seed(args),
        grpc_web_origins: args.grpc_web_allow_origin.clone(),
        auto_compaction: auto_compaction(args)?,
        history_max_bytes: if matches!(args.backend, Backend::Etcd) {
            0
        } else {
            args.history_max_bytes
        },
    };
    let listeners = Listeners {
        grpc: listener,
        http,
    };
    server::run(listeners, store, config, shutdown)
        .await
        .map_err(|e| format!("server failed: {e}"))
}
