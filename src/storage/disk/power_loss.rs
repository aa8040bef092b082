//! Power loss at every sync point, simulated under the real [`DiskStore`].
//!
//! A test arms a data dir ([`arm`]); from then on `database.rs` gives redb
//! a [`SimFile`] for that dir's database file instead of the plain file (the
//! `open_file`/`create_file` hook): a redb `StorageBackend` over the real
//! file that remembers, page by page, what each page held at the last
//! `sync_data`. At the chosen sync (counted across the dir's files) the
//! power goes: that sync never completes, and every page written since the
//! last one is put back as it was, or kept, or (one of them) torn at a
//! 512-byte sector, as the [`Cut`] says; the file's length may go back too.
//! From then on every read, write and sync fails, as on a machine that is
//! off. The test then disarms the dir, opens it again with the plain file,
//! and checks the invariant: the database opens, every acknowledged write is
//! there, and nothing that was never acknowledged half-appears.
//!
//! The write-ahead log (`wal.rs`) is opened through the same hook, so a cut
//! lands in its fdatasyncs too and tears or loses its unsynced records.
//! [`kill`] is the other way a process ends: every write kept, nothing
//! synced after it (the replay of the log after `kill -9`).
//!
//! What is not simulated: files written through `std::fs` (the record of
//! `acknowledged.rs`, written after redb's sync, and the renames and
//! directory fsyncs of `database::create`) are real and durable at once; a
//! cut before one of them is covered, a cut that loses one is not.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::ops::Bound;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::StorageBackend;
use redb::backends::FileBackend;

const PAGE: u64 = 4096;
const SECTOR: usize = 512;

/// What a cut leaves of the pages written since the last sync.
#[derive(Clone, Copy, Debug)]
pub(super) enum Cut {
    /// Nothing: every unsynced write is lost.
    DropAll,
    /// Each page, kept or lost at random; the file's new length too.
    Some(u64),
    /// As `Some`, and one kept page torn: only its first sectors written.
    Torn(u64),
}

/// The power of one data dir.
struct Power {
    /// Syncs seen so far; the `cut_at`th never completes.
    syncs: u64,
    cut_at: u64,
    cut: Cut,
    off: bool,
    /// Syncs of the file of this name fail (the power stays on); with
    /// `keeping`, what was written stays in the file all the same (the OS
    /// page cache still holds it, as Linux does after a failed writeback),
    /// without, what the sync could not make durable is lost.
    failing: Option<String>,
    keeping: bool,
    /// What the files held at their last sync, by inode.
    files: HashMap<u64, Unsynced>,
}

/// A file's pages as they were at its last sync, for the pages written
/// since; and its length then.
struct Unsynced {
    file: File,
    pages: BTreeMap<u64, Vec<u8>>,
    synced_len: u64,
}

static ARMED: Mutex<Vec<(PathBuf, Arc<Mutex<Power>>)>> = Mutex::new(Vec::new());

/// From now on, the database files of `dir` lose power at its `cut_at`th
/// sync (never, for `u64::MAX`: to count the syncs of a run).
pub(super) fn arm(dir: &Path, cut_at: u64, cut: Cut) {
    let power = Power {
        syncs: 0,
        cut_at,
        cut,
        off: false,
        failing: None,
        keeping: false,
        files: HashMap::new(),
    };
    let mut armed = ARMED.lock().unwrap();
    armed.retain(|(armed, _)| armed != dir);
    armed.push((dir.to_owned(), Arc::new(Mutex::new(power))));
}

/// Back to plain files for `dir`; returns how many syncs it saw and
/// whether the power went.
pub(super) fn disarm(dir: &Path) -> (u64, bool) {
    let mut armed = ARMED.lock().unwrap();
    let at = armed.iter().position(|(armed, _)| armed == dir);
    let (_, power) = armed.remove(at.expect("armed"));
    let power = power.lock().unwrap();
    (power.syncs, power.off)
}

/// The process of `dir` dies (`kill -9`): every write so far stays, as
/// the OS has it, and nothing more is written, synced or read.
pub(super) fn kill(dir: &Path) {
    let armed = ARMED.lock().unwrap();
    let (_, power) = armed.iter().find(|(armed, _)| armed == dir).expect("armed");
    let mut power = power.lock().unwrap();
    for unsynced in power.files.values_mut() {
        unsynced.pages.clear();
    }
    power.off = true;
}

/// From now on every sync of the file `name` in `dir` fails, as a failing
/// disk's would, losing what was written since the last sync; the rest
/// goes on (`None`: the disk works again).
pub(super) fn fail_syncs(dir: &Path, name: Option<&str>) {
    let armed = ARMED.lock().unwrap();
    let (_, power) = armed.iter().find(|(armed, _)| armed == dir).expect("armed");
    let mut power = power.lock().unwrap();
    power.failing = name.map(str::to_owned);
    power.keeping = false;
}

