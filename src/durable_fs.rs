//! Making new directories, new files and renames survive a power cut.
//!
//! fsync of a file makes its contents durable, not its name: POSIX keeps a
//! directory entry (a file just created, or renamed into place) only once
//! the directory itself is fsynced. Every place that creates a data dir,
//! builds a database aside and renames it in, or writes a backup and renames
//! it over its target goes through these two functions, so that a cut at any
//! moment leaves either the old state or the new one, never a name that
//! points nowhere.

use std::io;
use std::path::{Path, PathBuf};

/// fsyncs the directory `dir`, so that entries created or renamed in it
/// survive a power cut.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    // `""` is the current directory for a relative path with one component.
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::fs::File::open(dir)?.sync_all()
}

/// fsyncs the directory that holds `path` (after `path` was created or
/// renamed into place).
pub fn sync_parent(path: &Path) -> io::Result<()> {
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// `create_dir_all`, then fsyncs the parent of every directory it created,
/// so the whole new path survives a power cut.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut at = Some(dir);
    while let Some(path) = at {
        if path.as_os_str().is_empty() || path.exists() {
            break;
        }
        missing.push(path.to_owned());
        at = path.parent();
    }
    std::fs::create_dir_all(dir)?;
    // The outermost new directory's entry is in an old directory; each
    // inner one's in the new directory just outside it.
    for created in missing.iter().rev() {
        sync_parent(created)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_nested_directories_and_syncs_them() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        assert!(deep.is_dir());
        // Existing directories are no error, and nothing is created twice.
        create_dir_all(&deep).unwrap();
        sync_parent(&deep.join("file")).unwrap();
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        assert!(sync_dir(&root.path().join("missing")).is_err());
    }
}
