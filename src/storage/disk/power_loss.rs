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
    use crate::storage::{Record, Store};

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
            if store.put(key(i), value(i)).await.is_err() {
                break;
            }
            match sync {
                SyncPolicy::Always => run.acknowledged = Some(i),
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
    async fn check(dir: &Path, run: &Run, writes: usize, what: &str) {
        let store = DiskStore::open(dir, SyncPolicy::Always)
            .unwrap_or_else(|e| panic!("{what}: the data dir does not open: {e}"));
        for i in 0..writes {
            let found = store.get(&key(i), 0).await.unwrap();
            let acknowledged = run.acknowledged.is_some_and(|last| i <= last);
            let sent = run.sent.is_some_and(|last| i <= last);
            match found {
                Some(Record { value: found, .. }) => {
                    assert!(sent, "{what}: key {i}, never sent, is there");
                    assert_eq!(found, value(i), "{what}: key {i} is not whole");
                }
                None => assert!(!acknowledged, "{what}: acknowledged key {i} is lost"),
            }
        }
        // The store takes writes again.
        store.put(key(writes), value(writes)).await.unwrap();
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
                check(dir.path(), &run, writes, &what).await;
            }
        }
        syncs
    }

    #[tokio::test]
    async fn a_first_start_and_its_first_commits_survive_a_cut_at_every_sync() {
        cut_everywhere(6, SyncPolicy::Always).await;
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
}
