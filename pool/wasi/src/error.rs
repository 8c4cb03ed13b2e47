//! Why a WASI tool could not be loaded: one variant per failure, with the
//! file, key or export it concerns and, where there is one, the underlying
//! error as its source.

use std::path::PathBuf;

use toolplane_tool::files::ReadError;
use toolplane_units::fmt_size;

/// Why a WASI tool could not be loaded. Its message is what `tools list`,
/// `toolplane check` and a call of the tool show.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WasiLoadError {
    /// The module file could not be opened or read.
    #[error("cannot read module: {source}")]
    ModuleIo {
        /// The module file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The module file is not a regular file, too large, or too slow to read.
    #[error("module {}", .source.reason())]
    ModuleFile {
        /// Why.
        #[source]
        source: ReadError,
    },
    /// The module's bytes are not a module wasmtime accepts.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// The manifest asks for more memory than the runtime gives a call.
    #[error("limits.memory = {} is above the runtime's max_memory = {}", fmt_size(*.asked), fmt_size(*.max))]
    MemoryAboveRuntime {
        /// `limits.memory`.
        asked: u64,
        /// The runtime's `max_memory`.
        max: u64,
    },
    /// The manifest sets fuel and the runtime does not meter it.
    #[error("limits.fuel is set but the runtime does not meter fuel (enable `fuel`)")]
    FuelNotMetered,
    /// A grant uses `{data}` and no data directory is configured.
    #[error(
        "permissions.dirs[{index}].host = {host:?} needs a data directory, and none is configured"
    )]
    NoDataDir {
        /// The grant's index in `permissions.dirs`.
        index: usize,
        /// The grant's `host` as written.
        host: String,
    },
    /// A read-write grant covers the tools directory: a call could write
    /// a manifest the registry would load.
    #[error(
        "permission for {guest}: host directory {} is read-write and holds the tools directory {}: a call could write a tool the server then runs",
        .host.display(), .tools.display()
    )]
    WritesTools {
        /// The path the guest sees.
        guest: String,
        /// The granted host directory.
        host: PathBuf,
        /// The tools directory.
        tools: PathBuf,
    },
    /// A granted host directory does not exist.
    #[error("permission for {guest}: host directory {} does not exist", .host.display())]
    MissingDir {
        /// The path the guest sees.
        guest: String,
        /// The host directory.
        host: PathBuf,
    },
    /// `entry = "fast"` and the module does not provide the fast entry.
    #[error("entry = \"fast\" but the module {0}")]
    NoFastEntry(ExportError),
    /// `mode = "reuse"` needs the fast entry.
    #[error(
        "mode = \"reuse\" needs the fast entry (toolplane_alloc, toolplane_call), and this tool uses the command entry"
    )]
    ReuseNeedsFast,
    /// The module has no entry point at all.
    #[error("the module exports neither the fast entry nor `_start`")]
    NoEntry,
    /// The module imports something WASI preview1 (and toolplane's host
    /// functions) do not provide.
    #[error("cannot link against WASI preview1: {0:#}")]
    Link(#[source] wasmtime::Error),
}

impl WasiLoadError {
    /// A module file that could not be read, as the right variant.
    pub(crate) fn module(source: ReadError) -> WasiLoadError {
        match source {
            ReadError::Io { path, source } => WasiLoadError::ModuleIo { path, source },
            source => WasiLoadError::ModuleFile { source },
        }
    }
}

/// Why bytes are not a module. Cloned to every load that waited on the
/// same compile. It keeps wasmtime's message, cut to its first line, and
/// not wasmtime's error: the text parser quotes the offending line of its
/// input, and a module path can name any file (`/etc/passwd`), whose
/// content must never reach a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// Neither format.
    #[error(
        "not a WebAssembly module: neither the binary format (it does not start with \\0asm) nor the text format (it is not UTF-8)"
    )]
    NotWasm,
    /// wasmtime refused the module.
    #[error("{first_line}{}", if *.cut { " (the rest of the message, which quotes the file, is left out)" } else { "" })]
    Invalid {
        /// The first line of wasmtime's message.
        first_line: String,
        /// Whether lines were left out.
        cut: bool,
    },
}

impl CompileError {
    /// wasmtime's error, cut to its first line.
    pub(crate) fn invalid(e: &wasmtime::Error) -> CompileError {
        let full = format!("{e:#}");
        let first = full.lines().next().unwrap_or("").trim_end();
        CompileError::Invalid {
            first_line: first.to_string(),
            cut: first.len() < full.trim_end().len(),
        }
    }
}

/// What is wrong with a module's fast-entry exports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// The export is missing.
    #[error("does not export `{0}`")]
    Missing(&'static str),
    /// The export has another type.
    #[error("exports `{0}` with the wrong type")]
    WrongType(&'static str),
}
