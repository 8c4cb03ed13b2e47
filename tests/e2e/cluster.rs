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
    let a = Server::start(&dirs, &[], &[], Some(&config(&nats, "a", "")));
    let b = Server::start(&dirs, &[], &[], Some(&config(&nats, "b", "")));
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
