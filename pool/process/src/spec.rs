//! The keys of a process tool's manifest (`runtime = "process"`). The keys
//! every manifest has are the registry's; unknown keys are errors.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use toolplane_tool::secret::Value;
use toolplane_tool::{Annotations, Common, Keys};
use toolplane_units::{Size, fmt_size, parse_duration_key};

/// The protocols a process tool may speak.
pub const PROTOCOLS: [&str; 3] = ["exec", "jsonl", "mcp"];

/// How toolplane talks to a process tool's program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// One fresh process per call: input on stdin, output on stdout.
    Exec,
    /// Long-lived processes, one JSON request per line on stdin, one JSON
    /// response per line on stdout, answered in any order.
    Jsonl,
    /// An MCP server over stdio: its tools are the manifest's members.
    Mcp,
}

impl Protocol {
    /// As written in a manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Exec => "exec",
            Protocol::Jsonl => "jsonl",
            Protocol::Mcp => "mcp",
        }
    }
}

/// Tools one upstream may list at most (`tools list`, `/metrics` and
/// every client's `tools/list` carry each of them).
pub const MAX_TOOLS: usize = 1024;
/// Pages of `tools/list` at most: a `nextCursor` that never ends is an
/// upstream's fault, not a list.
pub const MAX_PAGES: usize = 64;
/// Bytes of one member's input or output schema at most (as JSON).
pub const MAX_SCHEMA: usize = 256 << 10;

/// Characters a member's own name may have at most.
pub const MAX_MEMBER_NAME: usize = 64;

/// Whether `name` may name a member of a set (a jsonl worker's
/// `[[tools]]` entry, a tool an upstream lists): 1 to
/// [`MAX_MEMBER_NAME`] of A-Z a-z 0-9 _ - (the names strict clients
/// accept), no dots (the set's name and a dot go before it).
///
/// # Errors
///
/// What is wrong with it, in words.
pub fn member_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a tool needs a name".into());
    }
    if name.len() > MAX_MEMBER_NAME {
        return Err(format!("a name has at most {MAX_MEMBER_NAME} characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
    {
        return Err("name each tool with A-Z a-z 0-9 _ -, without dots".into());
    }
    Ok(())
}

/// The keys of a process tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessManifest {
    /// How calls reach the program.
    pub protocol: Protocol,
    /// The program and its arguments; `{data}` in an argument is the data
    /// directory.
    pub command: Vec<String>,
    /// The only environment the program gets, besides `PATH` and `HOME`:
    /// each value in place or a reference (`{ env = … }`, `{ file = … }`,
    /// [`toolplane_tool::secret`]), resolved when the tool loads.
    pub env: BTreeMap<String, Value>,
    /// Its working directory (`{data}` allowed); the manifest's directory
    /// when unset.
    pub cwd: Option<String>,
    /// How many processes, and how they are shared.
    pub pool: PoolSpec,
    /// Limits of one call and one process.
    pub limits: ProcessLimits,
    /// A jsonl worker's tools when it has several (`[[tools]]`), each
    /// listed as `<name>.<tool>`; empty when the manifest is one tool.
    pub tools: Vec<Member>,
    /// The file system its processes see, when narrowed (`[permissions]`):
    /// with Landlock, the system's directories read-only and these.
    pub permissions: Option<FsGrants>,
    /// `preset = "node" | "python" | "npx"`: what that runtime needs.
    pub preset: Option<Preset>,
    /// `network = "host"`: its processes share the server's network; by
    /// default (`"none"`) they have a network namespace of their own, with
    /// only its own loopback.
    pub host_network: bool,
}

/// How every process tool runs, in one sentence for clients.
pub const RUNS: &str = "A process tool runs as a program in namespaces of its own, with limited memory, processes and time.";

impl ProcessManifest {
    /// The `env` keys whose names say they hold a credential and whose
    /// values are written in the manifest itself (warned about at load).
    pub fn literal_secrets(&self) -> Vec<&str> {
        self.env
            .iter()
            .filter(|(k, v)| {
                matches!(v, Value::Plain(t) if !t.is_empty())
                    && toolplane_tool::secret::looks_secret(k)
            })
            .map(|(k, _)| k.as_str())
            .collect()
    }

    /// Its runtime keys in words and as JSON (`tools list`).
    pub fn describe(&self) -> toolplane_tool::Described {
        let (limits, pool) = (&self.limits, &self.pool);
        let protocol = self.protocol.as_str();
        let shape = match self.protocol {
            Protocol::Exec => format!("a process per call, at most {} at once", pool.max),
            _ => format!(
                "{}..={} processes, {} calls each at once",
                pool.min, pool.max, pool.max_inflight_per_process
            ),
        };
        let text = format!(
            "process ({protocol}): {}; {shape}; limits: timeout {}, output {} KiB",
            self.command.join(" "),
            humantime::format_duration(limits.timeout),
            limits.max_output >> 10,
        );
        let serde_json::Value::Object(fields) = serde_json::json!({
            "runtime": "process",
            "protocol": protocol,
            "command": self.command,
            "pool": pool.to_json(),
            "limits": {
                "timeout_ms": limits.timeout.as_millis() as u64,
                "startup_timeout_ms": limits.startup_timeout.as_millis() as u64,
                "max_output_bytes": limits.max_output,
                "memory_bytes": limits.memory,
                "processes": limits.processes,
            },
        }) else {
            unreachable!("an object literal")
        };
        toolplane_tool::Described {
            kind: format!("process, {protocol}"),
            text,
            fields,
            runs: RUNS,
        }
    }
}

/// The `[permissions]` of a process tool: directories beyond the system's
/// own (`{data}` allowed; relative to the manifest's directory).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsGrants {
    /// Read (and execute) only.
    #[serde(default)]
    pub read: Vec<String>,
    /// Read and write.
    #[serde(default)]
    pub write: Vec<String>,
}