/// From now on every sync of the file `name` in `dir` reports a failure,
/// but what was written stays in the file (a failed fsync whose pages the
/// OS still serves, or a commit that failed after its data landed).
pub(super) fn fail_syncs_keeping(dir: &Path, name: &str) {
    let armed = ARMED.lock().unwrap();
    let (_, power) = armed.iter().find(|(armed, _)| armed == dir).expect("armed");
    let mut power = power.lock().unwrap();
    power.failing = Some(name.to_owned());
    power.keeping = true;
}

/// The simulated file for the database file at `path`, if its dir is armed.
pub(super) fn backend(path: &Path, create: bool) -> Option<io::Result<SimFile>> {
    let dir = path.parent()?;
    let power = ARMED
        .lock()
        .unwrap()
        .iter()
        .find(|(armed, _)| armed == dir)
        .map(|(_, power)| Arc::clone(power))?;
    Some(SimFile::open(path, create, power))
}

/// A database file whose unsynced writes a power cut loses.
#[derive(Debug)]
pub(super) struct SimFile {
    inner: FileBackend,
    inode: u64,
    name: String,
    power: Arc<Mutex<Power>>,
}

impl std::fmt::Debug for Power {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Power").field("syncs", &self.syncs).finish()
    }
}

fn power_off() -> io::Error {
    io::Error::other("the power is off")
}

impl SimFile {
    fn open(path: &Path, create: bool, power: Arc<Mutex<Power>>) -> io::Result<SimFile> {
        if power.lock().unwrap().off {
            return Err(power_off());
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        let meta = file.metadata()?;
        let inode = meta.ino();
        power
            .lock()
            .unwrap()
            .files
            .entry(inode)
            .or_insert(Unsynced {
                file: file.try_clone()?,
                pages: BTreeMap::new(),
                synced_len: meta.len(),
            });
        let inner = FileBackend::new(file).map_err(io::Error::other)?;
        Ok(SimFile {
            inner,
            inode,
            name: path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default(),
            power,
        })
    }

    /// Remembers the pages of `start..end` as they are now, for those not
    /// remembered since the last sync.
    fn remember(&self, unsynced: &mut Unsynced, start: u64, end: u64) -> io::Result<()> {
        let len = self.inner.len()?;
        let mut page = start / PAGE * PAGE;
        while page < end {
            if let std::collections::btree_map::Entry::Vacant(slot) = unsynced.pages.entry(page) {
                let mut bytes = vec![0u8; PAGE as usize];
                let readable = len.saturating_sub(page).min(PAGE) as usize;
                if readable > 0 {
                    self.inner.read(page, &mut bytes[..readable])?;
                }
                slot.insert(bytes);
            }
            page += PAGE;
        }
        Ok(())
    }
}

impl Power {
    /// The cut: each file's unsynced pages put back or kept, as `cut` says.
    fn cut(&mut self) {
        let mut rng = match self.cut {
            Cut::DropAll => 0,
            Cut::Some(seed) | Cut::Torn(seed) => seed | 1,
        };
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut torn = matches!(self.cut, Cut::Torn(_));
        for unsynced in self.files.values_mut() {
            let len = unsynced.file.metadata().map_or(0, |m| m.len());
            for (page, old) in std::mem::take(&mut unsynced.pages) {
                let keep = !matches!(self.cut, Cut::DropAll) && next() % 2 == 0;
                if keep && torn {
                    // Only the first sectors of this page made it.
                    let sectors = (next() % (PAGE / SECTOR as u64)) as usize;
                    let _ = std::os::unix::fs::FileExt::write_all_at(
                        &unsynced.file,
                        &old[sectors * SECTOR..],
                        page + (sectors * SECTOR) as u64,
                    );
                    torn = false;
                } else if !keep {
                    let _ = std::os::unix::fs::FileExt::write_all_at(&unsynced.file, &old, page);
                }
            }
            let keep_len = !matches!(self.cut, Cut::DropAll) && next() % 2 == 0;
            let _ = unsynced
                .file
                .set_len(if keep_len { len } else { unsynced.synced_len });
        }
        self.off = true;
    }
}

impl StorageBackend for SimFile {
    fn len(&self) -> Result<u64, io::Error> {
        if self.power.lock().unwrap().off {
            return Err(power_off());
        }
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        if self.power.lock().unwrap().off {
            return Err(power_off());
        }
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut power = self.power.lock().unwrap();
        if power.off {
            return Err(power_off());
        }
        let current = self.inner.len()?;
        if len < current {
            let unsynced = power.files.get_mut(&self.inode).expect("opened");
            self.remember(unsynced, len, current)?;
        }
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut power = self.power.lock().unwrap();
        if power.off {
            return Err(power_off());
        }
        if power.failing.as_ref() == Some(&self.name) && power.keeping {
            return Err(io::Error::other("the disk reported this sync failed"));
        }
        if power.failing.as_ref() == Some(&self.name) {
            // What the disk could not sync, it lost.
            let unsynced = power.files.get_mut(&self.inode).expect("opened");
            for (page, old) in std::mem::take(&mut unsynced.pages) {
                std::os::unix::fs::FileExt::write_all_at(&unsynced.file, &old, page)?;
            }
            unsynced.file.set_len(unsynced.synced_len)?;
            return Err(io::Error::other("the disk failed this sync"));
        }
        power.syncs += 1;
        if power.syncs == power.cut_at {
            power.cut();
            return Err(power_off());
        }
        // Durable from here on (the real fsync is skipped: nothing here
        // survives a real power cut, and the test stays fast).
        let len = self.inner.len()?;
        let unsynced = power.files.get_mut(&self.inode).expect("opened");
        unsynced.pages.clear();
        unsynced.synced_len = len;
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut power = self.power.lock().unwrap();
        if power.off {
            return Err(power_off());
        }
        let unsynced = power.files.get_mut(&self.inode).expect("opened");
        self.remember(unsynced, offset, offset + data.len() as u64)?;
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }

