//! `toolplane.toml`: the server's settings, the engine's (`[engine]`, the
//! keys of [`toolplane_core::Config`]) and the pool's (`[pool]`).
//!
//! ```toml
//! data = "data"              # data directory of the fs tools
//!
//! [tools]                    # or `tools = "tools"`, the directory alone
//! dir = "tools"              # tools directory (default: the built-in tools only)
//! builtins = true            # serve the built-in demo tools too
//! expose = ["echo", "files.*"] # serve only the tools matching one (default: all)
//! mcp_separator = "_"        # MCP names put this for each dot: fs.read is fs_read
//!
//! [server]
//! http = "127.0.0.1:7070"
//! token_sha256 = "..."       # SHA-256 (hex) of the bearer token required on all but
//!                            # /healthz (`toolplane token hash`); or --token / TOOLPLANE_TOKEN
//! max_body = "1 MiB"
//! drain = "10s"              # how long in-flight calls may take at shutdown
//! threads = 2                # HTTP threads (default: one per available core)
//! allowed_hosts = ["localhost", "127.0.0.1", "::1"]
//! allowed_origins = []       # besides the server's own loopback origins
//! max_connections = 4096     # open HTTP connections served in full
//! reserve_connections = 64   # above that: /healthz, /readyz and /metrics only
//! header_timeout = "10s"     # to receive a request's headers (idle keep-alive included)
//! body_timeout = "30s"       # to receive a request's whole body
//! max_sessions = 1024        # MCP sessions open at once
//! session_idle = "10m"       # an MCP session unused this long is closed
//!
//! [engine]
//! max_inflight = 2048
//!
//! [pool]
//! instances = 512
//! warm_slots = 0            # free slots kept warm for their tool (default: the pool's)
//! max_module_size = "32 MiB" # the largest module a manifest may name
//! data_dir_limit = "1 GiB"   # writes that would take the data directory past it are refused
//! fs_inline = false          # file operations on the workers (see PoolConfig::fs_inline)
//!
//! [audit]                    # a record of every call (see `crate::audit`)
//! dir = "audit"
//!
//! [cluster]                  # a node of a cluster on NATS JetStream (see `crate::cluster`)
//! nats = "nats://127.0.0.1:4222"
//!
//! [[clients]]                # who may call, which tools, how much (see `crate::clients`)
//! name = "ci-bot"
//! token_sha256 = "..."
//! tools = ["echo", "files.*"]
//! ```
//!
//! Paths are relative to the file. Command-line flags win over the file;
//! the engine's `TOOLPLANE_*` environment variables win over `[engine]`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::token::{TokenDigest, parse_duration_in};

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A key is unknown, mistyped or out of range.
    #[error("{path}: {message}")]
    Invalid {
        /// The file (or the flag or variable) at fault.
        path: PathBuf,
        /// What is wrong, naming the key and what is accepted.
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The tools directory (`None`: the built-in tools only).
    pub tools: Option<PathBuf>,
    /// Whether the built-in tools are served (`[tools] builtins`).
    pub builtins: bool,
    /// What is served and its MCP names (`[tools] expose`,
    /// `[tools] mcp_separator`).
    pub names: toolplane_pool::names::Names,
    /// The data directory of the fs tools (`None`: the default).
    pub data: Option<PathBuf>,
    /// HTTP and lifecycle settings.
    pub server: ServerSettings,
    /// The engine.
    pub engine: toolplane_core::Config,
    /// The WASI pool: slot count override.
    pub pool_instances: Option<u32>,
    /// The WASI pool: `max_unused_warm_slots` override.
    pub pool_warm_slots: Option<u32>,
    /// The WASI pool: `max_module_size` override.
    pub pool_max_module_size: Option<u64>,
    /// The data directory's size limit (every kind of tool): `[pool] data_dir_limit`.
    pub pool_data_dir_limit: Option<u64>,
    /// The WASI pool: `fs_inline` override.
    pub pool_fs_inline: Option<bool>,
    /// `[[clients]]`: who may call, which tools, how much (`None`: no
    /// list; the server is open, or takes `server.token_sha256`).
    pub clients: Option<Vec<crate::clients::ClientSpec>>,
    /// `[oauth]`: OAuth access tokens accepted too (JWTs), their scopes
    /// granting tools.
    pub oauth: Option<crate::oauth::OauthSpec>,
    /// `[audit]`: a record of every call, written durably (`None`: off).
    pub audit: Option<toolplane_audit::Options>,
    /// `[cluster]`: this server as a node of a cluster on NATS JetStream
    /// (`None`: the embedded engine alone).
    pub cluster: Option<toolplane_cluster::Options>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            tools: None,
            builtins: true,
            names: toolplane_pool::names::Names::default(),
            data: None,
            server: ServerSettings::default(),
            engine: toolplane_core::Config::default(),
            pool_instances: None,
            pool_warm_slots: None,
            pool_max_module_size: None,
            pool_data_dir_limit: None,
            pool_fs_inline: None,
            clients: None,
            oauth: None,
            audit: None,
            cluster: None,
        }
    }
}

