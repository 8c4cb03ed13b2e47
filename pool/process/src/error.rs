//! Why a process tool could not be loaded.

use std::path::PathBuf;

/// Why a process tool could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProcessLoadError {
    /// `{data}` is used and no data directory is configured.
    #[error("{key} uses {{data}}, and no data directory is configured")]
    NoDataDir {
        /// The key.
        key: &'static str,
    },
    /// The program is not found on `PATH` or is not executable.
    #[error("command[0] = {program:?}: not an executable file (looked in {looked})")]
    NoProgram {
        /// As written.
        program: String,
        /// Where it was looked for.
        looked: String,
    },
    /// The program may not be run as named.
    #[error("command[0] = {program:?}: {why}")]
    Program {
        /// As written.
        program: String,
        /// Why not.
        why: String,
    },
    /// The working directory does not exist.
    #[error("cwd {}: not a directory", .0.display())]
    NoCwd(PathBuf),
    /// A `[permissions]` directory does not exist.
    #[error("permissions.{key}: {}: not a directory", path.display())]
    NoGrant {
        /// `read` or `write`.
        key: &'static str,
        /// As resolved.
        path: PathBuf,
    },
    /// A directory the process needs is not covered by `[permissions]`.
    #[error(
        "{what} = {}: [permissions] does not cover it, and nothing is granted implicitly: add it (or a directory above it) to permissions.read or permissions.write",
        .path.display()
    )]
    Uncovered {
        /// The key that names it.
        what: &'static str,
        /// As resolved.
        path: PathBuf,
    },
    /// A write grant covers the tools directory: the tool could write a
    /// manifest the registry would load.
    #[error(
        "permissions.write: {} holds the tools directory {}: the tool could write a tool the server then runs",
        .path.display(), .tools.display()
    )]
    WritesTools {
        /// The grant, as resolved.
        path: PathBuf,
        /// The tools directory.
        tools: PathBuf,
    },
    /// What a `preset` needs could not be prepared.
    #[error("preset = {preset:?}: {why}")]
    Preset {
        /// The preset.
        preset: &'static str,
        /// What failed, naming the path.
        why: String,
    },
    /// The kernel supports Landlock, and the ruleset could not be made.
    #[error("permissions: the Landlock ruleset: {0}")]
    Landlock(#[source] landlock::RulesetError),
    /// An upstream MCP server could not be started or listed.
    #[error("{0}")]
    Upstream(String),
    /// The process host's thread could not be started.
    #[error("cannot start the process host thread: {0}")]
    Host(#[source] std::io::Error),
}
