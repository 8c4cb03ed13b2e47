//! What the registry reports: its events, the files it could not use,
//! and why it could not start. A leaf: the other registry modules use it.

use std::path::PathBuf;

/// A change in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryEvent {
    /// A new tool is listed (and loading).
    Listed {
        /// The tool.
        name: String,
    },
    /// A tool is callable (first load).
    Loaded {
        /// The tool.
        name: String,
    },
    /// A new version of a tool replaced the old one.
    Replaced {
        /// The tool.
        name: String,
    },
    /// A tool was removed.
    Removed {
        /// The tool.
        name: String,
    },
    /// A tool or file could not be loaded; a previous version, if any,
    /// keeps serving.
    Failed {
        /// The tool, when its name is known.
        name: Option<String>,
        /// The file at fault.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl RegistryEvent {
    /// Whether the list of tools (names, descriptions, schemas) changed:
    /// what MCP's `notifications/tools/list_changed` announces.
    pub fn changes_list(&self) -> bool {
        matches!(
            self,
            RegistryEvent::Listed { .. }
                | RegistryEvent::Replaced { .. }
                | RegistryEvent::Removed { .. }
        )
    }
}

/// A file the registry could not use, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

/// The registry could not start.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The tools directory cannot be read.
    #[error("tools directory {}: {source}", dir.display())]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The tools directory and the data directory overlap: what a tool
    /// writes as data the registry would load as a tool.
    #[error(
        "the tools directory {} and the data directory {} overlap: a tool that writes data could write a tool the server then runs; keep them apart",
        tools.display(), data.display()
    )]
    ToolsInData {
        /// The tools directory.
        tools: PathBuf,
        /// The data directory.
        data: PathBuf,
    },
    /// Others can change the tools directory.
    #[error("tools directory {}: {why}: what it holds the server runs, so it must be writable by this user (or root) alone (chmod go-w)", dir.display())]
    Unsafe {
        /// The directory.
        dir: PathBuf,
        /// Who else can write it.
        why: String,
    },
    /// The tools directory cannot be watched.
    #[error("cannot watch tools directory {}: {source}", dir.display())]
    Watch {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: notify::Error,
    },
    /// A thread could not be started.
    #[error("cannot start the registry's {what} thread: {source}")]
    Thread {
        /// Which thread.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
