//! Why the log cannot be written or read.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Why the log cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A file or the directory failed.
    #[error("audit log: {doing} {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        doing: &'static str,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The ring stayed full.
    #[error(
        "audit log: its ring of {capacity} records stayed full for {waited:?} (the disk is slower than the calls; audit.capacity, audit.on_full)"
    )]
    Full {
        /// The ring's size.
        capacity: usize,
        /// How long the call waited.
        waited: Duration,
    },
    /// The record could not be written before the answer.
    #[error("audit log: the call's record is not on disk: {0}")]
    NotWritten(#[source] Arc<AuditError>),
    /// The log was closed.
    #[error("audit log: closed")]
    Closed,
}

impl AuditError {
    pub(crate) fn io(path: &Path, doing: &'static str, source: std::io::Error) -> AuditError {
        AuditError::Io {
            path: path.to_owned(),
            doing,
            source,
        }
    }
}
