//! `toolplane.toml`: the server's settings, the engine's (`[engine]`, the
//! keys of [`toolplane_core::Config`]) and the pool's (`[pool]`).
//!
//! ```toml
//! tools = "tools"            # tools directory (default: the built-in tools only)
//! data = "data"              # data directory of the fs tools
//!
//! [server]
//! http = "127.0.0.1:7070"
//! token = "..."              # or TOOLPLANE_TOKEN; required on all but /healthz
//! max_body = "1 MiB"
//! drain = "10s"              # how long in-flight calls may take at shutdown
//! threads = 2                # HTTP threads (default: one per available core)
//! allowed_hosts = ["localhost", "127.0.0.1", "::1"]
//! allowed_origins = []
//!
//! [engine]
//! max_inflight = 2048
//!
//! [pool]
//! instances = 512
//! warm_slots = 0            # free slots kept warm for their tool (default: the pool's)
//! ```
//!
//! Paths are relative to the file. Command-line flags win over the file;
//! the engine's `TOOLPLANE_*` environment variables win over `[engine]`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The tools directory (`None`: the built-in tools only).
    pub tools: Option<PathBuf>,
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
}

/// The `[server]` table.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Where HTTP listens.
    pub http: SocketAddr,
    /// The bearer token, if any.
    pub token: Option<String>,
    /// Largest request body accepted.
    pub max_body: usize,
    /// How long in-flight calls may take to finish at shutdown.
    pub drain: Duration,
    /// `Host` values accepted on `/mcp` (DNS rebinding protection).
    pub allowed_hosts: Vec<String>,
    /// `Origin` values accepted on `/mcp` (empty: requests with an
    /// `Origin` header are refused unless it is listed).
    pub allowed_origins: Vec<String>,
    /// HTTP threads, each with its own single-threaded runtime (`None`:
    /// one per available core).
    pub threads: Option<usize>,
}

/// Most HTTP threads accepted by `server.threads`.
pub const MAX_HTTP_THREADS: usize = 256;

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
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tools: Option<PathBuf>,
    data: Option<PathBuf>,
    #[serde(default)]
    server: ServerFile,
    engine: Option<toml::Table>,
    #[serde(default)]
    pool: PoolFile,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ServerFile {
    http: Option<String>,
    token: Option<String>,
    max_body: Option<String>,
    drain: Option<String>,
    allowed_hosts: Option<Vec<String>>,
    allowed_origins: Option<Vec<String>>,
    threads: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PoolFile {
    instances: Option<u32>,
    warm_slots: Option<u32>,
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
        let file: File =
            toml::from_str(text).map_err(|e| invalid(e.to_string().trim_end().to_owned()))?;
        let base = origin.parent().unwrap_or(Path::new("."));
        let mut s = Settings {
            tools: file.tools.map(|p| base.join(p)),
            data: file.data.map(|p| base.join(p)),
            ..Settings::default()
        };
        if let Some(engine) = file.engine {
            s.engine = toolplane_core::Config::from_toml_str(&engine.to_string(), origin)
                .map_err(|e| invalid(format!("[engine] {e}")))?;
        }
        s.pool_instances = file.pool.instances;
        s.pool_warm_slots = file.pool.warm_slots;
        if s.pool_instances == Some(0) {
            return Err(invalid(
                "pool.instances = 0: accepted 1..=4294967295".into(),
            ));
        }
        let srv = file.server;
        if let Some(a) = srv.http {
            s.server.http = parse_addr(&a).map_err(|m| invalid(format!("server.http: {m}")))?;
        }
        s.server.token = srv.token.filter(|t| !t.is_empty());
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
            token = "t0k"
            max_body = "64 KiB"
            drain = "3s"
            threads = 3
            allowed_hosts = ["example.com"]
            allowed_origins = ["https://app.example.com:443"]
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
        assert_eq!(s.server.token.as_deref(), Some("t0k"));
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
            ("[engine]\nbatch_size = 0", "batch_size"),
            ("[pool]\ninstances = 0", "pool.instances"),
            ("colour = \"blue\"", "colour"),
        ];
        for (text, key) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains("/etc/toolplane/toolplane.toml"), "{text}: {e}");
            assert!(e.contains(key), "{text}: {e} does not name {key}");
        }
    }
}
