//! The FastMCP server of `fastmcp_server.py` over streamable HTTP, for the
//! remote-upstream tests of `tests/all` and `tests/e2e` (each includes this
//! file as a module).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A FastMCP server over streamable HTTP on 127.0.0.1 (`port` 0: any),
/// refusing requests without `x-api-key: <key>`; killed when dropped.
pub struct HttpServer {
    child: Child,
    pub port: u16,
}

impl HttpServer {
    /// `(python, script)`: the interpreter and `fastmcp_server.py`.
    pub fn start((python, script): (String, String), port: u16, key: &str) -> HttpServer {
        let mut child = Command::new(python)
            .args([&script, "--http", &port.to_string(), "--require"])
            .arg(format!("x-api-key={key}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the FastMCP server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the server said {line:?}"));
        HttpServer { child, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
