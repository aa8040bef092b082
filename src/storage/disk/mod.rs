//! The durable backend (`--backend disk`, the default): one directory on disk,
//! every acknowledged write on stable storage.
//!
//! The engine is `redb`, an embedded copy-on-write B-tree with checksummed,
//! crash-safe commits (the measurements behind the choice are in
//! `docs/STORAGE.md`). The data dir holds the database, [`DB_FILE`], with the
//! tables `records` (key to its latest [`record_format`]-encoded record or
//! tombstone), `history` (what each write replaced, by revision; see
//! `keyspace`), the lease tables and `meta` (the format marker, the
//! store-wide revision, the compacted revision and the last log record
//! applied); beside it the write-ahead log of `--sync always` ([`LOG_FILE`],
//! see `wal`) and the record of acknowledged revisions ([`ACK_FILE`]).
//!
//! Reads see the last logged commit and never wait for the writer
//! (redb read transactions): a point read runs on the calling task, a scan
//! (a Range of more than one key, a watch's replay, a snapshot) on a
//! blocking thread, so that it never holds a tokio worker. Writes go to the
//! one [`committer`] thread, which batches them into group commits.
//!
//! Opening never damages what it finds: a directory holding anything but our
//! database, a file redb cannot read, or a database without our format marker
//! is refused with a message, and left as it is.

mod acknowledged;
mod clean_close;
mod committer;
mod database;
mod keyspace;
mod log_format;
#[cfg(test)]
mod power_loss;
mod record_format;
mod relay;
mod wal;

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redb::{ReadableDatabase, TableDefinition};

use self::committer::{Committer, Mutation, Outcome};
use self::database::DbHandle;
use self::keyspace::{ReadView, WriteView};
use super::apply::KeyspaceRead as _;
use super::apply::{self, ReadOnly, Slot, Values};
use super::lease::random_lease_id;
use super::lease::{LeaseInfo, Leases};
use super::ops::{Event, KeyValue};
use super::ops::{
    EventKind, KeyRange, LeaseId, Op, RangeEnd, RangeQuery, RangeResult, Txn, TxnResult,
};
use super::watch::{EventStream, History, WatchHub, WatchId, WatchLimits, Watches};
use super::{Record, Revision, Snapshot, SnapshotChunker, Store, StoreError, StoreStats};

/// The database file inside the data dir.
pub const DB_FILE: &str = "keyvalue.redb";
pub use acknowledged::ACK_FILE;
pub use relay::answer_here;
pub use wal::LOG_FILE;

const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// When a write counts as done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Acknowledge a write only after it is fsynced (the default): its
    /// batch's record in the write-ahead log (`wal`), the database itself
    /// within a second. Concurrent writes share fsyncs through group commit.
    Always,
    /// Acknowledge a write once committed, before it is fsynced; an fsync
    /// follows within this interval. A crash, of the process or of the machine,
    /// can lose the writes of the last interval (redb keeps unsynced commits in
    /// its own cache, not only in the OS's).
    Interval(Duration),
}

impl SyncPolicy {
    /// Parses `always` or `interval=<ms>` (`interval=100`, or with a unit:
    /// `interval=100ms`, `interval=1s`).
    pub fn parse(text: &str) -> Result<SyncPolicy, String> {
        let text = text.trim();
        if text == "always" {
            return Ok(SyncPolicy::Always);
        }
        let Some(interval) = text.strip_prefix("interval=") else {
            return Err(format!(
                "{text:?}: expected `always` or `interval=<ms>` (e.g. interval=100)"
            ));
        };
        let interval = match interval.parse::<u64>() {
            Ok(ms) => Duration::from_millis(ms),
            Err(_) => crate::duration::parse_duration(interval)?,
        };
        if interval.is_zero() {
            return Err("the sync interval must be above zero (or use `always`)".into());
        }
        Ok(SyncPolicy::Interval(interval))
    }
}

/// Why a data dir could not be opened. The message says what was found and
/// what to do; nothing in the directory was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenError(String);

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OpenError {}

/// The durable [`Store`].
pub struct DiskStore {
    db: Arc<DbHandle>,
    leases: Arc<Leases>,
    hub: Arc<WatchHub>,
    history: Arc<DiskHistory>,
    committer: Committer,
}

/// What a watch replays its history from: the snapshot the committer
/// published, never a newer commit (one whose log record is not yet synced,
/// or failed: a compaction in it would cancel a watch as "compacted" by a
/// write a crash then takes back).
struct DiskHistory {
    db: Arc<DbHandle>,
    leases: Arc<Leases>,
}

impl History for DiskHistory {
    fn events(
        &self,
        range: &KeyRange,
        from: Revision,
        to: Revision,
        max: usize,
    ) -> Result<(Vec<Event>, Revision), StoreError> {
        apply::events(
            &ReadView::of(self.db.snapshot()?, &self.leases),
            range,
            from,
            to,
            max,
        )
    }
}

