//! The store's files on disk — the database, its write-ahead log (`-wal`) and its shared-memory
//! index (`-shm`) — as they were when the store was opened, to notice one deleted or replaced
//! while it is in use: SQLite would go on writing into the unlinked file, and everything
//! committed there would be gone at the next start. Also what a failed write to them means.

use crate::error::{StoreError, StoreErrorKind};
use rusqlite::ffi;
use std::io;
use std::path::{Path, PathBuf};

/// More than the largest single write SQLite makes to a store file: a write-ahead log frame
/// (one 4 KiB page and its header), or a 32 KiB region of the shared-memory index.
const ONE_WRITE: u64 = 64 * 1024;

/// A SQLite error on the store at `path`, by the kind of trouble it means. A write that passed
/// the process's file size limit (`RLIMIT_FSIZE`: `ulimit -f`, systemd's `LimitFSIZE=`) fails
/// in SQLite as a plain I/O error; it is `Full`, as on a full disk, when one of the store's
/// files has reached the limit (is within one write of it).
pub(crate) fn sqlite_error(path: &Path, e: rusqlite::Error) -> StoreError {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Fsize).current;
    classify(path, e, limit)
}

/// [`sqlite_error`] under the file size limit `limit`.
fn classify(path: &Path, e: rusqlite::Error, limit: Option<u64>) -> StoreError {
    let write = matches!(
        &e,
        rusqlite::Error::SqliteFailure(f, _) if matches!(
            f.extended_code,
            ffi::SQLITE_IOERR_WRITE | ffi::SQLITE_IOERR_TRUNCATE | ffi::SQLITE_IOERR_SHMSIZE
        )
    );
    let error = StoreError::sqlite(path, e);
    let Some(limit) = limit.filter(|_| write && error.kind() == StoreErrorKind::Io) else {
        return error;
    };
    let at_limit =
        |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.len().saturating_add(ONE_WRITE) > limit);
    let reached = at_limit(path)
        || COMPANIONS
            .iter()
            .any(|(suffix, _)| at_limit(&companion(path, suffix)));
    if !reached {
        return error;
    }
    StoreError::new(
        StoreErrorKind::Full,
        path,
        format!(
            "{}: a write passed the process's file size limit (RLIMIT_FSIZE, {limit} bytes)",
            error.message()
        ),
    )
}

