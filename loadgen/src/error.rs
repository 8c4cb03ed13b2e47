//! Why a target could not be started: a leaf both the embedded target and
//! the remote one (`remote.rs`) return.

use std::path::PathBuf;

/// A target that could not be started.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// A file or directory could not be prepared.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The pool or registry would not start.
    #[error("{0}")]
    Start(String),
    /// A tool failed to load.
    #[error("tool {path}: {reason}")]
    Tool {
        /// The manifest.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}