/// The `[server]` table.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Where HTTP listens.
    pub http: SocketAddr,
    /// The SHA-256 of the bearer token, if one is required.
    pub token: Option<TokenDigest>,
    /// Largest request body accepted.
    pub max_body: usize,
    /// How long in-flight calls may take to finish at shutdown.
    pub drain: Duration,
    /// `Host` values accepted on every route but `/healthz` (DNS
    /// rebinding protection); an entry without a port matches any port.
    pub allowed_hosts: Vec<String>,
    /// `Origin` values accepted besides the server's own loopback origins
    /// (`http://127.0.0.1:PORT`, `http://localhost:PORT`, `http://[::1]:PORT`);
    /// `scheme://host:*` matches any port.
    pub allowed_origins: Vec<String>,
    /// Open connections served in full.
    pub max_connections: usize,
    /// Connections above `max_connections` that may still ask for
    /// `/healthz`, `/readyz` and `/metrics`; beyond these a new connection
    /// is closed at once.
    pub reserve_connections: usize,
    /// Time to receive a request's headers, counted from the moment the
    /// connection waits for the next request (so it also ends idle
    /// keep-alive connections).
    pub header_timeout: Duration,
    /// Time to receive a request's whole body.
    pub body_timeout: Duration,
    /// MCP sessions open at once (streamable HTTP with sessions).
    pub max_sessions: usize,
    /// An MCP session with no request for this long is closed.
    pub session_idle: Duration,
    /// HTTP threads, each with its own single-threaded runtime (`None`:
    /// one per available core).
    pub threads: Option<usize>,
}

/// Most HTTP threads accepted by `server.threads`.
pub const MAX_HTTP_THREADS: usize = 256;

/// Most connections accepted by `server.max_connections`.
pub const MAX_CONNECTIONS: usize = 1 << 20;

/// The default address: loopback only.
pub const DEFAULT_HTTP: &str = "127.0.0.1:7070";

