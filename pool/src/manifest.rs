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

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

pub use toolplane_process::spec::{
    DEFAULT_MEMORY, DEFAULT_PROCESSES, FsGrants, MAX_MEMBER_NAME, Member, PRESETS, PROTOCOLS,
    PoolSpec, Preset, ProcessLimits, ProcessManifest, Protocol, RemoteManifest, member_name,
};
pub use toolplane_tool::{
    Annotations, Common, DATA_PLACEHOLDER, Described, Keys, MAX_NAME, valid_name,
};
pub use toolplane_units::{MAX_DURATION, parse_size};
pub use toolplane_wasi::spec::{Access, DirGrant, EntryKind, Limits, Mode, WasiManifest};

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

/// What runs a tool: the manifest's `runtime` key, with the keys of that
/// runtime. The registry lists, checks, reloads and counts every kind
/// alike; only loading and calling differ (`kind.rs`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RuntimeManifest {
    /// `runtime = "wasi"` (the default): a WebAssembly module run in the
    /// WASI pool.
    Wasi(WasiManifest),
    /// `runtime = "process"`: a program run as processes (`toolplane-process`).
    Process(ProcessManifest),
    /// `runtime = "remote"`: an MCP server elsewhere, over streamable HTTP
    /// (`toolplane-process`, pooled as processes are).
    Remote(RemoteManifest),
}

impl RuntimeManifest {
    /// How every tool of this kind runs, in one sentence for clients
    /// ([`Described::runs`], without building the rest).
    pub fn runs(&self) -> &'static str {
        match self {
            RuntimeManifest::Wasi(_) => toolplane_wasi::spec::RUNS,
            RuntimeManifest::Process(_) => toolplane_process::spec::RUNS,
            RuntimeManifest::Remote(_) => toolplane_process::spec::RUNS_REMOTE,
        }
    }

    /// The runtime's keys in words and as JSON, as its kind writes them.
    pub fn describe(&self) -> toolplane_tool::Described {
        match self {
            RuntimeManifest::Wasi(w) => w.describe(),
            RuntimeManifest::Process(p) => p.describe(),
            RuntimeManifest::Remote(r) => r.describe(),
        }
    }
}

/// The runtimes a manifest may name, as written in its `runtime` key.
pub const RUNTIMES: [&str; 3] = ["wasi", "process", "remote"];

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

/// A TOML error of `text` on one line: where (line, column), the key, and
/// what is wrong; never the value, which may be a secret (an env value, a
/// header, a token written where its digest belongs).
pub fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let at = e
        .span()
        .and_then(|span| text.get(..span.start).map(|b| (b, span.start)))
        .map(|(before, start)| {
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let column = before.len() - line_start + 1;
            let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
            let whole = text[line_start..end].trim();
            let key = match whole.split_once('=') {
                Some((k, _)) => format!(" ({} = …)", k.trim()),
                None if whole.starts_with('[') => format!(" ({whole})"),
                None => String::new(),
            };
            format!("line {line}, column {column}{key}: ")
        })
        .unwrap_or_default();
    toolplane_core::config::plain_types(&format!("{at}{}", e.message().trim())).replace('\n', " ")
}

