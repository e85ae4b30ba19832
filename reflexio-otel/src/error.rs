//! Every error the library returns past the event boundary: a refused event, a refused durable
//! batch, a store in trouble, an exposition that cannot be set up. (A value that fails
//! validation is a [`crate::ValueError`], next to the values in `event.rs`.)

use crate::event::Name;
use rusqlite::ErrorCode;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// Why an event was not recorded. A refused event changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The event's time is further ahead of the clock than the allowed skew.
    #[error(
        "event time is {} ahead of the clock; at most {} is allowed",
        humantime::format_duration(*ahead),
        humantime::format_duration(*max)
    )]
    FutureTime {
        /// How far ahead it is.
        ahead: Duration,
        /// The allowed skew.
        max: Duration,
    },
    /// The event's time is before 1970-01-01.
    #[error("event time is before the Unix epoch")]
    BeforeEpoch,
    /// The holder already holds this lock.
    #[error("lock `{name}` is already held by `{holder}`")]
    LockAlreadyHeld {
        /// The lock.
        name: Name,
        /// The holder.
        holder: Name,
    },
    /// The holder does not hold this lock.
    #[error("lock `{name}` is not held by `{holder}`")]
    LockNotHeld {
        /// The lock.
        name: Name,
        /// The holder.
        holder: Name,
    },
    /// The batch alone takes more locks than the recorder tracks (every other lock makes room
    /// for a new one).
    #[error("the batch takes more than {limit} locks, the most the recorder tracks")]
    TooManyLocks {
        /// The limit.
        limit: usize,
    },
    /// The event is not a count, so it cannot be added to a [`crate::History`]: a CoVe
    /// configuration or a lock event.
    #[error(
        "a {0} is not a count: a history adds transcriptions, facts, digests and retention runs"
    )]
    NotACount(&'static str),
}

/// Why a durable batch was not recorded. Nothing of a refused batch is recorded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DurableError {
    /// An event of the batch is invalid; `index` is its position.
    #[error("event {index}: {error}")]
    Invalid {
        /// The position of the first invalid event.
        index: usize,
        /// What is wrong with it.
        error: RecordError,
    },
    /// The recorder was built without a store.
    #[error("the recorder has no store to make events durable in")]
    NoStore,
    /// The recorder's store was shut down.
    #[error("the recorder's store is shut down")]
    Closed,
    /// A checkpoint did not hold its expected value: another process moved it.
    #[error("checkpoint `{key}` was moved by another process")]
    CheckpointMoved {
        /// The checkpoint.
        key: String,
    },
    /// The batch could not be committed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What kind of trouble the store is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// Another process held the file's lock for longer than the busy timeout.
    Busy,
    /// The disk (or the file's size limit) is full.
    Full,
    /// The file or its directory cannot be written.
    ReadOnly,
    /// The file is damaged, or not a database.
    Corrupt,
    /// The file is a database, but not a Reflexio metrics store this version can use.
    Incompatible,
    /// The file cannot be opened or read.
    Io,
    /// The file was deleted or replaced while in use.
    Gone,
    /// Anything else.
    Other,
}

impl StoreErrorKind {
    /// Every kind, in the order of the `kind` label values.
    pub const ALL: [StoreErrorKind; 8] = [
        StoreErrorKind::Busy,
        StoreErrorKind::Full,
        StoreErrorKind::ReadOnly,
        StoreErrorKind::Corrupt,
        StoreErrorKind::Incompatible,
        StoreErrorKind::Io,
        StoreErrorKind::Gone,
        StoreErrorKind::Other,
    ];

    /// The value of the `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreErrorKind::Busy => "busy",
            StoreErrorKind::Full => "full",
            StoreErrorKind::ReadOnly => "read_only",
            StoreErrorKind::Corrupt => "corrupt",
            StoreErrorKind::Incompatible => "incompatible",
            StoreErrorKind::Io => "io",
            StoreErrorKind::Gone => "gone",
            StoreErrorKind::Other => "other",
        }
    }

    /// Its position in [`StoreErrorKind::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for StoreErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The store could not be opened, read or written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("metrics store {}: {kind}: {message}", path.display())]