    fn try_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::storage::disk::{DiskStore, SyncPolicy};
    use crate::storage::{Record, Revision, Store};

    fn key(i: usize) -> Bytes {
        Bytes::from(format!("k{i:03}"))
    }

    fn value(i: usize) -> Bytes {
        Bytes::from(format!("value {i} ").repeat(1 + i % 7))
    }

    /// What a run of writes did: the last write acknowledged, and the last
    /// sent (the one in flight when the power went).
    #[derive(Debug, Default)]
    struct Run {
        acknowledged: Option<usize>,
        sent: Option<usize>,
        /// The revision each acknowledged write was given.
        revisions: Vec<Revision>,
    }

    /// Opens `dir` and puts `writes` keys one by one, until one fails;
    /// with the interval policy, flushes after every third, and counts a
    /// write acknowledged only once a flush after it succeeded.
    async fn write(dir: &Path, writes: usize, sync: SyncPolicy) -> Run {
        let mut run = Run::default();
        let Ok(store) = DiskStore::open(dir, sync) else {
            return run;
        };
        for i in 0..writes {
            run.sent = Some(i);
            let Ok(revision) = store.put(key(i), value(i)).await else {
                break;
            };
            run.revisions.push(revision);
            match sync {
                SyncPolicy::Always => {
                    run.acknowledged = Some(i);
                    // A checkpoint among the writes: cuts land in its
                    // database fsync and in the log's restart after it.
                    if i % 4 == 2 && store.flush().await.is_err() {
                        break;
                    }
                }
                SyncPolicy::Interval(_) if i % 3 == 2 => {
                    if store.flush().await.is_err() {
                        break;
                    }
                    run.acknowledged = Some(i);
                }
                SyncPolicy::Interval(_) => {}
            }
        }
        run
    }

    /// Opens `dir` with plain files and checks `run`'s writes: every
    /// acknowledged one there, whole; the one in flight whole or absent;
    /// none after it.
    async fn check(dir: &Path, run: &Run, writes: usize, sync: SyncPolicy, what: &str) {
        let store = DiskStore::open(dir, SyncPolicy::Always)
            .unwrap_or_else(|e| panic!("{what}: the data dir does not open: {e}"));
        let mut present = 0;
        for i in 0..writes {
            let found = store.get(&key(i), 0).await.unwrap();
            let acknowledged = run.acknowledged.is_some_and(|last| i <= last);
            let sent = run.sent.is_some_and(|last| i <= last);
            match found {
                Some(Record {
                    value: found,
                    mod_revision,
                    ..
                }) => {
                    assert!(sent, "{what}: key {i}, never sent, is there");
                    assert_eq!(found, value(i), "{what}: key {i} is not whole");
                    // Applied once, at its place: a replay that applied a
                    // record twice, or skipped one, moves every revision on.
                    assert_eq!(mod_revision, i as u64 + 2, "{what}: key {i}'s revision");
                    if let Some(acked) = run.revisions.get(i) {
                        assert_eq!(mod_revision, *acked, "{what}: key {i}'s revision");
                    }
                    present += 1;
                }
                None => assert!(!acknowledged, "{what}: acknowledged key {i} is lost"),
            }
        }
        // Gapless: the store is at the revision of its last write, and the
        // next goes right after it (with `--sync interval`, after the
        // revisions handed out, lost or not).
        let revision = store.put(key(writes), value(writes)).await.unwrap();
        if sync == SyncPolicy::Always {
            assert_eq!(revision, present + 2, "{what}: the next revision");
        }
    }

