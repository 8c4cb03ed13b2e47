//! Starting and stopping the real binary.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a test waits for what the server does in the background (a
/// reload, a log line, a call to start), and how often it looks.
pub const PATIENCE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

/// Waits until `done` answers true (10 s at most); fails naming `what`.
pub async fn eventually<F, Fut>(what: &str, done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    assert!(soon(done).await, "{what}: not within {PATIENCE:?}");
}

/// Whether `done` answers true within 10 s, asking every 20 ms.
pub async fn soon<F, Fut>(mut done: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !done().await {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
    true
}

/// The binary cargo built for these tests.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_toolplane")
}

/// A tools directory holding copies of the built-in tools (so a test can
/// change a manifest), and a data directory.
pub struct Dirs {
    pub tools: tempfile::TempDir,
    pub data: tempfile::TempDir,
}

impl Dirs {
    pub fn new() -> Dirs {
        let tools = tempfile::tempdir().unwrap();
        toolplane_pool::builtin::install(tools.path()).unwrap();
        Dirs {
            tools,
            data: tempfile::tempdir().unwrap(),
        }
    }

    /// Rewrites one key of a tool's manifest (`[limits] timeout`, ...).
    pub fn set(&self, tool: &str, table: Option<&str>, key: &str, value: toml::Value) {
        let path = self.tools.path().join(format!("{tool}.toml"));
        let mut m: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let t = match table {
            Some(name) => m.get_mut(name).unwrap().as_table_mut().unwrap(),
            None => &mut m,
        };
        t.insert(key.into(), value);
        std::fs::write(&path, m.to_string()).unwrap();
    }
}

/// `toolplane serve --tools DIR --data DIR` with the shared module cache
/// and no token from the environment; callers add the transports.
pub fn serve_command(dirs: &Dirs) -> Command {
    let mut cmd = Command::new(binary());
    cmd.arg("serve")
        .arg("--tools")
        .arg(dirs.tools.path())
        .arg("--data")
        .arg(dirs.data.path())
        .env_remove("TOOLPLANE_TOKEN")
        .env("TOOLPLANE_CACHE_DIR", cache_dir());
    // Traces only where a test asks for them.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("OTEL_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Writes tool `up` into `dirs`: the FastMCP server of
/// tests/upstreams/fastmcp_server.py over stdio, run by the Python `mcp`
/// SDK's venv; returns that Python and that script.
pub fn fastmcp_upstream(dirs: &Dirs) -> (PathBuf, PathBuf) {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = repo.join("target/interop-venv-1.30.0/bin/python");
    let fastmcp = repo.join("tests/upstreams/fastmcp_server.py");
    for p in [&python, &fastmcp] {
        assert!(
            p.exists(),
            "{} is missing: run tests/upstreams/setup.sh (./dev test does)",
            p.display()
        );
    }
    std::fs::write(
        dirs.tools.path().join("up.toml"),
        format!(
            "name = \"up\"\nruntime = \"process\"\nprotocol = \"mcp\"\ncommand = [{:?}, {:?}]\n",
            python.display().to_string(),
            fastmcp.display().to_string()
        ),
    )
    .unwrap();
    (python, fastmcp)
}

/// One sample of `url`'s Prometheus text (`/metrics`), 0 when absent.
pub async fn metric(c: &reqwest::Client, url: &str, name: &str) -> f64 {
    let text = c.get(url).send().await.unwrap().text().await.unwrap();
    crate::rest::parse_metrics(&text)
        .into_iter()
        .find(|(n, _)| n == name)
        .map_or(0.0, |(_, v)| v)
}

/// A running `toolplane serve`.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    _config: Option<tempfile::NamedTempFile>,
}

impl Server {
    /// `toolplane serve --http 127.0.0.1:0` with `dirs`, extra arguments,
    /// environment and an optional config file text.
    pub fn start(dirs: &Dirs, args: &[&str], env: &[(&str, &str)], config: Option<&str>) -> Server {
        let mut cmd = serve_command(dirs);
        cmd.arg("--http")
            .arg("127.0.0.1:0")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let file = config.map(|text| {
            let f = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(f.path(), text).unwrap();
            cmd.arg("--config").arg(f.path());
            f
        });
        let mut child = cmd.spawn().expect("the toolplane binary starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let log = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap().to_string();
                    let _ = tx.send(addr);
                }
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(a) => a.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "toolplane serve did not start listening; stderr:\n{}",
                    stderr.lock().unwrap()
                );
            }
        };
        Server {
            child,
            addr,
            stderr,
            _config: file,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The configuration file it was started with.
    pub fn config_path(&self) -> &Path {
        self._config.as_ref().expect("started with a config").path()
    }

    /// Sends `signal` (`HUP`, `TERM`...).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the log holds every one of `lines` (10 s at most);
    /// fails naming those missing, with the log.
    pub async fn logged<S: AsRef<str>>(&self, lines: &[S]) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let log = self.stderr();
            let missing: Vec<&str> = lines
                .iter()
                .map(AsRef::as_ref)
                .filter(|l| !log.contains(l))
                .collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not logged within {PATIENCE:?}: {missing:?}\n{log}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; its exit code.
    pub fn wait(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "toolplane did not exit within {timeout:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One module cache for every test (compiles once).
pub fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("toolplane-e2e-cache")
}

pub fn client() -> reqwest::Client {
    toolplane_pool::process::install_tls_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// An MCP `initialize` request (a 2025-06-18 session).
pub const MCP_INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}"#;

/// POSTs one JSON-RPC message to `/mcp`, in `session` when given.
pub async fn mcp_post(
    c: &reqwest::Client,
    s: &Server,
    body: &str,
    session: Option<&str>,
) -> reqwest::Response {
    let mut r = c
        .post(s.url("/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if let Some(id) = session {
        r = r
            .header("mcp-session-id", id)
            .header("mcp-protocol-version", "2025-06-18");
    }
    r.body(body.to_string()).send().await.unwrap()
}

/// rmcp's streamable-HTTP client transport for `url` sending `token` as
/// its bearer token.
pub fn mcp_transport_with_token(
    url: String,
    token: &str,
) -> rmcp::transport::StreamableHttpClientTransport<reqwest::Client> {
    toolplane_pool::process::install_tls_provider();
    rmcp::transport::StreamableHttpClientTransport::from_config(
        rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(url)
            .auth_header(token),
    )
}

/// rmcp's streamable-HTTP client transport for `url` (its reqwest client
/// needs the process's TLS provider, `install_tls_provider`).
pub fn mcp_transport(
    url: String,
) -> rmcp::transport::StreamableHttpClientTransport<reqwest::Client> {
    toolplane_pool::process::install_tls_provider();
    rmcp::transport::StreamableHttpClientTransport::from_uri(url)
}