/// The largest manifest read: manifests are a few KiB of TOML.
pub const MAX_MANIFEST: u64 = 1 << 20;

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
        let limits = toolplane_tool::files::ReadLimits {
            max: MAX_MANIFEST,
            key: "the manifest size limit",
            timeout: Duration::from_secs(5),
        };
        let bytes =
            toolplane_tool::files::read_checked(path, limits).map_err(|e| ManifestError {
                path: path.to_owned(),
                message: e.reason().to_string(),
            })?;
        let text = String::from_utf8(bytes).map_err(|e| ManifestError {
            path: path.to_owned(),
            message: format!("is not UTF-8 (at byte {})", e.utf8_error().valid_up_to()),
        })?;
        let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
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
        let toml_msg = |e: toml::de::Error| toml_error(text, &e);
        let runtime: RawRuntime = toml::from_str(text).map_err(|e| err(toml_msg(e)))?;
        // Each kind reads its keys with the shared ones (unknown keys are
        // errors); the shared keys are checked first, then the kind's.
        let common = |keys: &Keys| {
            Common::check(
                keys.name.clone(),
                keys.input_schema.clone(),
                keys.output_schema.clone(),
                keys.title.as_deref(),
            )
        };
        enum Kind {
            Wasi,
            Process,
            Remote,
        }
        let kind = match runtime.runtime {
            None => Kind::Wasi,
            Some(toml::Value::String(r)) if r == "wasi" => Kind::Wasi,
            Some(toml::Value::String(r)) if r == "process" => Kind::Process,
            Some(toml::Value::String(r)) if r == "remote" => Kind::Remote,
            Some(other) => {
                return Err(err(format!(
                    "runtime = {other} is not a runtime: accepted {}",
                    RUNTIMES.map(|r| format!("{r:?}")).join(", ")
                )));
            }
        };
        let (keys, common, spec) = match kind {
            Kind::Process => {
                let (keys, raw) = toolplane_process::spec::parse(text, toml_msg).map_err(err)?;
                let common = common(&keys).map_err(err)?;
                let spec = RuntimeManifest::Process(raw.check().map_err(err)?);
                (keys, common, spec)
            }
            Kind::Remote => {
                let (keys, raw) =
                    toolplane_process::spec::parse_remote(text, toml_msg).map_err(err)?;
                let common = common(&keys).map_err(err)?;
                let spec = RuntimeManifest::Remote(raw.check().map_err(err)?);
                (keys, common, spec)
            }
            Kind::Wasi => {
                let (keys, raw) = toolplane_wasi::spec::parse(text, toml_msg).map_err(err)?;
                let common = common(&keys).map_err(err)?;
                let spec = RuntimeManifest::Wasi(raw.check().map_err(err)?);
                (keys, common, spec)
            }
        };
        Ok(Manifest {
            name: common.name,
            description: keys.description,
            runtime: spec,
            input_schema: common.input_schema,
            title: keys.title,
            output_schema: common.output_schema,
            annotations: keys.annotations,
        })
    }

    /// The process keys, for a process tool.
    pub fn process(&self) -> Option<&ProcessManifest> {
        match &self.runtime {
            RuntimeManifest::Process(p) => Some(p),
            RuntimeManifest::Wasi(_) | RuntimeManifest::Remote(_) => None,
        }
    }

    /// The remote keys, for a remote MCP server.
    pub fn remote(&self) -> Option<&RemoteManifest> {
        match &self.runtime {
            RuntimeManifest::Remote(r) => Some(r),
            RuntimeManifest::Wasi(_) | RuntimeManifest::Process(_) => None,
        }
    }

    /// The WASI keys, for a WASI tool.
    pub fn wasi(&self) -> Option<&WasiManifest> {
        match &self.runtime {
            RuntimeManifest::Wasi(w) => Some(w),
            RuntimeManifest::Process(_) | RuntimeManifest::Remote(_) => None,
        }
    }
}

impl Manifest {
    /// Whether this manifest (a file's, not a member's: members share
    /// their set's runtime keys, see `ToolEntry::is_set`) names a set of
    /// tools (an MCP server, or a jsonl worker with `[[tools]]`) rather
    /// than one tool.
    pub fn is_set(&self) -> bool {
        match &self.runtime {
            RuntimeManifest::Process(p) => p.is_set(),
            RuntimeManifest::Remote(_) => true,
            RuntimeManifest::Wasi(_) => false,
        }
    }

    /// The manifest of the member `m` of this set: `<set>.<m>`, with the
    /// member's description and schemas, run as the set is.
    ///
    /// # Errors
    ///
    /// The member's qualified name or schemas are not valid; the message
    /// names the member.
    pub fn member(&self, m: &Member) -> Result<Manifest, String> {
        let name = format!("{}.{}", self.name, m.name);
        member_name(&m.name).map_err(|why| format!("tool {name}: {:?}: {why}", m.name))?;
        let common = Common::check(
            name.clone(),
            Some(m.input_schema.clone()),
            m.output_schema.clone(),
            m.title.as_deref(),
        )
        .map_err(|e| format!("tool {name}: {e}"))?;
        Ok(Manifest {
            name: common.name,
            description: m.description.clone(),
            runtime: self.runtime.clone(),
            input_schema: common.input_schema,
            title: m.title.clone(),
            output_schema: common.output_schema,
            annotations: m.annotations,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::from_toml_str(text, Path::new("t.toml"))
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
                    && e.ends_with("is not a runtime: accepted \"wasi\", \"process\", \"remote\""),
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