    /// Every sync of a first start and its first `writes` writes, cut in
    /// each way; returns how many cut points were tried.
    async fn cut_everywhere(writes: usize, sync: SyncPolicy) -> u64 {
        let counted = tempfile::tempdir().unwrap();
        arm(counted.path(), u64::MAX, Cut::DropAll);
        let clean = write(counted.path(), writes, sync).await;
        let (syncs, _) = disarm(counted.path());
        assert_eq!(clean.acknowledged, Some(writes - 1));
        assert!(syncs > writes as u64 / 3, "{syncs} syncs");
        for cut_at in 1..=syncs {
            let cuts = [
                Cut::DropAll,
                Cut::Some(cut_at * 7919),
                Cut::Torn(cut_at * 104_729),
            ];
            // Two of the three ways at each point, all three in turn.
            for cut in [cuts[cut_at as usize % 3], cuts[(cut_at as usize + 1) % 3]] {
                let dir = tempfile::tempdir().unwrap();
                arm(dir.path(), cut_at, cut);
                let run = write(dir.path(), writes, sync).await;
                let (_, off) = disarm(dir.path());
                assert!(off, "sync {cut_at} of {syncs} was not reached");
                let what = format!("{sync:?}, cut {cut:?} at sync {cut_at} of {syncs}");
                check(dir.path(), &run, writes, sync, &what).await;
            }
        }
        syncs
    }

    #[tokio::test]
    async fn a_first_start_and_its_first_commits_survive_a_cut_at_every_sync() {
        cut_everywhere(8, SyncPolicy::Always).await;
    }

    #[tokio::test]
    async fn with_sync_interval_every_write_flushed_before_the_cut_survives() {
        cut_everywhere(9, SyncPolicy::Interval(Duration::from_secs(3600))).await;
    }