/// One tool of a set: a `[[tools]]` entry of a jsonl manifest, or a tool an
/// upstream MCP server lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its own name (what the program is asked for); listed as
    /// `<set>.<name>`.
    pub name: String,
    /// What it does.
    pub description: String,
    /// The JSON Schema of its input.
    pub input_schema: serde_json::Value,
    /// A human-readable name.
    pub title: Option<String>,
    /// The JSON Schema of its output (an object schema), if declared.
    pub output_schema: Option<serde_json::Value>,
    /// What a client may assume of it.
    pub annotations: Annotations,
}

impl ProcessManifest {
    /// Whether the manifest names a set of tools (an MCP server, or a
    /// jsonl worker with `[[tools]]`) rather than one tool.
    pub fn is_set(&self) -> bool {
        self.protocol == Protocol::Mcp || !self.tools.is_empty()
    }
}

/// `pool.queue` unless set: calls that wait hold a worker's slot each, so
/// a tool's backlog is kept small (and within
/// `toolplane_tool::Site::backlog`, which cuts a larger one).
pub const DEFAULT_QUEUE: usize = 64;

/// The `[pool]` keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    /// Processes started at load and kept running (long-lived protocols).
    pub min: usize,
    /// Processes at most (for `exec`: calls running at once).
    pub max: usize,
    /// A process above `min` idle this long is stopped.
    pub idle_timeout: Duration,
    /// Calls one process answers at once.
    pub max_inflight_per_process: usize,
    /// Calls after which a process is replaced (`None`: never).
    pub recycle_after: Option<u64>,
    /// Calls that may wait for a turn; one more is refused at once.
    pub queue: usize,
}

impl PoolSpec {
    /// As `tools list --json` shows it.
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "min": self.min,
            "max": self.max,
            "idle_timeout_ms": self.idle_timeout.as_millis() as u64,
            "max_inflight_per_process": self.max_inflight_per_process,
            "recycle_after": self.recycle_after,
            "queue": self.queue,
        })
    }
}