impl Default for ServerSettings {
    fn default() -> ServerSettings {
        ServerSettings {
            http: DEFAULT_HTTP.parse().expect("a valid default address"),
            token: None,
            max_body: 1 << 20,
            drain: Duration::from_secs(10),
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            allowed_origins: Vec::new(),
            threads: None,
            max_connections: 4096,
            reserve_connections: 64,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_sessions: 1024,
            session_idle: Duration::from_secs(600),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// A directory, or the `[tools]` table.
    tools: Option<toml::Value>,
    data: Option<PathBuf>,
    #[serde(default)]
    server: ServerFile,
    engine: Option<toml::Table>,
    #[serde(default)]
    pool: PoolFile,
    clients: Option<Vec<crate::clients::ClientFile>>,
    oauth: Option<crate::oauth::OauthFile>,
    audit: Option<crate::audit::AuditFile>,
    cluster: Option<crate::cluster::ClusterFile>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ServerFile {
    http: Option<String>,
    token: Option<String>,
    token_sha256: Option<String>,
    max_body: Option<String>,
    drain: Option<String>,
    allowed_hosts: Option<Vec<String>>,
    allowed_origins: Option<Vec<String>>,
    threads: Option<usize>,
    max_connections: Option<usize>,
    reserve_connections: Option<usize>,
    header_timeout: Option<String>,
    body_timeout: Option<String>,
    max_sessions: Option<usize>,
    session_idle: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ToolsFile {
    dir: Option<PathBuf>,
    builtins: Option<bool>,
    expose: Option<Vec<String>>,
    mcp_separator: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PoolFile {
    instances: Option<u32>,
    warm_slots: Option<u32>,
    max_module_size: Option<String>,
    data_dir_limit: Option<String>,
    fs_inline: Option<bool>,
}

impl Settings {
    /// Reads `path`.
    ///
    /// # Errors
    ///
    /// The file cannot be read, or a key is unknown or out of range (the
    /// message names the file and the key).
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Settings::from_toml_str(&text, path)
    }

    /// Parses `text`, read from `origin`.
    ///
    /// # Errors
    ///
    /// As [`Settings::from_file`].
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Settings, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: origin.to_owned(),
            message,
        };
        // Where and which key, never the value: a token pasted where its
        // digest belongs must not reach the log.
        let file: File = toml::from_str(text)
            .map_err(|e| invalid(toolplane_pool::manifest::toml_error(text, &e)))?;
        let base = origin.parent().unwrap_or(Path::new("."));
        let tools = match file.tools {
            None => ToolsFile::default(),
            Some(toml::Value::String(dir)) => ToolsFile {
                dir: Some(dir.into()),
                ..ToolsFile::default()
            },
            // Parsed again from the text, so that an error names its line.
            Some(toml::Value::Table(_)) => {
                #[derive(Deserialize)]
                struct Only {
                    tools: ToolsFile,
                }
                toml::from_str::<Only>(text)
                    .map_err(|e| {
                        invalid(format!(
                            "[tools]: {}",
                            toolplane_core::config::plain_types(e.to_string().trim_end())
                        ))
                    })?
                    .tools
            }
            Some(other) => {
                return Err(invalid(format!(
                    "tools: expected a directory (a string) or a [tools] table, found {}",
                    other.type_str()
                )));
            }
        };
        let mut names = toolplane_pool::names::Names::default();
        if let Some(sep) = &tools.mcp_separator {
            names.separator = toolplane_pool::names::Separator::parse(sep)
                .map_err(|e| invalid(format!("[tools] mcp_separator: {e}")))?;
        }
        if let Some(globs) = &tools.expose {
            names.expose = Some(
                globs
                    .iter()
                    .map(|g| toolplane_pool::names::Glob::parse(g))
                    .collect::<Result<_, _>>()
                    .map_err(|e| invalid(format!("[tools] expose: {e}")))?,
            );
        }
        let mut s = Settings {
            tools: tools.dir.map(|p| base.join(p)),
            builtins: tools.builtins.unwrap_or(true),
            names,
            data: file.data.map(|p| base.join(p)),
            ..Settings::default()
        };
        if let Some(engine) = file.engine {
            s.engine = toolplane_core::Config::from_toml_str(&engine.to_string(), origin).map_err(
                |e| match e {
                    // The parse of `[engine]` alone names lines of that
                    // table; the same parse of the whole file names the
                    // file's own.
                    toolplane_core::ConfigError::Parse { message, .. } => {
                        #[derive(serde::Deserialize)]
                        struct EngineOnly {
                            #[allow(dead_code)]
                            engine: toolplane_core::Config,
                            #[serde(flatten)]
                            _rest: toml::Table,
                        }
                        let message = match toml::from_str::<EngineOnly>(text) {
                            Err(whole) => {
                                toolplane_core::config::plain_types(whole.to_string().trim_end())
                            }
                            Ok(_) => message,
                        };
                        invalid(format!("[engine]: {message}"))
                    }
                    other => invalid(format!("[engine] {other}")),
                },
            )?;
        }
        s.pool_instances = file.pool.instances;
        s.pool_warm_slots = file.pool.warm_slots;
        s.pool_fs_inline = file.pool.fs_inline;
        let size = |key: &str, text: &Option<String>| -> Result<Option<u64>, ConfigError> {
            text.as_deref()
                .map(|t| {
                    toolplane_pool::manifest::parse_size(t).filter(|n| *n > 0).ok_or_else(|| {
                        invalid(format!(
                            "pool.{key} = {t:?} is not a size above zero: accepted e.g. \"64 MiB\", \"1 GiB\""
                        ))
                    })
                })
                .transpose()
        };
        s.pool_max_module_size = size("max_module_size", &file.pool.max_module_size)?;
        s.pool_data_dir_limit = size("data_dir_limit", &file.pool.data_dir_limit)?;
        if s.pool_instances == Some(0) {
            return Err(invalid(
                "pool.instances = 0: accepted 1..=4294967295".into(),
            ));
        }
        let srv = file.server;
        if let Some(a) = srv.http {
            s.server.http = parse_addr(&a).map_err(|m| invalid(format!("server.http: {m}")))?;
        }
        if srv.token.is_some() {
            return Err(invalid(
                "server.token: a token in plain text is refused in a file; put its SHA-256 in \
                 server.token_sha256 (`toolplane token hash` prints the line), or pass the token \
                 with --token or TOOLPLANE_TOKEN"
                    .into(),
            ));
        }
        if let Some(o) = file.oauth {
            s.oauth = Some(crate::oauth::parse(o, base).map_err(invalid)?);
        }
        if let Some(a) = file.audit {
            s.audit = Some(crate::audit::parse(a, base).map_err(invalid)?);
        }
        if let Some(c) = file.cluster {
            s.cluster = Some(crate::cluster::parse(c, base).map_err(invalid)?);
        }
        if let Some(list) = file.clients {
            if srv.token_sha256.is_some() {
                return Err(invalid(
                    "server.token_sha256 and [[clients]]: give one; with [[clients]] each client has its own token".into(),
                ));
            }
            s.clients = Some(crate::clients::parse(list, s.oauth.is_some()).map_err(invalid)?);
        }
        if s.oauth.is_some() && srv.token_sha256.is_some() {
            return Err(invalid(
                "server.token_sha256 and [oauth]: give one; with [oauth] clients come with access tokens (and [[clients]] tokens)".into(),
            ));
        }
        if let Some(h) = srv.token_sha256 {
            s.server.token = Some(
                TokenDigest::from_hex(&h)
                    .map_err(|m| invalid(format!("server.token_sha256: {m}")))?,
            );
        }
        if let Some(b) = srv.max_body {
            s.server.max_body =
                parse_body_limit(&b).map_err(|m| invalid(format!("server.max_body: {m}")))?;
        }
        if let Some(d) = srv.drain {
            s.server.drain = parse_drain(&d).map_err(|m| invalid(format!("server.drain: {m}")))?;
        }
        if let Some(h) = srv.allowed_hosts {
            s.server.allowed_hosts = h;
        }
        if let Some(o) = srv.allowed_origins {
            s.server.allowed_origins = o;
        }
        if let Some(n) = srv.threads {
            if !(1..=MAX_HTTP_THREADS).contains(&n) {
                return Err(invalid(format!(
                    "server.threads = {n}: accepted 1..={MAX_HTTP_THREADS}"
                )));
            }
            s.server.threads = Some(n);
        }
        if let Some(n) = srv.max_connections {
            if !(1..=MAX_CONNECTIONS).contains(&n) {
                return Err(invalid(format!(
                    "server.max_connections = {n}: accepted 1..={MAX_CONNECTIONS}"
                )));
            }
            s.server.max_connections = n;
        }
        if let Some(n) = srv.reserve_connections {
            if n > 4096 {
                return Err(invalid(format!(
                    "server.reserve_connections = {n}: accepted 0..=4096"
                )));
            }
            s.server.reserve_connections = n;
        }
        let timeout = |key: &str, text: &str, min: Duration, max: Duration| {
            parse_duration_in(text, min, max).map_err(|m| invalid(format!("server.{key}: {m}")))
        };
        if let Some(t) = srv.header_timeout {
            s.server.header_timeout = timeout(
                "header_timeout",
                &t,
                Duration::from_millis(100),
                Duration::from_secs(3600),
            )?;
        }
        if let Some(t) = srv.body_timeout {
            s.server.body_timeout = timeout(
                "body_timeout",
                &t,
                Duration::from_millis(100),
                Duration::from_secs(3600),
            )?;
        }
        if let Some(n) = srv.max_sessions {
            if !(1..=1_000_000).contains(&n) {
                return Err(invalid(format!(
                    "server.max_sessions = {n}: accepted 1..=1000000"
                )));
            }
            s.server.max_sessions = n;
        }
        if let Some(t) = srv.session_idle {
            s.server.session_idle = timeout(
                "session_idle",
                &t,
                Duration::from_secs(1),
                Duration::from_secs(7 * 24 * 3600),
            )?;
        }
        Ok(s)
    }
}

/// Parses a listening address (`127.0.0.1:7070`, `[::1]:7070`).
///
/// # Errors
///
/// A message naming the value and the accepted form.
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not an address: accepted IP:PORT, e.g. 127.0.0.1:7070"))
}

/// Parses a body limit (`1 MiB`, `65536`), 1 KiB ..= 1 GiB.
///
/// # Errors
///
/// A message naming the value and the accepted range.
pub fn parse_body_limit(text: &str) -> Result<usize, String> {
    let n = toolplane_pool::manifest::parse_size(text)
        .ok_or_else(|| format!("{text:?} is not a size: accepted e.g. \"1 MiB\", \"65536\""))?;
    if !(1024..=1 << 30).contains(&n) {
        return Err(format!(
            "{text:?} is out of range: accepted 1 KiB ..= 1 GiB"
        ));
    }
    usize::try_from(n).map_err(|_| format!("{text:?} does not fit this machine"))
}

/// Parses the drain deadline (`10s`), 0 ..= 1 h.
///
/// # Errors
///
/// A message naming the value and the accepted range.
pub fn parse_drain(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration ({e}): accepted e.g. \"10s\""))?;
    if d > Duration::from_secs(3600) {
        return Err(format!("{text:?} is out of range: accepted 0s ..= 1h"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, ConfigError> {
        Settings::from_toml_str(text, Path::new("/etc/toolplane/toolplane.toml"))
    }

    #[test]
    fn every_key_is_read_and_paths_are_relative_to_the_file() {
        let s = parse(
            r#"
            tools = "tools"
            data = "/var/lib/tp"
            [server]
            http = "0.0.0.0:8080"
            token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
            max_body = "64 KiB"
            drain = "3s"
            threads = 3
            allowed_hosts = ["example.com"]
            allowed_origins = ["https://app.example.com:443"]
            max_connections = 100
            reserve_connections = 4
            header_timeout = "2s"
            body_timeout = "3s"
            max_sessions = 7
            session_idle = "1m"
            [engine]
            max_inflight = 99
            [pool]
            instances = 40
            warm_slots = 2
            "#,
        )
        .unwrap();
        assert_eq!(s.tools.unwrap(), Path::new("/etc/toolplane/tools"));
        assert_eq!(s.data.unwrap(), Path::new("/var/lib/tp"));
        assert_eq!(s.server.http, "0.0.0.0:8080".parse().unwrap());
        // SHA-256 of "test".
        assert!(s.server.token.unwrap().matches("test"));
        assert!(!s.server.token.unwrap().matches("test2"));
        assert_eq!(s.server.max_connections, 100);
        assert_eq!(s.server.reserve_connections, 4);
        assert_eq!(s.server.header_timeout, Duration::from_secs(2));
        assert_eq!(s.server.body_timeout, Duration::from_secs(3));
        assert_eq!(s.server.max_sessions, 7);
        assert_eq!(s.server.session_idle, Duration::from_secs(60));
        assert_eq!(s.server.max_body, 64 << 10);
        assert_eq!(s.server.drain, Duration::from_secs(3));
        assert_eq!(s.server.threads, Some(3));
        assert_eq!(s.server.allowed_hosts, ["example.com"]);
        assert_eq!(s.engine.max_inflight, 99);
        assert_eq!(s.pool_instances, Some(40));
        assert_eq!(s.pool_warm_slots, Some(2));
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let cases = [
            ("[server]\nport = 1", "port"),
            ("[server]\nhttp = \"localhost\"", "server.http"),
            ("[server]\nmax_body = \"2 GiB\"", "server.max_body"),
            ("[server]\ndrain = \"soon\"", "server.drain"),
            ("[server]\nthreads = 0", "server.threads"),
            ("[server]\ntoken = \"plain\"", "server.token"),
            ("[server]\ntoken_sha256 = \"abc\"", "server.token_sha256"),
            ("[server]\nmax_connections = 0", "server.max_connections"),
            (
                "[server]\nheader_timeout = \"1ms\"",
                "server.header_timeout",
            ),
            (
                "[server]\nbody_timeout = \"forever\"",
                "server.body_timeout",
            ),
            ("[server]\nmax_sessions = 0", "server.max_sessions"),
            ("[server]\nsession_idle = \"0s\"", "server.session_idle"),
            ("[engine]\nbatch_size = 0", "batch_size"),
            ("[pool]\ninstances = 0", "pool.instances"),
            ("colour = \"blue\"", "colour"),
            ("tools = 3", "tools"),
            ("[tools]\nexpose = [\"a/b\"]", "[tools] expose"),
            ("[tools]\nexpose = [\"\"]", "[tools] expose"),
            ("[tools]\nmcp_separator = \"/\"", "[tools] mcp_separator"),
            ("[tools]\nbuiltin = false", "builtin"),
            ("[tools]\nbuiltins = \"no\"", "builtins"),
        ];
        for (text, key) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains("/etc/toolplane/toolplane.toml"), "{text}: {e}");
            assert!(e.contains(key), "{text}: {e} does not name {key}");
        }
    }

    /// `tools` is a directory, or a table with the directory and what is
    /// served.
    #[test]
    fn tools_is_a_directory_or_a_table() {
        let s = parse(
            "[tools]\ndir = \"t\"\nbuiltins = false\nexpose = [\"files.*\"]\nmcp_separator = \"__\"\n",
        )
        .unwrap();
        assert_eq!(s.tools.unwrap(), Path::new("/etc/toolplane/t"));
        assert!(!s.builtins);
        assert!(s.names.serves("files.read_file") && !s.names.serves("echo"));
        assert_eq!(s.names.mcp_name("files.read_file"), "files__read_file");
        let s = parse("tools = \"t\"\n").unwrap();
        assert_eq!(s.tools.unwrap(), Path::new("/etc/toolplane/t"));
        assert!(s.builtins && s.names.serves("echo"));
        assert_eq!(s.names.mcp_name("fs.read"), "fs_read");
    }

    /// An error under `[engine]` names the file's line, not the table's,
    /// and a type in words, not Rust's.
    #[test]
    fn an_engine_error_names_the_files_line_and_the_type_in_words() {
        let e = parse("data = \"/tmp/x\"\n\n[engine]\nmax_inflight = 10\nworkers = -1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 5") && e.contains("workers = -1"), "{e}");
        assert!(
            e.contains("expected a whole number, 0 or more") && !e.contains("usize"),
            "{e}"
        );
    }
}