    #[tokio::test]
    async fn a_restore_cut_at_any_sync_leaves_an_empty_data_dir_or_the_whole_backup() {
        let kvs = |n: usize| {
            (0..n).map(|i| crate::storage::ops::KeyValue {
                key: key(i),
                record: Record {
                    value: value(i),
                    create_revision: i as u64 + 1,
                    mod_revision: i as u64 + 1,
                    version: 1,
                    lease: 0,
                },
            })
        };
        // Enough keys for two of restore's transactions.
        let keys = 12_000;
        let counted = tempfile::tempdir().unwrap();
        arm(counted.path(), u64::MAX, Cut::DropAll);
        DiskStore::restore(counted.path(), keys as u64, &[], kvs(keys)).unwrap();
        let (syncs, _) = disarm(counted.path());
        for cut_at in 1..=syncs {
            let dir = tempfile::tempdir().unwrap();
            arm(dir.path(), cut_at, Cut::Some(cut_at));
            let restored = DiskStore::restore(dir.path(), keys as u64, &[], kvs(keys));
            disarm(dir.path());
            let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
            // A cut after the last commit (redb's own writes as it closes)
            // leaves the whole backup, and the restore says it is done.
            let expected = if restored.is_ok() { keys as u64 } else { 0 };
            assert_eq!(
                store.stats().keys,
                expected,
                "cut at sync {cut_at} of {syncs}: {restored:?}"
            );
            if restored.is_ok() {
                let last = store.get(&key(keys - 1), 0).await.unwrap().unwrap();
                assert_eq!(last.value, value(keys - 1));
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_cut_at_random_syncs_lose_nothing_acknowledged() {
        const WRITERS: usize = 8;
        const EACH: usize = 12;
        // The syncs of a first start, to cut after them, among the writes.
        let counted = tempfile::tempdir().unwrap();
        arm(counted.path(), u64::MAX, Cut::DropAll);
        drop(DiskStore::open(counted.path(), SyncPolicy::Always).unwrap());
        let (first_start, _) = disarm(counted.path());
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..4 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let dir = tempfile::tempdir().unwrap();
            // A first start takes a few syncs; the writes' commits follow.
            // 96 writes take at least 12 commits (each carries at most the
            // 8 writers' one write each).
            let cut_at = first_start + 1 + seed % 10;
            arm(dir.path(), cut_at, Cut::Torn(seed));
            let store = Arc::new(DiskStore::open(dir.path(), SyncPolicy::Always).unwrap());
            let mut tasks = Vec::new();
            for writer in 0..WRITERS {
                let store = Arc::clone(&store);
                tasks.push(tokio::spawn(async move {
                    let mut run = Run::default();
                    for n in 0..EACH {
                        let i = writer * EACH + n;
                        run.sent = Some(i);
                        if store.put(key(i), value(i)).await.is_err() {
                            break;
                        }
                        run.acknowledged = Some(i);
                    }
                    run
                }));
            }
            let mut runs = Vec::new();
            for task in tasks {
                runs.push(task.await.unwrap());
            }
            drop(store);
            let (_, off) = disarm(dir.path());
            assert!(off, "round {round}: sync {cut_at} was not reached");
            let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap_or_else(|e| {
                panic!("round {round}, cut at sync {cut_at}: does not open: {e}")
            });
            for (writer, run) in runs.iter().enumerate() {
                for n in 0..EACH {
                    let i = writer * EACH + n;
                    let found = store.get(&key(i), 0).await.unwrap();
                    let what = format!("round {round}, cut at sync {cut_at}, key {i}");
                    match found {
                        Some(record) => {
                            assert!(run.sent.is_some_and(|last| i <= last), "{what}: never sent");
                            assert_eq!(record.value, value(i), "{what}: not whole");
                        }
                        None => assert!(
                            run.acknowledged.is_none_or(|last| i > last),
                            "{what}: acknowledged and lost"
                        ),
                    }
                }
            }
        }
    }

    /// The log's records after the database's durable one, in `dir`
    /// (closed): how many a start would replay.
    fn live_records(dir: &Path) -> Vec<(u64, std::ops::Range<usize>)> {
        use redb::ReadableDatabase as _;
        let db = redb::Database::open(dir.join(crate::storage::disk::DB_FILE)).unwrap();
        let durable = crate::storage::disk::keyspace::log_seq(&db.begin_read().unwrap()).unwrap();
        let data = std::fs::read(dir.join(crate::storage::disk::LOG_FILE)).unwrap();
        crate::storage::disk::wal::scan(&data, durable).unwrap()
    }

    /// Every key of `keys` at every revision up to the store's, as read.
    async fn every_read(store: &DiskStore, keys: &[&str]) -> (Revision, Vec<String>) {
        use crate::storage::ops::{KeyRange, RangeQuery};
        let all = RangeQuery::all(KeyRange::prefix(Bytes::new()));
        let revision = store.range(all).await.unwrap().revision;
        let mut reads = Vec::new();
        for at in 1..=revision {
            for key in keys {
                reads.push(format!(
                    "{key}@{at}: {:?}",
                    store.get(key.as_bytes(), at).await
                ));
            }
        }
        (revision, reads)
    }

    fn put(key: &str, value: &str, lease: i64) -> crate::storage::ops::Txn {
        crate::storage::ops::Txn::of(vec![crate::storage::ops::Op::Put {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            lease,
            prev: false,
        }])
    }

    #[tokio::test]
    async fn a_kill_replays_leases_revocations_and_compaction_as_they_went() {
        use crate::storage::StoreError;
        use crate::storage::ops::{Compare, CompareOp, CompareTarget, Op, Txn};
        let keys = ["k1", "k2", "k3", "k4", "k5", "k6"];
        let dir = tempfile::tempdir().unwrap();
        arm(dir.path(), u64::MAX, Cut::DropAll);
        let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
        let a = store.lease_grant(Duration::from_secs(60)).await.unwrap().id;
        store.txn(put("k1", "with a", a)).await.unwrap();
        let b = store.lease_grant(Duration::from_secs(60)).await.unwrap().id;
        store.txn(put("k2", "with b", b)).await.unwrap();
        let first = store
            .put(Bytes::from("k3"), Bytes::from("1"))
            .await
            .unwrap();
        store
            .put(Bytes::from("k3"), Bytes::from("2"))
            .await
            .unwrap();
        assert_eq!(store.lease_revoke(a).await.unwrap().0, 1);
        store.compact(first + 1).await.unwrap();
        // A lease that expired, not yet revoked: a put with it fails, and
        // its key looks deleted to a compare; the replay must decide the
        // same, though the restarted store gives the lease a fresh TTL.
        let mut c = 0;
        for ttl in [200, 1000, 5000] {
            // Long enough for the put (at a high load, retried longer).
            c = store
                .lease_grant(Duration::from_millis(ttl))
                .await
                .unwrap()
                .id;
            if store.txn(put("k4", "with c", c)).await.is_ok() {
                break;
            }
        }
        while store.lease_info(c).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            store.txn(put("k5", "with c", c)).await.unwrap_err(),
            StoreError::LeaseNotFound(c)
        );
        let compare = Txn {
            compares: vec![Compare::key(
                Bytes::from("k4"),
                CompareTarget::Version(0),
                CompareOp::Equal,
            )],
            success: vec![Op::Put {
                key: Bytes::from("k6"),
                value: Bytes::from("k4 looked gone"),
                lease: 0,
                prev: false,
            }],
            failure: vec![Op::Put {
                key: Bytes::from("k6"),
                value: Bytes::from("k4 looked there"),
                lease: 0,
                prev: false,
            }],
        };
        assert!(store.txn(compare).await.unwrap().succeeded);
        store
            .put(Bytes::from("k3"), Bytes::from("3"))
            .await
            .unwrap();
        let before = every_read(&store, &keys).await;
        kill(dir.path());
        drop(store);
        disarm(dir.path());
        assert!(
            !live_records(dir.path()).is_empty(),
            "the log holds the writes"
        );
        let checked = DiskStore::check(dir.path()).unwrap();
        assert!(
            checked.contains("batches of writes the next start applies"),
            "{checked}"
        );

        let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
        // The replayed lease c has a fresh TTL: its key reads as it is.
        let after = every_read(&store, &keys).await;
        assert_eq!(after.0, before.0, "the store's revision");
        let differ: Vec<_> = before
            .1
            .iter()
            .zip(&after.1)
            .filter(|(before, after)| before != after && !before.starts_with("k4@"))
            .collect();
        assert!(
            differ.is_empty(),
            "read differently after the replay: {differ:?}"
        );
        assert!(store.lease_info(a).await.is_err(), "a stays revoked");
        assert!(store.lease_info(b).await.is_ok(), "b stays granted");
        assert_eq!(
            store.get(b"k3", first).await.unwrap_err(),
            StoreError::Compacted {
                requested: first,
                compacted: first + 1
            }
        );
        assert_eq!(
            store
                .put(Bytes::from("k3"), Bytes::from("4"))
                .await
                .unwrap(),
            before.0 + 1,
            "no revision applied twice, none skipped"
        );
        drop(store);
        // Cleanly closed: the log holds nothing a start would replay.
        assert!(live_records(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn a_kill_after_a_checkpoint_applies_nothing_twice() {
        for more in [0, 1, 2] {
            let dir = tempfile::tempdir().unwrap();
            arm(dir.path(), u64::MAX, Cut::DropAll);
            let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
            for i in 0..3 {
                store.put(key(i), value(i)).await.unwrap();
            }
            // The checkpoint: the database durable, the log to start again,
            // its records (all in the database now) still in the file.
            store.flush().await.unwrap();
            for i in 3..3 + more {
                store.put(key(i), value(i)).await.unwrap();
            }
            kill(dir.path());
            drop(store);
            disarm(dir.path());
            assert_eq!(live_records(dir.path()).len(), more);
            let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
            for i in 0..3 + more {
                let record = store.get(&key(i), 0).await.unwrap().unwrap();
                assert_eq!(
                    (record.value, record.mod_revision),
                    (value(i), i as u64 + 2)
                );
            }
            let next = store.put(key(9), value(9)).await.unwrap();
            assert_eq!(
                next,
                3 + more as u64 + 2,
                "after {more} writes past the checkpoint"
            );
        }
    }

    /// A data dir whose store wrote `n` puts, one log record each, and was
    /// killed, with no checkpoint among them (tried again if one came);
    /// and the log's live records, one per put.
    async fn killed_after(n: usize) -> (tempfile::TempDir, Vec<(u64, std::ops::Range<usize>)>) {
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            arm(dir.path(), u64::MAX, Cut::DropAll);
            let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
            for i in 0..n {
                store.put(key(i), value(i)).await.unwrap();
            }
            kill(dir.path());
            drop(store);
            disarm(dir.path());
            let live = live_records(dir.path());
            if live.len() == n {
                return (dir, live);
            }
        }
        panic!("a checkpoint came among {n} writes 5 times");
    }

    #[tokio::test]
    async fn a_torn_last_record_is_dropped_and_the_rest_replayed() {
        let (dir, live) = killed_after(4).await;
        // The last record half written: what a cut in its write leaves
        // (it was never acknowledged: its fsync did not return).
        let path = dir.path().join(crate::storage::disk::LOG_FILE);
        let mut data = std::fs::read(&path).unwrap();
        let last = live.last().unwrap().1.clone();
        let half = (last.start + last.end) / 2;
        data[half..last.end].fill(0);
        std::fs::write(&path, &data).unwrap();
        let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
        for i in 0..3 {
            let found = store.get(&key(i), 0).await.unwrap().unwrap();
            assert_eq!(found.value, value(i));
        }
        assert_eq!(store.get(&key(3), 0).await.unwrap(), None);
        // Revision 5 was handed out (this test tears a record that was
        // acknowledged, which a cut cannot: its fsync had returned), so
        // the store goes on after it, never giving it twice.
        assert_eq!(store.put(key(9), value(9)).await.unwrap(), 6);
    }

    #[tokio::test]
    async fn a_damaged_record_before_valid_ones_is_refused_and_left_alone() {
        let (dir, live) = killed_after(4).await;
        let path = dir.path().join(crate::storage::disk::LOG_FILE);
        let mut data = std::fs::read(&path).unwrap();
        // One bit of the second record's payload: acknowledged writes
        // follow it, so this is no torn tail.
        data[live[1].1.start + 3] ^= 0x08;
        std::fs::write(&path, &data).unwrap();
        let error = DiskStore::open(dir.path(), SyncPolicy::Always)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            error.contains("is damaged") && error.contains("lost"),
            "{error}"
        );
        assert!(error.contains("accept-lost-writes"), "{error}");
        let checked = DiskStore::check(dir.path()).unwrap_err().to_string();
        assert!(checked.contains("is damaged"), "{checked}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            data,
            "the log is left as it was"
        );
        // Accepting the loss keeps what comes before the damage.
        let lost = DiskStore::accept_lost_writes(dir.path()).unwrap();
        assert_eq!(
            lost,
            Some((3, 5)),
            "the writes of revisions 3 to 5 are lost"
        );
        let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
        assert_eq!(
            store.get(&key(0), 0).await.unwrap().unwrap().value,
            value(0)
        );
        assert_eq!(store.get(&key(1), 0).await.unwrap(), None);
        assert_eq!(store.put(key(9), value(9)).await.unwrap(), 6);
    }

    #[tokio::test]
    async fn a_log_written_before_its_header_is_replayed_then_given_one() {
        let (dir, live) = killed_after(3).await;
        let path = dir.path().join(crate::storage::disk::LOG_FILE);
        let data = std::fs::read(&path).unwrap();
        // The same records as a build before the header wrote them.
        let mut legacy = Vec::new();
        for (seq, payload) in &live {
            super::super::log_format::frame(0, *seq, &data[payload.clone()], &mut legacy);
        }
        std::fs::write(&path, &legacy).unwrap();
        assert_eq!(live_records(dir.path()).len(), 3);
        let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
        for i in 0..3 {
            let found = store.get(&key(i), 0).await.unwrap().unwrap();
            assert_eq!((found.value, found.mod_revision), (value(i), i as u64 + 2));
        }
        assert_eq!(store.put(key(9), value(9)).await.unwrap(), 5);
        drop(store);
        assert!(std::fs::read(&path).unwrap().starts_with(b"kvwal"));
        assert!(live_records(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn a_value_holding_a_log_record_is_no_damage_to_the_log() {
        // A client's value that holds a well-formed log record with a high
        // sequence number, at each of the 8 alignments: once a shorter
        // record of a later lap overwrites the start of its own, the copy
        // lies in the file behind the log's end, where the scan looks for
        // valid records after damage. It must not be taken for one (a
        // client could otherwise stop the server from starting again).
        let mut forged = Vec::new();
        for shift in 0..8 {
            forged.resize(forged.len() + shift, 0xaa);
            // Written as the log of a build before keys would write it.
            super::super::log_format::frame(0, 1 << 40, &[7; 8], &mut forged);
        }
        let dir = tempfile::tempdir().unwrap();
        let long_key = Bytes::from(vec![b'k'; 64]);
        let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
        store
            .put(long_key.clone(), Bytes::from(forged.clone()))
            .await
            .unwrap();
        drop(store);
        let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
        store.put(key(1), value(1)).await.unwrap();
        drop(store);
        let store = DiskStore::open(dir.path(), SyncPolicy::Always)
            .unwrap_or_else(|e| panic!("a clean restart was refused: {e}"));
        assert_eq!(
            store.get(&long_key, 0).await.unwrap().unwrap().value,
            Bytes::from(forged)
        );
        assert_eq!(
            store.get(&key(1), 0).await.unwrap().unwrap().value,
            value(1)
        );
        drop(store);
        DiskStore::check(dir.path()).unwrap();
    }

    #[tokio::test]
    async fn a_failed_log_sync_is_unavailable_and_stops_writes_not_reads() {
        use crate::storage::StoreError;
        let dir = tempfile::tempdir().unwrap();
        arm(dir.path(), u64::MAX, Cut::DropAll);
        let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
        let first = store.put(key(0), value(0)).await.unwrap();
        fail_syncs(dir.path(), Some(crate::storage::disk::LOG_FILE));
        let failed = store.put(key(1), value(1)).await.unwrap_err();
        assert!(
            matches!(&failed, StoreError::Unavailable(m) if m.contains("outcome is unknown")),
            "{failed:?}"
        );
        // Reads go on, from what was logged: not the unlogged batch.
        assert_eq!(
            store.get(&key(0), 0).await.unwrap().unwrap().value,
            value(0)
        );
        assert_eq!(store.get(&key(1), 0).await.unwrap(), None);
        // No write is acknowledged on top of the unlogged batch.
        let refused = store.put(key(2), value(2)).await.unwrap_err();
        assert!(
            matches!(&refused, StoreError::Unavailable(m) if m.contains("until kvserver restarts")),
            "{refused:?}"
        );
        assert!(
            store.flush().await.is_err(),
            "nor made durable behind the log"
        );
        drop(store);
        disarm(dir.path());
        // A restart replays what the log holds: the failed batch may be
        // there (its record was written, its sync failed), whole if so.
        let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
        assert_eq!(
            store.get(&key(0), 0).await.unwrap().unwrap().mod_revision,
            first
        );
        assert_eq!(store.get(&key(2), 0).await.unwrap(), None);
        let landed = store.get(&key(1), 0).await.unwrap();
        if let Some(record) = &landed {
            assert_eq!((&record.value, record.mod_revision), (&value(1), first + 1));
        }
        let next = store.put(key(3), value(3)).await.unwrap();
        assert_eq!(next, first + 1 + u64::from(landed.is_some()), "gapless");
    }

    #[tokio::test]
    async fn a_reopen_after_a_disk_error_replays_the_log_before_serving() {
        let dir = tempfile::tempdir().unwrap();
        arm(dir.path(), u64::MAX, Cut::DropAll);
        let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
        for i in 0..4 {
            assert_eq!(store.put(key(i), value(i)).await.unwrap(), i as u64 + 2);
        }
        // The checkpoint's database fsync fails: redb takes no more
        // commits until it is reopened, and the reopen drops the commits
        // that were only logged.
        fail_syncs(dir.path(), Some(crate::storage::disk::DB_FILE));
        assert!(store.flush().await.is_err());
        fail_syncs(dir.path(), None);
        // The next write reopens, replays the log, and goes on after it.
        assert_eq!(store.put(key(4), value(4)).await.unwrap(), 6);
        for i in 0..5 {
            let record = store.get(&key(i), 0).await.unwrap().unwrap();
            assert_eq!(
                (record.value, record.mod_revision),
                (value(i), i as u64 + 2)
            );
        }
        drop(store);
        disarm(dir.path());
        let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
        for i in 0..5 {
            let record = store.get(&key(i), 0).await.unwrap().unwrap();
            assert_eq!(
                (record.value, record.mod_revision),
                (value(i), i as u64 + 2)
            );
        }
        assert_eq!(store.put(key(5), value(5)).await.unwrap(), 7);
    }

    /// A read error while a batch is applied (the disk went away: every
    /// read of a page not cached fails) fails the batch; it must not hang
    /// the committer, whose reopen after the error (`recover`,
    /// `DbHandle::reopen`) waits for every holder of the database to let go,
    /// the batch's own transaction included.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_error_in_a_batch_fails_it_and_does_not_hang_the_committer() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
            // More than redb's cache (64 MiB) holds.
            let big = Bytes::from(vec![b'x'; 2 << 20]);
            for i in 0..50 {
                store.put(key(i), big.clone()).await.unwrap();
            }
        }
        arm(dir.path(), u64::MAX, Cut::DropAll);
        let store = DiskStore::open(dir.path(), SyncPolicy::Always).unwrap();
        kill(dir.path());
        // A key whose page is not in redb's cache: its read fails.
        let mut missed = None;
        for i in 0..50 {
            if store.get(&key(i), 0).await.is_err() {
                missed = Some(i);
                break;
            }
        }
        let missed = missed.expect("every page cached");
        let put =
            tokio::time::timeout(Duration::from_secs(10), store.put(key(missed), value(1))).await;
        let hung = put.is_err();
        if hung {
            // Dropping would join the committer thread, which never returns.
            std::mem::forget(store);
        }
        disarm(dir.path());
        assert!(
            !hung,
            "the write hung: the committer waits forever in DbHandle::reopen"
        );
        let refused = put.unwrap().unwrap_err();
        assert!(
            matches!(refused, crate::storage::StoreError::Unavailable(_)),
            "{refused}"
        );
    }

    /// A checkpoint whose commit reported an error although its data landed
    /// (a failed fsync of pages the OS still holds): after the reopen, the
    /// log's replay must not apply its writes a second time over them
    /// (each write would then be kept as what it replaced, and a read at
    /// an older revision would walk back in a loop), and every revision
    /// reads as it was, then and after a clean restart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_checkpoint_that_landed_despite_its_error_is_not_applied_twice() {
        let dir = tempfile::tempdir().unwrap();
        arm(dir.path(), u64::MAX, Cut::DropAll);
        let store = Arc::new(DiskStore::open(dir.path(), SyncPolicy::Always).unwrap());
        let first = store.put(key(0), Bytes::from("v1")).await.unwrap();
        store.flush().await.unwrap();
        let second = store.put(key(0), Bytes::from("v2")).await.unwrap();
        fail_syncs_keeping(dir.path(), crate::storage::disk::DB_FILE);
        assert!(
            store.flush().await.is_err(),
            "the checkpoint reports its error"
        );
        fail_syncs(dir.path(), None);
        // The next write reopens the database and replays the log over it.
        store.put(key(1), value(1)).await.unwrap();
        let latest = store.get(&key(0), 0).await.unwrap().unwrap();
        assert_eq!(
            (latest.value.clone(), latest.mod_revision),
            (Bytes::from("v2"), second)
        );
        // A clean restart: what the database file holds.
        drop(store);
        disarm(dir.path());
        let store = Arc::new(DiskStore::open(dir.path(), SyncPolicy::Always).unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = Arc::clone(&store);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let _ = tx.send(rt.block_on(reader.get(&key(0), first)));
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(found) => assert_eq!(found.unwrap().unwrap().value, Bytes::from("v1")),
            Err(_) => {
                std::mem::forget(store);
                panic!(
                    "after a restart, a read of key 0 at revision {first} loops forever: the \
                     database's history says the write at {second} replaced itself"
                );
            }
        }
    }
}
