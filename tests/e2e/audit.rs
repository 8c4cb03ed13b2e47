//! `[audit]`: every call's record, written before the answer or soon
//! after it, read back by `toolplane audit`, through a `kill -9`, a flipped
//! byte and a full disk.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};
use sha2::Digest;
use toolplane_server::config::TokenDigest;

use crate::support::{Dirs, Server, binary, client, eventually, metric};

fn clients() -> String {
    [
        ("ops", "ops-token", "[\"*\"]"),
        ("bot", "bot-token", "[\"echo\"]"),
    ]
    .iter()
    .map(|(name, token, tools)| {
        format!(
            "[[clients]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\ntools = {tools}\n",
            TokenDigest::of(token).to_hex()
        )
    })
    .collect()
}

fn audit_table(dir: &Path, rest: &str) -> String {
    format!(
        "[audit]\ndir = \"{}\"\nnode = \"n1\"\n{rest}\n",
        dir.display()
    )
}

/// `toolplane audit ARGS --json`: the records, what it said on stderr, and
/// its exit code.
fn read_log(args: &[&str]) -> (Vec<Value>, String, i32) {
    let out = Command::new(binary())
        .arg("audit")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let records = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        records,
        String::from_utf8(out.stderr).unwrap(),
        out.status.code().unwrap_or(-1),
    )
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

