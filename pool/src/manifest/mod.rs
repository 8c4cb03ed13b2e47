//! Tool manifests: `<tool>.toml` in the tools directory.
//!
//! Every manifest names the tool, describes it and gives the JSON Schema of
//! its input (and, optionally, a title, an output schema and annotations):
//! the keys every kind of tool shares, checked here once. Its `runtime` key
//! says what runs the tool, and the rest of its keys are that runtime's:
//! for `"wasi"` (the default), the module beside the manifest, its
//! permissions (nothing by default: no directories, no environment, no
//! network) and its limits ([`WasiManifest`]). Unknown keys are errors, so
//! a misspelt limit is never silently ignored.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub(crate) use crate::size::fmt_size;

mod process;
pub use crate::size::parse_size;
pub(crate) use process::RawProcessManifest;
pub use process::{
    DEFAULT_MEMORY, DEFAULT_PROCESSES, FsGrants, MAX_MEMBER_NAME, Member, PRESETS, PROTOCOLS,
    PoolSpec, Preset, ProcessLimits, ProcessManifest, Protocol, member_name,
};

/// The placeholder a grant's `host` may use for the registry's data
/// directory.
pub const DATA_PLACEHOLDER: &str = "{data}";

/// Longest tool name accepted.
pub const MAX_NAME: usize = 64;

/// A tool's manifest, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The tool's name: `[A-Za-z0-9_.-]`, at most [`MAX_NAME`] bytes; the
    /// manifest's file stem.
    pub name: String,
    /// What the tool does, for people and agents.
    pub description: String,
    /// What runs the tool, with that runtime's keys.
    pub runtime: RuntimeManifest,
    /// The JSON Schema of the tool's input.
    pub input_schema: serde_json::Value,
    /// A human-readable name (served as MCP's `title`).
    pub title: Option<String>,
    /// The JSON Schema of the tool's output, an object schema (served as
    /// MCP's `outputSchema`); a call whose output does not match it fails.
    pub output_schema: Option<serde_json::Value>,
    /// What a client may assume of the tool (MCP's tool annotations).
    pub annotations: Annotations,
}

/// Where a tool came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Built into this binary.
    Builtin,
    /// A manifest in the tools directory.
    File(PathBuf),
}

/// Parses the duration `text` of `key`; the message names the key.
pub(crate) fn parse_duration_key(key: &str, text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| {
        format!("{key} = {text:?} is not a duration ({e}): write e.g. \"500ms\", \"5s\"")
    })?;
    if d > MAX_DURATION {
        return Err(format!(
            "{key} = {text:?} is out of range: at most {}",
            humantime::format_duration(MAX_DURATION)
        ));
    }
    Ok(d)
}

/// The longest duration a manifest key takes: a deadline past it is a
/// mistake, and one far enough out overflows the clock it is added to.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// What runs a tool: the manifest's `runtime` key, with the keys of that
/// runtime. The registry lists, checks, reloads and counts every kind
/// alike; only loading and calling differ (`kind.rs`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RuntimeManifest {
    /// `runtime = "wasi"` (the default): a WebAssembly module run in the
    /// WASI pool.
    Wasi(WasiManifest),
    /// `runtime = "process"`: a program run as processes (`process.rs`).
    Process(ProcessManifest),
}

/// The runtimes a manifest may name, as written in its `runtime` key.
pub const RUNTIMES: [&str; 2] = ["wasi", "process"];

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

/// Hints for clients about a tool's behaviour (MCP's tool annotations):
/// `[annotations]` in a manifest. Unset hints are not served, and a client
/// then assumes the specification's defaults (not read-only, destructive,
/// not idempotent, open world).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Annotations {
    /// The tool does not change its environment.
    pub read_only: Option<bool>,
    /// It may destroy or overwrite (meaningful when not read-only).
    pub destructive: Option<bool>,
    /// Calling it again with the same input has no further effect.
    pub idempotent: Option<bool>,
    /// It reaches beyond a closed world (the network, other systems).
    pub open_world: Option<bool>,
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

/// A manifest that cannot be used, with its file and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct ManifestError {
    /// The manifest file.
    pub path: PathBuf,
    /// What is wrong, naming the key.
    pub message: String,
}

