//! The HTTP edge against the real binary, as a hostile caller would meet
//! it: cross-site requests on every route, the connection cap and its
//! reserve, header and body timeouts, MCP sessions bounded and expiring,
//! malformed JSON-RPC over HTTP and stdio, and no reset while draining.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Dirs, MCP_INIT, Server, client, mcp_post, metric};

/// One request over a fresh connection, `Connection: close`; the status
/// and the body (0 when the server closed without answering).
fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

fn mcp_headers(host: &str) -> Vec<(&str, &str)> {
    vec![
        ("Host", host),
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
    ]
}

#[test]
fn cross_site_requests_are_refused_on_every_route_but_healthz() {
    let dirs = Dirs::new();
    let s = Server::start(&dirs, &[], &[], None);
    let own = s.addr.to_string();
    let own_origin = format!("http://localhost:{}", s.addr.port());
    let write = r#"{"path":"rebind.txt","content":"pwned"}"#;
    let routes: [(&str, &str, &str); 6] = [
        ("GET", "/v1/tools", ""),
        ("POST", "/v1/tools/echo/call", "{}"),
        ("GET", "/readyz", ""),
        ("GET", "/metrics", ""),
        ("POST", "/mcp", MCP_INIT),
        ("DELETE", "/mcp", ""),
    ];
    for (method, path, body) in routes {
        let mut h = mcp_headers("evil.example:7070");
        let (st, b) = raw(s.addr, method, path, &h, body);
        assert_eq!(st, 403, "{method} {path} with a foreign Host: {b}");
        assert!(b.contains("forbidden_host"), "{b}");
        h[0] = ("Host", &own);
        h.push(("Origin", "http://evil.example:7070"));
        let (st, b) = raw(s.addr, method, path, &h, body);
        assert_eq!(st, 403, "{method} {path} with a foreign Origin: {b}");
        assert!(b.contains("forbidden_origin"), "{b}");
        h.pop();
        h.push(("Origin", &own_origin));
        let (st, b) = raw(s.addr, method, path, &h, body);
        assert_ne!(st, 403, "{method} {path} from the server's own origin: {b}");
    }
    // A CORS simple request (no preflight) is refused before any tool runs.
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ] {
        let (st, b) = raw(
            s.addr,
            "POST",
            "/v1/tools/fs.write/call",
            &[("Host", &own), ("Content-Type", ct)],
            write,
        );
        assert_eq!(st, 415, "{ct}: {b}");
        assert!(b.contains("unsupported_media_type"), "{b}");
    }
    assert!(
        !dirs.data.path().join("rebind.txt").exists(),
        "a tool ran cross-site"
    );
    // A load balancer probes health by address.
    let (st, _) = raw(s.addr, "GET", "/healthz", &[("Host", "evil.example")], "");
    assert_eq!(st, 200);
    // Framework rejections are the documented JSON too.
    let (st, b) = raw(s.addr, "GET", "/nowhere", &[("Host", &own)], "");
    assert_eq!(st, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap()["error"]["kind"],
        "not_found"
    );
    // A body declared larger than server.max_body is refused before it is
    // read (the client sends only the head, so no write races the answer).
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        c,
        "POST /v1/tools/echo/call HTTP/1.1\r\nHost: {own}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        2 << 20
    )
    .unwrap();
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    let b = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap()["error"]["kind"],
        "body_too_large"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_matched_by_its_digest_and_the_scheme_without_regard_to_case() {
    let dirs = Dirs::new();
    let out = std::process::Command::new(crate::support::binary())
        .args(["token", "hash"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b"s3cret\n")?;
            c.wait_with_output()
        })
        .unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(line.starts_with("token_sha256 = \""), "{line}");
    let printed = line
        .trim()
        .trim_start_matches("token_sha256 = \"")
        .trim_end_matches('"');
    assert_eq!(printed.len(), 64);
    let s = Server::start(
        &dirs,
        &[],
        &[],
        Some(&format!("[server]\ntoken_sha256 = \"{printed}\"\n")),
    );
    let c = client();
    for (auth, want) in [
        ("bearer s3cret", 200),
        ("BEARER s3cret", 200),
        ("Bearer s3cre", 401),
        ("Basic s3cret", 401),
    ] {
        let r = c
            .get(s.url("/readyz"))
            .header("authorization", auth)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{auth}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_keeps_a_reserve_for_health_and_refuses_beyond_it() {
    let dirs = Dirs::new();
    let s = Server::start(
        &dirs,
        &[],
        &[],
        Some("[server]\nmax_connections = 4\nreserve_connections = 2\nheader_timeout = \"60s\"\n"),
    );
    let idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(s.addr).unwrap())
        .collect();
    // Let the acceptor count them.
    std::thread::sleep(Duration::from_millis(300));
    let own = s.addr.to_string();
    let (st, b) = raw(
        s.addr,
        "POST",
        "/v1/tools/echo/call",
        &[("Host", &own), ("Content-Type", "application/json")],
        "{}",
    );
    assert_eq!(st, 503, "a call over the cap: {b}");
    assert!(b.contains("max_connections"), "{b}");
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (st, b) = raw(s.addr, "GET", path, &[("Host", &own)], "");
        assert_eq!(st, 200, "{path} in the reserve: {b}");
    }
    // Twenty more: two fill the reserve, the rest are closed at once.
    let more: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(s.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let closed = more
        .iter()
        .filter(|c| {
            c.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut r: &TcpStream = c;
            let mut byte = [0u8; 1];
            // Ok(0): the server closed it; a reset says the same.
            match r.read(&mut byte) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            }
        })
        .count();
    assert!(
        closed >= 18,
        "{closed} of 20 connections beyond the cap were closed at once"
    );
    drop(more);
    std::thread::sleep(Duration::from_millis(300));
    let (st, b) = raw(s.addr, "GET", "/metrics", &[("Host", &own)], "");
    assert_eq!(st, 200);
    let m = crate::rest::parse_metrics(&b);
    let get = |n: &str| m.iter().find(|(k, _)| k == n).map(|(_, v)| *v).unwrap();
    assert_eq!(get("toolplane_http_connections_max"), 4.0);
    assert!(
        get("toolplane_http_connections_refused_total") >= 1.0,
        "{b}"
    );
    assert!(
        get("toolplane_http_connections_reserve_total") >= 4.0,
        "{b}"
    );
    drop(idle);
    std::thread::sleep(Duration::from_millis(300));
    let (st, b) = raw(
        s.addr,
        "POST",
        "/v1/tools/echo/call",
        &[("Host", &own), ("Content-Type", "application/json")],
        "{}",
    );
    assert_eq!(st, 200, "under the cap again: {b}");
    assert!(
        s.stderr().contains("connection cap reached"),
        "{}",
        s.stderr()
    );
}

