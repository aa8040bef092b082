//! The store's own background work: deleting the keys of expired leases,
//! and compacting the history automatically, like etcd's
//! `--auto-compaction-mode` and `--auto-compaction-retention`.
//!
//! The server starts [`run`] once beside its listeners and aborts it when it
//! stops; what runs, and how often, is decided here, next to the store.
//!
//! - `periodic` (the default, retention one hour): the history is kept for
//!   the retention: every tenth of it (at most every 5 minutes) the store is
//!   compacted to the revision it was at one retention ago, as etcd does.
//! - `revision`: every tick the store is compacted to its revision minus the
//!   retention, a number of revisions.
//!
//! Either way `--watch-history` caps the number of revisions kept at every
//! write (`storage::apply::retention_target`), so a burst of writes cannot
//! grow the history past it between ticks, and `--history-max-bytes` caps
//! its bytes: every second the store notes its revision and the bytes of
//! keys and values written so far, and compacts to the oldest note after
//! which less than the bound was written. Bytes written bound what the
//! history grew by from above (each version becomes history once replaced),
//! so the history stays within the bound; after a restart only what is
//! written from then on is counted.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, warn};

use super::{Revision, Store, StoreError};

/// How often expired leases are deleted. Readers stop seeing their keys at
/// the deadline anyway; this only bounds how late watchers hear of it.
const EXPIRY_INTERVAL: Duration = Duration::from_millis(100);
/// The longest time between two automatic compactions.
const MAX_COMPACTION_INTERVAL: Duration = Duration::from_secs(300);
/// The shortest: compacting has a cost of its own.
const MIN_COMPACTION_INTERVAL: Duration = Duration::from_millis(100);
/// How often the bytes written are noted for `--history-max-bytes`.
const BYTES_INTERVAL: Duration = Duration::from_secs(1);

/// The default of `--history-max-bytes`.
pub const DEFAULT_HISTORY_MAX_BYTES: u64 = 512 << 20;

/// The automatic compaction of `--auto-compaction-mode` and
/// `--auto-compaction-retention`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Never (the history is bounded by `--watch-history` alone).
    Off,
    /// Keep the history of this long.
    Periodic(Duration),
    /// Keep this many revisions.
    Revision(u64),
}

impl AutoCompaction {
    /// The default for a store that keeps its own history: an hour of it.
    pub const DEFAULT: AutoCompaction = AutoCompaction::Periodic(Duration::from_secs(3600));

    /// Parses the two flags: `mode` is `periodic` or `revision`; the
    /// `retention` of `periodic` is a duration (`30m`, `1h`; a bare number
    /// counts hours, as etcd's does), of `revision` a number of revisions.
    /// A retention of 0 turns automatic compaction off.
    pub fn parse(mode: &str, retention: &str) -> Result<AutoCompaction, String> {
        let retention = retention.trim();
        match mode.trim() {
            "periodic" => {
                let keep = match retention.parse::<u64>() {
                    Ok(hours) => Duration::from_secs(hours.saturating_mul(3600)),
                    Err(_) => crate::duration::parse_duration(retention)
                        .map_err(|e| format!("--auto-compaction-retention {retention:?}: {e}"))?,
                };
                Ok(if keep.is_zero() {
                    AutoCompaction::Off
                } else {
                    AutoCompaction::Periodic(keep)
                })
            }
            "revision" => {
                let keep = retention.parse::<u64>().map_err(|_| {
                    format!(
                        "--auto-compaction-retention {retention:?}: the revision mode keeps a \
                         number of revisions (e.g. 10000)"
                    )
                })?;
                Ok(if keep == 0 {
                    AutoCompaction::Off
                } else {
                    AutoCompaction::Revision(keep)
                })
            }
            other => Err(format!(
                "--auto-compaction-mode {other:?}: expected periodic or revision"
            )),
        }
    }

    /// How often the mode looks at the store.
    fn interval(self) -> Option<Duration> {
        let interval = match self {
            AutoCompaction::Off => return None,
            AutoCompaction::Periodic(keep) => keep / 10,
            AutoCompaction::Revision(_) => Duration::from_secs(60),
        };
        Some(interval.clamp(MIN_COMPACTION_INTERVAL, MAX_COMPACTION_INTERVAL))
    }
}

/// Runs the store's background work forever (the caller aborts it):
/// lease expiry, `auto` compaction, and the bound of `max_history_bytes`
/// on the history (0: none).
pub async fn run<S: Store>(store: Arc<S>, auto: AutoCompaction, max_history_bytes: u64) {
    let timed = async {
        if let Some(interval) = auto.interval() {
            compact(&*store, auto, interval).await;
        }
    };
    let bytes = async {
        if max_history_bytes > 0 {
            bound_bytes(&*store, max_history_bytes, BYTES_INTERVAL).await;
        }
    };
    tokio::join!(expire_leases(&*store), timed, bytes);
}

/// Compacts `store` so that its history holds less than about `max` bytes
/// of keys and values written, looking every `interval`.
async fn bound_bytes<S: Store>(store: &S, max: u64, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // (revision, bytes written until then), oldest first.
    let mut notes: VecDeque<(Revision, u64)> = VecDeque::new();
    loop {
        ticks.tick().await;
        let stats = store.stats();
        notes.push_back((stats.revision, stats.written_bytes));
        // Drop the notes after which too much was written: the oldest one
        // left is where the history may start.
        let mut too_big = false;
        while let Some(&(_, written)) = notes.front() {
            if stats.written_bytes.saturating_sub(written) < max {
                break;
            }
            notes.pop_front();
            too_big = true;
        }
        // The newest note always stays (nothing was written after it).
        let Some(&(target, _)) = notes.front() else {
            continue;
        };
        if !too_big || target <= stats.compacted.max(1) {
            continue;
        }
        match store.compact(target).await {
            Ok(_) => debug!(
                revision = target,
                "compacted the history to bound its bytes"
            ),
            Err(StoreError::Compacted { .. }) => {}
            Err(error) => {
                warn!("compaction at revision {target} for --history-max-bytes failed: {error}")
            }
        }
    }
}

