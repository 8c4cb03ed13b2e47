//! toolplane nodes joined through a real `nats-server` (Debian's 2.9.10,
//! started by each test on loopback with its own store): a call taken at
//! any node runs on some node and is answered once, through the node that
//! took it; each key's calls keep their order; settings the cluster does
//! not share are refused at start; readiness follows the connection.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use toolplane_cluster::local::LocalNats;

use crate::rest::post;
use crate::support::{Dirs, Server, binary, client, metric, serve_command};

fn config(nats: &LocalNats, node: &str, extra: &str) -> String {
    format!(
        "[cluster]\nnats = \"{}\"\nnode = \"{node}\"\npartitions = 8\nack_wait = \"2s\"\n{extra}",
        nats.url()
    )
}

async fn keyed(
    c: &reqwest::Client,
    s: &Server,
    tool: &str,
    key: u64,
    body: &str,
) -> (u16, serde_json::Value) {
    let r = c
        .post(s.url(&format!("/v1/tools/{tool}/call")))
        .header("content-type", "application/json")
        .header("x-toolplane-key", key.to_string())
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_taken_at_either_node_run_on_both_once_each_and_in_order_per_key() {
    let store = tempfile::tempdir().unwrap();
    let nats = LocalNats::start(store.path()).unwrap();
    // One data directory for both nodes: each call appends `key:seq` to
    // its key's file, wherever it runs.
    let dirs = Dirs::new();
    // Each node's audit log names the node that ran each call.
    let logs = tempfile::tempdir().unwrap();
    let audit = |n: &str| {
        let d = logs.path().join(n);
        format!("[audit]\ndir = {:?}\n", d.to_str().unwrap())
    };
    let a = Server::start(&dirs, &[], &[], Some(&config(&nats, "a", &audit("a"))));
    let b = Server::start(&dirs, &[], &[], Some(&config(&nats, "b", &audit("b"))));
    a.logged(&["cluster: node a on NATS 127.0.0.1:"]).await;
    let c = client();
    let (keys, per_key) = (24u64, 12u64);
    let mut tasks = Vec::new();
    for key in 0..keys {
        let (c, urls) = (c.clone(), [a.url(""), b.url("")]);
        tasks.push(tokio::spawn(async move {
            for seq in 0..per_key {
                let url = &urls[((key + seq) % 2) as usize];
                let r = c
                    .post(format!("{url}/v1/tools/fs.write/call"))
                    .header("x-toolplane-key", key.to_string())
                    .json(&json!({"path": format!("k{key}.log"), "content": format!("{key}:{seq}\n"), "append": true}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "key {key} seq {seq}: {}", r.text().await.unwrap());
            }
        }));
    }
    // Keyless calls beside them, at both doors.
    for i in 0..40u64 {
        let s = if i % 2 == 0 { &a } else { &b };
        let (st, v) = post(&c, s, "echo", &format!("{{\"i\":{i}}}")).await;
        assert_eq!((st, v), (200, json!({ "i": i })));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for key in 0..keys {
        let text = std::fs::read_to_string(dirs.data.path().join(format!("k{key}.log"))).unwrap();
        let want: String = (0..per_key).map(|s| format!("{key}:{s}\n")).collect();
        assert_eq!(text, want, "key {key}: every call once, in order");
    }
    // Both nodes took calls and ran calls.
    let mut pulled = 0.0;
    for s in [&a, &b] {
        let m = s.url("/metrics");
        assert!(metric(&c, &m, "toolplane_cluster_published_total").await >= 100.0);
        let p = metric(&c, &m, "toolplane_cluster_pulled_total").await;
        assert!(p > 0.0, "{}", s.stderr());
        pulled += p;
        assert_eq!(metric(&c, &m, "toolplane_cluster_connected").await, 1.0);
    }
    assert_eq!(pulled, (keys * per_key + 40) as f64);
    // Every call taken at node a is in a's audit log, naming the node
    // that ran it: some ran on b.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = Command::new(binary())
        .args(["audit", "--json", "--dir"])
        .arg(logs.path().join("a"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut ran = std::collections::HashMap::<String, u64>::new();
    for line in text.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(r["node"], "a", "{line}");
        *ran.entry(r["ran_on"].as_str().unwrap_or("-").to_string())
            .or_default() += 1;
    }
    let taken_at_a = metric(&c, &a.url("/metrics"), "toolplane_cluster_published_total").await;
    assert_eq!(ran.values().sum::<u64>() as f64, taken_at_a, "{ran:?}");
    assert!(
        ran.get("a").is_some_and(|n| *n > 0) && ran.get("b").is_some_and(|n| *n > 0),
        "{ran:?}"
    );
    // A tool's error comes back as the error it is.
    let (st, v) = post(&c, &a, "echo", "[1]").await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = keyed(&c, &b, "fs.read", 1, r#"{"path":"../x"}"#).await;
    assert_eq!(st, 422, "{v}");
    assert!(v.to_string().contains("`..` is not allowed"), "{v}");
}

/// `toolplane serve` that is expected to fail at start: its exit code
/// and what it said.
fn refused(dirs: &Dirs, args: &[&str], config: Option<&str>) -> (i32, String) {
    let mut cmd = serve_command(dirs);
    cmd.args(["--http", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let file = config.map(|text| {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    });
    if let Some(f) = &file {
        cmd.arg("--config").arg(f.path());
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("toolplane serve {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_the_cluster_does_not_share_are_refused_at_start_naming_them() {
    let dirs = Dirs::new();
    // Nothing listens there: an error, never a single-node fallback.
    let (code, err) = refused(&dirs, &["--cluster", "nats://127.0.0.1:1"], None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("cluster.nats: cannot reach nats://127.0.0.1:1"),
        "{err}"
    );
    let (code, err) = refused(&dirs, &["--cluster", "http://x"], None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--cluster: cluster.nats: \"http://x\" is not a NATS URL"),
        "{err}"
    );

    let (code, err) = refused(&dirs, &["--node", "x"], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--node names this node in a cluster"), "{err}");

    let store = tempfile::tempdir().unwrap();
    let nats = LocalNats::start(store.path()).unwrap();
    let a = Server::start(&dirs, &[], &[], Some(&config(&nats, "a", "")));
    a.logged(&["cluster: node a"]).await;
    let other = format!(
        "[cluster]\nnats = \"{}\"\nnode = \"b\"\npartitions = 16\nack_wait = \"2s\"\n",
        nats.url()
    );
    let (code, err) = refused(&dirs, &[], Some(&other));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("stream TOOLPLANE_CALLS exists with partitions = 8, this node asks 16 (cluster.partitions)"),
        "{err}"
    );
    let (code, err) = refused(&dirs, &[], Some(&config(&nats, "b", "max_deliver = 9\n")));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("max_deliver = 5, this node asks 9 (cluster.max_deliver)"),
        "{err}"
    );
    let (code, err) = refused(&dirs, &[], Some(&config(&nats, "a", "")));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("cluster.node: a node named \"a\" is alive"),
        "{err}"
    );
    // `--cluster` names the server and `--node` the node; the rest comes
    // from [cluster].
    let b = Server::start(
        &dirs,
        &["--cluster", &nats.url(), "--node", "b"],
        &[],
        Some(&config(&nats, "z", "").replace(&nats.url(), "nats://127.0.0.1:1")),
    );
    b.logged(&["cluster: node b"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_connection_and_a_restarted_server_is_rejoined() {
    let store = tempfile::tempdir().unwrap();
    let mut nats = LocalNats::start(store.path()).unwrap();
    let dirs = Dirs::new();
    let a = Server::start(&dirs, &[], &[], Some(&config(&nats, "a", "")));
    let c = client();
    let ready = |c: &reqwest::Client| {
        let (c, url) = (c.clone(), a.url("/readyz"));
        async move { c.get(url).send().await.unwrap().status().as_u16() }
    };
    crate::support::eventually("ready", || async { ready(&c).await == 200 }).await;
    let (st, _) = keyed(&c, &a, "echo", 5, "{}").await;
    assert_eq!(st, 200);
    // The server restarted, its store kept: the node says it is not
    // ready while the connection is down, reconnects by itself, and
    // calls go through again.
    nats.restart().unwrap();
    // A call made while the node reconnects waits for it (a moment).
    let (st, v) = keyed(&c, &a, "echo", 5, r#"{"after":true}"#).await;
    assert_eq!((st, v), (200, json!({"after": true})), "{}", a.stderr());
    crate::support::eventually("ready again", || async { ready(&c).await == 200 }).await;
    // Down for good: not ready, naming NATS; calls refused, not run.
    drop(nats);
    crate::support::eventually("not ready", || async { ready(&c).await == 503 }).await;
    let body = c
        .get(a.url("/readyz"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("the connection to NATS"), "{body}");
    let (st, v) = keyed(&c, &a, "echo", 5, "{}").await;
    assert_eq!(st, 503, "{v}");
    assert!(
        v.to_string().contains("the cluster did not take the call"),
        "{v}"
    );
}

#[test]
fn the_command_line_names_the_cluster_flag() {
    let out = Command::new(binary())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--cluster <URL>"), "{text}");
}

/// A caller beside the nodes: a cluster member that takes no calls of
/// its own and pulls none, so that a key's next call can be submitted
/// (stored in the stream, its place taken) before the last is answered.
async fn caller(nats: &LocalNats) -> std::sync::Arc<toolplane_cluster::Cluster> {
    let mut o = toolplane_cluster::Options::new(vec![nats.url()], "caller".into());
    o.partitions = 8;
    o.ack_wait = Duration::from_secs(2);
    toolplane_cluster::Cluster::connect(o).await.unwrap()
}

fn request<'a>(
    call: &'a str,
    tool: &'a str,
    key: Option<u64>,
    input: &'a [u8],
) -> toolplane_cluster::Request<'a> {
    toolplane_cluster::Request {
        call,
        tool,
        key,
        input,
        client: "test",
        wait: Duration::from_secs(20),
        start_by: Duration::from_secs(15),
        traceparent: None,
        tracestate: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_killed_and_restarted_lose_nothing_and_keep_each_keys_order() {
    const KEYS: u64 = 1000;
    const WORKERS: u64 = 50;
    // A worker's calls not yet answered: a key's next calls are
    // submitted while its earlier ones wait.
    const DEPTH: usize = 60;
    let (run, kill_at, restart_at) = (
        Duration::from_secs(12),
        Duration::from_secs(4),
        Duration::from_secs(8),
    );
    let store = tempfile::tempdir().unwrap();
    let nats = LocalNats::start(store.path()).unwrap();
    // One data directory: each call appends its sequence number to its
    // key's file, wherever it runs.
    let dirs = Dirs::new();
    let a = Server::start(&dirs, &[], &[], Some(&config(&nats, "a", "")));
    let b = Server::start(&dirs, &[], &[], Some(&config(&nats, "b", "")));
    let mut c = Server::start(&dirs, &[], &[], Some(&config(&nats, "c", "")));
    for s in [&a, &b, &c] {
        s.logged(&["cluster: node "]).await;
    }
    let caller = caller(&nats).await;
    let http = client();
    let start = Instant::now();

    // Each worker owns KEYS / WORKERS keys and goes round them, one call
    // at a time, awaiting the oldest answer once DEPTH wait. Each answer:
    // (key, seq, when answered, result, message, how long it took).
    type Answer = (u64, u64, Duration, String, String, Duration);
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let caller = std::sync::Arc::clone(&caller);
        workers.push(tokio::spawn(async move {
            let keys: Vec<u64> = (w..KEYS).step_by(WORKERS as usize).collect();
            let mut next = vec![0u64; keys.len()];
            let mut answers: Vec<Answer> = Vec::new();
            let mut waiting = std::collections::VecDeque::new();
            let mut i = 0usize;
            loop {
                if start.elapsed() < run && waiting.len() < DEPTH {
                    let (slot, key) = (i % keys.len(), keys[i % keys.len()]);
                    i += 1;
                    let seq = next[slot];
                    next[slot] += 1;
                    let call = format!("{:016x}{key:08x}{seq:08x}", 0xfa17u64);
                    let input = json!({"path": format!("k{key}.log"), "content": format!("{seq}\n"), "append": true}).to_string();
                    let p = caller
                        .submit(request(&call, "fs.write", Some(key), input.as_bytes()))
                        .await
                        .unwrap_or_else(|e| panic!("key {key} seq {seq}: not taken: {e}"));
                    waiting.push_back((key, seq, p, start.elapsed()));
                    continue;
                }
                let Some((key, seq, p, submitted)) = waiting.pop_front() else {
                    break;
                };
                let o = p
                    .answer()
                    .await
                    .unwrap_or_else(|e| panic!("key {key} seq {seq}: no answer: {e}"));
                let at = start.elapsed();
                answers.push((key, seq, at, o.result, o.message, at - submitted));
            }
            answers
        }));
    }
    // Keyless calls through the front doors of the nodes that live
    // throughout: each answered.
    let doors = {
        let (http, urls) = (http.clone(), [a.url(""), b.url("")]);
        tokio::spawn(async move {
            let mut n = 0u64;
            while start.elapsed() < run {
                let r = http
                    .post(format!("{}/v1/tools/echo/call", urls[(n % 2) as usize]))
                    .json(&json!({ "n": n }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "echo {n}: {}", r.text().await.unwrap());
                assert_eq!(
                    r.json::<serde_json::Value>().await.unwrap(),
                    json!({ "n": n })
                );
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(kill_at.saturating_sub(start.elapsed())).await;
    let ran_on_c = metric(&http, &c.url("/metrics"), "toolplane_cluster_pulled_total").await;
    assert!(ran_on_c > 0.0, "node c ran nothing before it was killed");
    c.signal("KILL");
    let _ = c.wait(Duration::from_secs(5));
    let killed = start.elapsed();
    tokio::time::sleep(restart_at.saturating_sub(start.elapsed())).await;
    // Restarted under its own name: the node that died says nothing more,
    // and the new one takes its place.
    let c = Server::start(&dirs, &[], &[], Some(&config(&nats, "c", "")));
    let mut answers = Vec::new();
    for w in workers {
        answers.extend(w.await.unwrap());
    }
    let echoes = doors.await.unwrap();

    // Every call answered once (one answer per submitted call, by
    // construction of the wait), none lost; per key, the file holds each
    // call at most once and in the order submitted; every call answered
    // `ok` ran; a call answered otherwise was one node c held when it
    // died (a run marker, no result: "outcome unknown").
    let mut by_key: std::collections::HashMap<u64, Vec<&Answer>> = Default::default();
    for ans in &answers {
        by_key.entry(ans.0).or_default().push(ans);
    }
    assert_eq!(by_key.len() as u64, KEYS);
    let mut unknown = 0;
    for (key, mut list) in by_key {
        list.sort_by_key(|x| x.1);
        for (i, x) in list.iter().enumerate() {
            assert_eq!(x.1, i as u64, "key {key}: call {i} has no answer");
        }
        let text = std::fs::read_to_string(dirs.data.path().join(format!("k{key}.log")))
            .unwrap_or_default();
        let ran: Vec<u64> = text.lines().map(|l| l.parse().unwrap()).collect();
        assert!(
            ran.windows(2).all(|w| w[0] < w[1]),
            "key {key}: run out of order or twice: {ran:?}"
        );
        for x in &list {
            match x.3.as_str() {
                "ok" => assert!(
                    ran.contains(&x.1),
                    "key {key}: call {} answered ok, not run",
                    x.1
                ),
                "error"
                    if x.4
                        .contains("outcome unknown: the call started on node \"c\"") =>
                {
                    unknown += 1;
                }
                other => panic!("key {key} call {}: {other}: {}", x.1, x.4),
            }
        }
    }
    // The redelivered window is bounded: node c held at most one call per
    // partition.
    assert!(unknown <= 8, "{unknown} calls answered outcome unknown");
    // Throughput: calls answered per second before the kill, and from
    // ack_wait (2s) after it to the restart.
    let rate = |from: Duration, to: Duration| {
        answers.iter().filter(|x| x.2 >= from && x.2 < to).count() as f64
            / (to - from).as_secs_f64()
    };
    let before = rate(Duration::from_secs(1), killed);
    let after = rate(killed + Duration::from_secs(3), restart_at);
    let mut redelivered = 0.0;
    for s in [&a, &b] {
        redelivered += metric(
            &http,
            &s.url("/metrics"),
            "toolplane_cluster_redelivered_total",
        )
        .await;
    }
    // The slowest answer before the kill, and after it (a call node c
    // held waits out ack_wait, then runs elsewhere).
    let slowest = |from: Duration, to: Duration| {
        answers
            .iter()
            .filter(|x| x.2 >= from && x.2 < to)
            .map(|x| x.5)
            .max()
            .unwrap_or_default()
    };
    eprintln!(
        "{} calls ({} echo), {before:.0}/s before the kill, {after:.0}/s from 3s after it; slowest answer {:?} before the kill, {:?} after it; node c pulled {ran_on_c} before; {redelivered} delivered again on a and b; {unknown} outcome unknown",
        answers.len(),
        echoes,
        slowest(Duration::from_secs(1), killed),
        slowest(killed, restart_at),
    );
    assert!(
        after > before * 0.5,
        "{before:.0}/s before, {after:.0}/s after"
    );
    // The restarted node took calls again.
    let m = c.url("/metrics");
    assert!(
        metric(&http, &m, "toolplane_cluster_pulled_total").await > 0.0,
        "{}",
        c.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_nodes_calls_are_answered_elsewhere_and_it_does_not_answer_them_again() {
    let store = tempfile::tempdir().unwrap();
    let nats = LocalNats::start(store.path()).unwrap();
    let dirs = Dirs::new();
    let a = Server::start(&dirs, &[], &[], Some(&config(&nats, "a", "")));
    let c = Server::start(&dirs, &[], &[], Some(&config(&nats, "c", "")));
    for s in [&a, &c] {
        s.logged(&["cluster: node "]).await;
    }
    let caller = caller(&nats).await;
    let http = client();
    // Keyless calls of a read-only tool that takes a while: both nodes
    // run some.
    let input = json!({ "ms": 400 }).to_string();
    let ids: Vec<String> = (0..60u64)
        .map(|i| format!("{:016x}{i:016x}", 0x5709u64))
        .collect();
    let mut pending = Vec::new();
    for id in &ids {
        pending.push(
            caller
                .submit(request(id, "sleep", None, input.as_bytes()))
                .await
                .unwrap(),
        );
    }
    let running = |s: &Server| {
        let (http, m) = (http.clone(), s.url("/metrics"));
        async move { metric(&http, &m, "toolplane_cluster_running").await }
    };
    crate::support::eventually("node c runs calls", || async { running(&c).await > 0.0 }).await;
    // Paused past ack_wait (2s): the calls it holds are delivered again,
    // to node a, and answered there.
    c.signal("STOP");
    let paused = Instant::now();
    let mut nodes = std::collections::HashMap::<String, usize>::new();
    for p in pending {
        let o = p.answer().await.unwrap();
        assert_eq!(o.result, "ok", "{}", o.message);
        *nodes.entry(o.node).or_default() += 1;
    }
    assert!(
        paused.elapsed() > Duration::from_secs(2),
        "answered before ack_wait: {nodes:?}"
    );
    assert!(nodes.get("a").copied().unwrap_or(0) > 0, "{nodes:?}");
    let redelivered = metric(
        &http,
        &a.url("/metrics"),
        "toolplane_cluster_redelivered_total",
    )
    .await;
    assert!(redelivered > 0.0, "nothing was delivered again: {nodes:?}");
    // Resumed: what it held is answered already; it finds so (the results
    // bucket says who won) and sends no second answer.
    c.signal("CONT");
    let m = c.url("/metrics");
    crate::support::eventually("node c finds its calls answered", || async {
        metric(&http, &m, "toolplane_cluster_lost_races_total").await
            + metric(&http, &m, "toolplane_cluster_duplicates_suppressed_total").await
            > 0.0
    })
    .await;
    crate::support::eventually("node c is idle", || async { running(&c).await == 0.0 }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stale = caller
        .stats()
        .stale_answers
        .load(std::sync::atomic::Ordering::Relaxed);
    let suppressed = metric(&http, &m, "toolplane_cluster_duplicates_suppressed_total").await;
    // An answer sent again for a call found answered reaches no waiting
    // caller: counted, never a second answer.
    assert!(
        stale as f64 <= suppressed,
        "{stale} stale answers, {suppressed} suppressed"
    );
    let calls_ok = metric(&http, &a.url("/metrics"), "toolplane_cluster_pulled_total").await
        + metric(&http, &m, "toolplane_cluster_pulled_total").await;
    assert!(calls_ok >= 60.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_shows_the_nodes_and_partitions_without_joining() {
    let store = tempfile::tempdir().unwrap();
    let nats = LocalNats::start(store.path()).unwrap();
    let dirs = Dirs::new();
    let a = Server::start(&dirs, &[], &[], Some(&config(&nats, "a", "")));
    a.logged(&["cluster: node a"]).await;
    let status = |args: &[&str]| {
        let out = Command::new(binary())
            .args(["cluster", "status"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = status(&["--cluster", &nats.url()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("8 partitions, ack_wait 2s"), "{out}");
    assert!(out.contains("1 live nodes\n  a "), "{out}");
    assert!(out.contains("\n  k0 ") && out.contains("\n  any "), "{out}");
    // The same as JSON, read from a configuration's [cluster].
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), config(&nats, "z", "")).unwrap();
    let (code, out, err) = status(&["--config", f.path().to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["partitions"], 8);
    assert_eq!(v["nodes"][0]["name"], "a");
    assert_eq!(v["consumers"].as_array().unwrap().len(), 9);
    // Nothing to read: named.
    let (code, _, err) = status(&[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("give --cluster URL or --config FILE"), "{err}");
    let (code, _, err) = status(&["--cluster", "nats://127.0.0.1:1"]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot reach nats://127.0.0.1:1"), "{err}");
}