/// Limits of one call and one process of a process tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessLimits {
    /// Wall-clock deadline of a call, waiting for a turn included.
    pub timeout: Duration,
    /// How long a process may take to be ready.
    pub startup_timeout: Duration,
    /// Bytes of one call's output at most (for `exec`, its stdout; for
    /// `jsonl`, one response line).
    pub max_output: u64,
    /// Memory of each process with everything it starts (its cgroup's, or
    /// each process's `RLIMIT_DATA` where there are no cgroups).
    pub memory: u64,
    /// Whether the manifest set `limits.memory` (else it is
    /// [`DEFAULT_MEMORY`]).
    pub memory_set: bool,
    /// Processes and threads each process may have at once, itself and
    /// its descendants included (cgroup `pids.max`, where there are
    /// cgroups).
    pub processes: u64,
}

/// `limits.memory` unless set: Node, Python and npx start well within it.
pub const DEFAULT_MEMORY: u64 = 1 << 30;

/// `limits.processes` unless set: Node alone runs ~11 threads, npx a few
/// processes more.
pub const DEFAULT_PROCESSES: u64 = 256;

/// A runtime a program is started with, and what it needs from its
/// sandbox (`preset = "…"`; `spawn.rs` says what each grants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// `node script.js`: the script's directory, Node's install prefix.
    Node,
    /// `python3 script.py`: the script's directory, the interpreter's
    /// prefix and the user's site-packages; unbuffered, no bytecode
    /// written.
    Python,
    /// `npx package`: npm's cache (read and write), Node's prefix;
    /// offline first (a cached package needs no network).
    Npx,
}

/// The accepted `preset` values.
pub const PRESETS: [&str; 3] = ["node", "python", "npx"];

/// Reads a process tool's manifest: the keys every manifest has, as
/// written, and the process keys, to check after them
/// ([`Unchecked::check`]). `toml_err` words a TOML error.
///
/// # Errors
///
/// Not valid TOML, or an unknown key; the message names the key.
pub fn parse(
    text: &str,
    toml_err: impl Fn(toml::de::Error) -> String,
) -> Result<(Keys, Unchecked), String> {
    let raw: Unchecked = toml::from_str(text).map_err(toml_err)?;
    let keys = Keys {
        name: raw.name.clone(),
        description: raw.description.clone(),
        input_schema: raw.input_schema.clone(),
        title: raw.title.clone(),
        output_schema: raw.output_schema.clone(),
        annotations: raw.annotations,
    };
    Ok((keys, raw))
}

/// A process manifest, read and not yet checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unchecked {
    #[serde(rename = "runtime")]
    _runtime: String,
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) description: String,
    pub(crate) input_schema: Option<serde_json::Value>,
    pub(crate) title: Option<String>,
    pub(crate) output_schema: Option<serde_json::Value>,
    #[serde(default)]
    pub(crate) annotations: Annotations,
    protocol: String,
    command: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, Value>,
    cwd: Option<String>,
    #[serde(default)]
    pool: RawPool,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    tools: Vec<RawMember>,
    permissions: Option<FsGrants>,
    network: Option<String>,
    preset: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    name: String,
    #[serde(default)]
    description: String,
    input_schema: Option<serde_json::Value>,
    title: Option<String>,
    output_schema: Option<serde_json::Value>,
    #[serde(default)]
    annotations: Annotations,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPool {
    min: Option<usize>,
    max: Option<usize>,
    idle_timeout: Option<String>,
    max_inflight_per_process: Option<usize>,
    recycle_after: Option<u64>,
    queue: Option<usize>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    timeout: Option<String>,
    startup_timeout: Option<String>,
    max_output: Option<Size>,
    memory: Option<Size>,
    processes: Option<u64>,
}

/// `key = value` must lie in `range`; the message says what it counts.
fn in_range<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
    unit: &str,
) -> Result<T, String> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "{key} = {value} is out of range: {}..={} {unit}",
            range.start(),
            range.end()
        ))
    }
}

