//! The seam between the registry and the runtimes that run tools.
//!
//! The registry discovers manifests, checks them, lists them, watches their
//! files and reloads them, and keeps every version's load state: the same
//! for every kind of tool. What differs per kind is here, one `match` per
//! step: what a load needs besides the manifest ([`Source`]), how it loads
//! ([`load`]), which files a tool depends on ([`depends_on`]), whether a
//! reload changed anything ([`unchanged`]), and the loaded tool itself
//! ([`Tool`]), which the engine handler and [`crate::Registry::call`]
//! dispatch on. A new kind of tool is a new module, a new
//! [`crate::manifest::RuntimeManifest`] variant and one arm in each of
//! these, not edits across the registry.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use toolplane_core::Outcome;

use crate::checks::Checks;
use crate::error::LoadError;
use crate::manifest::{Manifest, Origin, RuntimeManifest};
use crate::process::ProcessTool;
use crate::runtime::{PoolConfig, Runtime};
use crate::tool::LoadedTool;

/// A tool ready to call, of whichever kind. Cheap to clone.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Tool {
    /// A WASI module, run in the pool.
    Wasi(Arc<LoadedTool>),
    /// A program, run as processes ([`crate::process`]).
    Process(Arc<ProcessTool>),
}

impl Tool {
    /// Its manifest.
    pub fn manifest(&self) -> &Arc<Manifest> {
        match self {
            Tool::Wasi(t) => &t.manifest,
            Tool::Process(t) => &t.manifest,
        }
    }

    /// The WASI tool, if it is one.
    pub fn wasi(&self) -> Option<&Arc<LoadedTool>> {
        match self {
            Tool::Wasi(t) => Some(t),
            Tool::Process(_) => None,
        }
    }

    /// Checks a call's input against the tool's schema.
    ///
    /// # Errors
    ///
    /// The input is not JSON, or does not match; the message names the
    /// tool and the field.
    pub fn check_input(&self, input: &[u8]) -> Result<(), String> {
        match self {
            Tool::Wasi(t) => t.check_input(input),
            Tool::Process(t) => t.checks.input(&t.manifest.name, input),
        }
    }

    /// Checks a call's output against the tool's `output_schema`, when it
    /// declares one.
    ///
    /// # Errors
    ///
    /// The output is not JSON or does not match; the message names the
    /// tool and the field.
    pub fn check_output(&self, output: &[u8]) -> Result<(), String> {
        match self {
            Tool::Wasi(t) => t.check_output(output),
            Tool::Process(t) => t.checks.output(&t.manifest.name, output),
        }
    }
}

/// Calls `tool` with `input` outside any engine (see
/// [`crate::Registry::call`]).
pub(crate) async fn call_once(runtime: &Runtime, tool: Tool, input: &[u8]) -> Outcome {
    match tool {
        Tool::Wasi(t) => crate::call::once(runtime.clone(), t, input).await,
        // Boxed: a process call's future is kilobytes, and a WASI call's
        // future would otherwise be as large (and moved as often).
        // Boxed: a process call's future is kilobytes, and a WASI call's
        // future would otherwise be as large (and moved as often).
        Tool::Process(t) => Box::pin(t.call(input)).await,
    }
}

/// What a load needs besides the manifest.
pub(crate) enum Source {
    /// A module built into this binary.
    Static(&'static [u8]),
    /// A module file, read by the loader.
    File(PathBuf),
    /// A module file read already (a reload compared its digest).
    Read(Vec<u8>, PathBuf),
    /// Nothing: a process tool's program starts at each call.
    Program,
}

impl Source {
    /// The source of the tool described by the manifest file `path`.
    pub(crate) fn of_file(manifest: &Manifest, path: &Path) -> Source {
        match &manifest.runtime {
            RuntimeManifest::Wasi(w) => {
                Source::File(path.parent().unwrap_or(Path::new(".")).join(&w.module))
            }
            RuntimeManifest::Process(_) => Source::Program,
        }
    }