async fn call(s: &Server, tool: &str, token: &str, body: &str) -> (u16, String) {
    let r = client()
        .post(s.url(&format!("/v1/tools/{tool}/call")))
        .bearer_auth(token)
        .header("traceparent", TRACEPARENT)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-toolplane-call-id"]
        .to_str()
        .unwrap()
        .to_string();
    (r.status().as_u16(), id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_recorded_with_its_id_and_read_back() {
    let dirs = Dirs::new();
    let log = tempfile::tempdir().unwrap();
    let config = format!("{}{}", clients(), audit_table(log.path(), ""));
    let mut s = Server::start(&dirs, &[], &[], Some(&config));
    let echo = r#"{"msg":"hello"}"#;
    let (ok, ok_id) = call(&s, "echo", "bot-token", echo).await;
    let (scope, scope_id) = call(&s, "sleep", "bot-token", r#"{"ms":1}"#).await;
    let (bad, bad_id) = call(&s, "sleep", "ops-token", r#"{"ms":"x"}"#).await;
    assert_eq!((ok, scope, bad), (200, 403, 400));
    assert_ne!(ok_id, scope_id);
    // Over MCP too, as the client that calls.
    let transport = crate::support::mcp_transport_with_token(s.url("/mcp"), "bot-token");
    let mcp = ().serve(transport).await.unwrap();
    // Its trace context in the request's _meta, where MCP places it.
    let mut params = CallToolRequestParams::new("echo")
        .with_arguments(json!({"over": "mcp"}).as_object().unwrap().clone());
    params.meta = Some(
        serde_json::from_value(json!({
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        }))
        .unwrap(),
    );
    mcp.call_tool(params).await.unwrap();
    mcp.cancel().await.unwrap();
    // A caller that goes away before the answer: the call is recorded as
    // abandoned.
    let gone = client()
        .post(s.url("/v1/tools/sleep/call"))
        .bearer_auth("ops-token")
        .timeout(Duration::from_millis(300))
        .json(&json!({"ms": 3000}))
        .send()
        .await;
    assert!(gone.is_err());
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.terminate();
    assert_eq!(s.wait(Duration::from_secs(30)), 0, "{}", s.stderr());

    let config_file = s.config_path().to_str().unwrap().to_string();
    let (records, err, code) = read_log(&["--config", &config_file]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(records.len(), 5, "{records:#?}");
    let abandoned = &records[4];
    assert_eq!(
        (
            &abandoned["tool"],
            &abandoned["outcome"],
            &abandoned["client"]
        ),
        (&json!("sleep"), &json!("abandoned"), &json!("ops"))
    );
    let by_id = |id: &str| records.iter().find(|r| r["call"] == id).unwrap();
    let r = by_id(&ok_id);
    assert_eq!(
        (&r["client"], &r["tool"], &r["outcome"], &r["node"]),
        (&json!("bot"), &json!("echo"), &json!("ok"), &json!("n1"))
    );
    let sha = format!("{:x}", sha2::Sha256::digest(echo.as_bytes()));
    assert_eq!(r["input_sha256"], sha.as_str());
    assert_eq!(r["input_bytes"], echo.len());
    assert_eq!(r["output_bytes"], echo.len());
    assert!(
        r.get("arguments").is_none(),
        "inputs are not kept by default"
    );
    assert_eq!(r["trace"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(by_id(&scope_id)["outcome"], "out_of_scope");
    assert_eq!(by_id(&bad_id)["outcome"], "invalid_input");
    assert_eq!(by_id(&bad_id)["client"], "ops");
    let over_mcp = &records[3];
    assert_eq!(
        (&over_mcp["client"], &over_mcp["tool"], &over_mcp["trace"]),
        (
            &json!("bot"),
            &json!("echo"),
            &json!("0af7651916cd43dd8448eb211c80319c")
        )
    );

    // Filters: by client and tool, by time.
    let dir = log.path().to_str().unwrap();
    let (only, _, _) = read_log(&["--dir", dir, "--client", "bot", "--tool", "ec*"]);
    assert_eq!(only.len(), 2, "{only:#?}");
    let (none, _, _) = read_log(&["--dir", dir, "--since", "2999-01-01T00:00:00Z"]);
    assert!(none.is_empty());
    let (all, _, _) = read_log(&["--dir", dir, "--since", "1h"]);
    assert_eq!(all.len(), 5);
    // Plain lines name the call.
    let plain = Command::new(binary())
        .args(["audit", "--dir", dir, "--tool", "sleep"])
        .output()
        .unwrap();
    let text = String::from_utf8(plain.stdout).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.contains(&format!("call={bad_id}")), "{text}");
}

/// Calls echo from 16 tasks until the server dies: the ids answered 200,
/// with when.
async fn load_until_killed(s: &Server, run: Duration) -> (Vec<(String, Instant)>, Instant) {
    let answered = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let url = s.url("/v1/tools/echo/call");
            let answered = Arc::clone(&answered);
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let c = client();
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let Ok(r) = c.post(&url).json(&json!({"task": t, "n": n})).send().await else {
                        break;
                    };
                    let id = r.headers().get("x-toolplane-call-id").cloned();
                    if r.status() == 200 && r.bytes().await.is_ok() {
                        let id = id.unwrap().to_str().unwrap().to_string();
                        answered.lock().unwrap().push((id, Instant::now()));
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(run).await;
    s.signal("KILL");
    let killed = Instant::now();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let v = answered.lock().unwrap().clone();
    (v, killed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_9_every_answered_call_is_on_disk_before_the_answer_and_nearly_all_async() {
    for durability in ["before-answer", "async"] {
        let dirs = Dirs::new();
        let log = tempfile::tempdir().unwrap();
        let config = audit_table(
            log.path(),
            &format!("durability = \"{durability}\"\nmax_delay = \"2ms\""),
        );
        let s = Server::start(&dirs, &[], &[], Some(&config));
        let (answered, killed) = load_until_killed(&s, Duration::from_millis(1500)).await;
        assert!(
            answered.len() > 200,
            "{durability}: {} answered",
            answered.len()
        );
        let (records, err, code) = read_log(&["--dir", log.path().to_str().unwrap()]);
        // A torn tail is said, and is no failure; nothing is corrupted.
        assert_eq!(code, 0, "{durability}: {err}");
        assert!(!err.contains("corrupted"), "{durability}: {err}");
        let on_disk: std::collections::HashSet<&str> = records
            .iter()
            .map(|r| r["call"].as_str().unwrap())
            .collect();
        let missing: Vec<&(String, Instant)> = answered
            .iter()
            .filter(|(id, _)| !on_disk.contains(id.as_str()))
            .collect();
        if durability == "before-answer" {
            assert!(
                missing.is_empty(),
                "{} of {} answered calls not on disk",
                missing.len(),
                answered.len()
            );
        } else {
            // Only records of the last commit interval may be lost: those
            // answered within a few milliseconds of the kill (the margin
            // is the test's own scheduling, not the log's).
            let late: Vec<Duration> = missing
                .iter()
                .map(|(_, at)| killed.saturating_duration_since(*at))
                .collect();
            assert!(
                late.iter().all(|d| *d < Duration::from_millis(100)),
                "async lost calls answered long before the kill: {late:?}"
            );
        }
    }
}

/// The offset of record `n` (from 0) in an audit file.
fn offset_of(bytes: &[u8], n: usize) -> usize {
    let mut at = 8;
    for _ in 0..n {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += 8 + len;
    }
    at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_is_reported_at_its_offset_and_the_rest_is_read() {
    let dirs = Dirs::new();
    let log = tempfile::tempdir().unwrap();
    let mut s = Server::start(&dirs, &[], &[], Some(&audit_table(log.path(), "")));
    for n in 0..20 {
        let r = client()
            .post(s.url("/v1/tools/echo/call"))
            .json(&json!({ "n": n }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    s.terminate();
    assert_eq!(s.wait(Duration::from_secs(30)), 0);
    let file = log.path().join("audit-0000000001.log");
    let mut bytes = std::fs::read(&file).unwrap();
    let at = offset_of(&bytes, 10);
    bytes[at + 30] ^= 0x04;
    std::fs::write(&file, &bytes).unwrap();
    let (records, err, code) = read_log(&["--dir", log.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("corrupted record at offset {at}")),
        "{err}"
    );
    assert!(err.contains("1 corrupted records"), "{err}");
    assert_eq!(records.len(), 19, "every other record read");
}

/// A tmpfs of `size` mounted on `dir` until dropped (the test runs as root,
/// as CI does).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a tmpfs on {} (needs root)", dir.display());
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_and_no_answer_goes_without_its_record() {
    let dirs = Dirs::new();
    let root = tempfile::tempdir().unwrap();
    let _fs = Tmpfs::mount(root.path(), "256k");
    let log = root.path().join("audit");
    // All but a few KiB taken.
    let filler = root.path().join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4k", "count=62"])
        .arg(format!("of={}", filler.display()))
        .output()
        .unwrap();
    let config = audit_table(
        &log,
        "durability = \"before-answer\"\nfull_wait = \"200ms\"",
    );
    let mut s = Server::start(&dirs, &[], &[], Some(&config));
    let big = json!({ "pad": "x".repeat(900) });
    let mut answered = Vec::new();
    let mut refused = None;
    for _ in 0..200 {
        let r = client()
            .post(s.url("/v1/tools/echo/call"))
            .json(&big)
            .send()
            .await
            .unwrap();
        let id = r.headers()["x-toolplane-call-id"]
            .to_str()
            .unwrap()
            .to_string();
        if r.status() == 200 {
            answered.push(id);
            continue;
        }
        assert_eq!(r.status(), 503);
        refused = Some(r.json::<Value>().await.unwrap());
        break;
    }
    let refused = refused.expect("a full disk refused a call");
    assert_eq!(refused["error"]["kind"], "audit_unavailable", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("No space left on device") && message.contains("audit-0000000001.log"),
        "{message}"
    );
    // Not ready, and said in the metrics, while the disk is full.
    let r = client().get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("audit"));
    let failing = metric(&client(), &s.url("/metrics"), "toolplane_audit_failing").await;
    assert_eq!(failing, 1.0);
    // Room again: the log catches up, calls are answered, ready.
    std::fs::remove_file(&filler).unwrap();
    eventually("calls answered again", || async {
        client()
            .post(s.url("/v1/tools/echo/call"))
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
    let r = client().get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    s.terminate();
    assert_eq!(s.wait(Duration::from_secs(30)), 0, "{}", s.stderr());
    // Every call answered is there, and the failed write left no torn frame.
    let (records, err, code) = read_log(&["--dir", log.to_str().unwrap()]);
    assert_eq!((code, err.as_str()), (0, ""));
    let ids: std::collections::HashSet<&str> = records
        .iter()
        .map(|r| r["call"].as_str().unwrap())
        .collect();
    assert!(answered.iter().all(|id| ids.contains(id.as_str())));
}
