//! `[[clients]]`: tokens, tool scopes, rates and queues over REST and MCP,
//! `/metrics` per client, and the list read again while serving.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use serde_json::json;
use toolplane_server::config::TokenDigest;

use crate::support::{Dirs, MCP_INIT, Server, client, eventually, soon};

fn entry(name: &str, token: &str, rest: &str) -> String {
    format!(
        "[[clients]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\n{rest}\n",
        TokenDigest::of(token).to_hex()
    )
}

fn config() -> String {
    [
        entry("ops", "ops-token", "tools = [\"*\"]\nmetrics = true"),
        entry("bot", "bot-token", "tools = [\"echo\", \"hash.*\"]"),
        entry(
            "limited",
            "limited-token",
            "tools = [\"echo\"]\nrate = \"3/h\"",
        ),
        entry(
            "slow",
            "slow-token",
            "tools = [\"sleep\"]\nmax_inflight = 1\nqueue = 1\nqueue_timeout = \"1s\"",
        ),
    ]
    .concat()
}

async fn post(
    s: &Server,
    tool: &str,
    token: Option<&str>,
    body: serde_json::Value,
) -> reqwest::Response {
    let mut r = client()
        .post(s.url(&format!("/v1/tools/{tool}/call")))
        .json(&body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap()
}

async fn error_of(r: reqwest::Response) -> (StatusCode, String, String) {
    let status = r.status();
    let v: serde_json::Value = r.json().await.unwrap();
    (
        status,
        v["error"]["kind"].as_str().unwrap().to_string(),
        v["error"]["message"].as_str().unwrap().to_string(),
    )
}

async fn metrics(s: &Server) -> String {
    let r = client()
        .get(s.url("/metrics"))
        .bearer_auth("ops-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

fn sample(text: &str, series: &str) -> f64 {
    crate::rest::parse_metrics(text)
        .into_iter()
        .find(|(n, _)| n == series)
        .map_or(0.0, |(_, v)| v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_has_its_token_its_tools_and_its_limits_over_rest() {
    let dirs = Dirs::new();
    let s = Server::start(&dirs, &[], &[], Some(&config()));

    // No token, a token that is no client's, a token in the query string.
    let r = post(&s, "echo", None, json!({})).await;
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(error_of(r).await.0, 401);
    let r = post(&s, "echo", Some("guess"), json!({})).await;
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    assert_eq!(error_of(r).await.0, 401);
    let r = client()
        .post(s.url("/v1/tools/echo/call?access_token=bot-token"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a token in the query string is not taken");

    // Scope: listed and callable, or 403 naming the client and the tool.
    let r = client()
        .get(s.url("/v1/tools"))
        .bearer_auth("bot-token")
        .send()
        .await
        .unwrap();
    let listed: Vec<String> = r
        .json::<Vec<serde_json::Value>>()
        .await
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed.contains(&"echo".into()) && listed.contains(&"hash.sha256".into()),
        "{listed:?}"
    );
    let r = post(&s, "echo", Some("bot-token"), json!({"a": 1})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"a": 1})
    );
    let (status, kind, message) =
        error_of(post(&s, "sleep", Some("bot-token"), json!({"ms": 1})).await).await;
    assert_eq!((status.as_u16(), kind.as_str()), (403, "out_of_scope"));
    assert_eq!(
        message,
        "client \"bot\" may not call tool \"sleep\" (clients.tools)"
    );

    // Readiness says nothing of other tools to a client that may not read
    // every client's numbers.
    let r = client()
        .get(s.url("/readyz"))
        .bearer_auth("bot-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "ready\n");

    // Metrics: every client's numbers, so only a client let read them.
    let r = client()
        .get(s.url("/metrics"))
        .bearer_auth("bot-token")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.0, 403);

    // A rate: 3 an hour, then 429 saying when.
    for _ in 0..3 {
        assert_eq!(
            post(&s, "echo", Some("limited-token"), json!({}))
                .await
                .status(),
            200
        );
    }
    let r = post(&s, "echo", Some("limited-token"), json!({})).await;
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1100..=1200).contains(&retry), "Retry-After {retry}");
    let (status, kind, message) = error_of(r).await;
    assert_eq!((status.as_u16(), kind.as_str()), (429, "rate_limited"));
    assert!(
        message.starts_with(
            "client \"limited\" is over its rate, 3/h (burst 3) (clients.rate): retry in "
        ),
        "{message}"
    );

    // One slot and a queue of one: the second call waits, the third is
    // refused at once, the second times out after 1 s; the first answers.
    let first = tokio::spawn({
        let url = s.url("/v1/tools/sleep/call");
        async move {
            client()
                .post(url)
                .bearer_auth("slow-token")
                .json(&json!({"ms": 3000}))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let gauge = |name: &'static str| {
        let s = &s;
        async move { sample(&metrics(s).await, name) >= 1.0 }
    };
    eventually("the first call runs", || {
        gauge("toolplane_client_calls_in_flight{client=\"slow\"}")
    })
    .await;
    let second = tokio::spawn({
        let url = s.url("/v1/tools/sleep/call");
        async move {
            let started = Instant::now();
            let r = client()
                .post(url)
                .bearer_auth("slow-token")
                .json(&json!({"ms": 1}))
                .send()
                .await
                .unwrap();
            (r.status(), started.elapsed(), r.text().await.unwrap())
        }
    });
    eventually("the second call queues", || {
        gauge("toolplane_client_calls_queued{client=\"slow\"}")
    })
    .await;
    let (status, kind, message) =
        error_of(post(&s, "sleep", Some("slow-token"), json!({"ms": 1})).await).await;
    assert_eq!(
        (status.as_u16(), kind.as_str()),
        (429, "queue_full"),
        "{message}"
    );
    assert!(
        message.contains("(clients.max_inflight) and 1 waiting (clients.queue)"),
        "{message}"
    );
    let (status, waited, body) = second.await.unwrap();
    assert_eq!(status, 429, "{body}");
    assert!(
        body.contains("queue_timeout") && body.contains("waited 1s"),
        "{body}"
    );
    assert!(waited >= Duration::from_millis(950), "{waited:?}");
    assert_eq!(first.await.unwrap(), 200);

    // What each client did, by result.
    let m = metrics(&s).await;
    for (series, want) in [
        (
            "toolplane_client_calls_total{client=\"bot\",result=\"ok\"}",
            1.0,
        ),
        (
            "toolplane_client_calls_total{client=\"bot\",result=\"out_of_scope\"}",
            1.0,
        ),
        (
            "toolplane_client_calls_total{client=\"limited\",result=\"ok\"}",
            3.0,
        ),
        (
            "toolplane_client_calls_total{client=\"limited\",result=\"rate_limited\"}",
            1.0,
        ),
        (
            "toolplane_client_calls_total{client=\"slow\",result=\"ok\"}",
            1.0,
        ),
        (
            "toolplane_client_calls_total{client=\"slow\",result=\"queue_full\"}",
            1.0,
        ),
        (
            "toolplane_client_calls_total{client=\"slow\",result=\"queue_timeout\"}",
            1.0,
        ),
        ("toolplane_client_calls_in_flight{client=\"slow\"}", 0.0),
        (
            "toolplane_client_queue_wait_seconds_count{client=\"slow\"}",
            1.0,
        ),
        (
            "toolplane_client_call_duration_seconds_count{client=\"limited\"}",
            4.0,
        ),
        ("toolplane_clients", 4.0),
    ] {
        assert_eq!(sample(&m, series), want, "{series}\n{m}");
    }
    // Unknown tokens: counted, and no limiter state made for them (the
    // limiter holds the one key of `limited`).
    assert!(sample(&m, "toolplane_unauthorized_total") >= 3.0);
    assert_eq!(sample(&m, "toolplane_rate_limiter_keys"), 1.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_client_sees_and_calls_only_its_tools_and_its_sessions() {
    let dirs = Dirs::new();
    let s = Server::start(&dirs, &[], &[], Some(&config()));

    let transport = crate::support::mcp_transport_with_token(s.url("/mcp"), "bot-token");
    let mcp = ().serve(transport).await.expect("MCP initialize with a bearer token");
    let mut names: Vec<String> = mcp
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["echo", "hash_sha256"]);
    let r = mcp
        .call_tool(
            CallToolRequestParams::new("echo")
                .with_arguments(json!({"k": 2}).as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    assert_eq!(r.structured_content, Some(json!({"k": 2})));
    let e = mcp
        .call_tool(
            CallToolRequestParams::new("sleep")
                .with_arguments(json!({"ms": 1}).as_object().unwrap().clone()),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("may not call tool") && e.contains("clients.tools"),
        "{e}"
    );
    mcp.cancel().await.unwrap();

    // A rate over MCP: an isError result with the REST answer's words.
    let transport = crate::support::mcp_transport_with_token(s.url("/mcp"), "limited-token");
    let mcp = ().serve(transport).await.unwrap();
    for _ in 0..3 {
        let r = mcp
            .call_tool(CallToolRequestParams::new("echo").with_arguments(serde_json::Map::new()))
            .await
            .unwrap();
        assert_eq!(r.is_error, Some(false), "{r:?}");
    }
    let r = mcp
        .call_tool(CallToolRequestParams::new("echo").with_arguments(serde_json::Map::new()))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true), "{r:?}");
    let text = format!("{:?}", r.content);
    assert!(
        text.contains("is over its rate, 3/h (burst 3) (clients.rate): retry in"),
        "{text}"
    );
    mcp.cancel().await.unwrap();

    // A session is its client's: another client naming it is told there
    // is no such session; no token at all is 401.
    let c = client();
    let r = c
        .post(s.url("/mcp"))
        .bearer_auth("bot-token")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(MCP_INIT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let session = r.headers()["mcp-session-id"].to_str().unwrap().to_string();
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    for (token, want) in [(Some("ops-token"), 404), (None, 401)] {
        let mut req = c
            .post(s.url("/mcp"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-06-18")
            .body(list);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        assert_eq!(req.send().await.unwrap().status(), want, "{token:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_list_is_read_again_while_serving() {
    let dirs = Dirs::new();
    let a = entry("a", "a-token", "tools = [\"*\"]");
    let b = entry("b", "b-token", "tools = [\"*\"]");
    let s = Server::start(&dirs, &[], &[], Some(&a));
    let status = |token: &'static str| {
        let url = s.url("/v1/tools/echo/call");
        async move {
            client()
                .post(url)
                .bearer_auth(token)
                .json(&json!({}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let until = |what: &'static str, token: &'static str, want: u16| {
        let status = &status;
        eventually(what, move || async move { status(token).await == want })
    };
    assert_eq!(status("a-token").await, 200);
    assert_eq!(status("b-token").await, 401);

    // A call in flight as `a` finishes after `a` is removed.
    let running = tokio::spawn({
        let url = s.url("/v1/tools/sleep/call");
        async move {
            client()
                .post(url)
                .bearer_auth("a-token")
                .json(&json!({"ms": 1500}))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(s.config_path(), &b).unwrap();
    until("b's token works", "b-token", 200).await;
    assert_eq!(status("a-token").await, 401);
    assert_eq!(running.await.unwrap(), 200, "the call in flight finished");

    // Files that do not parse, or would fault the limiter, or hold no
    // list (an editor's write caught half-way) keep the list served and
    // say why, without the values they hold.
    std::fs::write(s.config_path(), format!("{b}rate = \"fast\"\n")).unwrap();
    s.logged(&["clients[0] (b): rate: \"fast\""]).await;
    assert!(
        s.stderr().contains("keeping the 1 clients served"),
        "{}",
        s.stderr()
    );
    assert_eq!(status("b-token").await, 200);
    std::fs::write(s.config_path(), format!("{b}rate = 1e-300\n")).unwrap();
    s.logged(&["clients[0] (b): rate: 1e-300/s: accepted from 1 a day"])
        .await;
    std::fs::write(s.config_path(), format!("{b}tokn = \"s3cr3t-plain\"\n")).unwrap();
    s.logged(&["(tokn = …): unknown field"]).await;
    assert!(
        !s.stderr().contains("s3cr3t"),
        "a value reached the log:\n{}",
        s.stderr()
    );
    std::fs::write(s.config_path(), "").unwrap();
    s.logged(&["has no [[clients]]; keeping the 1 clients served"])
        .await;
    assert_eq!(status("b-token").await, 200);

    // SIGHUP reads the file again (and does not end the process); the
    // reloads above (a faulty rate among them) did not stop reloading.
    std::fs::write(s.config_path(), format!("{b}{a}")).unwrap();
    until("a's token works again", "a-token", 200).await;
    s.signal("HUP");
    s.logged(&["SIGHUP: 2 clients served"]).await;
    assert_eq!(status("b-token").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlinked_configuration_is_followed_and_sighup_without_clients_still_ends_the_server() {
    // A ConfigMap's layout: the file a link into a directory swapped whole.
    let root = tempfile::tempdir().unwrap();
    let (v1, v2) = (root.path().join("v1"), root.path().join("v2"));
    std::fs::create_dir_all(&v1).unwrap();
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::write(
        v1.join("toolplane.toml"),
        entry("a", "a-token", "tools = [\"*\"]"),
    )
    .unwrap();
    std::fs::write(
        v2.join("toolplane.toml"),
        entry("b", "b-token", "tools = [\"*\"]"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&v1, root.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/toolplane.toml", root.path().join("toolplane.toml"))
        .unwrap();
    let dirs = Dirs::new();
    let config = root.path().join("toolplane.toml");
    let s = Server::start(&dirs, &["--config", config.to_str().unwrap()], &[], None);
    let status = |token: &'static str| {
        let url = s.url("/v1/tools/echo/call");
        async move {
            client()
                .post(url)
                .bearer_auth(token)
                .json(&json!({}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(status("a-token").await, 200);
    // Swap the link, as kubelet does (a new link renamed over the old).
    std::os::unix::fs::symlink(&v2, root.path().join("..data_tmp")).unwrap();
    std::fs::rename(root.path().join("..data_tmp"), root.path().join("..data")).unwrap();
    assert!(
        soon(|| async { status("b-token").await == 200 }).await,
        "the swapped file read within 10 s:\n{}",
        s.stderr()
    );
    assert_eq!(status("a-token").await, 401);

    // Without [[clients]] nothing reloads, and SIGHUP ends the server as
    // it always did.
    let mut plain = Server::start(&dirs, &[], &[], None);
    plain.signal("HUP");
    plain.wait(Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_widens_a_clients_tools_is_announced_over_mcp() {
    let dirs = Dirs::new();
    let narrow = entry("a", "a-token", "tools = [\"echo\"]");
    let s = Server::start(&dirs, &[], &[], Some(&narrow));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let transport = crate::support::mcp_transport_with_token(s.url("/mcp"), "a-token");
    let mcp = crate::mcp::Watcher(tx).serve(transport).await.unwrap();
    assert_eq!(names(&mcp).await, ["echo"]);
    std::fs::write(
        s.config_path(),
        entry("a", "a-token", "tools = [\"echo\", \"sleep\"]"),
    )
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("notifications/tools/list_changed within 10 s of the reload")
        .unwrap();
    assert_eq!(names(&mcp).await, ["echo", "sleep"]);
    mcp.cancel().await.unwrap();
}

async fn names(
    mcp: &rmcp::service::RunningService<rmcp::RoleClient, crate::mcp::Watcher>,
) -> Vec<String> {
    let mut n: Vec<String> = mcp
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.into_owned())
        .collect();
    n.sort();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_refused_at_will_does_not_flood_the_log() {
    // 300 calls over a rate of 3 an hour, 300 out of scope, 300 for a tool
    // that does not exist: each refused and counted, but the log holds at
    // most FAILED_LINES lines a second of them, and the next line written
    // names how many were left out.
    let dirs = Dirs::new();
    let s = Server::start(&dirs, &[], &[], Some(&config()));
    let started = Instant::now();
    let mut refused = 0;
    for tool in ["echo", "sleep", "no.such.tool"] {
        for _ in 0..300 {
            let status = post(&s, tool, Some("limited-token"), json!({}))
                .await
                .status();
            if status != 200 {
                refused += 1;
            }
        }
    }
    assert!(refused >= 897, "{refused} refused");
    let lines = |log: &str| log.lines().filter(|l| l.contains("call failed")).count();
    let seconds = started.elapsed().as_secs_f64().ceil() as usize;
    let logged = lines(&s.stderr());
    assert!(
        logged <= toolplane_server::app::FAILED_LINES as usize * (seconds + 1),
        "{logged} lines in {seconds} s"
    );
    // A second later there is budget again: the next refusal's line says
    // how many were not written.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let _ = post(&s, "echo", Some("limited-token"), json!({})).await;
    s.logged(&["not_logged="]).await;
    let m = metrics(&s).await;
    assert!(
        sample(
            &m,
            "toolplane_client_calls_total{client=\"limited\",result=\"rate_limited\"}"
        ) >= 297.0,
        "{m}"
    );
}