impl Unchecked {
    /// The process keys, checked; the message names the key.
    ///
    /// # Errors
    ///
    /// A bad value; the message names the key.
    pub fn check(&self) -> Result<ProcessManifest, String> {
        let protocol = match self.protocol.as_str() {
            "exec" => Protocol::Exec,
            "jsonl" => Protocol::Jsonl,
            "mcp" => Protocol::Mcp,
            other => {
                return Err(format!(
                    "protocol = {other:?} is not a protocol: accepted {}",
                    PROTOCOLS.map(|p| format!("{p:?}")).join(", ")
                ));
            }
        };
        match self.command.first() {
            None => return Err("command is empty: name the program to run".into()),
            Some(p) if p.is_empty() => return Err("command[0] is empty".into()),
            Some(_) => {}
        }
        for k in self.env.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(format!("env.{k:?} is not an environment variable name"));
            }
        }
        Ok(ProcessManifest {
            protocol,
            command: self.command.clone(),
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            pool: self.pool.check(protocol)?,
            limits: self.limits.check()?,
            tools: self.members(protocol)?,
            permissions: self.permissions.clone(),
            preset: match self.preset.as_deref() {
                None => None,
                Some("node") => Some(Preset::Node),
                Some("python") => Some(Preset::Python),
                Some("npx") => Some(Preset::Npx),
                Some(other) => {
                    return Err(format!(
                        "preset = {other:?} is not a preset: accepted {}",
                        PRESETS.map(|p| format!("{p:?}")).join(", ")
                    ));
                }
            },
            host_network: match self.network.as_deref() {
                None | Some("none") => false,
                Some("host") => true,
                Some(other) => {
                    return Err(format!(
                        "network = {other:?}: accepted \"none\" (the default: no network) or \"host\" (the server's network)"
                    ));
                }
            },
        })
    }

    /// The `[[tools]]`, checked: a jsonl worker's only.
    fn members(&self, protocol: Protocol) -> Result<Vec<Member>, String> {
        if self.tools.is_empty() {
            return Ok(Vec::new());
        }
        match protocol {
            Protocol::Jsonl => {}
            Protocol::Exec => {
                return Err("[[tools]] needs a long-lived worker (protocol = \"jsonl\"): an exec tool is one tool".into());
            }
            Protocol::Mcp => {
                return Err("[[tools]]: an MCP server lists its own tools".into());
            }
        }
        for (key, set) in [
            ("input_schema", self.input_schema.is_some()),
            ("output_schema", self.output_schema.is_some()),
            ("title", self.title.is_some()),
        ] {
            if set {
                return Err(format!(
                    "{key} belongs to each [[tools]] entry when the manifest has several tools"
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::with_capacity(self.tools.len());
        for (i, t) in self.tools.iter().enumerate() {
            if !seen.insert(t.name.as_str()) {
                return Err(format!("tools[{i}].name = {:?} is listed twice", t.name));
            }
            if let Err(why) = member_name(&t.name) {
                return Err(format!(
                    "tools[{i}].name = {:?}: {why} (it is listed as {}.<name>)",
                    t.name, self.name
                ));
            }
            let common = Common::check(
                format!("{}.{}", self.name, t.name),
                t.input_schema.clone(),
                t.output_schema.clone(),
                t.title.as_deref(),
            )
            .map_err(|e| format!("tools[{i}] ({}): {e}", t.name))?;
            out.push(Member {
                name: t.name.clone(),
                description: t.description.clone(),
                input_schema: common.input_schema,
                title: t.title.clone(),
                output_schema: common.output_schema,
                annotations: t.annotations,
            });
        }
        Ok(out)
    }
}

impl RawPool {
    fn check(&self, protocol: Protocol) -> Result<PoolSpec, String> {
        if protocol == Protocol::Exec {
            for (key, set) in [
                ("pool.min", self.min.is_some()),
                ("pool.idle_timeout", self.idle_timeout.is_some()),
                (
                    "pool.max_inflight_per_process",
                    self.max_inflight_per_process.is_some(),
                ),
                ("pool.recycle_after", self.recycle_after.is_some()),
            ] {
                if set {
                    return Err(format!(
                        "{key} applies to long-lived processes, and protocol = \"exec\" starts one per call"
                    ));
                }
            }
        }
        let max = in_range("pool.max", self.max.unwrap_or(4), 1..=1024, "processes")?;
        let min = in_range(
            "pool.min",
            self.min.unwrap_or(0),
            0..=max,
            "processes (pool.max)",
        )?;
        let idle_timeout = match &self.idle_timeout {
            Some(t) => parse_duration_key("pool.idle_timeout", t)?,
            None => Duration::from_secs(300),
        };
        let max_inflight_per_process = in_range(
            "pool.max_inflight_per_process",
            self.max_inflight_per_process.unwrap_or(1),
            1..=4096,
            "calls",
        )?;
        let recycle_after = match self.recycle_after {
            Some(n) => Some(in_range("pool.recycle_after", n, 1..=u64::MAX, "calls")?),
            None => None,
        };
        let queue = in_range(
            "pool.queue",
            self.queue.unwrap_or(DEFAULT_QUEUE),
            0..=1 << 20,
            "calls",
        )?;
        Ok(PoolSpec {
            min,
            max,
            idle_timeout,
            max_inflight_per_process,
            recycle_after,
            queue,
        })
    }
}

impl RawLimits {
    fn check(&self) -> Result<ProcessLimits, String> {
        let duration = |key: &str, v: &Option<String>, default: u64| -> Result<Duration, String> {
            let d = match v {
                Some(t) => parse_duration_key(key, t)?,
                None => Duration::from_secs(default),
            };
            if d.is_zero() {
                return Err(format!("{key} must be above zero"));
            }
            Ok(d)
        };
        let size = |key: &str, v: &Option<Size>| -> Result<Option<u64>, String> {
            v.as_ref().map(|s| s.bytes(key)).transpose()
        };
        let max_output = size("limits.max_output", &self.max_output)?.unwrap_or(8 << 20);
        if max_output == 0 || max_output >= 1 << 31 {
            return Err(format!(
                "limits.max_output = {} is out of range: 1 B ..= 2 GiB - 1",
                fmt_size(max_output)
            ));
        }
        let memory_set = self.memory.is_some();
        let memory = size("limits.memory", &self.memory)?.unwrap_or(DEFAULT_MEMORY);
        if !(1 << 20..=1 << 40).contains(&memory) {
            return Err(format!(
                "limits.memory = {} is out of range: 1 MiB ..= 1 TiB",
                fmt_size(memory)
            ));
        }
        let processes = in_range(
            "limits.processes",
            self.processes.unwrap_or(DEFAULT_PROCESSES),
            1..=1 << 20,
            "processes and threads",
        )?;
        Ok(ProcessLimits {
            timeout: duration("limits.timeout", &self.timeout, 30)?,
            startup_timeout: duration("limits.startup_timeout", &self.startup_timeout, 10)?,
            max_output,
            memory,
            memory_set,
            processes,
        })
    }
}

/// Headers a remote server's manifest may not set: the transport's own
/// (rmcp refuses to send them), and what the HTTP client writes.
/// (Any `mcp-…` header is the protocol's too: `Mcp-Session-Id`,
/// `MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`, `Mcp-Param-…`.)
pub const RESERVED_HEADERS: [&str; 13] = [
    "accept",
    "accept-encoding",
    "connection",
    "content-length",
    "content-type",
    "host",
    "keep-alive",
    "last-event-id",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// How every remote tool runs, in one sentence for clients.
pub const RUNS_REMOTE: &str =
    "A remote tool is served by an MCP server elsewhere, reached over streamable HTTP.";

/// The keys of a remote MCP server (`runtime = "remote"`): its tools are
/// the manifest's members, as a process upstream's are. A session plays a
/// process's part in `[pool]`: `pool.max` sessions at most, each carrying
/// `pool.max_inflight_per_process` calls at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteManifest {
    /// Its streamable-HTTP endpoint: `http://` or `https://`, no
    /// credentials in it.
    pub url: String,
    /// Sent with every request: each value in place or a reference
    /// (`{ env = … }`, `{ file = … }`), resolved when the tool loads.
    pub headers: BTreeMap<String, Value>,
    /// Sessions, and calls each carries at once.
    pub pool: PoolSpec,
    /// A call's deadline, a session's start (connect and `initialize`),
    /// one answer's size. (`limits.memory` and `limits.processes` are a
    /// process's, and not keys here.)
    pub limits: ProcessLimits,
}

impl RemoteManifest {
    /// The headers whose names say they carry a credential and whose
    /// values are written in the manifest itself (warned about at load).
    pub fn literal_secrets(&self) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, v)| {
                matches!(v, Value::Plain(t) if !t.is_empty())
                    && toolplane_tool::secret::looks_secret(k)
            })
            .map(|(k, _)| k.as_str())
            .collect()
    }

    /// Its runtime keys in words and as JSON (`tools list`): header names,
    /// never their values.
    pub fn describe(&self) -> toolplane_tool::Described {
        let (limits, pool) = (&self.limits, &self.pool);
        let url = shown_url(&self.url);
        let text = format!(
            "remote (mcp): {url}; {}..={} sessions, {} calls each at once; limits: timeout {}, output {} KiB",
            pool.min,
            pool.max,
            pool.max_inflight_per_process,
            humantime::format_duration(limits.timeout),
            limits.max_output >> 10,
        );
        let headers: Vec<&str> = self.headers.keys().map(String::as_str).collect();
        let serde_json::Value::Object(fields) = serde_json::json!({
            "runtime": "remote",
            "protocol": "mcp",
            "url": url,
            "headers": headers,
            "pool": pool.to_json(),
            "limits": {
                "timeout_ms": limits.timeout.as_millis() as u64,
                "startup_timeout_ms": limits.startup_timeout.as_millis() as u64,
                "max_output_bytes": limits.max_output,
            },
        }) else {
            unreachable!("an object literal")
        };
        toolplane_tool::Described {
            kind: "remote, mcp".into(),
            text,
            fields,
            runs: RUNS_REMOTE,
        }
    }
}

