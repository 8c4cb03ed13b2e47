//! Why a target could not be started: a leaf both the embedded target and
//! the remote one (`remote.rs`) return.

use std::path::PathBuf;
use std::time::Duration;

/// Any error, as a [`TargetError`]'s source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    /// The pool, the registry or the engine would not start.
    #[error("{what}: {source}")]
    Start {
        /// What would not start.
        what: &'static str,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The tools did not finish loading in time.
    #[error("the tools did not load within {} s", .within.as_secs())]
    NotLoaded {
        /// The wait.
        within: Duration,
    },
    /// The profile asks for something this target cannot do.
    #[error("{}: {why}", .path.display())]
    Profile {
        /// The profile.
        path: PathBuf,
        /// What cannot be done, and what to do instead.
        why: &'static str,
    },
    /// A built-in's manifest could not be rewritten (pool.modes).
    #[error("{}: {source}", .path.display())]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// Why.
        #[source]
        source: toml::de::Error,
    },
    /// The server named by `--target` cannot be used.
    #[error("--target {url}: {source}")]
    Remote {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The server's data directory could not be seeded with the profile's
    /// files.
    #[error("seeding the server's data directory: {0}")]
    Seed(#[source] BoxError),
    /// A tool failed to load.
    #[error("tool {path}: {reason}")]
    Tool {
        /// The manifest.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}
