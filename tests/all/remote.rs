//! Remote MCP servers (`runtime = "remote"`): the FastMCP server of
//! `tests/upstreams/fastmcp_server.py` served over streamable HTTP on
//! loopback, reached with a header kept in a secret file; listed, called,
//! cancelled, its list_changed followed; and the server going away
//! mid-call and coming back.

use std::path::Path;
use std::time::{Duration, Instant};

use toolplane_core::Outcome;
use toolplane_pool::{LoadState, Tool};

use crate::mcp_upstream::{fastmcp, members};
use crate::remote_server::HttpServer;
use crate::wasi::{Rig, call, error_text, ok_json, rig_with};

/// A remote manifest for `url`, its key in the owner-only file `key`.
fn remote_manifest(dir: &Path, name: &str, url: &str, extra: &str) {
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!(
            "name = \"{name}\"\nruntime = \"remote\"\nurl = \"{url}\"\n[headers]\nx-api-key = {{ file = \"key\" }}\n{extra}"
        ),
    )
    .unwrap();
}

fn key_file(dir: &Path, key: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    let p = dir.join("key");
    std::fs::write(&p, key).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn down(rig: &Rig, name: &str) -> Option<String> {
    match rig
        .registry
        .snapshot()
        .by_name(name)
        .and_then(|e| e.loaded().cloned())
    {
        Some(Ok(t @ Tool::Process(_))) => t.down().map(|d| d.to_string()),
        other => panic!("{name}: not a loaded remote tool: {other:?}"),
    }
}

#[test]
fn a_remote_server_is_listed_called_cancelled_and_followed() {
    let server = HttpServer::start(fastmcp(), 0, "s3cret");
    let url = server.url();
    let rig = rig_with(
        |_| {},
        |dir| {
            key_file(dir, "s3cret");
            remote_manifest(dir, "rem", &url, "[limits]\ntimeout = \"1s\"\n");
        },
        |b| b.builtins(false).watch(false),
    );
    let snap = rig.registry.snapshot();
    let set = snap.by_name("rem").unwrap();
    assert_eq!(set.state(), LoadState::Ready, "{:?}", set.state());
    assert!(set.is_set());
    let listed = members(&rig, "rem");
    for t in ["add", "whoami", "slow", "count", "fail", "grow"] {
        assert!(listed.iter().any(|m| m == t), "{t} not in {listed:?}");
    }
    // Its schemas travel with each member, and are checked here.
    let add = snap.by_name("rem.add").unwrap();
    assert!(add.manifest.input_schema["properties"]["a"].is_object());
    let e = error_text(&call(&rig, "rem.add", r#"{"a":"two","b":3}"#));
    assert!(e.contains("rem.add"), "{e}");
    // The described runtime names the URL and the header, never its value.
    let described = add.manifest.runtime.describe();
    assert!(described.text.contains(&url), "{}", described.text);
    let fields = serde_json::Value::Object(described.fields).to_string();
    assert!(
        fields.contains("x-api-key") && !fields.contains("s3cret"),
        "{fields}"
    );

    assert_eq!(
        ok_json(&call(&rig, "rem.add", r#"{"a":2,"b":3}"#)),
        serde_json::json!({"result": 5})
    );
    let whoami = |rig: &Rig| {
        let v = ok_json(&call(rig, "rem.whoami", "{}"));
        assert_eq!(v["content"][0]["type"], "text", "{v}");
        v["content"][0]["text"].as_str().unwrap().to_string()
    };
    let first = whoami(&rig);
    let e = error_text(&call(&rig, "rem.fail", r#"{"why":"no quota left"}"#));
    assert!(e.contains("no quota left"), "{e}");

    // Past its deadline a call is cancelled; the session answers the ping
    // after it and is kept.
    let started = Instant::now();
    assert!(matches!(
        call(&rig, "rem.slow", r#"{"seconds":30}"#),
        Outcome::Timeout
    ));
    assert!(started.elapsed() < Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(whoami(&rig), first);
    assert!(down(&rig, "rem").is_none());

    // notifications/tools/list_changed: the new tool is listed and callable.
    assert!(matches!(
        call(&rig, "rem.grow", r#"{"name":"extra"}"#),
        Outcome::Ok(_)
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !members(&rig, "rem").contains(&"extra".to_string()) {
        assert!(
            Instant::now() < deadline,
            "list_changed did not list the new tool"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(ok_json(&call(&rig, "rem.extra", "{}"))["result"], "extra");
}

#[test]
fn a_remote_server_that_refuses_the_key_fails_the_load_naming_it() {
    let server = HttpServer::start(fastmcp(), 0, "right");
    let url = server.url();
    let rig = rig_with(
        |_| {},
        |dir| {
            key_file(dir, "wrong");
            remote_manifest(dir, "rem", &url, "");
        },
        |b| b.builtins(false).watch(false),
    );
    let LoadState::Failed(why) = rig.registry.snapshot().by_name("rem").unwrap().state() else {
        panic!("loaded with the wrong key");
    };
    let why = why.to_string();
    eprintln!("refused: {why}");
    assert!(
        why.contains(&url) && why.contains("401") && !why.contains("wrong"),
        "{why}"
    );
}

#[test]
fn a_remote_server_going_away_mid_call_fails_the_call_then_the_tool_comes_back() {
    let server = HttpServer::start(fastmcp(), 0, "k");
    let url = server.url();
    let port = server.port;
    let rig = rig_with(
        |_| {},
        |dir| {
            key_file(dir, "k");
            remote_manifest(dir, "rem", &url, "[limits]\ntimeout = \"20s\"\n");
        },
        |b| b.builtins(false).watch(false),
    );
    assert_eq!(
        ok_json(&call(&rig, "rem.add", r#"{"a":1,"b":1}"#)),
        serde_json::json!({"result": 2})
    );
    // The server dies while a call runs: the call fails soon, naming the
    // server, rather than waiting out its 20 s.
    let started = Instant::now();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        drop(server);
    });
    let out = call(&rig, "rem.slow", r#"{"seconds":15}"#);
    killer.join().unwrap();
    let took = started.elapsed();
    let e = error_text(&out);
    eprintln!("mid-call: {took:?}: {e}");
    assert!(took < Duration::from_secs(8), "took {took:?}: {e}");
    assert!(e.contains("rem"), "{e}");

    // While it is gone, calls fail, and soon at once, with the reason.
    let deadline = Instant::now() + Duration::from_secs(15);
    let why = loop {
        let e = error_text(&call(&rig, "rem.add", r#"{"a":1,"b":1}"#));
        if let Some(why) = down(&rig, "rem") {
            assert!(why.contains(&url), "{why}");
            break why;
        }
        assert!(Instant::now() < deadline, "never down; the last call: {e}");
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("down: {why}");
    assert!(why.contains("sessions keep failing"), "{why}");
    let quick = Instant::now();
    let e = error_text(&call(&rig, "rem.add", r#"{"a":1,"b":1}"#));
    assert!(quick.elapsed() < Duration::from_millis(500), "{e}");
    assert!(e.contains("keep failing"), "{e}");

    // Back on the same port: the supervisor's probe opens a session, and
    // calls are answered again.
    let _back = HttpServer::start(fastmcp(), port, "k");
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        match call(&rig, "rem.add", r#"{"a":2,"b":2}"#) {
            Outcome::Ok(_) => break,
            other => assert!(Instant::now() < deadline, "not back after 40 s: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(down(&rig, "rem").is_none());
}

#[test]
fn a_remote_manifest_is_checked_key_by_key() {
    let bad = [
        ("url = \"ftp://h/mcp\"", "http:// or https://"),
        ("url = \"http://user:pw@h/mcp\"", "credentials"),
        ("url = \"not a url\"", "not a URL"),
        (
            "url = \"http://h/mcp\"\n[headers]\nAccept = \"x\"",
            "headers.Accept",
        ),
        (
            "url = \"http://h/mcp\"\n[headers]\n\"bad header\" = \"x\"",
            "not an HTTP header name",
        ),
        (
            "url = \"http://h/mcp\"\ncommand = [\"x\"]",
            "unknown field `command`",
        ),
        (
            "url = \"http://h/mcp\"\n[limits]\nmemory = \"1 GiB\"",
            "unknown field `memory`",
        ),
        ("url = \"http:///mcp\"", "names no host"),
        (
            "url = \"http://h/mcp\"\n[headers]\nMcp-Method = \"tools/call\"",
            "headers.Mcp-Method",
        ),
        (
            "url = \"http://h/mcp\"\n[headers]\nConnection = \"close\"",
            "headers.Connection",
        ),
        (
            "url = \"http://h/mcp\"\n[headers]\nX-Key = \"a\"\nx-key = \"b\"",
            "name one header",
        ),
    ];
    for (keys, want) in bad {
        let text = format!("name = \"r\"\nruntime = \"remote\"\n{keys}\n");
        let e = toolplane_pool::manifest::Manifest::from_toml_str(&text, Path::new("r.toml"))
            .expect_err(keys)
            .to_string();
        assert!(e.starts_with("r.toml: ") && e.contains(want), "{keys}: {e}");
    }
    // What may hold a secret is never in a message: a password in a URL
    // that fails another check, a header's line in a TOML error.
    for (keys, secret) in [
        ("url = \"ftp://alice:hunter2@h/mcp\"", "hunter2"),
        ("url = \"http://alice:hunter2@h:99999/mcp\"", "hunter2"),
        ("url = \"http://h/mcp?key=hunter2#x\"", "hunter2"),
        (
            "url = \"http://h/mcp\"\n[headers]\nx-api-key = \"hunter2\" junk",
            "hunter2",
        ),
        (
            "url = \"http://h/mcp\"\n[headers]\nx-api-key = { env = \"X\", value = \"hunter2\" }",
            "hunter2",
        ),
    ] {
        let text = format!("name = \"r\"\nruntime = \"remote\"\n{keys}\n");
        let e = toolplane_pool::manifest::Manifest::from_toml_str(&text, Path::new("r.toml"))
            .expect_err(keys)
            .to_string();
        assert!(!e.contains(secret), "{keys}: {e}");
    }
    let long = format!("url = \"http://h/mcp?q={}\"", "a".repeat(4000));
    let e = toolplane_pool::manifest::Manifest::from_toml_str(
        &format!("name = \"r\"\nruntime = \"remote\"\n{long}\n"),
        Path::new("r.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("2048") && e.len() < 400, "{e}");
    // A key in the query is kept for the wire, never shown.
    let q = toolplane_pool::manifest::Manifest::from_toml_str(
        "name = \"r\"\nruntime = \"remote\"\nurl = \"https://h.example/mcp?token=hunter2\"\n",
        Path::new("r.toml"),
    )
    .unwrap();
    assert!(q.remote().unwrap().url.contains("hunter2"));
    let d = q.runtime.describe();
    let shown = format!("{} {}", d.text, serde_json::Value::Object(d.fields));
    assert!(
        !shown.contains("hunter2") && shown.contains("https://h.example/mcp?…"),
        "{shown}"
    );

    let ok = toolplane_pool::manifest::Manifest::from_toml_str(
        "name = \"r\"\nruntime = \"remote\"\nurl = \"https://mcp.example.com/mcp\"\n",
        Path::new("r.toml"),
    )
    .unwrap();
    let r = ok.remote().unwrap();
    assert_eq!((r.pool.max, r.pool.max_inflight_per_process), (1, 16));
    assert!(ok.is_set());
}

#[test]
fn a_remote_server_restarted_while_idle_is_called_again_at_once() {
    let server = HttpServer::start(fastmcp(), 0, "k");
    let url = server.url();
    let port = server.port;
    let rig = rig_with(
        |_| {},
        |dir| {
            key_file(dir, "k");
            remote_manifest(dir, "rem", &url, "");
        },
        |b| b.builtins(false).watch(false),
    );
    assert_eq!(
        ok_json(&call(&rig, "rem.add", r#"{"a":1,"b":1}"#)),
        serde_json::json!({"result": 2})
    );
    // Gone and back while no call ran: the session it had is unknown to
    // the new server (404), which is no reason to fail the next call.
    drop(server);
    std::thread::sleep(Duration::from_millis(300));
    let _back = HttpServer::start(fastmcp(), port, "k");
    assert_eq!(
        ok_json(&call(&rig, "rem.add", r#"{"a":2,"b":2}"#)),
        serde_json::json!({"result": 4})
    );
}