impl DiskStore {
    /// Opens the store in `dir`, creating the directory and an empty database
    /// if there is none yet.
    pub fn open(dir: &Path, sync: SyncPolicy) -> Result<DiskStore, OpenError> {
        Self::open_with(dir, sync, WatchLimits::default())
    }

    /// [`DiskStore::open`] with the watch hub's limits.
    pub fn open_with(
        dir: &Path,
        sync: SyncPolicy,
        watch_limits: WatchLimits,
    ) -> Result<DiskStore, OpenError> {
        let (db, revision) = DbHandle::open(dir)?;
        let db = Arc::new(db);
        // Every granted lease starts a full TTL (see `storage::lease`).
        let leases = Arc::new(Leases::default());
        let (granted, compacted) = db
            .current()
            .and_then(|current| {
                let txn = current.begin_read().map_err(storage_error)?;
                let view = ReadView::new(txn, &leases)?;
                Ok((view.granted_leases()?, view.compacted()?))
            })
            .map_err(|e| OpenError(format!("cannot read the leases in {}: {e}", dir.display())))?;
        for (id, ttl) in granted {
            leases.insert(id, ttl);
        }
        let hub = Arc::new(WatchHub::new(revision, compacted, watch_limits));
        let history = Arc::new(DiskHistory {
            db: Arc::clone(&db),
            leases: Arc::clone(&leases),
        });
        let committer = Committer::start(
            Arc::clone(&db),
            (revision, compacted),
            watch_limits.history as u64,
            sync,
            Arc::clone(&leases),
            Arc::clone(&hub),
        )?;
        Ok(DiskStore {
            db,
            leases,
            hub,
            history,
            committer,
        })
    }

    /// Builds a new data dir in `dir` from the contents of a backup: `kvs`
    /// with their counters as they were, the `leases`, and the store at
    /// `revision`, its history starting there (compacted at `revision`).
    /// Refuses a dir that already holds a database.
    pub fn restore(
        dir: &Path,
        revision: Revision,
        leases: &[(LeaseId, Duration)],
        kvs: impl IntoIterator<Item = KeyValue>,
    ) -> Result<u64, OpenError> {
        if dir.join(DB_FILE).exists() {
            return Err(OpenError(format!(
                "{} already holds a database: restore into an empty or new directory",
                dir.display()
            )));
        }
        let failed =
            |e: StoreError| OpenError(format!("restoring into {} failed: {e}", dir.display()));
        let no_leases = Leases::default();
        let mut kvs = kvs.into_iter().peekable();
        let mut restored = 0u64;
        // Built aside and renamed into place when complete: a restore cut
        // short leaves no database, never a part of the backup.
        database::create(dir, |db| {
            let mut first = true;
            loop {
                // Large transactions without fsync; the last one syncs them all.
                let mut txn = db.begin_write().map_err(|e| failed(storage_error(e)))?;
                let last = {
                    let mut view = WriteView::open(&txn, &no_leases).map_err(failed)?;
                    if first {
                        for (id, ttl) in leases {
                            view.grant(*id, *ttl).map_err(failed)?;
                        }
                        first = false;
                    }
                    for kv in kvs.by_ref().take(10_000) {
                        view.restore(&kv.key, &kv.record).map_err(failed)?;
                        restored += 1;
                    }
                    let last = kvs.peek().is_none();
                    if last {
                        // The history starts at the backup's revision.
                        use apply::Keyspace as _;
                        let revision = revision.max(super::FIRST_REVISION);
                        view.set_revision(revision).map_err(failed)?;
                        view.set_compacted(revision).map_err(failed)?;
                    }
                    last
                };
                if !last {
                    txn.set_durability(redb::Durability::None)
                        .map_err(|e| failed(storage_error(e)))?;
                }
                txn.commit().map_err(|e| failed(storage_error(e)))?;
                if last {
                    return Ok(());
                }
            }
        })?;
        Ok(restored)
    }

    /// `kvserver accept-lost-writes`: lets a data dir whose database is
    /// behind the revisions acknowledged to clients start again, going on
    /// after the last of them; returns the lost revisions (`None`: nothing
    /// was lost, nothing changed). See `acknowledged`.
    pub fn accept_lost_writes(dir: &Path) -> Result<Option<(Revision, Revision)>, OpenError> {
        if dir.join(DB_FILE).exists() {
            // What the log holds first: the revisions it replays are not
            // lost, and raising the revision under them would renumber them.
            let (db, revision) = DbHandle::open(dir)?;
            let db = Arc::new(db);
            let compacted = db
                .current()
                .and_then(|current| {
                    let txn = current.begin_read().map_err(storage_error)?;
                    ReadView::new(txn, &Leases::default())?.compacted()
                })
                .map_err(|e| OpenError(format!("cannot read {}: {e}", dir.display())))?;
            if let Some(damage) =
                Committer::replay_accepting_loss(Arc::clone(&db), (revision, compacted))?
            {
                tracing::warn!(
                    "{} was damaged ({damage}): the writes before the damage were applied, \
                     the rest are lost",
                    dir.join(LOG_FILE).display()
                );
            }
            drop(db);
        }
        database::accept_lost_writes(dir)
    }