#[test]
fn headers_and_bodies_that_dribble_time_out() {
    let dirs = Dirs::new();
    let s = Server::start(
        &dirs,
        &[],
        &[],
        Some("[server]\nheader_timeout = \"500ms\"\nbody_timeout = \"500ms\"\n"),
    );
    // A partial header: the connection is closed at the header timeout.
    closed_within(s.addr, b"GET /healthz HTTP/1.1\r\nHo", "a partial header");
    // An idle keep-alive connection ends too.
    closed_within(s.addr, b"", "an idle connection");
    // A body that stops short gets 408.
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "POST /v1/tools/echo/call HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
        s.addr
    )
    .unwrap();
    let mut out = String::new();
    let _ = BufReader::new(&c).read_line(&mut out);
    assert!(out.contains(" 408 "), "{out:?}");
}

/// Opens a connection, sends `prefix` and asserts that the server closes
/// it within 5 s (the test's timeouts are 500 ms).
fn closed_within(addr: SocketAddr, prefix: &[u8], what: &str) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(prefix).unwrap();
    let t = Instant::now();
    let _ = c.read_to_end(&mut Vec::new());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "{what} held {:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_sessions_are_bounded_expire_and_end_with_204() {
    let dirs = Dirs::new();
    let s = Server::start(
        &dirs,
        &[],
        &[],
        Some("[server]\nmax_sessions = 2\nsession_idle = \"1s\"\n"),
    );
    let c = client();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = mcp_post(&c, &s, MCP_INIT, None).await;
        assert_eq!(r.status(), 200);
        ids.push(r.headers()["mcp-session-id"].to_str().unwrap().to_string());
    }
    let r = mcp_post(&c, &s, MCP_INIT, None).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("server.max_sessions"),
        "{v}"
    );
    // DELETE ends a session with 204, which frees a place.
    let r = c
        .delete(s.url("/mcp"))
        .header("mcp-session-id", &ids[0])
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = mcp_post(&c, &s, MCP_INIT, None).await;
    assert_eq!(r.status(), 200);
    // Unused, they expire.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        metric(
            &c,
            &s.url("/metrics"),
            "toolplane_mcp_sessions_expired_total"
        )
        .await
            >= 2.0
    );
    assert_eq!(
        metric(&c, &s.url("/metrics"), "toolplane_mcp_sessions").await,
        0.0
    );
    let r = mcp_post(
        &c,
        &s,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
        Some(&ids[1]),
    )
    .await;
    assert_eq!(r.status(), 404, "an expired session is gone");
    for _ in 0..2 {
        assert_eq!(mcp_post(&c, &s, MCP_INIT, None).await.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_rpc_over_http_gets_json_rpc_errors() {
    let dirs = Dirs::new();
    let s = Server::start(&dirs, &[], &[], None);
    let c = client();
    let r = mcp_post(&c, &s, MCP_INIT, None).await;
    let session = r.headers()["mcp-session-id"].to_str().unwrap().to_string();
    let cases: [(&str, u16, i64); 8] = [
        ("{", 400, -32700),
        ("", 400, -32700),
        (r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#, 200, -32600),
        (
            r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
            400,
            -32600,
        ),
        (r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#, 400, -32600),
        (
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo","arguments":[1]}}"#,
            200,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":5}}"#,
            200,
            -32602,
        ),
        (&"[".repeat(100_000), 400, -32700),
    ];
    for (body, status, code) in cases {
        let r = mcp_post(&c, &s, body, Some(&session)).await;
        let got = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let text = r.text().await.unwrap();
        let short: String = body.chars().take(60).collect();
        assert_eq!(got, status, "{short}: {text}");
        assert_eq!(ct.as_deref(), Some("application/json"), "{short}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["code"], code, "{short}: {v}");
    }
    // The session still works.
    let r = mcp_post(
        &c,
        &s,
        r#"{"jsonrpc":"2.0","id":9,"method":"tools/list"}"#,
        Some(&session),
    )
    .await;
    assert_eq!(r.status(), 200);
}

#[test]
fn malformed_json_rpc_over_stdio_gets_json_rpc_errors() {
    let dirs = Dirs::new();
    // The built-in tools only: no tools directory to watch, so nothing
    // but the answers (and no list_changed) comes back.
    let mut child = std::process::Command::new(crate::support::binary())
        .args(["serve", "--stdio", "--data"])
        .arg(dirs.data.path())
        .env_remove("TOOLPLANE_TOKEN")
        .env("TOOLPLANE_CACHE_DIR", crate::support::cache_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let mut ask = |text: &str| -> Value {
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
        // The next answer; notifications the server sends meanwhile
        // (tools/list_changed) are not answers.
        loop {
            line.clear();
            out.read_line(&mut line).unwrap();
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
            if v.get("method").is_none() {
                return v;
            }
        }
    };
    assert_eq!(ask(MCP_INIT)["result"]["serverInfo"]["name"], "toolplane");
    stdin_note(&mut ask);
    let v = ask("{not json");
    assert_eq!(v["error"]["code"], -32700, "{v}");
    let v = ask(
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":[]}}"#,
    );
    assert_eq!(
        (&v["id"], &v["error"]["code"]),
        (&json!(3), &json!(-32602)),
        "{v}"
    );
    let v = ask(
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","arguments":{"a":1}}}"#,
    );
    assert_eq!(v["id"], 4, "{v}");
    assert_eq!(v["result"]["structuredContent"], json!({"a":1}), "{v}");
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends `notifications/initialized`, which gets no answer: the next
/// line read is the next request's.
fn stdin_note(ask: &mut impl FnMut(&str) -> Value) {
    let v = ask(concat!(
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        "\n",
        r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#
    ));
    assert_eq!(v["id"], 2, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_is_reset_while_draining() {
    let dirs = Dirs::new();
    let mut s = Server::start(&dirs, &[], &[], Some("[server]\ndrain = \"1s\"\n"));
    let url = s.url("/v1/tools/echo/call");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let c = client();
        let url = url.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut refused, mut unavailable, mut reset) = (0u32, 0u32, 0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match c
                    .post(&url)
                    .header("content-type", "application/json")
                    .body("{}")
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) if r.status() == 503 => unavailable += 1,
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    // Nothing listens any more: refused before a request
                    // was sent, which a client may retry.
                    // Or the listener closed with this connection still in
                    // its queue: the request could not be written (a reset on
                    // BodyWrite), so the server never read it, which a client
                    // may retry as safely as a refused connection.
                    Err(e) if e.is_connect() || format!("{e:?}").contains("BodyWrite") => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err(e) => reset.push(format!("{e:?}")),
                }
            }
            (ok, refused, unavailable, reset)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    s.terminate();
    assert_eq!(s.wait(Duration::from_secs(30)), 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut unavailable, mut resets) = (0, 0, Vec::new());
    for t in tasks {
        let (o, _, u, r) = t.await.unwrap();
        ok += o;
        unavailable += u;
        resets.extend(r);
    }
    assert!(ok > 0 && unavailable > 0, "ok {ok}, 503 {unavailable}");
    assert!(
        resets.is_empty(),
        "{} requests got no answer: {:?}",
        resets.len(),
        &resets[..resets.len().min(3)]
    );
}
