//! Process tools measured (`compare process`): the same closed-loop driver
//! (one current-thread runtime, `k` calls in flight, the next sent when one
//! answers, each timed from send to answer) calls a jsonl worker directly
//! over its pipes, or through toolplane's registry (pool, process host,
//! schema check); and toolplane's exec, jsonl and WASI tools doing the same
//! work (echo).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use toolplane_core::Outcome;
use toolplane_pool::{PoolConfig, Registry, Runtime};

/// One measured round.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    /// Calls answered per second.
    pub calls_per_sec: f64,
    /// Send to answer, median, µs.
    pub p50_us: f64,
    /// Send to answer, 99th percentile, µs.
    pub p99_us: f64,
}

fn round(h: &Histogram<u64>, calls: u64, wall: Duration) -> Round {
    Round {
        calls_per_sec: calls as f64 / wall.as_secs_f64(),
        p50_us: h.value_at_quantile(0.5) as f64 / 1e3,
        p99_us: h.value_at_quantile(0.99) as f64 / 1e3,
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

/// The repository's root (the bench crate's parent).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The jsonl echo worker the comparisons run.
pub fn echo_worker() -> PathBuf {
    repo().join("bench/peers/jsonl-echo.js")
}

/// A jsonl worker driven directly: its pipes, no toolplane.
#[derive(Debug)]
pub struct Direct {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    next: u64,
}

impl Direct {
    /// Starts `node script`.
    pub fn start(script: &Path) -> std::io::Result<Direct> {
        let mut child = tokio::process::Command::new("node")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
        Ok(Direct {
            child,
            stdin,
            stdout,
            next: 0,
        })
    }

    /// `calls` calls of `input`, `k` in flight.
    pub async fn round(&mut self, input: &[u8], calls: u64, k: u64) -> std::io::Result<Round> {
        let mut h = histogram();
        let mut sent_at: HashMap<u64, Instant> = HashMap::new();
        let started = Instant::now();
        let (mut sent, mut done) = (0u64, 0u64);
        let mut line = Vec::with_capacity(input.len() + 64);
        while done < calls {
            while sent < calls && sent - done < k {
                let id = self.next;
                self.next += 1;
                line.clear();
                line.extend_from_slice(
                    format!("{{\"id\":{id},\"tool\":\"echo\",\"input\":").as_bytes(),
                );
                line.extend_from_slice(input);
                line.extend_from_slice(b"}\n");
                sent_at.insert(id, Instant::now());
                self.stdin.write_all(&line).await?;
                sent += 1;
            }
            let Some(answer) = self.stdout.next_line().await? else {
                return Err(std::io::Error::other("the worker closed its stdout"));
            };
            let v: serde_json::Value = serde_json::from_str(&answer)?;
            let id = v["id"]
                .as_u64()
                .ok_or_else(|| std::io::Error::other("no id"))?;
            if v.get("output").is_none() {
                return Err(std::io::Error::other(format!("not an output: {answer}")));
            }
            let at = sent_at
                .remove(&id)
                .ok_or_else(|| std::io::Error::other("unknown id"))?;
            let _ = h.record(at.elapsed().as_nanos() as u64);
            done += 1;
        }
        Ok(round(&h, calls, started.elapsed()))
    }

    /// Stops the worker.
    pub async fn stop(mut self) {
        drop(self.stdin);
        let _ = self.child.wait().await;
    }
}

/// An MCP server driven directly by rmcp's client (the one toolplane's pool
/// uses for an MCP upstream), on the caller's runtime: no toolplane.
pub struct DirectMcp {
    client: rmcp::service::RunningService<rmcp::RoleClient, ()>,
}

impl std::fmt::Debug for DirectMcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectMcp").finish_non_exhaustive()
    }
}