    /// Verifies the data dir `dir` without serving it (`kvserver check`):
    /// every page's checksum, the format, and every acknowledged revision
    /// present. Returns what it found, in one line.
    pub fn check(dir: &Path) -> Result<String, OpenError> {
        database::check(dir)
    }

    /// Runs `read` over a snapshot on a blocking thread, not on the calling
    /// task's worker: for scans, which may read thousands of keys (a page
    /// of 10,000 would hold a tokio worker, and every request queued on it,
    /// for its whole length). Point reads stay on the worker: they take
    /// microseconds, less than the handoff.
    async fn scan_off_worker<T: Send + 'static>(
        &self,
        read: impl FnOnce(&ReadView<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (snapshot, leases) = (self.db.snapshot()?, Arc::clone(&self.leases));
        tokio::task::spawn_blocking(move || read(&ReadView::of(snapshot, &leases)))
            .await
            .map_err(|_| StoreError::Internal("a disk read task failed".into()))?
    }

    /// A consistent view to read from: the snapshot of the latest commit.
    fn read_view(&self) -> Result<ReadView<'_>, StoreError> {
        Ok(ReadView::of(self.db.snapshot()?, &self.leases))
    }

    /// Revokes lease `id`; the revocation is queued for the committer at
    /// once (see [`Committer::submit`]), and the future answers when done.
    fn revoke(
        &self,
        id: LeaseId,
        kind: EventKind,
    ) -> impl Future<Output = Result<(u64, Revision), StoreError>> + use<> {
        let committed = self.committer.submit(Mutation::Revoke { id, kind });
        async move {
            match committed.await? {
                Outcome::Revoked(deleted, revision) => Ok((deleted, revision)),
                other => Err(unexpected(other)),
            }
        }
    }
}

/// The one mapping from engine errors to [`StoreError`].
fn storage_error(error: impl Into<redb::Error>) -> StoreError {
    match error.into() {
        redb::Error::Io(io) => match io.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                StoreError::ResourceExhausted(format!("the disk is full: {io}"))
            }
            _ => StoreError::Unavailable(format!("disk I/O failed: {io}")),
        },
        redb::Error::PreviousIo => StoreError::Unavailable(
            "the data dir is recovering from a disk error; retry shortly".into(),
        ),
        redb::Error::Corrupted(what) => {
            StoreError::Internal(format!("the database file is corrupt: {what}"))
        }
        other => StoreError::Internal(other.to_string()),
    }
}

fn unexpected(outcome: Outcome) -> StoreError {
    StoreError::Internal(format!(
        "the committer answered {outcome:?} to another request"
    ))
}

impl Store for DiskStore {
    async fn get(&self, key: &[u8], revision: Revision) -> Result<Option<Record>, StoreError> {
        let snapshot = self.read_view()?;
        apply::get(&snapshot, key, revision, snapshot.revision()?)
    }

    async fn put(&self, key: Bytes, value: Bytes) -> Result<Revision, StoreError> {
        let put = Op::Put {
            key,
            value,
            lease: 0,
            prev: false,
        };
        Ok(self.txn(Txn::of(vec![put])).await?.revision)
    }

    async fn range(&self, query: RangeQuery) -> Result<RangeResult, StoreError> {
        if query.range.end == RangeEnd::Single {
            let snapshot = self.read_view()?;
            return apply::range(&snapshot, &query, snapshot.revision()?);
        }
        self.scan_off_worker(move |snapshot| apply::range(snapshot, &query, snapshot.revision()?))
            .await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        if !txn.writes() {
            // Reads only: a snapshot answers without the committer.
            let scans = txn
                .success
                .iter()
                .chain(&txn.failure)
                .any(|op| matches!(op, Op::Get(query) if query.range.end != RangeEnd::Single));
            let read = move |snapshot: ReadView<'_>| {
                let revision = snapshot.revision()?;
                Ok(apply::apply(&mut ReadOnly(snapshot), &txn, revision)?.result)
            };
            if !scans {
                return read(self.read_view()?);
            }
            let (snapshot, leases) = (self.db.snapshot()?, Arc::clone(&self.leases));
            return tokio::task::spawn_blocking(move || read(ReadView::of(snapshot, &leases)))
                .await
                .map_err(|_| StoreError::Internal("a disk read task failed".into()))?;
        }
        match self.committer.write(Mutation::Txn(txn)).await? {
            Outcome::Txn(result) => Ok(result),
            other => Err(unexpected(other)),
        }
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseInfo, StoreError> {
        loop {
            let id = random_lease_id();
            match self.committer.write(Mutation::Grant { id, ttl }).await? {
                Outcome::Granted(Some(info)) => return Ok(info),
                Outcome::Granted(None) => continue, // the id was taken
                other => return Err(unexpected(other)),
            }
        }
    }

