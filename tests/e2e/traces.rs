//! OpenTelemetry traces, exported to a real OTLP/HTTP receiver built here
//! on the official protobuf messages (`opentelemetry-proto`): each call's
//! span joins its caller's trace (REST header, MCP `_meta`), is named and
//! attributed as the MCP conventions say, carries the engine's phases, is
//! the parent of an upstream MCP server's call; sampling follows the
//! caller and the ratio; nothing starts unless the environment asks.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::Value;

use crate::support::{Dirs, MCP_INIT, Server, client, eventually, mcp_post};

/// A span as received, with its resource's attributes.
#[derive(Clone, Debug)]
struct Got {
    resource: Vec<KeyValue>,
    span: Span,
}

/// Spans received so far.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Got>>>);

impl Receiver {
    /// An OTLP/HTTP receiver on loopback; its base URL (what
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` takes).
    async fn start() -> (String, Receiver) {
        let got = Receiver::default();
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(export))
            .with_state(got.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}"), got)
    }

    /// Waits until no span has come for 300 ms (at most 10 s).
    async fn settled(&self) {
        let mut last = usize::MAX;
        for _ in 0..33 {
            let n = self.0.lock().unwrap().len();
            if n == last {
                return;
            }
            last = n;
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    }

    fn spans(&self) -> Vec<Got> {
        self.0.lock().unwrap().clone()
    }

    /// The spans of `trace` (hex).
    fn of_trace(&self, trace: &str) -> Vec<Got> {
        self.spans()
            .into_iter()
            .filter(|g| hex(&g.span.trace_id) == trace)
            .collect()
    }
}

async fn export(State(got): State<Receiver>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    if headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        != Some("application/x-protobuf")
    {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Vec::new()).into_response();
    }
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new()).into_response();
    };
    let mut spans = got.0.lock().unwrap();
    for rs in request.resource_spans {
        let resource = rs.resource.map(|r| r.attributes).unwrap_or_default();
        for ss in rs.scope_spans {
            for span in ss.spans {
                spans.push(Got {
                    resource: resource.clone(),
                    span,
                });
            }
        }
    }
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An attribute's value as text (strings and integers).
fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    let v = attrs.iter().find(|a| a.key == key)?.value.as_ref()?;
    match &v.value {
        Some(any_value::Value::StringValue(s)) => Some(s.clone()),
        Some(any_value::Value::IntValue(i)) => Some(i.to_string()),
        other => panic!("{key}: {other:?}"),
    }
}

fn string(v: &AnyValue) -> Option<&str> {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

/// The environment that exports to `endpoint` at once.
fn otel_env(endpoint: &str) -> Vec<(&str, &str)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ]
}

/// The text an upstream's unstructured answer holds.
fn upstream_text(answer: &str) -> String {
    let v: Value = serde_json::from_str(answer).unwrap_or_else(|_| panic!("{answer}"));
    v["content"][0]["text"].as_str().unwrap().to_string()
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

async fn rest(s: &Server, tool: &str, traceparent: Option<&str>, body: &str) -> (u16, String) {
    let mut r = client()
        .post(s.url(&format!("/v1/tools/{tool}/call")))
        .header("content-type", "application/json")
        .header("tracestate", "congo=t61rcWkgMzE");
    if let Some(t) = traceparent {
        r = r.header("traceparent", t);
    }
    let r = r.body(body.to_string()).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_joins_its_callers_trace_and_its_upstream_joins_the_call() {
    let (endpoint, got) = Receiver::start().await;
    let dirs = Dirs::new();
    crate::support::fastmcp_upstream(&dirs);
    let audit = tempfile::tempdir().unwrap();
    let config = format!("[audit]\ndir = \"{}\"\n", audit.path().display());
    let s = Server::start(&dirs, &[], &otel_env(&endpoint), Some(&config));

    // REST, a sampled caller: the call's span is its child; the upstream
    // gets the call's span as its parent, with the caller's tracestate.
    let caller = format!("00-{TRACE}-00f067aa0ba902b7-01");
    let (status, text) = rest(&s, "up.traced", Some(&caller), "{}").await;
    assert_eq!(status, 200, "{text}");
    let text = upstream_text(&text);
    let [sent, state, progress] = text.trim().split(' ').collect::<Vec<_>>()[..] else {
        panic!("{text}")
    };
    // (rmcp's client sends every request a progress token: `progress`.)
    assert_eq!((state, progress), ("congo=t61rcWkgMzE", "True"));
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", TRACE, "01"),
        "{sent}"
    );
    assert_ne!(
        parts[2], "00f067aa0ba902b7",
        "the upstream's parent is the call's span"
    );
    eventually("the REST call's span", || async {
        !got.of_trace(TRACE).is_empty()
    })
    .await;
    let spans = got.of_trace(TRACE);
    assert_eq!(spans.len(), 1, "{spans:?}");
    let Got { resource, span } = &spans[0];
    assert_eq!(span.name, "execute_tool up.traced");
    assert_eq!(hex(&span.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(hex(&span.span_id), parts[2], "the upstream's parent");
    assert_eq!(span.kind, 2, "SERVER");
    assert_eq!(attr(resource, "service.name").as_deref(), Some("toolplane"));
    let a = &span.attributes;
    assert_eq!(attr(a, "gen_ai.tool.name").as_deref(), Some("up.traced"));
    assert_eq!(
        attr(a, "gen_ai.operation.name").as_deref(),
        Some("execute_tool")
    );
    assert_eq!(attr(a, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attr(a, "toolplane.result").as_deref(), Some("ok"));
    assert_eq!(span.trace_state, "congo=t61rcWkgMzE");
    // The engine's phases, in order, within the span.
    let names: Vec<&str> = span.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["queued", "running", "answered"]);
    let times: Vec<u64> = span.events.iter().map(|e| e.time_unix_nano).collect();
    assert!(times.is_sorted(), "{times:?}");
    assert!(span.start_time_unix_nano <= times[0] && times[2] <= span.end_time_unix_nano);
    assert_eq!(
        attr(&span.events[2].attributes, "toolplane.result").as_deref(),
        Some("ok")
    );

    // MCP over HTTP: the parent from `_meta`; the HTTP request's own
    // context, another one, is linked.
    let c = client();
    let r = mcp_post(&c, &s, MCP_INIT, None).await;
    let session = r.headers()["mcp-session-id"].to_str().unwrap().to_string();
    let meta_trace = "0af7651916cd43dd8448eb211c80319c";
    let http_parent = "00-11111111111111111111111111111111-2222222222222222-01";
    let post = |body: String| {
        c.post(s.url("/mcp"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-06-18")
            .header("traceparent", http_parent)
            .body(body)
            .send()
    };
    let call = |id: u32, tool: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{"x":1}},"_meta":{{"traceparent":"00-{meta_trace}-b7ad6b7169203331-01"}}}}}}"#
        )
    };
    let answer = |r: reqwest::Response| async move {
        let (status, text) = (r.status(), r.text().await.unwrap());
        // One JSON answer, or an event stream whose data line holds it.
        let json = text
            .lines()
            .find_map(|l| l.strip_prefix("data: ").filter(|d| d.starts_with('{')))
            .unwrap_or(&text);
        serde_json::from_str::<Value>(json).unwrap_or_else(|_| panic!("{status}: {text}"))
    };
    let r = answer(post(call(7, "echo")).await.unwrap()).await;
    assert_eq!(r["result"]["isError"], Value::Bool(false), "{r}");
    let r = answer(post(call(8, "nope")).await.unwrap()).await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    eventually("the MCP calls' spans", || async {
        got.of_trace(meta_trace).len() >= 2
    })
    .await;
    let spans = got.of_trace(meta_trace);
    let echo = &spans
        .iter()
        .find(|g| g.span.name == "tools/call echo")
        .unwrap()
        .span;
    assert_eq!(hex(&echo.parent_span_id), "b7ad6b7169203331");
    let a = &echo.attributes;
    for (k, v) in [
        ("mcp.method.name", "tools/call"),
        ("gen_ai.tool.name", "echo"),
        ("gen_ai.operation.name", "execute_tool"),
        ("jsonrpc.request.id", "7"),
        ("mcp.protocol.version", "2025-06-18"),
        ("network.transport", "tcp"),
        ("network.protocol.name", "http"),
        ("toolplane.result", "ok"),
    ] {
        assert_eq!(attr(a, k).as_deref(), Some(v), "{k}");
    }
    assert!(attr(a, "error.type").is_none());
    // The session id itself lets one post into the session: a digest.
    let digest = attr(a, "mcp.session.id").unwrap();
    assert!(digest.len() == 16 && digest != session, "{digest}");
    assert_eq!(echo.links.len(), 1);
    assert_eq!(
        hex(&echo.links[0].trace_id),
        "11111111111111111111111111111111"
    );
    assert_eq!(hex(&echo.links[0].span_id), "2222222222222222");
    // A tool that does not exist: a name without it, the JSON-RPC error.
    let nope = &spans
        .iter()
        .find(|g| g.span.name == "tools/call")
        .unwrap()
        .span;
    assert_eq!(
        attr(&nope.attributes, "error.type").as_deref(),
        Some("-32602")
    );
    assert_eq!(
        attr(&nope.attributes, "rpc.response.status_code").as_deref(),
        Some("-32602")
    );
    assert_eq!(
        attr(&nope.attributes, "jsonrpc.request.id").as_deref(),
        Some("8")
    );
    let status = nope.status.as_ref().unwrap();
    assert_eq!(status.code, 2, "ERROR");
    // What failed, not the name the caller sent.
    assert_eq!(status.message, "unknown tool");

    // A failed REST call: its status code is the error's type.
    let failed = format!("00-{}-00f067aa0ba902b7-01", "a".repeat(32));
    let (status, _) = rest(&s, "echo", Some(&failed), "not json").await;
    assert_eq!(status, 400);
    eventually("the failed call's span", || async {
        !got.of_trace(&"a".repeat(32)).is_empty()
    })
    .await;
    let span = &got.of_trace(&"a".repeat(32))[0].span;
    assert_eq!(attr(&span.attributes, "error.type").as_deref(), Some("400"));
    assert_eq!(
        attr(&span.attributes, "toolplane.result").as_deref(),
        Some("invalid_input")
    );
    // Not the input the schema error quotes.
    assert_eq!(
        span.status.as_ref().unwrap().message,
        "the input does not match the tool's input schema"
    );
    let unknown = format!("00-{}-00f067aa0ba902b7-01", "c".repeat(32));
    assert_eq!(rest(&s, "nope", Some(&unknown), "{}").await.0, 404);
    eventually("the unknown tool's span", || async {
        !got.of_trace(&"c".repeat(32)).is_empty()
    })
    .await;
    let span = &got.of_trace(&"c".repeat(32))[0].span;
    assert_eq!(span.name, "execute_tool");
    assert_eq!(attr(&span.attributes, "error.type").as_deref(), Some("404"));

    // Sampling: a caller's unsampled trace is not recorded, yet its
    // context reaches the upstream (with the call's span, unsampled);
    // calls without one are sampled one in 100 (the engine's ratio).
    let unsampled = format!("00-{}-00f067aa0ba902b7-00", "b".repeat(32));
    let (_, text) = rest(&s, "up.traced", Some(&unsampled), "{}").await;
    let text = upstream_text(&text);
    assert!(
        text.starts_with(&format!("00-{}-", "b".repeat(32))) && text.contains("-00 "),
        "{text}"
    );
    let before = got.spans().len();
    for _ in 0..1000 {
        let (status, _) = rest(&s, "echo", None, "{}").await;
        assert_eq!(status, 200);
    }
    got.settled().await;
    let roots = got.spans()[before..]
        .iter()
        .filter(|g| g.span.name == "execute_tool echo" && g.span.parent_span_id.is_empty())
        .count();
    assert!(
        (1..=30).contains(&roots),
        "{roots} of 1000 sampled at 1 in 100"
    );
    assert!(got.of_trace(&"b".repeat(32)).is_empty());
    // Every span names the node.
    assert!(got.spans().iter().all(|g| g.resource.iter().any(|k| {
        k.key == "service.instance.id" && k.value.as_ref().and_then(string).is_some()
    })));
    // The audit record of the first call names its trace.
    let out = std::process::Command::new(crate::support::binary())
        .args(["audit", "--json", "--tool", "up.traced", "--dir"])
        .arg(audit.path())
        .output()
        .unwrap();
    let first: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(first["trace"], TRACE, "{first}");
    // And /metrics counts what was exported.
    let exported = crate::support::metric(
        &c,
        &s.url("/metrics"),
        "toolplane_trace_spans_exported_total",
    )
    .await;
    assert!(exported >= got.spans().len() as f64 - 1.0, "{exported}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sampling_ratio_is_the_environments() {
    let (endpoint, got) = Receiver::start().await;
    let dirs = Dirs::new();
    let mut env = otel_env(&endpoint);
    env.extend([
        ("OTEL_TRACES_SAMPLER", "traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ("OTEL_SERVICE_NAME", "tp-ratio"),
        // The deployment's own values win over ours.
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.instance.id=pod-7,deployment.environment.name=staging",
        ),
    ]);
    let s = Server::start(&dirs, &[], &env, None);
    for _ in 0..2000 {
        assert_eq!(rest(&s, "echo", None, "{}").await.0, 200);
    }
    got.settled().await;
    let spans = got.spans();
    // 500 expected; the standard deviation is 19.4.
    assert!(
        (400..=600).contains(&spans.len()),
        "{} of 2000",
        spans.len()
    );
    let resource = &spans[0].resource;
    assert_eq!(attr(resource, "service.name").as_deref(), Some("tp-ratio"));
    assert_eq!(
        attr(resource, "service.instance.id").as_deref(),
        Some("pod-7")
    );
    assert_eq!(
        attr(resource, "deployment.environment.name").as_deref(),
        Some("staging")
    );
    assert_eq!(
        attr(resource, "service.version").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
}

/// The threads of process `pid`, by name.
fn threads(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_starts_unless_asked_and_a_wrong_setting_is_named() {
    // A thread takes its name when it first runs (until then /proc shows
    // its parent's): asked for a while, not once.
    let exporter = |pid: u32| threads(pid).iter().any(|t| t.starts_with("OpenTelemetry"));
    let dirs = Dirs::new();
    let s = Server::start(&dirs, &[], &[], None);
    for _ in 0..50 {
        assert!(!exporter(s.pid()), "{:?}", threads(s.pid()));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(s);
    let (endpoint, _got) = Receiver::start().await;
    let s = Server::start(&dirs, &[], &otel_env(&endpoint), None);
    let pid = s.pid();
    eventually("the exporter's thread", || async move { exporter(pid) }).await;
    assert!(s.stderr().contains(&format!(
        "traces: exported over OTLP/HTTP to {endpoint}/v1/traces"
    )));
    drop(s);
    // The traces' own protocol variable is the one the exporter reads.
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "HTTP/protobuf"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    ];
    let s = Server::start(&dirs, &[], &env, None);
    let pid = s.pid();
    eventually("the exporter's thread", || async move { exporter(pid) }).await;
    drop(s);
    // An exporter this build does not have: said, and no traces.
    let s = Server::start(&dirs, &[], &[("OTEL_TRACES_EXPORTER", "zipkin")], None);
    s.logged(&["OTEL_TRACES_EXPORTER=\"zipkin\" names no exporter"])
        .await;
    for _ in 0..50 {
        assert!(!exporter(s.pid()), "{:?}", threads(s.pid()));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(s);
    for (env, named) in [
        (
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ][..],
            "OTEL_EXPORTER_OTLP_PROTOCOL=\"grpc\"",
        ),
        (
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
                ("OTEL_TRACES_SAMPLER", "sometimes"),
            ],
            "OTEL_TRACES_SAMPLER=\"sometimes\"",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "not a url")],
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ),
        (
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ],
            "OTEL_EXPORTER_OTLP_COMPRESSION=\"gzip\"",
        ),
    ] {
        let out = crate::support::serve_command(&dirs)
            .args(["--http", "127.0.0.1:0"])
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{env:?}: {stderr}");
        assert!(stderr.contains(named), "{env:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_is_counted_and_said_and_calls_go_on() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let dirs = Dirs::new();
    let s = Server::start(&dirs, &[], &otel_env(&endpoint), None);
    let sampled = format!("00-{TRACE}-00f067aa0ba902b7-01");
    for _ in 0..20 {
        assert_eq!(rest(&s, "echo", Some(&sampled), "{}").await.0, 200);
    }
    let c = client();
    eventually("the failed export counted", || async {
        crate::support::metric(&c, &s.url("/metrics"), "toolplane_trace_spans_failed_total").await
            >= 1.0
    })
    .await;
    s.logged(&["traces: an export failed"]).await;
}

/// Over stdio: a call's span says `pipe`; the upstream gets the trace and
/// the progress token together in one `_meta`; a call cancelled before its
/// answer ends its span as `abandoned`; the spans still queued reach the
/// collector when the server stops at SIGTERM (the batch's delay here is
/// ten minutes: only the shutdown's flush can send them); and the server
/// exits though its client keeps stdin open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_spans_a_cancelled_call_and_the_flush_at_sigterm() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let (endpoint, got) = Receiver::start().await;
    let dirs = Dirs::new();
    crate::support::fastmcp_upstream(&dirs);
    let mut cmd = tokio::process::Command::from(crate::support::serve_command(&dirs));
    cmd.arg("--stdio")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "600000")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut send = async |m: Value| {
        stdin.write_all(format!("{m}\n").as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
    };
    send(
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "traces", "version": "1"}}}),
    )
    .await;
    send(serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
    let traced = "5bf92f3577b34da6a3ce929d0e0e4736";
    send(
        serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "up.traced", "arguments": {},
        "_meta": {"progressToken": "p-2", "tracestate": "congo=t61rcWkgMzE",
                  "traceparent": format!("00-{traced}-00f067aa0ba902b7-01")}}}),
    )
    .await;
    let cancelled = "6bf92f3577b34da6a3ce929d0e0e4736";
    send(
        serde_json::json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "up.slow", "arguments": {"seconds": 30},
        "_meta": {"traceparent": format!("00-{cancelled}-00f067aa0ba902b7-01")}}}),
    )
    .await;
    // The answer to 2 (progress notifications may come first).
    let answer = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            let line = lines.next_line().await.unwrap().expect("an answer to 2");
            let m: Value = serde_json::from_str(&line).unwrap();
            if m["id"] == 2 {
                break m;
            }
        }
    })
    .await
    .expect("up.traced answered within 30 s");
    let text = answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"));
    let [sent, state, progress] = text.split(' ').collect::<Vec<_>>()[..] else {
        panic!("{text}")
    };
    assert!(
        sent.starts_with(&format!("00-{traced}-")) && sent.ends_with("-01"),
        "{sent}"
    );
    assert_eq!(
        (state, progress),
        ("congo=t61rcWkgMzE", "True"),
        "trace and progress token in one _meta"
    );
    send(
        serde_json::json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": 3, "reason": "the test is done with it"}}),
    )
    .await;
    // Nothing exported yet: the batch waits ten minutes.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(got.spans().is_empty(), "{:?}", got.spans());
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait())
        .await
        .expect("the server ends within 20 s of SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    got.settled().await;
    let spans = got.of_trace(traced);
    let span = &spans.first().expect("the traced call's span").span;
    assert_eq!(span.name, "tools/call up.traced");
    assert_eq!(hex(&span.span_id), sent.split('-').nth(2).unwrap());
    assert_eq!(
        attr(&span.attributes, "network.transport").as_deref(),
        Some("pipe")
    );
    assert_eq!(
        attr(&span.attributes, "jsonrpc.request.id").as_deref(),
        Some("2")
    );
    assert!(attr(&span.attributes, "network.protocol.name").is_none());
    let spans = got.of_trace(cancelled);
    let span = &spans.first().expect("the cancelled call's span").span;
    assert_eq!(span.name, "tools/call up.slow");
    assert_eq!(
        attr(&span.attributes, "toolplane.result").as_deref(),
        Some("abandoned")
    );
    assert!(
        span.end_time_unix_nano - span.start_time_unix_nano < 20_000_000_000,
        "ended when cancelled, not after the tool's 30 s"
    );
}
