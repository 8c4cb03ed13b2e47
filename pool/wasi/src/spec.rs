//! The keys of a WASI tool's manifest (`runtime = "wasi"`, the default):
//! the module beside the manifest, how instances are used across calls,
//! the entry point, its permissions (nothing by default: no directories,
//! no environment, no network) and the limits of one call. The keys every
//! manifest has are the registry's; unknown keys are errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toolplane_tool::{Annotations, DATA_PLACEHOLDER, Keys};
use toolplane_units::{Size, fmt_size, parse_duration_key};

use crate::error::WasiLoadError;

/// Reads a WASI tool's manifest: the keys every manifest has, as written,
/// and the WASI keys, to check after them ([`Unchecked::check`]).
/// `toml_err` words a TOML error.
///
/// # Errors
///
/// Not valid TOML, or an unknown key; the message names the key.
pub fn parse(
    text: &str,
    toml_err: impl Fn(toml::de::Error) -> String,
) -> Result<(Keys, Unchecked), String> {
    let raw: RawWasi = toml::from_str(text).map_err(toml_err)?;
    let keys = Keys {
        name: raw.name.clone(),
        description: raw.description,
        input_schema: raw.input_schema,
        title: raw.title,
        output_schema: raw.output_schema,
        annotations: raw.annotations,
    };
    let rest = Unchecked {
        name: raw.name,
        mode: raw.mode,
        entry: raw.entry,
        module: raw.module,
        limits: raw.limits,
        permissions: raw.permissions,
    };
    Ok((keys, rest))
}

/// A WASI manifest's own keys, read and not yet checked.
#[derive(Debug)]
pub struct Unchecked {
    name: String,
    mode: Mode,
    entry: EntryKind,
    module: Option<PathBuf>,
    limits: RawLimits,
    permissions: RawPermissions,
}

impl Unchecked {
    /// Checks the keys.
    ///
    /// # Errors
    ///
    /// A bad value; the message names the key.
    pub fn check(self) -> Result<WasiManifest, String> {
        WasiManifest::check(
            &self.name,
            self.mode,
            self.entry,
            self.module,
            &self.limits,
            self.permissions,
        )
    }
}

/// The keys of a WASI tool.
#[derive(Debug, Clone, PartialEq)]
pub struct WasiManifest {
    /// Fresh instance per call, or a reused live instance.
    pub mode: Mode,
    /// Which entry point calls use.
    pub entry: EntryKind,
    /// The module file, relative to the manifest (`<name>.wasm` by default).
    pub module: PathBuf,
    /// Limits of one call.
    pub limits: Limits,
    /// Directories the tool may see.
    pub dirs: Vec<DirGrant>,
}

/// How every WASI tool runs, in one sentence for clients.
pub const RUNS: &str = "A WebAssembly (WASI) tool runs each call in an instance of its own, within its memory and time limits, seeing only the directories its manifest grants.";

impl WasiManifest {
    /// Its runtime keys in words and as JSON (`tools list`).
    pub fn describe(&self) -> toolplane_tool::Described {
        let mode = match self.mode {
            Mode::Fresh => "fresh",
            Mode::Reuse => "reuse",
        };
        let dirs: Vec<String> = self
            .dirs
            .iter()
            .map(|d| {
                let access = match d.access {
                    Access::ReadOnly => "read-only",
                    Access::ReadWrite => "read-write",
                };
                format!("{} as {} ({access})", d.host, d.guest)
            })
            .collect();
        let l = &self.limits;
        let text = format!(
            "mode {mode}; limits: memory {} MiB, timeout {}, output {} KiB; permissions: {}",
            l.memory >> 20,
            humantime::format_duration(l.timeout),
            l.max_output >> 10,
            if dirs.is_empty() {
                "none".to_string()
            } else {
                dirs.join(", ")
            },
        );
        let serde_json::Value::Object(fields) = serde_json::json!({
            "runtime": "wasi",
            "mode": mode,
            "permissions": { "dirs": dirs },
            "limits": {
                "memory_bytes": l.memory,
                "timeout_ms": l.timeout.as_millis() as u64,
                "max_output_bytes": l.max_output,
            },
        }) else {
            unreachable!("an object literal")
        };
        toolplane_tool::Described {
            kind: format!("wasi, {mode}"),
            text,
            fields,
            runs: RUNS,
        }
    }
}

/// How instances are used across calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A new instance per call: no state survives a call (the default).
    #[default]
    Fresh,
    /// A live instance per worker, reused across calls and recycled after
    /// `limits.recycle_after` calls, after any trap, and on reload. For
    /// stateless tools only.
    Reuse,
}

/// The guest entry point calls go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// The fast entry when the module exports it, else the command.
    #[default]
    Auto,
    /// `toolplane_alloc` + `toolplane_call`, in memory.
    Fast,
    /// `_start`: JSON on stdin, output on stdout, exit code.
    Command,
}

