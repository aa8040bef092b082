//! Power loss at every sync point of `kv backup`'s write path
//! ([`BackupFile`]), simulated: a file system ([`SimFs`]) that keeps, for
//! each file, what it held at its last fsync, and for the directory, the
//! names it held at its last fsync. At the chosen sync the power goes (that
//! sync never completes, and everything after it fails); the test then
//! looks at every state the disk may be found in: each name as of the last
//! directory sync or as last changed (a journaling file system may have
//! written the change back, or not), each file's contents as of its last
//! sync, as last written, or torn halfway between. Whatever the state, the
//! backup's target must hold the previous backup (or nothing, if there was
//! none) or the whole new one; and once `finish` returned, only the new one.
//!
//! The server side of a backup writes nothing; `kvserver restore` builds
//! its data dir aside and renames it in (`database.rs`, simulated in
//! `storage/disk/power_loss.rs`).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::tests::{chunk, file};
use super::{BackupFile, BackupFs, read};

/// A file's contents: as of its last sync, and as last written.
#[derive(Clone, Default)]
struct Inode {
    synced: Vec<u8>,
    written: Vec<u8>,
}

#[derive(Default)]
struct Disk {
    inodes: Vec<Inode>,
    /// The directory's names as of its last sync, and as last changed.
    synced_names: BTreeMap<PathBuf, usize>,
    names: BTreeMap<PathBuf, usize>,
    syncs: u64,
    cut_at: u64,
    off: bool,
}

#[derive(Clone)]
struct SimFs(Arc<Mutex<Disk>>);

struct SimFile {
    disk: Arc<Mutex<Disk>>,
    inode: usize,
}

fn power_off() -> io::Error {
    io::Error::other("the power is off")
}

impl Disk {
    /// A sync: the `cut_at`th never completes, and the power goes.
    fn sync_point(&mut self) -> io::Result<()> {
        if self.off {
            return Err(power_off());
        }
        if self.syncs == self.cut_at {
            self.off = true;
            return Err(power_off());
        }
        self.syncs += 1;
        Ok(())
    }

    /// Every content `path` may be found with after the cut (`None`: no
    /// such name).
    fn found(&self, path: &Path) -> Vec<Option<Vec<u8>>> {
        let mut found = Vec::new();
        for names in [&self.synced_names, &self.names] {
            let Some(&inode) = names.get(path) else {
                found.push(None);
                continue;
            };
            let inode = &self.inodes[inode];
            let torn = inode.synced.len() + (inode.written.len() - inode.synced.len()) / 2;
            found.push(Some(inode.synced.clone()));
            found.push(Some(inode.written.clone()));
            found.push(Some(inode.written[..torn].to_vec()));
        }
        found
    }
}

impl Write for SimFile {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut disk = self.disk.lock().unwrap();
        if disk.off {
            return Err(power_off());
        }
        disk.inodes[self.inode].written.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BackupFs for SimFs {
    type File = SimFile;

    fn create(&mut self, path: &Path) -> io::Result<SimFile> {
        let mut disk = self.0.lock().unwrap();
        if disk.off {
            return Err(power_off());
        }
        disk.inodes.push(Inode::default());
        let inode = disk.inodes.len() - 1;
        disk.names.insert(path.to_owned(), inode);
        Ok(SimFile {
            disk: Arc::clone(&self.0),
            inode,
        })
    }

    fn sync(&mut self, file: &mut SimFile) -> io::Result<()> {
        let mut disk = self.0.lock().unwrap();
        disk.sync_point()?;
        let inode = &mut disk.inodes[file.inode];
        inode.synced = inode.written.clone();
        Ok(())
    }

    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        let mut disk = self.0.lock().unwrap();
        if disk.off {
            return Err(power_off());
        }
        let inode = disk
            .names
            .remove(from)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        disk.names.insert(to.to_owned(), inode);
        Ok(())
    }

    fn sync_parent(&mut self, _path: &Path) -> io::Result<()> {
        let mut disk = self.0.lock().unwrap();
        disk.sync_point()?;
        disk.synced_names = disk.names.clone();
        Ok(())
    }
}

/// A disk that loses power at its `cut_at`th sync, holding `old` (a
/// durable earlier backup) at `target` if given.
fn disk(cut_at: u64, target: &Path, old: Option<&[u8]>) -> SimFs {
    let mut disk = Disk {
        cut_at,
        ..Disk::default()
    };
    if let Some(old) = old {
        disk.inodes.push(Inode {
            synced: old.to_vec(),
            written: old.to_vec(),
        });
        disk.names.insert(target.to_owned(), 0);
        disk.synced_names = disk.names.clone();
    }
    SimFs(Arc::new(Mutex::new(disk)))
}

#[test]
fn a_power_cut_at_any_sync_of_a_backup_leaves_the_old_backup_or_the_whole_new_one() {
    let target = Path::new("backups/x.kv");
    let partial = Path::new("backups/x.kv.partial");
    let old = file(&[chunk(3, &["a"], true)]);
    let chunks = [chunk(7, &["a", "b"], false), chunk(7, &["c"], true)];
    let new = file(&chunks);
    let back_up = |fs: SimFs| -> io::Result<()> {
        let mut backup = BackupFile::create(fs, target, partial)?;
        for chunk in &chunks {
            backup.write(chunk)?;
        }
        backup.finish()
    };
    // Without a cut: how many syncs a backup makes.
    let counted = disk(u64::MAX, target, None);
    back_up(counted.clone()).unwrap();
    let syncs = counted.0.lock().unwrap().syncs;
    assert_eq!(syncs, 2, "the file's fsync, then its directory's");
    for previous in [None, Some(old.as_slice())] {
        for cut_at in 0..=syncs {
            let fs = disk(cut_at, target, previous);
            let finished = back_up(fs.clone()).is_ok();
            assert_eq!(finished, cut_at == syncs, "cut at sync {cut_at}");
            let disk = fs.0.lock().unwrap();
            for found in disk.found(target) {
                let whole_new = found.as_deref() == Some(new.as_slice());
                let as_before = found.as_deref() == previous;
                assert!(
                    whole_new || (!finished && as_before),
                    "cut at sync {cut_at} of {syncs} (finished: {finished}, a backup there \
                     before: {}): the target holds {:?} bytes",
                    previous.is_some(),
                    found.map(|bytes| bytes.len())
                );
                if whole_new {
                    assert_eq!(read(new.as_slice()).unwrap().kvs.len(), 3);
                }
            }
        }
    }
}