    /// A reload's source: read now, so that [`unchanged`] can compare it.
    /// A file that cannot be read is left for the loader, which reports it.
    pub(crate) fn read_for_reload(manifest: &Manifest, dir: &Path, cfg: &PoolConfig) -> Source {
        match &manifest.runtime {
            RuntimeManifest::Wasi(w) => {
                let path = dir.join(&w.module);
                match read_module(cfg, &path) {
                    Ok(bytes) => Source::Read(bytes, path),
                    Err(_) => Source::File(path),
                }
            }
            RuntimeManifest::Process(_) => Source::Program,
        }
    }
}

/// Loads `manifest` (found at `origin`) from `source`: the tool, or why not
/// and the file at fault.
pub(crate) fn load(
    runtime: &Runtime,
    manifest: &Arc<Manifest>,
    origin: &Origin,
    source: Source,
) -> (Result<Tool, LoadError>, Option<PathBuf>) {
    let base = match origin {
        Origin::File(p) => p.parent(),
        Origin::Builtin => None,
    };
    match &manifest.runtime {
        RuntimeManifest::Wasi(spec) => {
            let (bytes, path) = match source {
                Source::Static(b) => (Ok(std::borrow::Cow::Borrowed(b)), None),
                Source::File(p) => (
                    read_module(runtime.config(), &p).map(std::borrow::Cow::Owned),
                    Some(p),
                ),
                Source::Read(b, p) => (Ok(std::borrow::Cow::Owned(b)), Some(p)),
                Source::Program => (Ok(std::borrow::Cow::Borrowed(&[][..])), None),
            };
            let result = bytes.and_then(|b| {
                LoadedTool::load(runtime, Arc::clone(manifest), spec, base, &b)
                    .map(|t| Tool::Wasi(Arc::new(t)))
            });
            (result, path)
        }
        RuntimeManifest::Process(spec) => {
            let data_dir = runtime.config().data_dir.as_deref();
            let cache_dir = runtime.config().cache_dir.as_deref();
            let backlog = runtime.config().tool_backlog;
            let result = Checks::new(manifest).and_then(|checks| {
                let host = runtime
                    .process_host()
                    .map_err(crate::error::ProcessLoadError::Host)?;
                let at = crate::process::Context {
                    base,
                    data_dir,
                    cache_dir,
                    backlog,
                    quota: runtime.inner.quota.as_ref(),
                };
                ProcessTool::load(Arc::clone(manifest), spec, checks, at, host)
                    .map(|t| Tool::Process(Arc::new(t)))
                    .map_err(LoadError::from)
            });
            (result, None)
        }
    }
}

/// Whether `tool`, loaded from a manifest with `manifest_digest`, is what a
/// reload with this manifest and source would load again.
pub(crate) fn unchanged(
    tool: &Tool,
    manifest_digest: Option<[u8; 32]>,
    new_digest: [u8; 32],
    source: &Source,
) -> bool {
    manifest_digest == Some(new_digest)
        && match (tool, source) {
            (Tool::Wasi(t), Source::Read(bytes, _)) => t.digest == crate::cache::digest(bytes),
            (Tool::Process(_), Source::Program) => true,
            _ => false,
        }
}

/// Whether the tool `manifest` describes, found at `origin`, depends on the
/// file `path` (besides its manifest).
pub(crate) fn depends_on(manifest: &Manifest, origin: &Origin, path: &Path) -> bool {
    match (&manifest.runtime, origin) {
        (RuntimeManifest::Wasi(w), Origin::File(m)) => {
            m.parent().map(|d| d.join(&w.module)).as_deref() == Some(path)
        }
        (RuntimeManifest::Wasi(_), Origin::Builtin) | (RuntimeManifest::Process(_), _) => false,
    }
}

/// The manifest a changed file that no listed tool depends on may be for:
/// `<stem>.wasm`'s `<stem>`, a module that appeared for a manifest that
/// could not load without it.
pub(crate) fn manifest_stem(file: &str) -> Option<&str> {
    file.strip_suffix(".wasm")
}

/// Reads a module named by a manifest: a regular file within
/// `max_module_size`, within `read_timeout`.
fn read_module(cfg: &PoolConfig, path: &Path) -> Result<Vec<u8>, LoadError> {
    let limits = crate::files::ReadLimits {
        max: cfg.max_module_size,
        key: "[pool] max_module_size",
        timeout: cfg.read_timeout,
    };
    crate::files::read_checked(path, limits).map_err(LoadError::module)
}
