//! What a benchmark run is asked to do, and the checks made before
//! connecting (so a run that cannot work fails in one readable line).

use std::time::Duration;

use crate::client::ConnectOptions;

use super::error::BenchError;
use super::mix::Mix;

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

/// When a run ends.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// After this long.
    After(Duration),
    /// After this many operations in all.
    Requests(u64),
}

/// Checks that `config` can run as asked, before connecting.
pub(super) fn validate(config: &BenchConfig, prefix: &str) -> Result<(), BenchError> {
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
