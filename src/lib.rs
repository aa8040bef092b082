//! keyvalue: a gRPC key/value service.
//!
//! It serves the tutorial's contract (`proto/api.proto`, package
//! `simplekeyvalue`, service `KeyValue` with `Set` and `Get`) unchanged, so that
//! clients generated from that file by anyone work against it.
//!
//! # Module map
//!
//! - [`storage`]: the [`storage::Store`] trait, its error type and the backends
//!   (memory, disk, and etcd: kvserver as a stateless gateway over an etcd
//!   cluster). Knows nothing of our gRPC API; the etcd backend is a gRPC
//!   client of etcd's.
//! - [`grpc`]: the gRPC services: validate a request, delegate to the store, map
//!   the error to a status. The only layer that turns storage results into wire
//!   messages.
//! - `etcd_api`: etcd's v3 API (KV, Watch, Lease, Maintenance, Cluster)
//!   over the same store, for etcd's own clients: thin adapters like
//!   [`grpc`]'s, rendering errors with etcd's exact messages.
//! - [`server`]: builds the tonic server from a store and a [`server::Config`] and
//!   runs it on a listener until a shutdown future resolves. `kvserver` and the
//!   tests share this one entry point.
//! - [`metrics`]: Prometheus counters and their rendering, and the layer
//!   that counts gRPC requests (no sockets).
//! - [`http`]: the HTTP listener (`--http-listen`): `/metrics`, probes, the
//!   JSON API with Server-Sent Events, and the browser console.
//! - `transport`: accepting connections for every listener: the connection
//!   limit, connection counting, the pause after a failed accept.
//! - `serving`: the gRPC listener's connections served thread-per-core
//!   (`--serve-threads`), each wholly on one thread's own runtime.
//! - [`shutdown`]: the shutdown signal (SIGINT / SIGTERM) as a future.
//! - [`tls`]: rustls server setup, certificate reload, TLS connections.
//! - [`cli_docs`]: shell completions and man pages of both binaries.
//! - [`client`]: a typed async client of the tutorial API, used by `kv`.
//! - [`kv_cli`]: the `kv` command line: flags, commands, text and JSON output.
//! - [`backup`]: the backup file of `kv backup` and `kvserver restore`.
//! - [`bench`]: `kv bench`, a closed-loop load generator that verifies every
//!   answer and reports throughput and latency percentiles.
//! - [`config_file`]: `kvserver --config FILE` merged under flags and the
//!   environment, and `--print-config`.
//! - [`connection`]: per-connection state: the deadlines that close a
//!   connection carrying no request, and its requests in flight.
//! - [`durable_fs`]: new directories, files and renames made to survive a
//!   power cut (fsync of the directory).
//! - [`duration`]: parsing `10s`-style durations for command-line flags.
//! - [`usage`]: the command line of both binaries parsed with clap, a
//!   mistake in it reported on one line.
//! - [`proto`]: code generated from `proto/` by `build.rs` (our two APIs, and
//!   the client of etcd's that the etcd backend uses).
//!
//! The binaries are thin: `src/bin/kvserver.rs` parses flags, binds and calls
//! [`server::run`]; `src/bin/kv.rs` calls [`kv_cli::main`].

pub mod backup;
pub mod bench;
pub mod cli_docs;
pub mod client;
pub mod config_file;
pub mod connection;
pub mod cors;
pub mod durable_fs;
pub mod duration;
mod etcd_api;
pub mod grpc;
pub mod http;
pub mod kv_cli;
pub mod metrics;
pub mod proto;
pub mod server;
mod serving;
pub mod shutdown;
pub mod storage;
pub mod tls;
mod transport;
pub mod usage;