/// Reads a remote tool's manifest, as [`parse`] does a process tool's.
///
/// # Errors
///
/// Not valid TOML, or an unknown key; the message names the key.
pub fn parse_remote(
    text: &str,
    toml_err: impl Fn(toml::de::Error) -> String,
) -> Result<(Keys, UncheckedRemote), String> {
    let raw: UncheckedRemote = toml::from_str(text).map_err(toml_err)?;
    let keys = Keys {
        name: raw.name.clone(),
        description: raw.description.clone(),
        input_schema: None,
        title: raw.title.clone(),
        output_schema: None,
        annotations: raw.annotations,
    };
    Ok((keys, raw))
}

/// A remote tool's manifest, read and not yet checked. No schemas: the
/// server lists its tools with theirs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UncheckedRemote {
    #[serde(rename = "runtime")]
    _runtime: String,
    name: String,
    #[serde(default)]
    description: String,
    title: Option<String>,
    #[serde(default)]
    annotations: Annotations,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, Value>,
    #[serde(default)]
    pool: RawPool,
    #[serde(default)]
    limits: RawRemoteLimits,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRemoteLimits {
    timeout: Option<String>,
    startup_timeout: Option<String>,
    max_output: Option<Size>,
}

/// Sessions at most unless `pool.max` says: one session carries many
/// calls at once.
pub const REMOTE_SESSIONS: usize = 1;
/// Calls one session carries at once unless
/// `pool.max_inflight_per_process` says (rmcp's POSTs in flight).
pub const REMOTE_INFLIGHT: usize = 16;

