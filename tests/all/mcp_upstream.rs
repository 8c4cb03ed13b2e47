//! Process tools with the `mcp` protocol: real MCP servers as upstreams,
//! `@modelcontextprotocol/server-filesystem` from npm and a FastMCP server
//! written with the Python `mcp` SDK (both installed, pinned, by
//! `tests/upstreams/setup.sh`, which `./dev test` runs).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use toolplane_core::Outcome;
use toolplane_pool::{LoadState, Tool};

use crate::wasi::{Rig, call, error_text, ok_json, rig_with};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// An installed upstream's file, or a panic saying how to install it.
fn installed(rel: &str) -> String {
    let p = repo().join(rel);
    assert!(
        p.exists(),
        "{} is missing: run tests/upstreams/setup.sh (./dev test does)",
        p.display()
    );
    p.display().to_string()
}

fn filesystem_server() -> String {
    installed("tests/upstreams/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js")
}

pub fn fastmcp() -> (String, String) {
    (
        installed("target/interop-venv-1.30.0/bin/python"),
        installed("tests/upstreams/fastmcp_server.py"),
    )
}

pub fn mcp_manifest(dir: &Path, name: &str, command: &[&str], extra: &str) {
    let command: Vec<String> = command.iter().map(|c| format!("{c:?}")).collect();
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!(
            "name = \"{name}\"\nruntime = \"process\"\nprotocol = \"mcp\"\ncommand = [{}]\n{extra}",
            command.join(", ")
        ),
    )
    .unwrap();
}

pub fn members(rig: &Rig, set: &str) -> Vec<String> {
    let prefix = format!("{set}.");
    rig.registry
        .snapshot()
        .iter()
        .filter(|e| e.set.as_deref() == Some(set))
        .map(|e| e.manifest.name.strip_prefix(&prefix).unwrap().to_string())
        .collect()
}

fn stats(rig: &Rig, name: &str) -> toolplane_pool::process::ProcessStats {
    match rig
        .registry
        .snapshot()
        .by_name(name)
        .and_then(|e| e.loaded().cloned())
    {
        Some(Ok(Tool::Process(p))) => p.stats(),
        other => panic!("{name}: not a loaded process tool: {other:?}"),
    }
}

