//! A loaded tool: its manifest, its compiled module pre-linked against
//! WASI (`InstancePre`, built once), its entry point and its input check.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime::{ExternType, InstancePre, ModuleExport, ValType};

use crate::cache::{Source, WasmDigest};
use crate::error::{ExportError, LoadError};
use crate::host::Host;
use crate::manifest::{DirGrant, EntryKind, Manifest, Mode, WasiManifest};
use crate::runtime::Runtime;

/// A tool ready to call.
pub struct LoadedTool {
    /// Its manifest.
    pub manifest: Arc<Manifest>,
    /// The manifest's WASI keys.
    pub spec: WasiManifest,
    /// The SHA-256 of its module.
    pub digest: WasmDigest,
    /// Where its compiled module came from.
    pub source: Source,
    pub(crate) pre: InstancePre<Host>,
    pub(crate) entry: Entry,
    pub(crate) dirs: Vec<(PathBuf, DirGrant)>,
    pub(crate) check: InputCheck,
    /// The output schema's validator, when the manifest declares one.
    pub(crate) output: Option<Box<jsonschema::Validator>>,
    pub(crate) stderr_excerpt: usize,
    pub(crate) backtraces: bool,
    /// It has a read-write directory grant (its calls count against the
    /// data directory's limit).
    pub(crate) writes: bool,
}

impl std::fmt::Debug for LoadedTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedTool")
            .field("name", &self.manifest.name)
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

/// How a call's input is checked before any instance is created.
pub(crate) enum InputCheck {
    /// Any JSON object (the schema says only `type: object`).
    Object,
    /// A full JSON Schema.
    Schema(Box<jsonschema::Validator>),
}