    async fn lease_grant_as(&self, id: LeaseId, ttl: Duration) -> Result<LeaseInfo, StoreError> {
        match self.committer.write(Mutation::Grant { id, ttl }).await? {
            Outcome::Granted(Some(info)) => Ok(info),
            Outcome::Granted(None) => Err(StoreError::LeaseExists(id)),
            other => Err(unexpected(other)),
        }
    }

    async fn lease_ids(&self) -> Result<Vec<LeaseId>, StoreError> {
        Ok(self.leases.live_ids())
    }

    async fn leases(
        &self,
        after: Option<LeaseId>,
        limit: usize,
    ) -> Result<Vec<LeaseInfo>, StoreError> {
        Ok(self.leases.page(after, limit))
    }

    async fn lease_keys(
        &self,
        id: LeaseId,
        range: KeyRange,
        limit: usize,
    ) -> Result<(Vec<Bytes>, bool), StoreError> {
        self.scan_off_worker(move |snapshot| apply::lease_keys(snapshot, id, &range, limit))
            .await
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<LeaseInfo, StoreError> {
        self.leases
            .keep_alive(id)
            .ok_or(StoreError::LeaseNotFound(id))
    }

    async fn lease_info(&self, id: LeaseId) -> Result<LeaseInfo, StoreError> {
        self.leases.info(id).ok_or(StoreError::LeaseNotFound(id))
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<(u64, Revision), StoreError> {
        self.revoke(id, EventKind::Delete).await
    }

    async fn expire_leases(&self) -> Result<u64, StoreError> {
        self.leases
            .expire_with(|id| self.revoke(id, EventKind::Expire))
            .await
    }

    async fn watch(
        &self,
        range: KeyRange,
        from: Option<Revision>,
    ) -> Result<EventStream, StoreError> {
        let history: Arc<dyn History> = Arc::clone(&self.history) as _;
        self.hub.watch(range, from, history)
    }

    async fn watch_into(
        &self,
        watches: &mut Watches,
        id: WatchId,
        range: KeyRange,
        from: Option<Revision>,
    ) -> Result<(), StoreError> {
        let history: Arc<dyn History> = Arc::clone(&self.history) as _;
        self.hub.add(watches, id, range, from, history)
    }

    async fn compact(&self, revision: Revision) -> Result<Revision, StoreError> {
        match self.committer.write(Mutation::Compact(revision)).await? {
            Outcome::Compacted(current) => Ok(current),
            other => Err(unexpected(other)),
        }
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        // The published snapshot (a redb read transaction holding only
        // logged commits) is the backup; a blocking task walks it and hands
        // the chunks over while writers go on.
        let snapshot = self.db.snapshot()?;
        let leases = Arc::clone(&self.leases);
        let (first, ready) = tokio::sync::oneshot::channel();
        let (sender, chunks) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let view = ReadView::of(snapshot, &leases);
            match view
                .revision()
                .and_then(|r| Ok((r, view.granted_leases()?)))
            {
                Ok(header) => {
                    if first.send(Ok(header)).is_err() {
                        return;
                    }
                }
                Err(error) => return drop(first.send(Err(error))),
            }
            let mut chunker = SnapshotChunker::default();
            let everything = KeyRange::prefix(Bytes::new());
            let walked = view.scan(&everything, Values::Decoded, &mut |key, slot| {
                let Slot::Live(record) = slot else {
                    return std::ops::ControlFlow::Continue(());
                };
                let Some(full) = chunker.push(KeyValue {
                    key: Bytes::copy_from_slice(key),
                    record,
                }) else {
                    return std::ops::ControlFlow::Continue(());
                };
                match sender.blocking_send(Ok(full)) {
                    Ok(()) => std::ops::ControlFlow::Continue(()),
                    Err(_) => std::ops::ControlFlow::Break(()),
                }
            });
            let last = walked.map(|()| chunker.rest());
            let _ = sender.blocking_send(last);
        });
        let (revision, leases) = ready
            .await
            .map_err(|_| StoreError::Internal("the snapshot task stopped".into()))??;
        Ok(Snapshot {
            revision,
            leases,
            chunks,
        })
    }

