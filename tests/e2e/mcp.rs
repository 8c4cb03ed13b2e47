//! MCP sessions against the real binary with rmcp's client: streamable
//! HTTP and stdio (the binary as a child process).

use std::time::Duration;

use tokio::io::AsyncBufReadExt;

use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, ClientRequest, JsonObject, PingRequest,
    ServerResult,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::json;

use crate::support::{Dirs, MCP_INIT, Server, mcp_post, serve_command};

/// A client that reports `notifications/tools/list_changed`.
#[derive(Clone)]
pub(crate) struct Watcher(pub(crate) tokio::sync::mpsc::UnboundedSender<()>);

impl ClientHandler for Watcher {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let _ = self.0.send(());
    }
}

fn args(v: serde_json::Value) -> JsonObject {
    v.as_object().unwrap().clone()
}

fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("")
}

/// initialize (done by `serve`), list, call, an error result, an unknown
/// tool: the same session script for every transport.
async fn session_script<S: rmcp::service::Service<RoleClient>>(
    client: &RunningService<RoleClient, S>,
) {
    let info = client.peer_info().expect("the server introduced itself");
    assert_eq!(info.server_info.as_ref().unwrap().name, "toolplane");
    assert!(info.capabilities.tools.is_some());
    // The instructions describe the kinds of tool served: here WASI alone.
    let said = info.instructions.as_deref().unwrap_or("");
    assert!(
        said.contains("WASI") && !said.contains("process") && said.contains("outputSchema"),
        "{said}"
    );

    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    // MCP names every client accepts: `.` as `_` by default.
    for n in ["echo", "fs_read", "fs_write", "hash_sha256", "sleep"] {
        assert!(names.contains(&n), "{n} not listed in {names:?}");
    }
    for n in &names {
        assert!(
            !n.is_empty()
                && n.len() <= 64
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "{n:?} is not ^[a-zA-Z0-9_-]{{1,64}}$"
        );
    }
    let sleep = tools.iter().find(|t| t.name == "sleep").unwrap();
    assert_eq!(sleep.input_schema["required"], json!(["ms"]));
    assert!(!sleep.description.as_deref().unwrap_or("").is_empty());
    // Title, output schema and annotations, from the manifests.
    let read = tools.iter().find(|t| t.name == "fs_read").unwrap();
    assert_eq!(read.title.as_deref(), Some("Read a file"));
    let hints = read
        .annotations
        .as_ref()
        .expect("fs.read declares its hints");
    assert_eq!(
        (hints.read_only_hint, hints.destructive_hint),
        (Some(true), Some(false))
    );
    let write = tools.iter().find(|t| t.name == "fs_write").unwrap();
    let hints = write
        .annotations
        .as_ref()
        .expect("fs.write declares its hints");
    assert_eq!(
        (hints.read_only_hint, hints.destructive_hint),
        (Some(false), Some(true))
    );
    let hash = tools.iter().find(|t| t.name == "hash_sha256").unwrap();
    let out = hash
        .output_schema
        .as_ref()
        .expect("hash.sha256 declares its output");
    assert_eq!(out["required"], json!(["sha256", "bytes", "rounds"]));

    let r = client
        .call_tool(
            CallToolRequestParams::new("hash_sha256").with_arguments(args(json!({"data":"abc"}))),
        )
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(false), "{r:?}");
    // The canonical name is accepted too (a client configured before).
    let canonical = client
        .call_tool(
            CallToolRequestParams::new("hash.sha256").with_arguments(args(json!({"data":"abc"}))),
        )
        .await
        .unwrap();
    assert_eq!(canonical.structured_content, r.structured_content);
    let structured = r
        .structured_content
        .clone()
        .expect("JSON output is structured content");
    assert_eq!(
        structured["sha256"],
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert!(text(&r).contains("ba7816bf"));

    // A schema violation is a tool error result naming the field.
    let r = client
        .call_tool(CallToolRequestParams::new("sleep").with_arguments(args(json!({"ms":"x"}))))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true), "{r:?}");
    assert!(text(&r).contains("/ms"), "{}", text(&r));

    // A tool's own failure is a tool error result too.
    let r = client
        .call_tool(
            CallToolRequestParams::new("fs.read").with_arguments(args(json!({"path":"../x"}))),
        )
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true), "{r:?}");

    // An unknown tool is a protocol error.
    let e = client
        .call_tool(CallToolRequestParams::new("no.such.tool"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no.such.tool"), "{e}");

    let pong = client
        .send_request(ClientRequest::PingRequest(PingRequest::default()))
        .await
        .unwrap();
    assert!(matches!(pong, ServerResult::EmptyResult(_)), "{pong:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_over_streamable_http() {
    let dirs = Dirs::new();
    let s = Server::start(&dirs, &[], &[], None);
    let transport = crate::support::mcp_transport(s.url("/mcp"));
    let client = ().serve(transport).await.expect("MCP initialize over HTTP");
    session_script(&client).await;
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_over_stdio_and_list_changed_when_a_tool_is_added() {
    let dirs = Dirs::new();
    let mut cmd = tokio::process::Command::from(serve_command(&dirs));
    cmd.arg("--stdio");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let transport = TokioChildProcess::new(cmd).unwrap();
    let client = Watcher(tx)
        .serve(transport)
        .await
        .expect("MCP initialize over stdio");
    session_script(&client).await;

    // A new tool in the directory: announced, then listed.
    let dir = dirs.tools.path();
    std::fs::copy(dir.join("echo.wasm"), dir.join("echo2.wasm")).unwrap();
    let manifest = std::fs::read_to_string(dir.join("echo.toml"))
        .unwrap()
        .replace("name = \"echo\"", "name = \"echo2\"");
    std::fs::write(dir.join("echo2.toml"), manifest).unwrap();
    // Every change is announced; the one that lists echo2 comes within
    // 20 s (an earlier one may announce the module file appearing first).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("notifications/tools/list_changed listing echo2 within 20 s")
            .unwrap();
        let names: Vec<String> = client
            .list_all_tools()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name.into_owned())
            .collect();
        if names.contains(&"echo2".to_string()) {
            break;
        }
    }
    let r = client
        .call_tool(CallToolRequestParams::new("echo2").with_arguments(args(json!({"k":1}))))
        .await
        .unwrap();
    assert_eq!(r.structured_content, Some(json!({"k":1})), "{r:?}");
    client.cancel().await.unwrap();
}

/// `notifications/cancelled` for a running `sleep` call: the engine stops
/// it at once (an outcome `cancelled`, the server's call `abandoned`),
/// long before the sleep would end, and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_cancellation_stops_a_running_call() {
    let dirs = Dirs::new();
    let mut cmd = tokio::process::Command::from(serve_command(&dirs));
    // stdio for MCP, HTTP beside it for /metrics.
    cmd.arg("--stdio").arg("--http").arg("127.0.0.1:0");
    let (transport, stderr) = TokioChildProcess::builder(cmd)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(stderr.unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                return rest.split_whitespace().next().unwrap().to_string();
            }
        }
        panic!("toolplane exited before listening");
    })
    .await
    .expect("toolplane serve listens within 120 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let client = ().serve(transport).await.expect("MCP initialize over stdio");
    let http = crate::support::client();
    let url = format!("http://{addr}/metrics");
    let metric = async |name: &str| crate::support::metric(&http, &url, name).await;

    let call = ClientRequest::CallToolRequest(CallToolRequest::new(
        CallToolRequestParams::new("sleep").with_arguments(args(json!({"ms": 60000}))),
    ));
    let handle = client
        .peer()
        .send_cancellable_request(call, PeerRequestOptions::no_options())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while metric("toolplane_events_in_flight").await < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sleep call never got in flight"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cancelled_at = tokio::time::Instant::now();
    handle.cancel(Some("test".into())).await.unwrap();
    while metric(r#"toolplane_events_total{outcome="cancelled"}"#).await < 1.0 {
        assert!(
            cancelled_at.elapsed() < Duration::from_secs(20),
            "the cancelled call still runs 20 s later (the sleep was 60 s)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric("toolplane_events_in_flight").await, 0.0);
    assert_eq!(
        metric(r#"toolplane_calls_total{tool="sleep",result="abandoned"}"#).await,
        1.0
    );
    assert_eq!(metric(r#"toolplane_events_total{outcome="ok"}"#).await, 0.0);

    // The session goes on.
    let r = client
        .call_tool(CallToolRequestParams::new("echo").with_arguments(args(json!({"k":2}))))
        .await
        .unwrap();
    assert_eq!(r.structured_content, Some(json!({"k":2})), "{r:?}");
    client.cancel().await.unwrap();
}

/// Whether any live process's command line contains `needle`.
fn any_process_with(needle: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
    })
}

/// Upstream MCP servers (npm's server-filesystem, a FastMCP server) served
/// through toolplane over MCP and REST: listed under their sets, called,
/// the file sandbox kept, unstructured results passed through, an
/// upstream's list_changed passed on; and none outlives a killed server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_mcp_servers_through_mcp_and_rest() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let fs_server = repo
        .join("tests/upstreams/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js");
    let python = repo.join("target/interop-venv-1.30.0/bin/python");
    let fastmcp = repo.join("tests/upstreams/fastmcp_server.py");
    for p in [&fs_server, &python, &fastmcp] {
        assert!(
            p.exists(),
            "{} is missing: run tests/upstreams/setup.sh (./dev test does)",
            p.display()
        );
    }
    let dirs = Dirs::new();
    let tools = dirs.tools.path();
    std::fs::write(
        tools.join("files.toml"),
        format!(
            "name = \"files\"\nruntime = \"process\"\nprotocol = \"mcp\"\ncommand = [\"node\", {:?}, \"{{data}}\"]\n",
            fs_server.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        tools.join("up.toml"),
        format!(
            "name = \"up\"\nruntime = \"process\"\nprotocol = \"mcp\"\ncommand = [{:?}, {:?}, \"{{data}}\"]\n",
            python.display().to_string(),
            fastmcp.display().to_string()
        ),
    )
    .unwrap();
    let s = Server::start(&dirs, &[], &[], None);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let client = Watcher(tx)
        .serve(crate::support::mcp_transport(s.url("/mcp")))
        .await
        .expect("MCP initialize over HTTP");
    let names = |client: &RunningService<RoleClient, Watcher>| {
        let peer = client.peer().clone();
        async move {
            peer.list_all_tools()
                .await
                .unwrap()
                .into_iter()
                .map(|t| t.name.into_owned())
                .collect::<Vec<String>>()
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n = names(&client).await;
        if n.iter().any(|t| t == "files_write_file") && n.iter().any(|t| t == "up_add") {
            assert!(
                !n.iter().any(|t| t == "files" || t == "up"),
                "a set is listed by its members: {n:?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "upstreams not listed: {n:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let data = dirs.data.path().canonicalize().unwrap();
    let note = data.join("note.txt");
    let r = client
        .call_tool(
            // A member by its MCP name (a REST call below uses the other).
            CallToolRequestParams::new("files_write_file")
                .with_arguments(args(json!({"path": note, "content": "via MCP"}))),
        )
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true), "{r:?}");
    assert_eq!(std::fs::read_to_string(&note).unwrap(), "via MCP");
    let c = crate::support::client();
    let (st, v) = crate::rest::post(
        &c,
        &s,
        "files.read_text_file",
        &json!({"path": note}).to_string(),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert!(v.to_string().contains("via MCP"), "{v}");
    let (st, v) = crate::rest::post(
        &c,
        &s,
        "files.read_text_file",
        r#"{"path":"/etc/hostname"}"#,
    )
    .await;
    assert!(
        st >= 400 && (v.to_string().contains("denied") || v.to_string().contains("outside")),
        "{st} {v}"
    );

    // Unstructured content comes through as the upstream's blocks.
    let r = client
        .call_tool(CallToolRequestParams::new("up.whoami"))
        .await
        .unwrap();
    assert!(r.structured_content.is_none(), "{r:?}");
    assert!(text(&r).starts_with("worker "), "{r:?}");
    let r = client
        .call_tool(
            CallToolRequestParams::new("up.add").with_arguments(args(json!({"a": 20, "b": 22}))),
        )
        .await
        .unwrap();
    assert_eq!(r.structured_content, Some(json!({"result": 42})), "{r:?}");

    // The upstream's list_changed reaches toolplane's clients.
    while rx.try_recv().is_ok() {}
    let r = client
        .call_tool(
            CallToolRequestParams::new("up.grow").with_arguments(args(json!({"name": "late"}))),
        )
        .await
        .unwrap();
    assert_ne!(r.is_error, Some(true), "{r:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("notifications/tools/list_changed listing up.late within 20 s")
            .unwrap();
        if names(&client).await.iter().any(|t| t == "up_late") {
            break;
        }
    }
    let _ = client.cancel().await;

    // Killed with SIGKILL: its children get theirs (PR_SET_PDEATHSIG).
    let marker = data.display().to_string();
    assert!(
        any_process_with(&marker),
        "the upstreams run with {marker} in their command lines"
    );
    drop(s);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while any_process_with(&marker) {
        assert!(
            std::time::Instant::now() < deadline,
            "an upstream outlived the killed server"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One progress notification: progress, total, message.
type Seen = (f64, Option<f64>, Option<String>);

/// A client that collects `notifications/progress`.
#[derive(Clone)]
struct ProgressWatcher(std::sync::Arc<std::sync::Mutex<Vec<Seen>>>);

impl ClientHandler for ProgressWatcher {
    async fn on_progress(
        &self,
        params: rmcp::model::ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.0
            .lock()
            .unwrap()
            .push((params.progress, params.total, params.message));
    }
}

/// An upstream MCP server's progress notifications, and a jsonl worker's
/// progress lines, reach the client that asked for them (rmcp's client
/// sends a progressToken with each request); unwatched, they are dropped.
/// In the order they were sent: the client here runs on one thread because
/// rmcp hands each notification to its handler in a task of its own, and
/// on more threads those tasks may run in any order, which would hide the
/// order on the wire (checked on the wire itself at the end).
#[tokio::test(flavor = "current_thread")]
async fn progress_from_an_upstream_and_a_jsonl_worker_reaches_the_caller() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dirs = Dirs::new();
    let (python, fastmcp) = crate::support::fastmcp_upstream(&dirs);
    std::fs::write(
        dirs.tools.path().join("jl.toml"),
        format!(
            "name = \"jl\"\nruntime = \"process\"\nprotocol = \"jsonl\"\ncommand = [\"python3\", {:?}]\n",
            repo.join("tests/fixtures/jsonl/faulty.py").display().to_string()
        ),
    )
    .unwrap();
    // The same server over streamable HTTP, as a remote upstream: its
    // progress travels the same way.
    let remote = crate::remote_server::HttpServer::start(
        (python.display().to_string(), fastmcp.display().to_string()),
        0,
        "k",
    );
    std::fs::write(
        dirs.tools.path().join("rem.toml"),
        format!(
            "name = \"rem\"\nruntime = \"remote\"\nurl = \"{}\"\n[headers]\nx-api-key = \"k\"\n",
            remote.url()
        ),
    )
    .unwrap();
    let s = Server::start(&dirs, &[], &[], None);
    let seen = ProgressWatcher(Default::default());
    let client = seen
        .clone()
        .serve(crate::support::mcp_transport(s.url("/mcp")))
        .await
        .expect("MCP initialize over HTTP");
    // Process tools served beside the built-in WASI ones: both kinds said.
    let said = client
        .peer_info()
        .and_then(|i| i.instructions.clone())
        .unwrap_or_default();
    assert!(
        said.contains("WASI") && said.contains("A process tool runs"),
        "{said}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !client
        .list_all_tools()
        .await
        .unwrap()
        .iter()
        .any(|t| t.name == "up_count")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "up.count not listed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = client
        .call_tool(CallToolRequestParams::new("up.count").with_arguments(args(json!({"n": 3}))))
        .await
        .unwrap();
    assert_eq!(r.structured_content, Some(json!({"result": 3})), "{r:?}");
    // Notifications may trail the answer on the stream by a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while seen.0.lock().unwrap().len() < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let three = vec![
        (1.0, Some(3.0), Some("step 1 of 3".into())),
        (2.0, Some(3.0), Some("step 2 of 3".into())),
        (3.0, Some(3.0), Some("step 3 of 3".into())),
    ];
    let got = std::mem::take(&mut *seen.0.lock().unwrap());
    assert_eq!(got, three);

    // A remote server's, the same way (listed under its MCP name).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !client
        .list_all_tools()
        .await
        .unwrap()
        .iter()
        .any(|t| t.name == "rem_count")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "rem.count not listed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = client
        .call_tool(CallToolRequestParams::new("rem_count").with_arguments(args(json!({"n": 3}))))
        .await
        .unwrap();
    assert_eq!(r.structured_content, Some(json!({"result": 3})), "{r:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while seen.0.lock().unwrap().len() < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = std::mem::take(&mut *seen.0.lock().unwrap());
    assert_eq!(got, three, "a remote server's progress");

    // A jsonl worker's progress lines, the same way.
    let r = client
        .call_tool(
            CallToolRequestParams::new("jl").with_arguments(args(json!({"do": "count", "n": 3}))),
        )
        .await
        .unwrap();
    assert_eq!(
        r.structured_content,
        Some(json!({"result": 3, "watched": true})),
        "{r:?}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while seen.0.lock().unwrap().len() < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*seen.0.lock().unwrap(), three);

    // Nobody watches a REST call: the worker is told so, its progress
    // lines are dropped, and the call answers as usual.
    let (status, v) = crate::rest::post(
        &crate::support::client(),
        &s,
        "jl",
        r#"{"do":"count","n":3}"#,
    )
    .await;
    assert_eq!((status, v), (200, json!({"result": 3, "watched": false})));
    let _ = client.cancel().await;

    // On the wire: each call's stream carries its three reports, in order,
    // and then its answer (a report sent after the answer would go to
    // another stream, or nowhere).
    let c = crate::support::client();
    let r = mcp_post(&c, &s, MCP_INIT, None).await;
    let session = r.headers()["mcp-session-id"].to_str().unwrap().to_string();
    let r = mcp_post(
        &c,
        &s,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        Some(&session),
    )
    .await;
    assert_eq!(r.status(), 202);
    for (i, (tool, input)) in [
        ("up.count", json!({"n": 3})),
        ("jl", json!({"do": "count", "n": 3})),
    ]
    .iter()
    .cycle()
    .take(10)
    .enumerate()
    {
        let call = json!({"jsonrpc": "2.0", "id": i + 2, "method": "tools/call", "params": {
            "name": tool, "arguments": input, "_meta": {"progressToken": format!("t{i}")}}});
        let body = mcp_post(&c, &s, &call.to_string(), Some(&session))
            .await
            .text()
            .await
            .unwrap();
        let seen: Vec<String> = body
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<serde_json::Value>(d.trim()).ok())
            .map(|m| match m["method"].as_str() {
                Some("notifications/progress") => {
                    assert_eq!(m["params"]["progressToken"], format!("t{i}"), "{body}");
                    format!(
                        "progress {}",
                        m["params"]["progress"].as_f64().unwrap_or(-1.0)
                    )
                }
                _ => format!("answer {}", m["id"]),
            })
            .collect();
        assert_eq!(
            seen,
            [
                "progress 1",
                "progress 2",
                "progress 3",
                &format!("answer {}", i + 2)
            ],
            "{tool}: {body}"
        );
    }
}

/// `[tools]`: MCP names under a chosen separator, an allow-list, and a
/// clash between two tools' MCP names refused, naming both; REST keeps the
/// canonical names and takes either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tools_table_names_and_exposes_what_is_served() {
    let dirs = Dirs::new();
    // `fs__read`: an echo whose MCP name under "__" is fs.read's too.
    let t = dirs.tools.path();
    let echo = std::fs::read_to_string(t.join("echo.toml")).unwrap();
    std::fs::write(
        t.join("fs__read.toml"),
        echo.replace("name = \"echo\"", "name = \"fs__read\""),
    )
    .unwrap();
    std::fs::copy(t.join("echo.wasm"), t.join("fs__read.wasm")).unwrap();
    let config = r#"
[tools]
builtins = false
expose = ["echo", "fs.*", "fs__read", "hash.sha*"]
mcp_separator = "__"
"#;
    let s = Server::start(&dirs, &[], &[], Some(config));
    let transport = crate::support::mcp_transport(s.url("/mcp"));
    let client = ().serve(transport).await.expect("MCP initialize over HTTP");
    let mut names: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.into_owned())
        .collect();
    names.sort();
    // `sleep` is not exposed; `fs__read` lost its name to fs.read (the
    // first by name).
    assert_eq!(
        names,
        ["echo", "fs__read", "fs__write", "hash__sha256"],
        "{}",
        s.stderr()
    );
    let r = client
        .call_tool(
            CallToolRequestParams::new("fs__read").with_arguments(args(json!({"path": "x"}))),
        )
        .await
        .unwrap();
    // fs.read answered (no such file), not the echo.
    assert_eq!(r.is_error, Some(true), "{r:?}");
    let log = s.stderr();
    assert!(
        log.contains("tool fs__read: its MCP name fs__read is also tool fs.read's"),
        "{log}"
    );
    // An unexposed tool is not callable by either name.
    let e = client
        .call_tool(CallToolRequestParams::new("sleep").with_arguments(args(json!({"ms": 1}))))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("sleep"), "{e}");
    let _ = client.cancel().await;

    let c = crate::support::client();
    for name in ["hash.sha256", "hash__sha256"] {
        let (st, v) = crate::rest::post(&c, &s, name, r#"{"data":"abc"}"#).await;
        assert_eq!(st, 200, "{name}: {v}");
        assert!(v.to_string().contains("ba7816bf"), "{v}");
    }
    let listed: Vec<serde_json::Value> = c
        .get(s.url("/v1/tools"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hash = listed.iter().find(|t| t["name"] == "hash.sha256").unwrap();
    assert_eq!(hash["mcp_name"], "hash__sha256");
    assert_eq!(listed.len(), 4, "{listed:?}");
}