/// Limits of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory, in bytes.
    pub memory: u64,
    /// Wall-clock deadline of a call.
    pub timeout: Duration,
    /// Output bytes at most (stdout for the command entry).
    pub max_output: u64,
    /// Fuel per call, when the runtime meters fuel.
    pub fuel: Option<u64>,
    /// Reuse mode: calls a live instance serves before it is recycled.
    pub recycle_after: Option<u64>,
    /// Bytes one call may write to its directories, as reserved through
    /// the host's `toolplane.reserve_write` (the SDK's file helpers do).
    pub max_write: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory: 64 << 20,
            timeout: Duration::from_secs(10),
            max_output: 1 << 20,
            fuel: None,
            recycle_after: None,
            max_write: 16 << 20,
        }
    }
}

/// One preopened directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    /// The host directory: absolute, relative to the manifest, or
    /// [`DATA_PLACEHOLDER`] (optionally followed by `/sub/dir`).
    pub host: String,
    /// Where the guest sees it.
    pub guest: String,
    /// Read-only or read-write.
    pub access: Access,
}

/// What a grant allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Read files and list directories.
    ReadOnly,
    /// Also create, write and remove.
    ReadWrite,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWasi {
    #[serde(rename = "runtime")]
    _runtime: Option<String>,
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    entry: EntryKind,
    module: Option<PathBuf>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    permissions: RawPermissions,
    input_schema: Option<serde_json::Value>,
    title: Option<String>,
    output_schema: Option<serde_json::Value>,
    #[serde(default)]
    annotations: Annotations,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory: Option<Size>,
    timeout: Option<String>,
    max_output: Option<Size>,
    max_write: Option<Size>,
    fuel: Option<u64>,
    recycle_after: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPermissions {
    #[serde(default)]
    dirs: Vec<RawGrant>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    host: String,
    guest: String,
    access: Access,
}

impl WasiManifest {
    fn check(
        name: &str,
        mode: Mode,
        entry: EntryKind,
        module: Option<PathBuf>,
        raw: &RawLimits,
        permissions: RawPermissions,
    ) -> Result<WasiManifest, String> {
        let defaults = Limits::default();
        let limits = Limits {
            memory: match &raw.memory {
                Some(s) => s.bytes("limits.memory")?,
                None => defaults.memory,
            },
            timeout: match &raw.timeout {
                Some(s) => parse_duration_key("limits.timeout", s)?,
                None => defaults.timeout,
            },
            max_output: match &raw.max_output {
                Some(s) => s.bytes("limits.max_output")?,
                None => defaults.max_output,
            },
            fuel: raw.fuel,
            recycle_after: raw.recycle_after,
            max_write: match &raw.max_write {
                Some(s) => s.bytes("limits.max_write")?,
                None => defaults.max_write,
            },
        };
        if limits.memory < 64 << 10 {
            return Err(format!(
                "limits.memory = {} is below one wasm page (64 KiB)",
                fmt_size(limits.memory)
            ));
        }
        if limits.timeout.is_zero() {
            return Err("limits.timeout must be above zero".into());
        }
        if limits.max_output == 0 || limits.max_output >= 1 << 31 {
            return Err(format!(
                "limits.max_output = {} is out of range: 1 B ..= 2 GiB - 1",
                fmt_size(limits.max_output)
            ));
        }
        if limits.recycle_after == Some(0) {
            return Err("limits.recycle_after must be at least 1".into());
        }
        let mut dirs = Vec::with_capacity(permissions.dirs.len());
        for (i, g) in permissions.dirs.into_iter().enumerate() {
            if !g.guest.starts_with('/') || g.guest.split('/').any(|c| c == "..") {
                return Err(format!(
                    "permissions.dirs[{i}].guest = {:?} must be an absolute guest path without `..`",
                    g.guest
                ));
            }
            if g.host.is_empty() {
                return Err(format!("permissions.dirs[{i}].host is empty"));
            }
            dirs.push(DirGrant {
                host: g.host,
                guest: g.guest,
                access: g.access,
            });
        }
        Ok(WasiManifest {
            mode,
            entry,
            module: module.unwrap_or_else(|| PathBuf::from(format!("{name}.wasm"))),
            limits,
            dirs,
        })
    }

    /// Resolves each grant's host directory: `{data}` becomes `data_dir`,
    /// a relative path is taken from `base` (the manifest's directory).
    ///
    /// # Errors
    ///
    /// A grant uses `{data}` and no data directory is configured.
    pub fn resolve_dirs(
        &self,
        base: Option<&Path>,
        data_dir: Option<&Path>,
    ) -> Result<Vec<(PathBuf, DirGrant)>, WasiLoadError> {
        let mut out = Vec::with_capacity(self.dirs.len());
        for (i, g) in self.dirs.iter().enumerate() {
            let host = if let Some(rest) = g.host.strip_prefix(DATA_PLACEHOLDER) {
                let Some(data) = data_dir else {
                    return Err(WasiLoadError::NoDataDir {
                        index: i,
                        host: g.host.clone(),
                    });
                };
                let rest = rest.trim_start_matches('/');
                if rest.is_empty() {
                    data.to_owned()
                } else {
                    data.join(rest)
                }
            } else {
                let p = PathBuf::from(&g.host);
                match base {
                    Some(b) if p.is_relative() => b.join(p),
                    _ => p,
                }
            };
            out.push((host, g.clone()));
        }
        Ok(out)
    }
}