impl UncheckedRemote {
    /// The remote keys, checked; the message names the key.
    ///
    /// # Errors
    ///
    /// A bad value; the message names the key.
    pub fn check(&self) -> Result<RemoteManifest, String> {
        let url = check_url(&self.url)?;
        let mut seen = std::collections::BTreeMap::new();
        for name in self.headers.keys() {
            check_header_name(name)?;
            if let Some(first) = seen.insert(name.to_ascii_lowercase(), name) {
                return Err(format!(
                    "headers.{name} and headers.{first} name one header (names ignore case): keep one"
                ));
            }
        }
        let pool = RawPool {
            max: Some(self.pool.max.unwrap_or(REMOTE_SESSIONS)),
            max_inflight_per_process: Some(
                self.pool
                    .max_inflight_per_process
                    .unwrap_or(REMOTE_INFLIGHT),
            ),
            ..self.pool.clone()
        }
        .check(Protocol::Mcp)?;
        let limits = RawLimits {
            timeout: self.limits.timeout.clone(),
            startup_timeout: self.limits.startup_timeout.clone(),
            max_output: self.limits.max_output.clone(),
            memory: None,
            processes: None,
        }
        .check()?;
        Ok(RemoteManifest {
            url,
            headers: self.headers.clone(),
            pool,
            limits,
        })
    }
}