pub struct StoreError {
    kind: StoreErrorKind,
    path: PathBuf,
    message: String,
}

impl StoreError {
    pub(crate) fn new(kind: StoreErrorKind, path: &Path, message: impl Into<String>) -> Self {
        Self {
            kind,
            path: path.to_owned(),
            message: message.into(),
        }
    }

    /// A SQLite error on the store at `path`, by the kind of trouble its code means.
    pub(crate) fn sqlite(path: &Path, e: rusqlite::Error) -> Self {
        let kind = match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreErrorKind::Busy,
            Some(ErrorCode::DiskFull) => StoreErrorKind::Full,
            Some(ErrorCode::ReadOnly) => StoreErrorKind::ReadOnly,
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreErrorKind::Corrupt,
            Some(
                ErrorCode::CannotOpen | ErrorCode::SystemIoFailure | ErrorCode::PermissionDenied,
            ) => StoreErrorKind::Io,
            _ => StoreErrorKind::Other,
        };
        Self::new(kind, path, e.to_string())
    }

    /// What kind of trouble it is.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What went wrong, without the path and the kind.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Setting up or encoding the Prometheus exposition failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The OpenTelemetry Prometheus exporter could not be registered.
    #[error("cannot register the Prometheus exporter: {0}")]
    Exporter(String),
    /// The registry could not be encoded as text.
    #[error("cannot encode the Prometheus exposition: {0}")]
    Encode(#[from] prometheus::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::ffi;

    #[test]
    fn sqlite_codes_map_to_kinds() {
        let path = Path::new("/tmp/metrics.db");
        let cases = [
            (ffi::SQLITE_BUSY, StoreErrorKind::Busy),
            (ffi::SQLITE_LOCKED, StoreErrorKind::Busy),
            (ffi::SQLITE_FULL, StoreErrorKind::Full),
            (ffi::SQLITE_READONLY, StoreErrorKind::ReadOnly),
            (ffi::SQLITE_CORRUPT, StoreErrorKind::Corrupt),
            (ffi::SQLITE_NOTADB, StoreErrorKind::Corrupt),
            (ffi::SQLITE_CANTOPEN, StoreErrorKind::Io),
            (ffi::SQLITE_IOERR, StoreErrorKind::Io),
            (ffi::SQLITE_PERM, StoreErrorKind::Io),
            (ffi::SQLITE_CONSTRAINT, StoreErrorKind::Other),
        ];
        for (code, kind) in cases {
            let e = rusqlite::Error::SqliteFailure(ffi::Error::new(code), None);
            let err = StoreError::sqlite(path, e);
            assert_eq!(err.kind(), kind, "code {code}");
            assert_eq!(err.path(), path);
            assert!(
                err.to_string()
                    .starts_with(&format!("metrics store /tmp/metrics.db: {kind}: ")),
                "{err}"
            );
        }
        let err = StoreError::sqlite(path, rusqlite::Error::QueryReturnedNoRows);
        assert_eq!(err.kind(), StoreErrorKind::Other);
    }

    #[test]
    fn kinds_are_listed_in_label_order() {
        for (i, kind) in StoreErrorKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
        let labels: Vec<_> = StoreErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            labels,
            [
                "busy",
                "full",
                "read_only",
                "corrupt",
                "incompatible",
                "io",
                "gone",
                "other"
            ]
        );
    }

    #[test]
    fn durable_errors_name_the_event() {
        let err = DurableError::Invalid {
            index: 3,
            error: RecordError::BeforeEpoch,
        };
        assert_eq!(
            err.to_string(),
            "event 3: event time is before the Unix epoch"
        );
        let err = RecordError::FutureTime {
            ahead: Duration::from_secs(600),
            max: Duration::from_secs(300),
        };
        assert_eq!(
            err.to_string(),
            "event time is 10m ahead of the clock; at most 5m is allowed"
        );
    }
}