impl DirectMcp {
    /// Starts `command` and completes the MCP handshake.
    pub async fn start(command: &[String]) -> Result<DirectMcp, String> {
        use rmcp::ServiceExt;
        let (program, args) = command.split_first().ok_or("an empty command")?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args).stderr(Stdio::null());
        let transport =
            rmcp::transport::TokioChildProcess::new(cmd).map_err(|e| format!("{program}: {e}"))?;
        let client = ().serve(transport).await.map_err(|e| e.to_string())?;
        Ok(DirectMcp { client })
    }

    /// Opens a session with the MCP server at `url` over streamable HTTP.
    pub async fn connect(url: &str) -> Result<DirectMcp, String> {
        use rmcp::ServiceExt;
        toolplane_pool::process::install_tls_provider();
        let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(url.to_owned());
        let client = ().serve(transport).await.map_err(|e| e.to_string())?;
        Ok(DirectMcp { client })
    }

    /// `calls` calls of `tool` with `input` (a JSON object), `k` in flight.
    pub async fn round(
        &self,
        tool: &str,
        input: &[u8],
        calls: u64,
        k: u64,
    ) -> Result<Round, String> {
        let arguments: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(input).map_err(|e| e.to_string())?;
        closed_loop(calls, k, || {
            let params = rmcp::model::CallToolRequestParams::new(tool.to_string())
                .with_arguments(arguments.clone());
            async move {
                match self.client.call_tool(params).await {
                    Ok(r) if r.is_error != Some(true) => Ok(()),
                    other => Err(format!("{tool}: {other:?}")),
                }
            }
        })
        .await
    }

    /// Stops the server.
    pub async fn stop(self) {
        let _ = self.client.cancel().await;
    }
}

/// `calls` calls of `tool` with `input` through `registry`, `k` in flight
/// on this (current-thread) runtime. Fails on any outcome but `Ok`.
pub async fn through(
    registry: &Registry,
    tool: &str,
    input: &[u8],
    calls: u64,
    k: u64,
) -> Result<Round, String> {
    closed_loop(calls, k, || async move {
        match registry.call(tool, input).await {
            Outcome::Ok(_) => Ok(()),
            other => Err(format!("{tool}: {other:?}")),
        }
    })
    .await
}

/// `calls` calls made by `call`, `k` in flight, the next started when one
/// ends, each timed from start to end; the first failure ends the round.
async fn closed_loop<F, Fut>(calls: u64, k: u64, mut call: F) -> Result<Round, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut h = histogram();
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    let (mut sent, mut done) = (0u64, 0u64);
    while done < calls {
        while sent < calls && (pending.len() as u64) < k {
            let one = call();
            pending.push(async move {
                let at = Instant::now();
                let r = one.await;
                (at.elapsed(), r)
            });
            sent += 1;
        }
        let Some((took, result)) = pending.next().await else {
            break;
        };
        result?;
        let _ = h.record(took.as_nanos() as u64);
        done += 1;
    }
    Ok(round(&h, calls, started.elapsed()))
}

/// A registry over `tools` (manifests written there), its tools loaded.
pub fn registry(tools: &Path, data: &Path) -> Result<Registry, String> {
    let runtime = Runtime::new(PoolConfig::default()).map_err(|e| e.to_string())?;
    let registry = Registry::builder(runtime)
        .site(crate::registry::site(data))
        .dir(tools)
        .watch(false)
        .build()
        .map_err(|e| e.to_string())?;
    if !registry.wait_loaded(Duration::from_secs(120)) {
        return Err("the tools did not load within 120 s".into());
    }
    // An upstream's tools with names against the member rule are left out
    // (toolplane itself, as an upstream, lists fs.read): not the bench's
    // problem.
    if let Some(p) = registry
        .problems()
        .iter()
        .find(|p| !p.reason.contains("name each tool"))
    {
        return Err(p.to_string());
    }
    Ok(registry)
}

/// A process tool's manifest `<name>.toml` in `dir`.
pub fn manifest(dir: &Path, name: &str, protocol: &str, command: &[&str], extra: &str) {
    let command: Vec<String> = command.iter().map(|c| format!("{c:?}")).collect();
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!(
            "name = \"{name}\"\nruntime = \"process\"\nprotocol = \"{protocol}\"\ncommand = [{}]\n{extra}",
            command.join(", ")
        ),
    )
    .expect("a manifest written");
}

/// `toolplane serve --http` on a free loopback port, killed when dropped.
#[derive(Debug)]
pub struct HttpServer {
    child: std::process::Child,
    /// Its MCP endpoint.
    pub url: String,
}

impl HttpServer {
    /// Starts `exe serve --http 127.0.0.1:<port> --data <data>` and waits
    /// (up to 30 s) until it accepts connections.
    pub fn start(exe: &Path, data: &Path) -> Result<HttpServer, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let child = std::process::Command::new(exe)
            .args(["serve", "--http", &addr, "--data"])
            .arg(data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", exe.display()))?;
        let server = HttpServer {
            child,
            url: format!("http://{addr}/mcp"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err() {
            if Instant::now() > deadline {
                return Err(format!(
                    "{} serve --http {addr}: not listening after 30 s",
                    exe.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
