//! A loaded tool: its name and WASI keys, its compiled module pre-linked against
//! WASI (`InstancePre`, built once), its entry point and its input check.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime::{ExternType, InstancePre, ModuleExport, ValType};

use crate::cache::{Source, WasmDigest};
use toolplane_tool::Checks;

use crate::error::{ExportError, WasiLoadError};
use crate::host::Host;
use crate::runtime::Runtime;
use crate::spec::{Access, DirGrant, EntryKind, Mode, WasiManifest};

/// A tool ready to call.
pub struct LoadedTool {
    /// Its name.
    pub name: Arc<str>,
    /// The manifest's WASI keys.
    pub spec: WasiManifest,
    /// The SHA-256 of its module.
    pub digest: WasmDigest,
    /// Where its compiled module came from.
    pub source: Source,
    pub(crate) pre: InstancePre<Host>,
    pub(crate) entry: Entry,
    pub(crate) dirs: Vec<(PathBuf, DirGrant)>,
    /// Its input and output schemas' checks.
    pub(crate) checks: Checks,
    pub(crate) stderr_excerpt: usize,
    pub(crate) backtraces: bool,
    /// The data directory's limit, when the tool has a read-write
    /// directory grant (its calls count against it).
    pub(crate) quota: Option<Arc<toolplane_tool::quota::DataQuota>>,
}

impl std::fmt::Debug for LoadedTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedTool")
            .field("name", &self.name)
            .field("entry", &self.entry_name())
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The entry point calls use.
pub(crate) enum Entry {
    Command,
    Fast(FastExports),
}

pub(crate) struct FastExports {
    pub(crate) alloc: ModuleExport,
    pub(crate) call: ModuleExport,
    pub(crate) memory: ModuleExport,
}

impl LoadedTool {
    /// Compiles (or loads from the cache) and links `wasm` for the tool
    /// `name` with the WASI keys `spec` and its schemas' `checks`. `base`
    /// is the manifest's directory (for relative grants).
    ///
    /// # Errors
    ///
    /// A limit above the runtime's, a missing directory, an invalid
    /// module, an import WASI does not provide, or a mode the module
    /// cannot serve.
    pub fn load(
        rt: &Runtime,
        site: &toolplane_tool::Site,
        name: Arc<str>,
        checks: Checks,
        spec: &WasiManifest,
        base: Option<&Path>,
        wasm: &[u8],
    ) -> Result<LoadedTool, WasiLoadError> {
        let cfg = rt.config();
        if spec.limits.memory > cfg.max_memory {
            return Err(WasiLoadError::MemoryAboveRuntime {
                asked: spec.limits.memory,
                max: cfg.max_memory,
            });
        }
        if spec.limits.fuel.is_some() && !cfg.fuel {
            return Err(WasiLoadError::FuelNotMetered);
        }
        let dirs = spec.resolve_dirs(base, site.data_dir.as_deref())?;
        for (host, g) in &dirs {
            if !host.is_dir() {
                return Err(WasiLoadError::MissingDir {
                    guest: g.guest.clone(),
                    host: host.clone(),
                });
            }
            // The manifest's directory is a tools directory.
            if let Some(tools) = base
                && g.access == Access::ReadWrite
                && toolplane_tool::files::covers(host, tools)
            {
                return Err(WasiLoadError::WritesTools {
                    guest: g.guest.clone(),
                    host: host.clone(),
                    tools: tools.to_path_buf(),
                });
            }
        }
        let writes = dirs.iter().any(|(_, g)| g.access == Access::ReadWrite);
        let (module, source, digest) = rt.cache().load(rt.engine(), wasm)?;
        let fast = fast_exports(&module);
        let entry = match (spec.entry, fast) {
            (EntryKind::Command, _) => Entry::Command,
            (EntryKind::Fast, Err(why)) => return Err(WasiLoadError::NoFastEntry(why)),
            (EntryKind::Fast | EntryKind::Auto, Ok(f)) => Entry::Fast(f),
            (EntryKind::Auto, Err(_)) => Entry::Command,
        };
        if matches!(entry, Entry::Command) {
            if spec.mode == Mode::Reuse {
                return Err(WasiLoadError::ReuseNeedsFast);
            }
            match module.get_export("_start") {
                Some(ExternType::Func(_)) => {}
                _ => return Err(WasiLoadError::NoEntry),
            }
        }
        let pre = rt
            .inner
            .linker
            .instantiate_pre(&module)
            .map_err(WasiLoadError::Link)?;
        Ok(LoadedTool {
            name,
            spec: spec.clone(),
            digest,
            source,
            pre,
            entry,
            dirs,
            checks,
            stderr_excerpt: cfg.stderr_excerpt,
            backtraces: cfg.backtraces,
            quota: if writes { site.quota.clone() } else { None },
        })
    }

    /// Whether calls go through the fast entry.
    pub fn has_fast_entry(&self) -> bool {
        matches!(self.entry, Entry::Fast(_))
    }

    /// `"fast"` or `"command"`.
    pub fn entry_name(&self) -> &'static str {
        match self.entry {
            Entry::Command => "command",
            Entry::Fast(_) => "fast",
        }
    }

    /// Checks a call's input against the tool's schema.
    ///
    /// # Errors
    ///
    /// See [`Checks::input`].
    pub fn check_input(&self, input: &[u8]) -> Result<(), String> {
        self.checks.input(&self.name, input)
    }

    /// Checks a call's output against the tool's `output_schema`.
    ///
    /// # Errors
    ///
    /// See [`Checks::output`].
    pub fn check_output(&self, output: &[u8]) -> Result<(), String> {
        self.checks.output(&self.name, output)
    }
}

fn fast_exports(module: &wasmtime::Module) -> Result<FastExports, ExportError> {
    let func = |name: &'static str,
                params: &[ValType],
                results: &[ValType]|
     -> Result<ModuleExport, ExportError> {
        match module.get_export(name) {
            Some(ExternType::Func(f)) => {
                let p: Vec<_> = f.params().collect();
                let r: Vec<_> = f.results().collect();
                let same = |a: &[ValType], b: &[ValType]| {
                    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| ValType::eq(x, y))
                };
                if !same(&p, params) || !same(&r, results) {
                    return Err(ExportError::WrongType(name));
                }
            }
            _ => return Err(ExportError::Missing(name)),
        }
        module
            .get_export_index(name)
            .ok_or(ExportError::Missing(name))
    };
    let alloc = func("toolplane_alloc", &[ValType::I32], &[ValType::I32])?;
    let call = func(
        "toolplane_call",
        &[ValType::I32, ValType::I32],
        &[ValType::I64],
    )?;
    let memory = match module.get_export("memory") {
        Some(ExternType::Memory(_)) => module
            .get_export_index("memory")
            .ok_or(ExportError::Missing("memory"))?,
        _ => return Err(ExportError::Missing("memory")),
    };
    Ok(FastExports {
        alloc,
        call,
        memory,
    })
}

/// Reads a module named by a manifest: a regular file within
/// `max_module_size`, within `read_timeout`.
///
/// # Errors
///
/// The file cannot be read, is not a regular file, or is too large or too
/// slow to read.
pub fn read_module(cfg: &crate::PoolConfig, path: &Path) -> Result<Vec<u8>, WasiLoadError> {
    let limits = toolplane_tool::files::ReadLimits {
        max: cfg.max_module_size,
        key: "[pool] max_module_size",
        timeout: cfg.read_timeout,
    };
    toolplane_tool::files::read_checked(path, limits).map_err(WasiLoadError::module)
}