    fn stats(&self) -> StoreStats {
        let keys = self
            .db
            .snapshot()
            .and_then(|snapshot| snapshot.slots())
            .unwrap_or(0);
        let counters = self.committer.counters();
        let compacted = self
            .read_view()
            .and_then(|view| view.compacted())
            .unwrap_or(0);
        StoreStats {
            compacted,
            keys,
            disk_bytes: self.db.file_bytes(),
            commits: counters.commits.load(std::sync::atomic::Ordering::Relaxed),
            commit_nanos: counters.nanos.load(std::sync::atomic::Ordering::Relaxed),
            revision: self.hub.latest(),
            commit_latency: counters.latency(),
            written_bytes: self.hub.written_bytes(),
        }
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.committer.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::storage::conformance::conformance_suite!({
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
        crate::storage::conformance::Alongside { store, _kept: dir }
    });

    #[test]
    fn sync_policies_parse() {
        assert_eq!(SyncPolicy::parse("always"), Ok(SyncPolicy::Always));
        assert_eq!(
            SyncPolicy::parse("interval=100"),
            Ok(SyncPolicy::Interval(Duration::from_millis(100)))
        );
        assert_eq!(
            SyncPolicy::parse("interval=2s"),
            Ok(SyncPolicy::Interval(Duration::from_secs(2)))
        );
        assert!(SyncPolicy::parse("interval=0").is_err());
        assert!(SyncPolicy::parse("sometimes").is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_read_after_an_acknowledged_write_sees_it_while_others_share_snapshots() {
        // Both policies: under `always` the snapshot is published after the
        // log's fsync, under `interval` right after the commit.
        for policy in [
            SyncPolicy::Interval(Duration::from_millis(50)),
            SyncPolicy::Always,
        ] {
            reads_after_acknowledged_writes_see_them(policy).await;
        }
    }

    async fn reads_after_acknowledged_writes_see_them(policy: SyncPolicy) {
        // Readers keep the shared snapshot in use (published, shared,
        // replaced by commits) while writers check that each read after
        // their acknowledged write, point read or scan, sees it.
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(DiskStore::open(dir.path(), policy).unwrap());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
                tokio::spawn(async move {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let _ = store.get(b"w0", 0).await.unwrap();
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        let writers: Vec<_> = (0..4)
            .map(|writer| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let key = Bytes::from(format!("w{writer}"));
                    for round in 0..200u32 {
                        let value = Bytes::from(round.to_string());
                        let written = store.put(key.clone(), value.clone()).await.unwrap();
                        let record = store.get(&key, 0).await.unwrap().unwrap();
                        assert_eq!(
                            (record.value, record.mod_revision),
                            (value.clone(), written),
                            "a point read after the write of revision {written}"
                        );
                        let scan = store
                            .range(RangeQuery::all(KeyRange::prefix(Bytes::from("w"))))
                            .await
                            .unwrap();
                        assert!(
                            scan.revision >= written
                                && scan
                                    .kvs
                                    .iter()
                                    .any(|kv| kv.key == key && kv.record.mod_revision >= written),
                            "a scan after the write of revision {written} at {}",
                            scan.revision
                        );
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for reader in readers {
            reader.await.unwrap();
        }
    }

    #[tokio::test]
    async fn reads_share_a_snapshot_until_the_next_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
        store.put(Bytes::from("a"), Bytes::from("1")).await.unwrap();
        let first = store.db.snapshot().unwrap();
        assert!(
            Arc::ptr_eq(&first, &store.db.snapshot().unwrap()),
            "a second read between commits shares the first's snapshot"
        );
        let written = store.put(Bytes::from("a"), Bytes::from("2")).await.unwrap();
        assert_eq!(
            Arc::strong_count(&first),
            1,
            "the commit let go of the snapshot from before it"
        );
        let record = store.get(b"a", 0).await.unwrap().unwrap();
        assert_eq!(
            (record.value, record.mod_revision),
            (Bytes::from("2"), written)
        );
    }

    #[tokio::test]
    async fn a_database_without_the_lease_tables_gets_them_at_open() {
        let dir = tempfile::tempdir().unwrap();
        drop(DiskStore::open(dir.path(), SyncPolicy::Always).unwrap());
        // What an earlier version wrote: no lease tables.
        {
            let db = redb::Database::open(dir.path().join(DB_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.delete_table(keyspace::LEASES).unwrap();
            txn.delete_table(keyspace::LEASE_KEYS).unwrap();
            txn.commit().unwrap();
            assert!(keyspace::tables_missing(&db.begin_read().unwrap()));
        }
        let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
        let lease = store.lease_grant(Duration::from_secs(60)).await.unwrap();
        let put = Op::Put {
            key: Bytes::from("k"),
            value: Bytes::from("v"),
            lease: lease.id,
            prev: false,
        };
        store.txn(Txn::of(vec![put])).await.unwrap();
        assert_eq!(store.lease_revoke(lease.id).await.unwrap().0, 1);
    }

    #[tokio::test]
    async fn data_survives_a_reopen_with_its_revisions() {
        let dir = tempfile::tempdir().unwrap();
        let written = {
            let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
            store.put(Bytes::from("a"), Bytes::from("1")).await.unwrap();
            store.put(Bytes::from("a"), Bytes::from("2")).await.unwrap()
        };
        let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
        let record = store.get(b"a", 0).await.unwrap().unwrap();
        assert_eq!(record.value, Bytes::from("2"));
        assert_eq!((record.mod_revision, record.version), (written, 2));
        let next = store.put(Bytes::from("b"), Bytes::from("3")).await.unwrap();
        assert_eq!(next, written + 1, "the revision continues after a reopen");
    }

    #[tokio::test]
    async fn leases_and_their_keys_survive_a_reopen_with_a_fresh_ttl() {
        use crate::storage::ops::{Op, Txn};
        let dir = tempfile::tempdir().unwrap();
        let lease = {
            let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
            let lease = store.lease_grant(Duration::from_secs(60)).await.unwrap();
            let put = Op::Put {
                key: Bytes::from("session"),
                value: Bytes::from("alive"),
                lease: lease.id,
                prev: false,
            };
            store.txn(Txn::of(vec![put])).await.unwrap();
            lease
        };
        let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
        let info = store.lease_info(lease.id).await.unwrap();
        assert_eq!(info.ttl, Duration::from_secs(60));
        assert!(info.remaining > Duration::from_secs(50), "a full TTL again");
        assert_eq!(
            store.get(b"session", 0).await.unwrap().unwrap().lease,
            lease.id
        );
        assert_eq!(store.lease_revoke(lease.id).await.unwrap().0, 1);
        assert_eq!(store.get(b"session", 0).await.unwrap(), None);
        drop(store);
        let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
        assert!(
            store.lease_info(lease.id).await.is_err(),
            "revoked for good"
        );
    }

    #[tokio::test]
    async fn interval_writes_are_durable_after_flush() {
        let dir = tempfile::tempdir().unwrap();
        {
            let policy = SyncPolicy::Interval(Duration::from_secs(3600));
            let store = DiskStore::open(dir.path(), policy).unwrap();
            store.put(Bytes::from("k"), Bytes::from("v")).await.unwrap();
            store.flush().await.unwrap();
        }
        let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
        assert_eq!(store.get(b"k", 0).await.unwrap().unwrap().value, "v");
    }

    #[tokio::test]
    async fn a_data_dir_of_format_1_is_upgraded_at_open() {
        // Written by kvserver before multi-version storage (see its README).
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data-dir-v1");
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(fixture.join(DB_FILE), dir.path().join(DB_FILE)).unwrap();
        let lease = {
            let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
            let weather = store.get(b"weather", 0).await.unwrap().unwrap();
            assert_eq!(weather.value, Bytes::from("rainy"));
            assert_eq!(
                (
                    weather.create_revision,
                    weather.mod_revision,
                    weather.version
                ),
                (1, 2, 2)
            );
            assert_eq!(store.get(b"gone", 0).await.unwrap(), None);
            let session = store.get(b"session", 0).await.unwrap().unwrap();
            assert!(store.lease_info(session.lease).await.is_ok(), "leases kept");
            let all = store
                .range(RangeQuery::all(KeyRange::prefix(Bytes::new())))
                .await
                .unwrap();
            assert_eq!(all.kvs.len(), 4);
            assert_eq!(all.revision, 7, "the revision carries on");
            // Format 1 kept no history: the past is compacted, never misread.
            let error = store.get(b"weather", 1).await.unwrap_err();
            assert_eq!(
                error,
                StoreError::Compacted {
                    requested: 1,
                    compacted: 7
                }
            );
            assert_eq!(
                store
                    .put(Bytes::from("city"), Bytes::from("rome"))
                    .await
                    .unwrap(),
                8
            );
            session.lease
        };
        // Upgraded once: the marker says so, and the history goes on.
        let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
        assert_eq!(store.get(b"city", 7).await.unwrap().unwrap().value, "paris");
        assert_eq!(store.get(b"city", 8).await.unwrap().unwrap().value, "rome");
        assert!(store.lease_info(lease).await.is_ok());
        drop(store);
        let db = redb::Database::open(dir.path().join(DB_FILE)).unwrap();
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        let format = meta.get(record_format::META_FORMAT).unwrap().unwrap();
        assert_eq!(format.value(), record_format::DATA_FORMAT.as_bytes());
    }

    #[tokio::test]
    async fn a_data_dir_of_format_2_is_upgraded_at_open() {
        use tokio_stream::StreamExt;
        // Written by kvserver when first writes were history entries (see
        // its README).
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data-dir-v2");
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(fixture.join(DB_FILE), dir.path().join(DB_FILE)).unwrap();
        let value = |record: Option<Record>| record.map(|r| r.value);
        let expected_events = [
            (EventKind::Put, 2, "weather", "sunny"),
            (EventKind::Put, 3, "weather", "rainy"),
            (EventKind::Put, 4, "city", "paris"),
            (EventKind::Put, 5, "gone", "soon"),
            (EventKind::Delete, 6, "gone", ""),
            (EventKind::Put, 7, "session", "alive"),
            (EventKind::Put, 8, "bin/ary", "x"),
            (EventKind::Put, 9, "city", "rome"),
            (EventKind::Put, 10, "new", "first"),
        ];
        // Once the last watch's task has ended, its store closes the file.
        async fn reopen(path: &Path) -> DiskStore {
            for _ in 0..500 {
                if let Ok(store) = DiskStore::open(path, SyncPolicy::Always) {
                    return store;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            DiskStore::open(path, SyncPolicy::Always).unwrap()
        }
        for reopened in [false, true] {
            let store = reopen(dir.path()).await;
            // Every key at every revision reads as written.
            assert_eq!(value(store.get(b"weather", 1).await.unwrap()), None);
            assert_eq!(
                value(store.get(b"weather", 2).await.unwrap()).unwrap(),
                "sunny"
            );
            assert_eq!(
                value(store.get(b"weather", 9).await.unwrap()).unwrap(),
                "rainy"
            );
            assert_eq!(value(store.get(b"city", 3).await.unwrap()), None);
            assert_eq!(
                value(store.get(b"city", 8).await.unwrap()).unwrap(),
                "paris"
            );
            assert_eq!(value(store.get(b"city", 9).await.unwrap()).unwrap(), "rome");
            assert_eq!(value(store.get(b"gone", 5).await.unwrap()).unwrap(), "soon");
            assert_eq!(value(store.get(b"gone", 6).await.unwrap()), None);
            if !reopened {
                // A key created after the upgrade, among keys created before.
                let revision = store
                    .put(Bytes::from("new"), Bytes::from("first"))
                    .await
                    .unwrap();
                assert_eq!(revision, 10, "the revision carries on");
            }
            assert_eq!(value(store.get(b"new", 9).await.unwrap()), None);
            assert_eq!(
                value(store.get(b"new", 10).await.unwrap()).unwrap(),
                "first"
            );
            // The change log, old entries and new, replays in order.
            let mut stream = store
                .watch(KeyRange::prefix(Bytes::new()), Some(2))
                .await
                .unwrap();
            let mut seen = Vec::new();
            while seen.len() < expected_events.len() {
                let batch = tokio::time::timeout(Duration::from_secs(10), stream.next())
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
                seen.extend(batch.into_iter().map(|e| {
                    (
                        e.kind,
                        e.revision(),
                        String::from_utf8(e.key.to_vec()).unwrap(),
                        String::from_utf8(e.record.value.to_vec()).unwrap(),
                    )
                }));
            }
            let expected: Vec<_> = expected_events
                .iter()
                .map(|(kind, revision, key, value)| {
                    (*kind, *revision, key.to_string(), value.to_string())
                })
                .collect();
            assert_eq!(seen, expected);
        }
        // Compacting the old entries and the new ones leaves the latest.
        let store = reopen(dir.path()).await;
        store.compact(10).await.unwrap();
        store.flush().await.unwrap();
        assert_eq!(
            value(store.get(b"city", 10).await.unwrap()).unwrap(),
            "rome"
        );
        assert!(store.get(b"city", 9).await.is_err());
        drop(store);
        let db = redb::Database::open(dir.path().join(DB_FILE)).unwrap();
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        let format = meta.get(record_format::META_FORMAT).unwrap().unwrap();
        assert_eq!(format.value(), record_format::DATA_FORMAT.as_bytes());
    }

    #[test]
    fn a_data_dir_of_a_later_format_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        drop(DiskStore::open(dir.path(), SyncPolicy::Always).unwrap());
        {
            let db = redb::Database::open(dir.path().join(DB_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(record_format::META_FORMAT, b"keyvalue-disk/9".as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let error = DiskStore::open(dir.path(), SyncPolicy::Always)
            .err()
            .unwrap();
        assert!(error.to_string().contains("keyvalue-disk/9"), "{error}");
        assert!(error.to_string().contains("newer kvserver"), "{error}");
        // Nothing was upgraded: the marker is as it was.
        let db = redb::Database::open(dir.path().join(DB_FILE)).unwrap();
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        let format = meta.get(record_format::META_FORMAT).unwrap().unwrap();
        assert_eq!(format.value(), b"keyvalue-disk/9");
    }

    #[tokio::test]
    async fn a_watch_replays_the_history_from_disk_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let first = {
            let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
            let first = store.put(Bytes::from("a"), Bytes::from("1")).await.unwrap();
            store.put(Bytes::from("a"), Bytes::from("2")).await.unwrap();
            let delete = Op::Delete {
                range: KeyRange::key(Bytes::from("a")),
                prev: false,
            };
            store.txn(Txn::of(vec![delete])).await.unwrap();
            first
        };
        let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
        let mut stream = store
            .watch(KeyRange::prefix(Bytes::new()), Some(first))
            .await
            .unwrap();
        let mut seen = Vec::new();
        while seen.len() < 3 {
            use tokio_stream::StreamExt;
            let batch = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            seen.extend(
                batch
                    .into_iter()
                    .map(|e| (e.kind, e.revision(), e.record.value)),
            );
        }
        assert_eq!(
            seen,
            [
                (EventKind::Put, first, Bytes::from("1")),
                (EventKind::Put, first + 1, Bytes::from("2")),
                (EventKind::Delete, first + 2, Bytes::new()),
            ]
        );
    }

    #[test]
    fn a_directory_with_other_files_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let error = DiskStore::open(dir.path(), SyncPolicy::Always)
            .err()
            .unwrap();
        assert!(error.to_string().contains("notes.txt"), "{error}");
        assert!(!dir.path().join(DB_FILE).exists());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("notes.txt")).unwrap(),
            "mine"
        );
    }

    #[test]
    fn a_garbage_database_file_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = vec![0x5a; 64 * 1024];
        std::fs::write(dir.path().join(DB_FILE), &garbage).unwrap();
        let error = DiskStore::open(dir.path(), SyncPolicy::Always)
            .err()
            .unwrap();
        assert!(error.to_string().contains("refusing to start"), "{error}");
        assert_eq!(std::fs::read(dir.path().join(DB_FILE)).unwrap(), garbage);
    }

    #[tokio::test]
    async fn a_first_start_cut_short_leaves_a_data_dir_that_starts_empty() {
        // What a power cut during the first start can leave: the database
        // being built aside, empty or half-written, and no database.
        for leftover in [
            Vec::new(),
            vec![0x5a; 4096],
            b"redb\x1a\x0a\xa9\x0d\x0a".to_vec(),
        ] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(database::CREATING_FILE), &leftover).unwrap();
            let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
            assert_eq!(store.get(b"k", 0).await.unwrap(), None);
            store.put(Bytes::from("k"), Bytes::from("v")).await.unwrap();
            drop(store);
            assert!(!dir.path().join(database::CREATING_FILE).exists());
            let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
            assert_eq!(store.get(b"k", 0).await.unwrap().unwrap().value, "v");
        }
    }

    #[test]
    fn a_leftover_creation_does_not_hide_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(database::CREATING_FILE), b"").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let error = DiskStore::open(dir.path(), SyncPolicy::Always)
            .err()
            .unwrap();
        assert!(error.to_string().contains("notes.txt"), "{error}");
    }

    #[test]
    fn a_new_database_is_created_whole_under_its_name() {
        let dir = tempfile::tempdir().unwrap();
        drop(DiskStore::open(&dir.path().join("a/b"), SyncPolicy::Always).unwrap());
        let mut names: Vec<_> = std::fs::read_dir(dir.path().join("a/b"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [ACK_FILE, clean_close::CLEAN_FILE, DB_FILE, LOG_FILE]
        );
    }

    #[test]
    fn a_second_open_of_the_same_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
        let error = DiskStore::open(dir.path(), SyncPolicy::Always)
            .err()
            .unwrap();
        assert!(error.to_string().contains("in use"), "{error}");
    }

    /// A published snapshot at revision R answers for R, also for leases:
    /// a revoke (or a new leased put) committed after R must not change
    /// what the old snapshot lists. `Store::snapshot` (the backup)
    /// reads `granted_leases` from such a snapshot after handing it to a
    /// blocking task; a revoke committed in between gives a backup whose
    /// records at R carry a lease the backup does not hold.
    #[tokio::test]
    async fn a_snapshot_reads_the_leases_at_its_revision() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
        let lease = store.lease_grant(Duration::from_secs(60)).await.unwrap().id;
        let leased = |key: &str| {
            Txn::of(vec![Op::Put {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::from("v"),
                lease,
                prev: false,
            }])
        };
        store.txn(leased("k1")).await.unwrap();
        // A checkpoint now, so that none comes (a second later) between the
        // snapshot and the writes after it: they go to the snapshot's memtable.
        store.flush().await.unwrap();
        let before = store.db.snapshot().unwrap();
        store.txn(leased("k2")).await.unwrap();
        store.lease_revoke(lease).await.unwrap();
        let view = ReadView::of(before, &store.leases);
        // At R, k1 holds a record with the lease...
        assert!(matches!(view.latest(b"k1").unwrap(), Some(Slot::Live(r)) if r.lease == lease));
        assert_eq!(view.latest(b"k2").unwrap(), None);
        // ...so the lease is granted at R, with k1 (and only k1) on it.
        let mut keys = Vec::new();
        view.lease_keys_in(lease, &KeyRange::prefix(Bytes::new()), &mut |key| {
            keys.push(String::from_utf8_lossy(key).into_owned());
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
        let granted: Vec<LeaseId> = view
            .granted_leases()
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(
            (granted, keys),
            (vec![lease], vec!["k1".to_owned()]),
            "the snapshot at revision {} sees the leases of later commits",
            view.revision().unwrap()
        );
    }
}