/// Deletes the keys of expired leases.
async fn expire_leases<S: Store>(store: &S) {
    let mut ticks = tokio::time::interval(EXPIRY_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match store.expire_leases().await {
            Ok(0) => {}
            Ok(deleted) => debug!(deleted, "deleted the keys of expired leases"),
            Err(error) => warn!("expiring leases failed: {error}"),
        }
    }
}

/// Compacts the store as `auto` says, looking every `interval`.
async fn compact<S: Store>(store: &S, auto: AutoCompaction, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The store's revision at each tick, oldest first, for `periodic`.
    let mut seen: VecDeque<(Instant, Revision)> = VecDeque::new();
    loop {
        ticks.tick().await;
        let stats = store.stats();
        let now = Instant::now();
        seen.push_back((now, stats.revision));
        let target = match auto {
            AutoCompaction::Off => return,
            AutoCompaction::Periodic(keep) => {
                // The newest revision seen at least `keep` ago.
                let mut target = None;
                while let Some(&(at, revision)) = seen.front() {
                    if now.duration_since(at) < keep {
                        break;
                    }
                    target = Some(revision);
                    seen.pop_front();
                }
                match target {
                    Some(revision) => revision,
                    None => continue,
                }
            }
            AutoCompaction::Revision(keep) => stats.revision.saturating_sub(keep),
        };
        if target <= stats.compacted.max(1) {
            continue;
        }
        match store.compact(target).await {
            Ok(_) => debug!(revision = target, "compacted the history automatically"),
            // Compacted meanwhile (by hand, or by --watch-history): fine.
            Err(StoreError::Compacted { .. }) => {}
            Err(error) => warn!("automatic compaction at revision {target} failed: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::storage::MemoryStore;

    #[test]
    fn modes_and_retentions_parse_as_etcd_s() {
        let parse = AutoCompaction::parse;
        assert_eq!(
            parse("periodic", "30m"),
            Ok(AutoCompaction::Periodic(Duration::from_secs(1800)))
        );
        assert_eq!(
            parse("periodic", "2"),
            Ok(AutoCompaction::Periodic(Duration::from_secs(7200))),
            "a bare number counts hours"
        );
        assert_eq!(
            parse("revision", "1000"),
            Ok(AutoCompaction::Revision(1000))
        );
        assert_eq!(parse("revision", "0"), Ok(AutoCompaction::Off));
        assert!(
            parse("revision", "1h")
                .unwrap_err()
                .contains("number of revisions")
        );
        assert!(
            parse("sometimes", "1h")
                .unwrap_err()
                .contains("periodic or revision")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn periodic_compaction_keeps_the_retention_of_history() {
        let store = Arc::new(MemoryStore::new());
        let keep = Duration::from_millis(500);
        let auto = AutoCompaction::Periodic(keep);
        let task = {
            let store = Arc::clone(&store);
            tokio::spawn(async move { compact(&*store, auto, keep / 10).await })
        };
        // A write every 50 ms for 1.5 s.
        let mut written = Vec::new();
        for i in 0..30 {
            let value = Bytes::from(format!("{i}"));
            written.push(store.put(Bytes::from("k"), value).await.unwrap());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        task.abort();
        let compacted = store.stats().compacted;
        // About half a second of history is kept: not all, not none.
        assert!(compacted > written[5], "compacted at {compacted}");
        assert!(
            compacted <= written[written.len() - 5],
            "compacted at {compacted}"
        );
        assert!(store.get(b"k", compacted).await.unwrap().is_some());
        assert!(store.get(b"k", compacted - 1).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn revision_compaction_keeps_that_many_revisions() {
        let store = Arc::new(MemoryStore::new());
        for i in 0..50 {
            let value = Bytes::from(format!("{i}"));
            store.put(Bytes::from("k"), value).await.unwrap();
        }
        let auto = AutoCompaction::Revision(10);
        let task = {
            let store = Arc::clone(&store);
            tokio::spawn(async move { compact(&*store, auto, Duration::from_millis(10)).await })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.stats().compacted == 0 {
            assert!(Instant::now() < deadline, "never compacted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        task.abort();
        let stats = store.stats();
        assert_eq!(stats.compacted, stats.revision - 10);
    }

    #[tokio::test(start_paused = true)]
    async fn the_history_is_bounded_in_bytes() {
        let store = Arc::new(MemoryStore::new());
        let task = {
            let store = Arc::clone(&store);
            tokio::spawn(async move { bound_bytes(&*store, 10_000, Duration::from_secs(1)).await })
        };
        // 1,000 bytes a second for a minute: 60,000 bytes, six times the bound.
        let mut written = Vec::new();
        for _ in 0..60 {
            let value = Bytes::from(vec![b'x'; 999]);
            written.push(store.put(Bytes::from("k"), value).await.unwrap());
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        task.abort();
        let compacted = store.stats().compacted;
        // About ten seconds of writes are kept: at most the bound, and not
        // much less (a note a second).
        let kept = written.iter().filter(|&&r| r >= compacted).count();
        assert!(
            (8..=11).contains(&kept),
            "kept {kept} writes, compacted at {compacted}"
        );
        assert!(store.get(b"k", compacted).await.unwrap().is_some());
        assert!(store.get(b"k", compacted - 1).await.is_err());
    }
}