impl LoadedTool {
    /// Compiles (or loads from the cache) and links `wasm` for `manifest`.
    /// `base` is the manifest's directory (for relative grants).
    ///
    /// # Errors
    ///
    /// A limit above the runtime's, a missing directory, an invalid
    /// module, an import WASI does not provide, or a mode the module
    /// cannot serve.
    pub fn load(
        rt: &Runtime,
        manifest: Arc<Manifest>,
        spec: &WasiManifest,
        base: Option<&Path>,
        wasm: &[u8],
    ) -> Result<LoadedTool, LoadError> {
        let cfg = rt.config();
        if spec.limits.memory > cfg.max_memory {
            return Err(LoadError::MemoryAboveRuntime {
                asked: spec.limits.memory,
                max: cfg.max_memory,
            });
        }
        if spec.limits.fuel.is_some() && !cfg.fuel {
            return Err(LoadError::FuelNotMetered);
        }
        let dirs = spec.resolve_dirs(base, cfg.data_dir.as_deref())?;
        for (host, g) in &dirs {
            if !host.is_dir() {
                return Err(LoadError::MissingDir {
                    guest: g.guest.clone(),
                    host: host.clone(),
                });
            }
        }
        let writes = dirs
            .iter()
            .any(|(_, g)| g.access == crate::manifest::Access::ReadWrite);
        let (module, source, digest) = rt.cache().load(rt.engine(), wasm)?;
        let fast = fast_exports(&module);
        let entry = match (spec.entry, fast) {
            (EntryKind::Command, _) => Entry::Command,
            (EntryKind::Fast, Err(why)) => return Err(LoadError::NoFastEntry(why)),
            (EntryKind::Fast | EntryKind::Auto, Ok(f)) => Entry::Fast(f),
            (EntryKind::Auto, Err(_)) => Entry::Command,
        };
        if matches!(entry, Entry::Command) {
            if spec.mode == Mode::Reuse {
                return Err(LoadError::ReuseNeedsFast);
            }
            match module.get_export("_start") {
                Some(ExternType::Func(_)) => {}
                _ => return Err(LoadError::NoEntry),
            }
        }
        let pre = rt
            .inner
            .linker
            .instantiate_pre(&module)
            .map_err(LoadError::Link)?;
        let check = input_check(&manifest.input_schema)?;
        let output = match &manifest.output_schema {
            Some(schema) => Some(Box::new(jsonschema::validator_for(schema).map_err(
                |e| LoadError::Schema {
                    key: "output_schema",
                    source: Box::new(e),
                },
            )?)),
            None => None,
        };
        Ok(LoadedTool {
            output,
            manifest,
            spec: spec.clone(),
            digest,
            source,
            pre,
            entry,
            dirs,
            check,
            stderr_excerpt: cfg.stderr_excerpt,
            backtraces: cfg.backtraces,
            writes,
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
    /// The input is not JSON, or does not match the schema; the message
    /// names the tool and the offending field.
    pub fn check_input(&self, input: &[u8]) -> Result<(), String> {
        let name = &self.manifest.name;
        // Before any parse: serde_json skips strings it is not asked to
        // keep without checking their UTF-8, and nests as deep as the
        // input does when it ignores a value.
        if let Err(e) = std::str::from_utf8(input) {
            return Err(format!(
                "tool {name}: input is not valid UTF-8 (at byte {})",
                e.valid_up_to()
            ));
        }
        // An input of at most MAX_DEPTH bytes cannot open more levels.
        if input.len() > MAX_DEPTH
            && let Some(at) = too_deep(input, MAX_DEPTH)
        {
            return Err(format!(
                "tool {name}: input nests deeper than {MAX_DEPTH} levels (at byte {at})"
            ));
        }
        match &self.check {
            InputCheck::Object => {
                let first = input.iter().find(|b| !b.is_ascii_whitespace());
                if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(input) {
                    return Err(format!("tool {name}: input is not valid JSON: {e}"));
                }
                if first != Some(&b'{') {
                    return Err(format!("tool {name}: input must be a JSON object"));
                }
                Ok(())
            }
            InputCheck::Schema(v) => {
                let value: serde_json::Value = serde_json::from_slice(input)
                    .map_err(|e| format!("tool {name}: input is not valid JSON: {e}"))?;
                schema_errors(
                    v,
                    &value,
                    format!("tool {name}: input does not match its schema:"),
                )
            }
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
        let Some(v) = &self.output else {
            return Ok(());
        };
        let name = &self.manifest.name;
        let value: serde_json::Value = serde_json::from_slice(output).map_err(|e| {
            format!("tool {name}: output is not JSON, and the tool declares an output_schema: {e}")
        })?;
        schema_errors(
            v,
            &value,
            format!("tool {name}: output does not match its output_schema:"),
        )
    }
}

/// How deep a call's input may nest arrays and objects (serde_json's own
/// limit when it builds a value).
pub const MAX_DEPTH: usize = 128;

/// The offset at which `json` opens its `max + 1`-th level of nesting, if
/// it does. Brackets inside strings do not count.
fn too_deep(json: &[u8], max: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in json.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Some(i);
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// The first three errors of `value` against `v`, each with its path.
fn schema_errors(
    v: &jsonschema::Validator,
    value: &serde_json::Value,
    mut msg: String,
) -> Result<(), String> {
    let mut errors = v.iter_errors(value).peekable();
    if errors.peek().is_none() {
        return Ok(());
    }
    for (i, e) in errors.take(3).enumerate() {
        let at = e.instance_path().to_string();
        let at = if at.is_empty() {
            "(top level)".to_string()
        } else {
            at
        };
        msg.push_str(if i == 0 { " " } else { "; " });
        msg.push_str(&format!("at {at}: {e}"));
    }
    Err(msg)
}

fn input_check(schema: &serde_json::Value) -> Result<InputCheck, LoadError> {
    if *schema == serde_json::json!({ "type": "object" }) {
        return Ok(InputCheck::Object);
    }
    jsonschema::validator_for(schema)
        .map(|v| InputCheck::Schema(Box::new(v)))
        .map_err(|e| LoadError::Schema {
            key: "input_schema",
            source: Box::new(e),
        })
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