/// The longest `url` accepted.
pub const MAX_URL: usize = 2048;

/// `url` as toolplane shows it (`tools list`, errors, logs): scheme, host,
/// port and path; never a user, a password or the query, which may carry
/// a key (`?api_key=…` is common). Works on text that does not parse too.
pub fn shown_url(raw: &str) -> String {
    let cut = raw.split(['?', '#']).next().unwrap_or(raw);
    let (shown, rest) = match cut.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            (format!("{scheme}://{rest}"), raw.len() > cut.len())
        }
        None => (
            cut.rsplit_once('@').map_or(cut, |(_, h)| h).to_owned(),
            raw.len() > cut.len(),
        ),
    };
    let mut shown: String = shown.chars().take(200).collect();
    if rest && raw[cut.len()..].starts_with('?') {
        shown.push_str("?…");
    }
    shown
}

/// `url`, checked: http or https, a host, no credentials, no fragment;
/// messages show it as [`shown_url`] does.
///
/// # Errors
///
/// What is wrong with it, naming the key.
pub fn check_url(raw: &str) -> Result<String, String> {
    let shown = shown_url(raw);
    if raw.len() > MAX_URL {
        return Err(format!(
            "url ({shown}) is {} bytes, over the {MAX_URL} a url may have",
            raw.len()
        ));
    }
    let url = url::Url::parse(raw).map_err(|e| format!("url = {shown:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "url = {shown:?}: a remote MCP server is reached over http:// or https://, not {}:",
            url.scheme()
        ));
    }
    // `http:///mcp` parses as the host `mcp`: what was written named none.
    let authority = raw.split_once("://").map_or("", |(_, r)| r);
    if url.host_str().is_none_or(str::is_empty) || authority.starts_with('/') {
        return Err(format!("url = {shown:?} names no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "url = {shown:?}: credentials are not written in a URL (it is shown by `tools list`): send them as a header, e.g. [headers] Authorization = {{ env = \"VARIABLE\" }}"
        ));
    }
    if url.fragment().is_some() {
        return Err(format!(
            "url = {shown:?}: a fragment (#…) is never sent; remove it"
        ));
    }
    Ok(url.to_string())
}

/// A header name the manifest may set.
fn check_header_name(name: &str) -> Result<(), String> {
    if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(format!("headers.{name:?} is not an HTTP header name"));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("mcp-") {
        return Err(format!(
            "headers.{name}: the transport sets this header itself (not settable: {}, or any mcp-…)",
            RESERVED_HEADERS.join(", ")
        ));
    }
    Ok(())
}
