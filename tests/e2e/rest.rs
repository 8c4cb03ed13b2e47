//! REST calls, every error status, health, readiness, metrics, auth and
//! the shutdown sequence, against the real binary.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Dirs, Server, client};

pub(crate) async fn post(c: &reqwest::Client, s: &Server, tool: &str, body: &str) -> (u16, Value) {
    let r = c
        .post(s.url(&format!("/v1/tools/{tool}/call")))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

/// `GET /v1/tools`: the listing.
async fn tools(c: &reqwest::Client, s: &Server) -> Vec<Value> {
    c.get(s.url("/v1/tools"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_builtin_answers_over_rest() {
    let dirs = Dirs::new();
    let s = Server::start(&dirs, &[], &[], None);
    let c = client();
    // The directory holds copies of the built-ins (Dirs::new), which load
    // behind the server and replace them: listed at once, ready soon.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let list = loop {
        let list = tools(&c, &s).await;
        if list.iter().all(|t| t["state"] == "ready") || std::time::Instant::now() > deadline {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let names: Vec<&str> = list.iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(
        names,
        ["echo", "fs.read", "fs.write", "hash.sha256", "sleep"]
    );
    assert!(list.iter().all(|t| t["state"] == "ready"), "{list:?}");
    assert_eq!(list[4]["input_schema"]["required"], json!(["ms"]));

    let (st, v) = post(&c, &s, "echo", r#"{"x":[1,2,3]}"#).await;
    assert_eq!((st, v), (200, json!({"x":[1,2,3]})));
    let (st, v) = post(&c, &s, "hash.sha256", r#"{"data":"abc"}"#).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["sha256"],
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let (st, v) = post(
        &c,
        &s,
        "fs.write",
        r#"{"path":"e2e/a.txt","content":"hello","create_dirs":true}"#,
    )
    .await;
    assert_eq!((st, &v["bytes_written"]), (200, &json!(5)), "{v}");
    assert_eq!(
        std::fs::read_to_string(dirs.data.path().join("e2e/a.txt")).unwrap(),
        "hello"
    );
    let (st, v) = post(&c, &s, "fs.read", r#"{"path":"e2e/a.txt"}"#).await;
    assert_eq!((st, &v["content"]), (200, &json!("hello")), "{v}");
    let (st, v) = post(&c, &s, "sleep", r#"{"ms":5}"#).await;
    assert_eq!((st, &v["slept_ms"]), (200, &json!(5)), "{v}");

    // Keyed and low-priority calls are accepted; a bad key header is a 400.
    let r = c
        .post(s.url("/v1/tools/echo/call"))
        .header("x-toolplane-key", "42")
        .header("x-toolplane-priority", "low")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(s.url("/v1/tools/echo/call"))
        .header("x-toolplane-key", "forty-two")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("x-toolplane-key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_has_its_status() {
    let dirs = Dirs::new();
    // A sleep that times out after 100 ms.
    dirs.set("sleep", Some("limits"), "timeout", "100ms".into());
    let s = Server::start(&dirs, &[], &[], Some("[server]\nmax_body = \"2 KiB\"\n"));
    let c = client();

    let (st, v) = post(&c, &s, "no.such.tool", "{}").await;
    assert_eq!(st, 404, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no.such.tool"),
        "{v}"
    );

    let (st, v) = post(&c, &s, "echo", "{not json").await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{v}"
    );

    let (st, v) = post(&c, &s, "sleep", r#"{"ms":"long"}"#).await;
    assert_eq!(st, 400, "{v}");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("/ms"), "the field is named: {m}");

    let big = format!(r#"{{"data":"{}"}}"#, "x".repeat(4096));
    let (st, _) = post(&c, &s, "echo", &big).await;
    assert_eq!(st, 413);

    let (st, v) = post(&c, &s, "sleep", r#"{"ms":5000}"#).await;
    assert_eq!(st, 504, "{v}");

    let (st, v) = post(&c, &s, "fs.read", r#"{"path":"../etc/passwd"}"#).await;
    assert_eq!(st, 422, "a tool error: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_engine_answers_429_with_retry_after() {
    let dirs = Dirs::new();
    let s = Server::start(&dirs, &[], &[("TOOLPLANE_MAX_INFLIGHT", "1")], None);
    let c = client();
    // One call in flight at most: while a sleep holds the budget, the next
    // call is refused with 429 and Retry-After.
    let c2 = c.clone();
    let url = s.url("/v1/tools/sleep/call");
    let slow = tokio::spawn(async move {
        c2.post(url)
            .header("content-type", "application/json")
            .body(r#"{"ms":1500}"#)
            .send()
            .await
            .unwrap()
            .status()
    });
    // Wait until the engine holds the sleep, then call.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while crate::support::metric(&c, &s.url("/metrics"), "toolplane_events_in_flight").await != 1.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the sleep never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = c
        .post(s.url("/v1/tools/echo/call"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["kind"], "inflight_limit", "{v}");
    assert_eq!(slow.await.unwrap(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let dirs = Dirs::new();
    let s = Server::start(&dirs, &[], &[], None);
    let c = client();
    let r = c.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    for _ in 0..3 {
        assert_eq!(post(&c, &s, "echo", "{}").await.0, 200);
    }
    assert_eq!(post(&c, &s, "echo", "[1]").await.0, 400);

    let r = c.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    let metrics = parse_metrics(&text);
    let get = |name: &str| {
        metrics
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
            .1
    };
    assert_eq!(
        get(r#"toolplane_calls_total{tool="echo",result="ok"}"#),
        3.0
    );
    assert_eq!(
        get(r#"toolplane_calls_total{tool="echo",result="invalid_input"}"#),
        1.0
    );
    assert_eq!(get(r#"toolplane_events_total{outcome="ok"}"#), 3.0);
    assert_eq!(get(r#"toolplane_rejected_total{reason="full"}"#), 0.0);
    assert_eq!(get("toolplane_ready"), 1.0);
    assert_eq!(get(r#"toolplane_tools{state="ready"}"#), 5.0);
    assert_eq!(
        get(r#"toolplane_latency_seconds_count{stage="end_to_end"}"#),
        3.0
    );
    assert!(get(r#"toolplane_queue_depth{worker="0"}"#) >= 0.0);
    assert!(get("process_resident_memory_bytes") > 1e6);
    // Buckets are cumulative and end at the count.
    let buckets: Vec<f64> = metrics
        .iter()
        .filter(|(n, _)| n.starts_with(r#"toolplane_latency_seconds_bucket{stage="service""#))
        .map(|(_, v)| *v)
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert_eq!(*buckets.last().unwrap(), 3.0);
}

/// `name{labels} value` pairs, checking every line is HELP, TYPE or a sample.
pub(crate) fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        out.push((name.to_string(), v));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_everything_but_healthz() {
    let dirs = Dirs::new();
    let s = Server::start(&dirs, &["--token", "s3cret"], &[], None);
    let c = client();
    assert_eq!(c.get(s.url("/healthz")).send().await.unwrap().status(), 200);
    for path in ["/readyz", "/metrics"] {
        let r = c.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let r = c
            .get(s.url(path))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = c
            .get(s.url(path))
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let r = c
        .post(s.url("/v1/tools/echo/call"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(s.url("/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "/mcp is guarded too");
    let r = c
        .post(s.url("/v1/tools/echo/call"))
        .bearer_auth("s3cret")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_calls_then_exits_zero() {
    let dirs = Dirs::new();
    let mut s = Server::start(&dirs, &[], &[], Some("[server]\ndrain = \"10s\"\n"));
    let c = client();
    assert_eq!(c.get(s.url("/readyz")).send().await.unwrap().status(), 200);
    let c2 = c.clone();
    let url = s.url("/v1/tools/sleep/call");
    let slow = tokio::spawn(async move {
        let r = c2
            .post(url)
            .header("content-type", "application/json")
            .body(r#"{"ms":1500}"#)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    // Let the call start, then ask the server to stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.terminate();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = c.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503, "not ready while draining");
    assert!(r.text().await.unwrap().contains("shutting down"));
    let (st, _) = post(&c, &s, "echo", "{}").await;
    assert_eq!(st, 503, "admission is stopped while draining");
    let (st, body) = slow.await.unwrap();
    assert_eq!(st, 200, "the in-flight call finished: {body}");
    assert_eq!(s.wait(Duration::from_secs(30)), 0);
    let log = s.stderr();
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(log.contains("books balanced"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_past_the_drain_deadline_are_cancelled_and_answered() {
    let dirs = Dirs::new();
    let mut s = Server::start(&dirs, &[], &[], Some("[server]\ndrain = \"200ms\"\n"));
    let c = client();
    let url = s.url("/v1/tools/sleep/call");
    let slow = tokio::spawn(async move {
        let r = c
            .post(url)
            .header("content-type", "application/json")
            .body(r#"{"ms":20000}"#)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.terminate();
    let (st, body) = slow.await.unwrap();
    assert_eq!(st, 503, "{body}");
    assert!(body.contains("cancelled"), "{body}");
    assert_eq!(s.wait(Duration::from_secs(30)), 0);
    assert!(s.stderr().contains("cancelled 1"), "{}", s.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_that_does_not_match_its_output_schema_is_a_tool_error() {
    let dirs = Dirs::new();
    dirs.set(
        "echo",
        None,
        "output_schema",
        toml::Value::Table(toml::from_str("type = \"object\"\nrequired = [\"y\"]").unwrap()),
    );
    let s = Server::start(&dirs, &[], &[], None);
    let c = client();
    let (st, v) = post(&c, &s, "echo", r#"{"y":1}"#).await;
    assert_eq!((st, v), (200, json!({"y":1})));
    let (st, v) = post(&c, &s, "echo", r#"{"x":1}"#).await;
    assert_eq!(st, 422, "{v}");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("output_schema") && m.contains("\"y\""), "{m}");
    let list = tools(&c, &s).await;
    let echo = list.iter().find(|t| t["name"] == "echo").unwrap();
    assert_eq!(echo["output_schema"]["required"], json!(["y"]));
    assert_eq!(echo["annotations"]["read_only"], true);
    assert_eq!(echo["title"], "Echo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_tool_is_listed_and_called_like_any_other() {
    let dirs = Dirs::new();
    std::fs::write(
        dirs.tools.path().join("upper.toml"),
        "name = \"upper\"\nruntime = \"process\"\nprotocol = \"exec\"\ncommand = [\"tr\", \"a-z\", \"A-Z\"]\ndescription = \"Upper-cases its input\"\n[input_schema]\ntype = \"object\"\nrequired = [\"text\"]\n",
    )
    .unwrap();
    let s = Server::start(&dirs, &[], &[], None);
    let c = client();
    let listed = tools(&c, &s).await;
    let upper = listed
        .iter()
        .find(|t| t["name"] == "upper")
        .expect("listed");
    assert_eq!(upper["description"], "Upper-cases its input");
    assert_eq!(upper["input_schema"]["required"][0], "text");
    let (st, v) = post(&c, &s, "upper", r#"{"text":"abc"}"#).await;
    assert_eq!((st, v), (200, serde_json::json!({"TEXT": "ABC"})));
    // The schema is checked before any process starts.
    let (st, v) = post(&c, &s, "upper", r#"{"other":1}"#).await;
    assert_eq!(st, 400, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jsonl_tool_is_served_warm_and_a_failing_one_shows_everywhere() {
    let dirs = Dirs::new();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/examples/jsonl");
    for f in ["wordcount.py", "wordcount.toml"] {
        std::fs::copy(examples.join(f), dirs.tools.path().join(f)).unwrap();
    }
    std::fs::copy(examples.join("nap.js"), dirs.tools.path().join("nap.js")).unwrap();
    std::fs::write(
        dirs.tools.path().join("narrow.toml"),
        "name = \"narrow\"\nruntime = \"process\"\nprotocol = \"jsonl\"\ncommand = [\"node\", \"nap.js\"]\n[pool]\nmin = 1\nmax = 1\nqueue = 0\n",
    )
    .unwrap();
    std::fs::write(
        dirs.tools.path().join("broken.toml"),
        "name = \"broken\"\nruntime = \"process\"\nprotocol = \"jsonl\"\ncommand = [\"sh\", \"-c\", \"echo 'no licence key' >&2; exit 4\"]\n[pool]\nmin = 1\n",
    )
    .unwrap();
    let mut s = Server::start(&dirs, &[], &[], None);
    let c = client();
    let mut pids = std::collections::BTreeSet::new();
    for i in 0..5 {
        let (st, v) = post(&c, &s, "wordcount", &format!(r#"{{"text":"a b {i}"}}"#)).await;
        assert_eq!((st, &v["words"]), (200, &serde_json::json!(3)), "{v}");
        pids.insert(v["worker"].as_u64().unwrap());
    }
    assert_eq!(pids.len(), 1, "one warm process answered");

    // A full pool refuses with the engine's typed refusal: of four calls
    // at once on one turn and no queue, one runs (unharmed) and three get
    // 429, kind "busy", Retry-After, the message naming tool and limit.
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let (c, url) = (c.clone(), s.url("/v1/tools/narrow/call"));
            tokio::spawn(async move {
                let r = c
                    .post(url)
                    .header("content-type", "application/json")
                    .body(r#"{"ms":1000}"#)
                    .send()
                    .await
                    .unwrap();
                let retry = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string());
                (r.status().as_u16(), retry, r.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap());
    }
    let ran: Vec<_> = answers.iter().filter(|a| a.0 == 200).collect();
    assert_eq!(ran.len(), 1, "{answers:?}");
    assert_eq!(ran[0].2["slept"], 1000, "{answers:?}");
    for (status, retry, v) in answers.iter().filter(|a| a.0 != 200) {
        assert_eq!((*status, retry.as_deref()), (429, Some("1")), "{v}");
        assert_eq!(v["error"]["kind"], "busy", "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("tool narrow is busy") && message.contains("pool.queue = 0"),
            "{v}"
        );
    }

    // The crash-looping tool goes down: named by /readyz (the server stays
    // ready: its other tools serve), failed in the tool list, and in
    // /metrics.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let body = loop {
        let r = c.get(s.url("/readyz")).send().await.unwrap();
        let (st, body) = (r.status(), r.text().await.unwrap());
        assert_eq!(st, 200, "{body}");
        if body.contains("tool broken is failing") {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never down: {st} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        body.contains("tool broken is failing") && body.contains("no licence key"),
        "{body}"
    );
    let listed = tools(&c, &s).await;
    let broken = listed.iter().find(|t| t["name"] == "broken").unwrap();
    assert!(
        broken["state"]
            .as_str()
            .unwrap()
            .starts_with("failed: its processes keep failing"),
        "{broken}"
    );
    let (st, v) = post(&c, &s, "broken", "{}").await;
    assert!(
        st >= 400 && v.to_string().contains("no licence key"),
        "{st} {v}"
    );

    let text = c
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let metrics = parse_metrics(&text);
    let get = |name: &str| {
        metrics
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
            .1
    };
    assert_eq!(
        get(r#"toolplane_process_processes{tool="wordcount",state="alive"}"#),
        1.0
    );
    assert_eq!(
        get(r#"toolplane_process_restarts_total{tool="wordcount"}"#),
        0.0
    );
    assert_eq!(
        get(r#"toolplane_process_latency_seconds_count{tool="wordcount",stage="service"}"#),
        5.0
    );
    assert_eq!(
        get(r#"toolplane_calls_total{tool="wordcount",result="ok"}"#),
        5.0
    );
    assert_eq!(
        get(r#"toolplane_calls_total{tool="narrow",result="busy"}"#),
        3.0
    );
    assert_eq!(
        get(r#"toolplane_process_refused_total{tool="narrow"}"#),
        3.0
    );
    assert!(get(r#"toolplane_process_restarts_total{tool="broken"}"#) >= 3.0);
    assert!(
        text.lines().any(
            |l| l.starts_with(r#"toolplane_process_down{tool="broken",reason=""#)
                && l.contains("no licence key")
                && l.ends_with(" 1")
        ),
        "{text}"
    );
    assert_eq!(get(r#"toolplane_tools{state="failed"}"#), 1.0);
    assert_eq!(get("toolplane_ready"), 1.0);

    // SIGTERM: drained, then the processes stop, each tool's accounting
    // logged.
    s.terminate();
    assert_eq!(s.wait(Duration::from_secs(30)), 0);
    let log = s.stderr();
    assert!(
        log.contains("process tool wordcount: 5 calls served, 0 refused (queue full), 0 restarts; 1 processes stopped"),
        "{log}"
    );
    assert!(
        log.contains("process tool broken:") && log.contains("down:"),
        "{log}"
    );
    // No process of the tools directory's programs is left (they run in
    // it).
    let tools = dirs.tools.path().canonicalize().unwrap();
    let left: Vec<std::path::PathBuf> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_link(e.path().join("cwd")).is_ok_and(|c| c == tools))
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "workers outlived the server: {left:?}");
}

#[test]
fn an_empty_token_is_refused_not_served_without_authentication() {
    // `--token "$TOKEN"` with TOKEN unset, and TOOLPLANE_TOKEN set blank.
    let dirs = Dirs::new();
    for (args, env) in [
        (&["--token", ""][..], None),
        (&["--token", "  "][..], None),
        (&[][..], Some("")),
    ] {
        let mut cmd = crate::support::serve_command(&dirs);
        cmd.args(["--http", "127.0.0.1:0"]).args(args);
        if let Some(v) = env {
            cmd.env("TOOLPLANE_TOKEN", v);
        }
        // A server that starts anyway would serve until killed: wait for
        // the exit a bounded time.
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert!(
            status.and_then(|s| s.code()) == Some(2)
                && err.contains("--token (or TOOLPLANE_TOKEN) is empty"),
            "{args:?} {env:?}: {status:?}\n{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_logs_one_line_at_debug_and_a_failure_at_info() {
    let dirs = Dirs::new();
    let s = Server::start(
        &dirs,
        &[],
        &[("TOOLPLANE_LOG", "toolplane_server=debug,info")],
        None,
    );
    let c = client();
    assert_eq!(post(&c, &s, "echo", r#"{"x":1}"#).await.0, 200);
    assert_eq!(post(&c, &s, "fs.read", r#"{"nopath":1}"#).await.0, 400);
    // The human format: `toolplane: debug: call tool=… result=…`.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let find = |s: &Server| {
        let log = s.stderr();
        let good = log
            .lines()
            .find(|l| l.starts_with("toolplane: debug: call ") && l.contains("echo"))
            .map(str::to_string);
        let failed = log
            .lines()
            .find(|l| l.starts_with("toolplane: call failed ") && l.contains("fs.read"))
            .map(str::to_string);
        (good, failed)
    };
    let (mut good, mut failed) = find(&s);
    while (good.is_none() || failed.is_none()) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        (good, failed) = find(&s);
    }
    let (Some(good), Some(failed)) = (good, failed) else {
        panic!("no call lines:\n{}", s.stderr());
    };
    assert!(
        good.contains("result=") && good.contains("ok") && good.contains("latency_us="),
        "{good}"
    );
    assert!(
        failed.contains("invalid_input") && failed.contains("path"),
        "{failed}"
    );
    assert_eq!(
        s.stderr().matches("debug: call ").count(),
        1,
        "one line per call:\n{}",
        s.stderr()
    );
}