/// A file's identity: its device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    /// The identity of the file at `path`, `None` if there is none.
    pub(crate) fn of(path: &Path) -> io::Result<Option<Self>> {
        match std::fs::metadata(path) {
            Ok(meta) => Ok(Some(Self::from_meta(&meta))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    #[cfg(unix)]
    fn from_meta(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    #[cfg(not(unix))]
    fn from_meta(_meta: &std::fs::Metadata) -> Self {
        Self { dev: 0, ino: 0 }
    }
}

/// The suffixes of SQLite's files beside the database, with what they are called in messages.
const COMPANIONS: [(&str, &str); 2] = [
    ("-wal", "write-ahead log (-wal)"),
    ("-shm", "shared-memory index (-shm)"),
];

fn companion(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The identities of an open store's files.
#[derive(Debug, Clone)]
pub(crate) struct StoreFiles {
    path: PathBuf,
    main: Option<FileId>,
    /// The companions' identities, once they exist (SQLite creates them at the first read).
    companions: [Option<FileId>; 2],
}

impl StoreFiles {
    /// The files at `path` now, just after the store there was opened.
    pub(crate) fn capture(path: &Path) -> Self {
        let mut files = Self {
            path: path.to_owned(),
            main: FileId::of(path).ok().flatten(),
            companions: [None; 2],
        };
        for (i, (suffix, _)) in COMPANIONS.iter().enumerate() {
            files.companions[i] = FileId::of(&companion(path, suffix)).ok().flatten();
        }
        files
    }

    /// The database file's identity.
    pub(crate) fn main(&self) -> Option<FileId> {
        self.main
    }

    /// After the connection closed: removes the log and index it leaves behind when its
    /// database file was deleted or replaced (SQLite does not copy a log into a database file
    /// that moved, nor delete it), so that they are never paired with another database file
    /// put at the path, which they would damage. Only files that are still the ones opened are
    /// removed; everything they held is in the recorder's memory.
    pub(crate) fn remove_orphans(&self) {
        let Some(main) = self.main else {
            return;
        };
        if FileId::of(&self.path).is_ok_and(|now| now == Some(main)) {
            return;
        }
        for (i, (suffix, what)) in COMPANIONS.iter().enumerate() {
            let path = companion(&self.path, suffix);
            let Some(opened) = self.companions[i] else {
                continue;
            };
            if FileId::of(&path).is_ok_and(|now| now == Some(opened)) {
                match std::fs::remove_file(&path) {
                    Ok(()) => tracing::warn!(
                        file = %path.display(),
                        "removed the {what} of the store file that was deleted or replaced"
                    ),
                    Err(e) => tracing::error!(
                        file = %path.display(),
                        error = %e,
                        "cannot remove the {what} of the store file that was deleted or \
                         replaced; remove it before anything opens the store again"
                    ),
                }
            }
        }
    }

    /// Checks that every file is still the one opened; `Err` says which is not, and how. A file
    /// that cannot be looked at (a permission error, say) is not taken as gone: writing to it
    /// reports that error itself.
    pub(crate) fn check(&mut self) -> Result<(), String> {
        let still = |path: &Path, opened: FileId, what: &str| match FileId::of(path) {
            Ok(None) => Err(format!("the {what} was deleted while in use")),
            Ok(Some(now)) if now != opened => Err(format!(
                "the {what} was replaced by another file while in use"
            )),
            _ => Ok(()),
        };
        if let Some(main) = self.main {
            still(&self.path, main, "file")?;
        }
        for (i, (suffix, what)) in COMPANIONS.iter().enumerate() {
            let path = companion(&self.path, suffix);
            match self.companions[i] {
                Some(opened) => still(&path, opened, what)?,
                None => self.companions[i] = FileId::of(&path).ok().flatten(),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_error(extended_code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(ffi::Error::new(extended_code), None)
    }

    #[test]
    fn a_failed_write_is_full_only_at_the_file_size_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.db");
        std::fs::write(&path, vec![0u8; 4096]).expect("write");
        let kind = |code, limit| classify(&path, io_error(code), limit).kind();
        let write = ffi::SQLITE_IOERR_WRITE;
        const MIB: u64 = 1 << 20;
        assert_eq!(kind(write, None), StoreErrorKind::Io, "no limit");
        assert_eq!(kind(write, Some(MIB)), StoreErrorKind::Io, "far from it");
        std::fs::write(&path, vec![0u8; 1_000_000]).expect("write");
        assert_eq!(
            kind(write, Some(MIB)),
            StoreErrorKind::Full,
            "within one write"
        );
        let e = classify(&path, io_error(write), Some(MIB));
        assert!(
            e.message().ends_with("(RLIMIT_FSIZE, 1048576 bytes)"),
            "{e}"
        );
        // The write-ahead log at the limit counts too.
        std::fs::write(&path, b"").expect("truncate");
        assert_eq!(kind(write, Some(MIB)), StoreErrorKind::Io);
        std::fs::write(companion(&path, "-wal"), vec![0u8; 1_048_000]).expect("write");
        assert_eq!(kind(write, Some(MIB)), StoreErrorKind::Full);
        for extended in [ffi::SQLITE_IOERR_TRUNCATE, ffi::SQLITE_IOERR_SHMSIZE] {
            assert_eq!(kind(extended, Some(MIB)), StoreErrorKind::Full);
        }
        // Not a write, or not an I/O error: the kind SQLite's code means, whatever the limit.
        assert_eq!(kind(ffi::SQLITE_IOERR_READ, Some(MIB)), StoreErrorKind::Io);
        assert_eq!(kind(ffi::SQLITE_BUSY, Some(MIB)), StoreErrorKind::Busy);
        assert_eq!(kind(ffi::SQLITE_FULL, None), StoreErrorKind::Full);
        // The process's own limit (none in tests, unless the runner sets one).
        let limit = rustix::process::getrlimit(rustix::process::Resource::Fsize).current;
        assert_eq!(
            sqlite_error(&path, io_error(write)).kind(),
            classify(&path, io_error(write), limit).kind()
        );
    }

    #[test]
    fn a_file_deleted_or_replaced_is_told_apart_from_one_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.db");
        std::fs::write(&path, b"x").expect("write");
        std::fs::write(companion(&path, "-wal"), b"w").expect("write");
        let mut files = StoreFiles::capture(&path);
        assert_eq!(files.check(), Ok(()));
        std::fs::write(&path, b"rewritten in place").expect("write");
        assert_eq!(files.check(), Ok(()), "the same file, written to");

        std::fs::write(companion(&path, "-shm"), b"s").expect("write");
        assert_eq!(
            files.check(),
            Ok(()),
            "a companion appearing later is noted"
        );
        std::fs::remove_file(companion(&path, "-shm")).expect("rm");
        assert_eq!(
            files.check(),
            Err("the shared-memory index (-shm) was deleted while in use".into())
        );

        let mut files = StoreFiles::capture(&path);
        let other = dir.path().join("other.db");
        std::fs::write(&other, b"y").expect("write");
        std::fs::rename(&other, &path).expect("replace");
        assert_eq!(
            files.check(),
            Err("the file was replaced by another file while in use".into())
        );
        std::fs::remove_dir_all(dir.path()).expect("rm -rf");
        assert_eq!(
            files.check(),
            Err("the file was deleted while in use".into())
        );
    }
}