/// The one key read before the rest: which runtime's keys the manifest
/// may have.
#[derive(Deserialize)]
struct RawRuntime {
    runtime: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory: Option<Size>,
    timeout: Option<String>,
    max_output: Option<Size>,
    max_write: Option<Size>,
    fuel: Option<u64>,
    recycle_after: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPermissions {
    #[serde(default)]
    dirs: Vec<RawGrant>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    host: String,
    guest: String,
    access: Access,
}

/// A byte size: an integer, or a string such as `"16 MiB"`.
enum Size {
    Bytes(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a size: bytes as a non-negative integer, or a string such as \"16 MiB\"",
                )
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size::Bytes(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size::Bytes)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Size, E> {
                Ok(Size::Text(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

impl Size {
    fn bytes(&self, key: &str) -> Result<u64, String> {
        match self {
            Size::Bytes(n) => Ok(*n),
            Size::Text(s) => parse_size(s).ok_or_else(|| {
                format!(
                    "{key} = {s:?} is not a size: write bytes as an integer, or a number with B, KiB, MiB, GiB, kB, MB or GB"
                )
            }),
        }
    }
}

/// The largest manifest read: manifests are a few KiB of TOML.
pub const MAX_MANIFEST: u64 = 1 << 20;

/// Whether `name` is a valid tool name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && !name.starts_with('.')
}

impl Manifest {
    /// Reads and validates the manifest at `path`. Its name must be the
    /// file stem (`echo.toml` names `echo`).
    ///
    /// # Errors
    ///
    /// The file cannot be read, is not valid TOML, has an unknown key, a
    /// bad value, or an input schema that is not a valid JSON Schema.
    pub fn from_file(path: &Path) -> Result<Manifest, ManifestError> {
        Manifest::from_file_digest(path).map(|(m, _)| m)
    }

    /// [`Manifest::from_file`], with the SHA-256 of the file's text.
    pub(crate) fn from_file_digest(path: &Path) -> Result<(Manifest, [u8; 32]), ManifestError> {
        let limits = crate::files::ReadLimits {
            max: MAX_MANIFEST,
            key: "the manifest size limit",
            timeout: Duration::from_secs(5),
        };
        let bytes = crate::files::read_checked(path, limits).map_err(|e| ManifestError {
            path: path.to_owned(),
            message: e.reason().to_string(),
        })?;
        let text = String::from_utf8(bytes).map_err(|e| ManifestError {
            path: path.to_owned(),
            message: format!("is not UTF-8 (at byte {})", e.utf8_error().valid_up_to()),
        })?;
        let digest = crate::cache::digest(text.as_bytes());
        let manifest = Manifest::from_toml_str(&text, path)?;
        let stem = path
            .file_name()
            .and_then(|f| f.to_str())
            .and_then(|f| f.strip_suffix(".toml"));
        if stem != Some(manifest.name.as_str()) {
            return Err(ManifestError {
                path: path.to_owned(),
                message: format!(
                    "name = {:?} does not match the file name: a tool named {0:?} is described by `{0}.toml`",
                    manifest.name
                ),
            });
        }
        Ok((manifest, digest))
    }

    /// Parses a manifest; `origin` names it in errors.
    ///
    /// # Errors
    ///
    /// As [`Manifest::from_file`], except the file-name check.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Manifest, ManifestError> {
        let err = |message: String| ManifestError {
            path: origin.to_owned(),
            message,
        };
        // toml's message names the key and the line; keep it on one line.
        let toml_err = |e: toml::de::Error| err(e.to_string().trim().replace('\n', " "));
        let runtime: RawRuntime = toml::from_str(text).map_err(toml_err)?;
        match runtime.runtime {
            None => {}
            Some(toml::Value::String(r)) if r == "wasi" => {}
            Some(toml::Value::String(r)) if r == "process" => {
                let raw: RawProcessManifest = toml::from_str(text).map_err(toml_err)?;
                let common = Common::check(
                    raw.name.clone(),
                    raw.input_schema.clone(),
                    raw.output_schema.clone(),
                    raw.title.as_deref(),
                )
                .map_err(err)?;
                let process = raw.check().map_err(err)?;
                return Ok(Manifest {
                    name: common.name,
                    description: raw.description,
                    runtime: RuntimeManifest::Process(process),
                    input_schema: common.input_schema,
                    title: raw.title,
                    output_schema: common.output_schema,
                    annotations: raw.annotations,
                });
            }
            Some(other) => {
                return Err(err(format!(
                    "runtime = {other} is not a runtime: accepted {}",
                    RUNTIMES.map(|r| format!("{r:?}")).join(", ")
                )));
            }
        }
        let raw: RawManifest = toml::from_str(text).map_err(toml_err)?;
        let common = Common::check(
            raw.name,
            raw.input_schema,
            raw.output_schema,
            raw.title.as_deref(),
        )
        .map_err(err)?;
        let wasi = WasiManifest::check(
            &common.name,
            raw.mode,
            raw.entry,
            raw.module,
            &raw.limits,
            raw.permissions,
        )
        .map_err(err)?;
        Ok(Manifest {
            name: common.name,
            description: raw.description,
            runtime: RuntimeManifest::Wasi(wasi),
            input_schema: common.input_schema,
            title: raw.title,
            output_schema: common.output_schema,
            annotations: raw.annotations,
        })
    }

    /// The process keys, for a process tool.
    pub fn process(&self) -> Option<&ProcessManifest> {
        match &self.runtime {
            RuntimeManifest::Process(p) => Some(p),
            RuntimeManifest::Wasi(_) => None,
        }
    }

    /// The WASI keys, for a WASI tool.
    pub fn wasi(&self) -> Option<&WasiManifest> {
        match &self.runtime {
            RuntimeManifest::Wasi(w) => Some(w),
            RuntimeManifest::Process(_) => None,
        }
    }
}

/// The keys every kind of tool has, checked.
struct Common {
    name: String,
    input_schema: serde_json::Value,
    output_schema: Option<serde_json::Value>,
}

impl Common {
    fn check(
        name: String,
        input_schema: Option<serde_json::Value>,
        output_schema: Option<serde_json::Value>,
        title: Option<&str>,
    ) -> Result<Common, String> {
        if !valid_name(&name) {
            return Err(format!(
                "name = {name:?} is not a valid tool name: use 1..={MAX_NAME} of A-Z a-z 0-9 _ . -, not starting with a dot"
            ));
        }
        let input_schema = input_schema.unwrap_or_else(|| serde_json::json!({ "type": "object" }));
        if let Err(e) = jsonschema::validator_for(&input_schema) {
            return Err(format!("input_schema is not a valid JSON Schema: {e}"));
        }
        if let Some(schema) = &output_schema {
            // MCP: an output schema describes structured content, a JSON
            // object.
            if schema.get("type").and_then(|t| t.as_str()) != Some("object") {
                return Err(
                    "output_schema must be an object schema (type = \"object\"): MCP serves structured output as a JSON object".into(),
                );
            }
            if let Err(e) = jsonschema::validator_for(schema) {
                return Err(format!("output_schema is not a valid JSON Schema: {e}"));
            }
        }
        if title.is_some_and(str::is_empty) {
            return Err("title is empty: leave it out or give one".into());
        }
        Ok(Common {
            name,
            input_schema,
            output_schema,
        })
    }
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
    ) -> Result<Vec<(PathBuf, DirGrant)>, crate::LoadError> {
        let mut out = Vec::with_capacity(self.dirs.len());
        for (i, g) in self.dirs.iter().enumerate() {
            let host = if let Some(rest) = g.host.strip_prefix(DATA_PLACEHOLDER) {
                let Some(data) = data_dir else {
                    return Err(crate::LoadError::NoDataDir {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::from_toml_str(text, Path::new("t.toml"))
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16 MiB"), Some(16 << 20));
        assert_eq!(parse_size("512KiB"), Some(512 << 10));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("1 GB"), Some(1_000_000_000));
        assert_eq!(parse_size("1 MiBs"), None);
        assert_eq!(parse_size("MiB"), None);
        assert_eq!(fmt_size(16 << 20).to_string(), "16 MiB");
        assert_eq!(fmt_size(1000).to_string(), "1000 B");
    }

    #[test]
    fn defaults_and_full() {
        let m = parse("name = \"t\"").unwrap();
        assert_eq!(m.wasi().unwrap().mode, Mode::Fresh);
        assert_eq!(m.wasi().unwrap().limits, Limits::default());
        assert_eq!(m.wasi().unwrap().module, PathBuf::from("t.wasm"));
        assert!(m.wasi().unwrap().dirs.is_empty());
        let m = parse(
            r#"
            name = "t"
            mode = "reuse"
            entry = "command"
            [limits]
            memory = "16 MiB"
            timeout = "250ms"
            max_output = 100
            recycle_after = 5
            [[permissions.dirs]]
            host = "{data}/sub"
            guest = "/data"
            access = "read-only"
            [input_schema]
            type = "object"
            required = ["x"]
            "#,
        )
        .unwrap();
        assert_eq!(m.wasi().unwrap().mode, Mode::Reuse);
        assert_eq!(m.wasi().unwrap().entry, EntryKind::Command);
        assert_eq!(m.wasi().unwrap().limits.memory, 16 << 20);
        assert_eq!(m.wasi().unwrap().limits.timeout, Duration::from_millis(250));
        assert_eq!(m.wasi().unwrap().limits.max_output, 100);
        let dirs = m
            .wasi()
            .unwrap()
            .resolve_dirs(None, Some(Path::new("/srv")))
            .unwrap();
        assert_eq!(dirs[0].0, PathBuf::from("/srv/sub"));
        assert!(
            m.wasi()
                .unwrap()
                .resolve_dirs(None, None)
                .unwrap_err()
                .to_string()
                .contains("data directory")
        );
    }

    #[test]
    fn the_runtime_key_names_the_kind_of_tool() {
        let m = parse("name = \"t\"\nruntime = \"wasi\"").unwrap();
        assert_eq!(m.wasi().unwrap().module, PathBuf::from("t.wasm"));
        assert_eq!(m, parse("name = \"t\"").unwrap());
        for bad in ["runtime = \"docker\"", "runtime = 3"] {
            let e = parse(&format!("name = \"t\"\n{bad}"))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("t.toml: runtime = ")
                    && e.ends_with("is not a runtime: accepted \"wasi\", \"process\""),
                "{e}"
            );
        }
    }

    #[test]
    fn a_process_manifest_is_checked_key_by_key() {
        let base = "name = \"t\"\nruntime = \"process\"\nprotocol = \"exec\"\n";
        let m = parse(&format!(
            "{base}command = [\"tr\", \"a\", \"b\"]\n[limits]\nmemory = \"64 MiB\"\n"
        ))
        .unwrap();
        let p = m.process().unwrap();
        assert_eq!(p.command, ["tr", "a", "b"]);
        assert_eq!(p.limits.memory, 64 << 20);
        assert_eq!(p.limits.timeout, Duration::from_secs(30));
        assert!(m.wasi().is_none());
        for (text, key) in [
            (format!("{base}command = []\n"), "command is empty"),
            (
                format!("{base}command = [\"x\"]\nmode = \"reuse\"\n"),
                "mode",
            ),
            (
                format!("{base}command = [\"x\"]\n[limits]\ntimeout = \"soon\"\n"),
                "limits.timeout",
            ),
            (
                format!("{base}command = [\"x\"]\n[pool]\nmax = 0\n"),
                "pool.max",
            ),
            (
                "name = \"t\"\nruntime = \"process\"\nprotocol = \"grpc\"\ncommand = [\"x\"]\n"
                    .to_string(),
                "accepted \"exec\"",
            ),
        ] {
            let e = parse(&text).expect_err(&text).to_string();
            assert!(
                e.starts_with("t.toml: ") && e.contains(key),
                "{text:?} -> {e}"
            );
        }
    }

    #[test]
    fn pooled_and_set_manifests_are_checked_key_by_key() {
        let jsonl =
            "name = \"w\"\nruntime = \"process\"\nprotocol = \"jsonl\"\ncommand = [\"w\"]\n";
        let m = parse(&format!(
            "{jsonl}[pool]\nmin = 1\nmax = 3\nidle_timeout = \"2m\"\nmax_inflight_per_process = 8\nrecycle_after = 100\n[[tools]]\nname = \"a\"\ndescription = \"A\"\n[[tools]]\nname = \"b\"\n[tools.input_schema]\ntype = \"object\"\nrequired = [\"x\"]\n"
        ))
        .unwrap();
        let p = m.process().unwrap();
        assert_eq!(p.protocol, Protocol::Jsonl);
        assert_eq!(
            (
                p.pool.min,
                p.pool.max,
                p.pool.max_inflight_per_process,
                p.pool.recycle_after
            ),
            (1, 3, 8, Some(100))
        );
        assert_eq!(p.pool.idle_timeout, Duration::from_secs(120));
        assert!(m.is_set());
        assert_eq!(p.tools.len(), 2);
        let b = m.member(&p.tools[1]).unwrap();
        assert_eq!(b.name, "w.b");
        assert_eq!(b.input_schema["required"][0], "x");
        let mcp =
            parse("name = \"u\"\nruntime = \"process\"\nprotocol = \"mcp\"\ncommand = [\"npx\"]\n")
                .unwrap();
        assert!(mcp.is_set() && mcp.process().unwrap().tools.is_empty());
        for (text, key) in [
            (format!("{jsonl}[pool]\nmin = 5\nmax = 2\n"), "pool.min = 5 is out of range: 0..=2"),
            (format!("{jsonl}[pool]\nmax_inflight_per_process = 0\n"), "pool.max_inflight_per_process"),
            (format!("{jsonl}[pool]\nidle_timeout = \"never\"\n"), "pool.idle_timeout"),
            (format!("{jsonl}[limits]\nstartup_timeout = \"0s\"\n"), "limits.startup_timeout must be above zero"),
            (format!("{jsonl}[limits]\ntimeout = \"300000000000y\"\n"), "limits.timeout = \"300000000000y\" is out of range: at most 7days"),
            (format!("{jsonl}[pool]\nidle_timeout = \"8days\"\n"), "pool.idle_timeout = \"8days\" is out of range"),
            (format!("{jsonl}[pool]\nsize = 2\n"), "unknown field `size`"),
            (format!("{jsonl}[[tools]]\nname = \"a\"\n[[tools]]\nname = \"a\"\n"), "listed twice"),
            (format!("{jsonl}[[tools]]\nname = \"a.b\"\n"), "without dots"),
            (format!("{jsonl}[input_schema]\ntype = \"object\"\n[[tools]]\nname = \"a\"\n"), "input_schema belongs to each [[tools]] entry"),
            (
                "name = \"t\"\nruntime = \"process\"\nprotocol = \"exec\"\ncommand = [\"x\"]\n[pool]\nmin = 1\n".to_string(),
                "pool.min applies to long-lived processes",
            ),
            (
                "name = \"t\"\nruntime = \"process\"\nprotocol = \"mcp\"\ncommand = [\"x\"]\n[[tools]]\nname = \"a\"\n".to_string(),
                "an MCP server lists its own tools",
            ),
        ] {
            let e = parse(&text).expect_err(&text).to_string();
            assert!(e.starts_with("t.toml: ") && e.contains(key), "{text:?} -> {e}");
        }
    }

    #[test]
    fn title_output_schema_and_annotations_are_read() {
        let m = parse("name = \"t\"").unwrap();
        assert_eq!(
            (m.title, m.output_schema, m.annotations),
            (None, None, Annotations::default())
        );
        let m = parse(
            r#"
            name = "t"
            title = "A tool"
            [annotations]
            read_only = false
            destructive = true
            [output_schema]
            type = "object"
            required = ["n"]
            "#,
        )
        .unwrap();
        assert_eq!(m.title.as_deref(), Some("A tool"));
        assert_eq!(
            m.output_schema.unwrap()["required"],
            serde_json::json!(["n"])
        );
        assert_eq!(
            m.annotations,
            Annotations {
                read_only: Some(false),
                destructive: Some(true),
                idempotent: None,
                open_world: None,
            }
        );
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("name = \"t\"\nenv = [\"HOME\"]", "env"),
            ("name = \"t\"\n[permissions]\nnetwork = true", "network"),
            ("name = \"t\"\n[limits]\nmemory = \"lots\"", "limits.memory"),
            (
                "name = \"t\"\n[limits]\ntimeout = \"soon\"",
                "limits.timeout",
            ),
            (
                "name = \"t\"\n[limits]\ntimeout = \"300000000000y\"",
                "limits.timeout = \"300000000000y\" is out of range",
            ),
            (
                "name = \"t\"\n[limits]\nmax_output = 0",
                "limits.max_output",
            ),
            ("name = \"t\"\n[limits]\nmemory = true", "expected a size"),
            ("name = \"t\"\n[limits]\nmax_output = -1", "expected a size"),
            ("name = \"t\"\nmode = \"sometimes\"", "mode"),
            ("name = \"../x\"", "name"),
            (
                "name = \"t\"\n[[permissions.dirs]]\nhost = \"/x\"\nguest = \"rel\"\naccess = \"read-only\"",
                "permissions.dirs[0].guest",
            ),
            ("name = \"t\"\n[input_schema]\ntype = 5", "input_schema"),
            (
                "name = \"t\"\n[output_schema]\ntype = \"string\"",
                "output_schema",
            ),
            (
                "name = \"t\"\n[output_schema]\ntype = \"object\"\nrequired = 5",
                "output_schema",
            ),
            (
                "name = \"t\"\n[annotations]\nreadOnlyHint = true",
                "readOnlyHint",
            ),
            (
                "name = \"t\"\n[annotations]\nread_only = \"yes\"",
                "read_only",
            ),
            ("name = \"t\"\ntitle = \"\"", "title"),
        ];
        for (text, key) in cases {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.starts_with("t.toml: "), "{e}");
            assert!(e.contains(key), "{text:?} -> {e}");
        }
    }
}