#[test]
fn an_mcp_server_from_npm_serves_its_tools_inside_its_sandbox() {
    let server = filesystem_server();
    let rig = rig_with(
        |_| {},
        |dir| {
            mcp_manifest(
                dir,
                "files",
                &["node", &server, "{data}"],
                "[pool]\nmax_inflight_per_process = 8\n",
            )
        },
        |b| b.builtins(false).watch(false),
    );
    let snap = rig.registry.snapshot();
    let set = snap.by_name("files").unwrap();
    assert_eq!(set.state(), LoadState::Ready);
    assert!(set.is_set());
    assert!(
        !snap.by_name("files.write_file").unwrap().is_set(),
        "a member is a tool"
    );
    let listed = members(&rig, "files");
    for t in [
        "read_text_file",
        "write_file",
        "list_directory",
        "list_allowed_directories",
    ] {
        assert!(listed.iter().any(|m| m == t), "{t} not in {listed:?}");
    }
    // Its own schema and annotations travel with each member.
    let write = snap.by_name("files.write_file").unwrap();
    assert!(
        write.manifest.input_schema["properties"]["path"].is_object(),
        "{}",
        write.manifest.input_schema
    );
    assert_eq!(write.manifest.annotations.read_only, Some(false));

    let data = rig.data.path().canonicalize().unwrap();
    let target = data.join("note.txt");
    let out = call(
        &rig,
        "files.write_file",
        &serde_json::json!({"path": target, "content": "hello from toolplane"}).to_string(),
    );
    assert!(matches!(out, Outcome::Ok(_)), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "hello from toolplane"
    );
    let read = ok_json(&call(
        &rig,
        "files.read_text_file",
        &serde_json::json!({"path": target}).to_string(),
    ));
    assert!(read.to_string().contains("hello from toolplane"), "{read}");
    // Outside the directory it was given: the server refuses.
    let e = error_text(&call(
        &rig,
        "files.read_text_file",
        r#"{"path":"/etc/hostname"}"#,
    ));
    assert!(e.contains("denied") || e.contains("outside"), "{e}");
    // The input schema is checked before the upstream sees the call.
    let e = error_text(&call(&rig, "files.read_text_file", r#"{"pat":"x"}"#));
    assert!(e.contains("schema"), "{e}");
    // The set itself is not a tool.
    let e = error_text(&call(&rig, "files", "{}"));
    assert!(
        e.contains("is a set of tools") && e.contains("files.write_file"),
        "{e}"
    );
}

#[test]
fn a_fastmcp_upstream_answers_cancels_recovers_and_grows() {
    let (python, script) = fastmcp();
    let rig = rig_with(
        |_| {},
        |dir| {
            mcp_manifest(
                dir,
                "up",
                &[&python, &script],
                "[pool]\nmin = 1\nmax = 1\nmax_inflight_per_process = 16\n[limits]\ntimeout = \"2s\"\n",
            )
        },
        |b| b.builtins(false).watch(false),
    );
    assert_eq!(
        ok_json(&call(&rig, "up.add", r#"{"a":2,"b":3}"#)),
        serde_json::json!({"result": 5}),
        "structured content is the output"
    );
    let pid = |rig: &Rig| {
        let v = ok_json(&call(rig, "up.whoami", "{}"));
        // Unstructured: the content blocks as they are.
        assert_eq!(v["content"][0]["type"], "text", "{v}");
        v["content"][0]["text"].as_str().unwrap().to_string()
    };
    let first = pid(&rig);
    let e = error_text(&call(&rig, "up.fail", r#"{"why":"no quota left"}"#));
    assert!(e.contains("no quota left"), "{e}");

    // A call past its deadline is cancelled; the process answers the ping
    // that follows, so it lives on.
    let started = Instant::now();
    assert!(matches!(
        call(&rig, "up.slow", r#"{"seconds":30}"#),
        Outcome::Timeout
    ));
    assert!(started.elapsed() < Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(pid(&rig), first, "a process that honours cancels is kept");

    // One that stops answering (its event loop blocked) is killed after
    // the cancel, and replaced.
    assert!(matches!(call(&rig, "up.freeze", "{}"), Outcome::Timeout));
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats(&rig, "up").restarts == 0 {
        assert!(
            Instant::now() < deadline,
            "the frozen process was not killed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_ne!(pid(&rig), first, "the frozen process was replaced");

    // notifications/tools/list_changed: the new tool is listed and callable.
    assert!(!members(&rig, "up").contains(&"extra".to_string()));
    assert!(matches!(
        call(&rig, "up.grow", r#"{"name":"extra"}"#),
        Outcome::Ok(_)
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !members(&rig, "up").contains(&"extra".to_string()) {
        assert!(
            Instant::now() < deadline,
            "list_changed did not list the new tool"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(ok_json(&call(&rig, "up.extra", "{}"))["result"], "extra");
}

#[test]
fn an_upstream_that_never_finishes_starting_fails_its_load_in_time() {
    let rig = rig_with(
        |_| {},
        |dir| {
            mcp_manifest(
                dir,
                "mute",
                &["sh", "-c", "echo 'warming the cache' >&2; exec sleep 600"],
                "[limits]\nstartup_timeout = \"500ms\"\n",
            )
        },
        |b| b.builtins(false).watch(false),
    );
    let snap = rig.registry.snapshot();
    let LoadState::Failed(why) = snap.by_name("mute").unwrap().state() else {
        panic!("mute loaded");
    };
    let why = why.to_string();
    assert!(
        why.contains("did not finish starting")
            && why.contains("500ms")
            && why.contains("warming the cache"),
        "{why}"
    );
    assert!(members(&rig, "mute").is_empty());
}
