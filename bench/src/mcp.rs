//! A load client for MCP servers on stdio: it starts the server command,
//! does the initialize handshake, finds the tool, then sends `tools/call`
//! requests with a fixed number in flight (a closed loop: the next request
//! goes out when a response comes back) and times each from its write to
//! its response. Both servers of a comparison are driven by this same
//! client over the same transport, so what differs is the server.
//!
//! The client is a few lines of newline-delimited JSON-RPC on pipes, kept
//! minimal on purpose: one thread, no framework between the pipe and the
//! clock.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// A running MCP server on stdio.
#[derive(Debug)]
pub struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
    /// The tool the calls go to.
    pub tool: String,
    line: String,
}

/// One measured round.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    /// Calls answered per second.
    pub calls_per_sec: f64,
    /// Write to response, median, µs.
    pub p50_us: f64,
    /// Write to response, 99th percentile, µs.
    pub p99_us: f64,
    /// Responses that were errors (JSON-RPC or `isError`).
    pub errors: u64,
}

impl Server {
    /// Starts `command` (run by `sh -c`), initializes, and picks the first
    /// listed tool whose name ends in `tool`.
    pub fn start(command: &str, tool: &str) -> Result<Server, String> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {command:?}: {e}"))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut s = Server {
            child,
            stdin,
            stdout,
            next_id: 0,
            tool: String::new(),
            line: String::new(),
        };
        s.request(
            "initialize",
            json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "toolplane-bench", "version": "0"}
            }),
        )
        .map_err(|e| format!("{command:?}: initialize: {e}"))?;
        s.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .map_err(|e| format!("{command:?}: {e}"))?;
        // A server may still be loading tools: ask again for up to 60 s.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let list = s
                .request("tools/list", json!({}))
                .map_err(|e| format!("{command:?}: tools/list: {e}"))?;
            let names: Vec<String> = list["tools"]
                .as_array()
                .map(|t| {
                    t.iter()
                        .filter_map(|t| t["name"].as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            if let Some(t) = names.iter().find(|n| n.ends_with(tool)) {
                s.tool = t.clone();
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{command:?} lists no tool named *{tool}: {names:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(s)
    }

    fn send(&mut self, msg: &Value) -> Result<(), String> {
        let mut line = serde_json::to_vec(msg).expect("JSON");
        line.push(b'\n');
        self.stdin
            .write_all(&line)
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("write: {e}"))
    }

    /// Reads messages until a response; returns its id and whether it
    /// succeeded (the `result`, or the error as text).
    fn response(&mut self) -> Result<(u64, Result<Value, String>), String> {
        loop {
            self.line.clear();
            let n = self
                .stdout
                .read_line(&mut self.line)
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("the server closed its stdout".into());
            }
            let Ok(msg) = serde_json::from_str::<Value>(&self.line) else {
                continue;
            };
            let Some(id) = msg["id"].as_u64() else {
                continue; // a notification, or a request we do not answer
            };
            if msg.get("method").is_some() {
                continue;
            }
            return Ok(match msg.get("result") {
                Some(r) => (id, Ok(r.clone())),
                None => (id, Err(msg["error"].to_string())),
            });
        }
    }

    fn request(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))?;
        loop {
            let (got, r) = self.response()?;
            if got == id {
                return r;
            }
        }
    }

    /// Sends `calls` calls of the tool with `arguments`, `inflight` at a
    /// time, and times them.
    pub fn round(&mut self, arguments: &Value, calls: u64, inflight: u64) -> Result<Round, String> {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
        let first = self.next_id + 1;
        let mut sent_at: Vec<Option<Instant>> = vec![None; calls as usize];
        let (mut sent, mut done, mut errors) = (0u64, 0u64, 0u64);
        let start = Instant::now();
        while done < calls {
            while sent < calls && sent - done < inflight {
                self.next_id += 1;
                let msg = json!({"jsonrpc": "2.0", "id": self.next_id, "method": "tools/call",
                    "params": {"name": self.tool, "arguments": arguments}});
                sent_at[sent as usize] = Some(Instant::now());
                self.send(&msg)?;
                sent += 1;
            }
            let (id, r) = self.response()?;
            let Some(i) = id.checked_sub(first).filter(|i| *i < calls) else {
                continue;
            };
            let Some(t) = sent_at[i as usize].take() else {
                continue;
            };
            let _ = hist.record((t.elapsed().as_nanos() as u64 / 1000).max(1));
            match r {
                Ok(v) if v["isError"] != json!(true) => {}
                _ => errors += 1,
            }
            done += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        Ok(Round {
            calls_per_sec: calls as f64 / secs,
            p50_us: hist.value_at_quantile(0.5) as f64,
            p99_us: hist.value_at_quantile(0.99) as f64,
            errors,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
