//! Process tools with the `exec` protocol: real programs (`sh`, `tr`,
//! `sleep`) started per call, through the registry and through the engine;
//! their environment, output cap, exit status, deadline and process group.

use std::path::Path;
use std::time::{Duration, Instant};

use toolplane_core::Outcome;
use toolplane_pool::LoadState;

use crate::support::{drain_until, running, submit_all};
use crate::wasi::{call, engine, error_text, event, ok_json, rig_with};

/// Writes `<name>.toml`, a process tool running `sh -c script`.
pub fn sh_tool(dir: &Path, name: &str, script: &str, extra: &str) {
    let manifest = format!(
        "name = \"{name}\"\nruntime = \"process\"\nprotocol = \"exec\"\ncommand = [\"sh\", \"-c\", {script:?}]\n{extra}"
    );
    std::fs::write(dir.join(format!("{name}.toml")), manifest).unwrap();
}

#[test]
fn an_exec_tool_runs_a_shell_pipeline_per_call() {
    let rig = rig_with(
        |_| {},
        |dir| sh_tool(dir, "upper", "tr a-z A-Z", ""),
        |b| b.builtins(false).watch(false),
    );
    let entry = rig.registry.snapshot().by_name("upper").cloned().unwrap();
    assert_eq!(entry.state(), LoadState::Ready);
    assert!(entry.manifest.wasi().is_none());
    assert_eq!(
        ok_json(&call(&rig, "upper", r#"{"say":"hello"}"#)),
        serde_json::json!({"SAY": "HELLO"})
    );
    // Its input is checked against its schema like any tool's.
    let e = error_text(&call(&rig, "upper", "[1]"));
    assert!(e.contains("must be a JSON object"), "{e}");

    // Through the engine: 200 calls on 2 workers, each answered once.
    let engine = engine(&rig, 2, 16);
    let mut p = engine.producer();
    let events: Vec<_> = (0..200)
        .map(|i| event(&rig, "upper", &format!(r#"{{"n":"x{i}"}}"#)))
        .collect();
    let mut out = Vec::new();
    submit_all(&mut p, events, &mut out);
    drain_until(&mut p, &mut out, 200, Duration::from_secs(60));
    assert_eq!(out.len(), 200);
    for c in &out {
        let v = ok_json(&c.outcome);
        assert!(v["N"].as_str().unwrap().starts_with('X'), "{v}");
    }
    drop(p);
    let report = engine.shutdown(Duration::from_secs(5));
    assert!(report.is_balanced());
}

#[test]
fn the_environment_is_what_the_manifest_grants() {
    // cargo runs tests with CARGO_MANIFEST_DIR set: a variable of the
    // server's environment that the manifest does not grant.
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
    let rig = rig_with(
        |_| {},
        |dir| {
            sh_tool(
                dir,
                "env",
                r#"cat >/dev/null; printf '{"granted":"%s","secret":"%s","path":"%s"}' "$GRANTED" "$CARGO_MANIFEST_DIR" "$PATH""#,
                "env = { GRANTED = \"yes\" }\n",
            );
        },
        |b| b.builtins(false).watch(false),
    );
    let v = ok_json(&call(&rig, "env", "{}"));
    assert_eq!(v["granted"], "yes");
    assert_eq!(v["secret"], "", "the server's environment leaked");
    assert!(!v["path"].as_str().unwrap().is_empty(), "PATH is passed on");
    // HOME and PATH only, plus the grant: the process's own environment.
    let rig2 = rig_with(
        |_| {},
        |dir| {
            sh_tool(
                dir,
                "count",
                r#"cat >/dev/null; env | grep -vc '^PWD=\|^SHLVL=\|^_=' | sed 's/.*/{"n":&}/'"#,
                "",
            )
        },
        |b| b.builtins(false).watch(false),
    );
    let n = ok_json(&call(&rig2, "count", "{}"))["n"].as_u64().unwrap();
    assert!(n <= 2, "{n} variables: only PATH and HOME are passed");
}

#[test]
fn failures_end_the_call_with_the_reason() {
    let rig = rig_with(
        |_| {},
        |dir| {
            sh_tool(dir, "fails", "echo 'no such thing' >&2; exit 3", "");
            sh_tool(dir, "chatty", "cat >/dev/null; echo 'this is not json'", "");
            sh_tool(
                dir,
                "flood",
                "cat >/dev/null; yes '\"xxxxxxxxxxxxxxxx\"'",
                "[limits]\nmax_output = \"64 KiB\"\n",
            );
            std::fs::write(
                dir.join("nothere.toml"),
                "name = \"nothere\"\nruntime = \"process\"\nprotocol = \"exec\"\ncommand = [\"toolplane-no-such-program\"]\n",
            )
            .unwrap();
        },
        |b| b.builtins(false).watch(false),
    );
    let e = error_text(&call(&rig, "fails", "{}"));
    assert!(
        e.contains("exit status: 3") && e.contains("no such thing"),
        "{e}"
    );
    let e = error_text(&call(&rig, "chatty", "{}"));
    assert!(e.contains("not JSON"), "{e}");
    let started = Instant::now();
    let e = error_text(&call(&rig, "flood", "{}"));
    assert!(e.contains("limits.max_output = 64 KiB"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // A program that is not there fails the load, naming it.
    let snap = rig.registry.snapshot();
    let LoadState::Failed(why) = snap.by_name("nothere").unwrap().state() else {
        panic!("nothere loaded");
    };
    assert!(
        why.to_string().contains("toolplane-no-such-program"),
        "{why}"
    );
}

#[test]
fn a_call_past_its_deadline_times_out_and_its_process_group_dies() {
    // A duration no other process here sleeps for: its command line marks
    // the call's processes.
    let secs = 40_000 + std::process::id() % 10_000;
    let marker = format!("sleep\0{secs}\0");
    let rig = rig_with(
        |_| {},
        |dir| {
            // The shell starts a child that ignores SIGTERM, then waits.
            let script =
                format!("trap '' TERM; (trap '' TERM; exec sleep {secs}) & exec sleep {secs}");
            sh_tool(dir, "hang", &script, "[limits]\ntimeout = \"300ms\"\n");
        },
        |b| b.builtins(false).watch(false),
    );
    let started = Instant::now();
    assert!(matches!(call(&rig, "hang", "{}"), Outcome::Timeout));
    assert!(started.elapsed() < Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(5);
    while running(&marker) {
        assert!(
            Instant::now() < deadline,
            "a process of the timed-out call's group is still alive"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_process_left_behind_by_a_call_that_ended_is_killed_too() {
    let secs = 50_000 + std::process::id() % 10_000;
    let marker = format!("sleep\0{secs}\0");
    let rig = rig_with(
        |_| {},
        |dir| {
            // Answers at once, leaving a child with its pipes closed.
            let script =
                format!("cat >/dev/null; sleep {secs} </dev/null >/dev/null 2>&1 & echo '{{}}'");
            sh_tool(dir, "leaves", &script, "");
        },
        |b| b.builtins(false).watch(false),
    );
    assert_eq!(ok_json(&call(&rig, "leaves", "{}")), serde_json::json!({}));
    let deadline = Instant::now() + Duration::from_secs(5);
    while running(&marker) {
        assert!(
            Instant::now() < deadline,
            "the left-behind child is still alive"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn permissions_narrow_the_file_system_with_landlock() {
    let rig = rig_with(
        |_| {},
        |dir| {
            // Reports, for each path, whether it could be read or written.
            let script = r#"cat >/dev/null
try() { if eval "$1" 2>/dev/null; then printf '"%s":true,' "$2"; else printf '"%s":false,' "$2"; fi; }
printf '{'
try 'cat "$DATA/pub/in.txt" >/dev/null' read_granted
try 'cat "$DATA/secret.txt" >/dev/null' read_ungranted
try 'echo x > "$DATA/pub/new.txt"' write_read_only
try 'echo x > "$DATA/out/new.txt"' write_granted
try 'echo x > /tmp/toolplane-landlock-probe' write_tmp
try 'cat /etc/hostname >/dev/null' read_system
try 'echo x > /dev/shm/toolplane-landlock-probe' write_shm
try 'echo x > /dev/null' write_null
try 'ls "$DATA" >/dev/null' read_cwd_parent
printf '"done":true}'"#;
            sh_tool(
                dir,
                "narrow",
                script,
                "env = { DATA = \"{data}\" }\ncwd = \"{data}/pub\"\n[permissions]\nread = [\"{data}/pub\"]\nwrite = [\"{data}/out\"]\n",
            );
            sh_tool(
                dir,
                "wide",
                "cat >/dev/null; cat \"$DATA/secret.txt\" >/dev/null && echo '{\"read\":true}'",
                "env = { DATA = \"{data}\" }\n",
            );
        },
        |b| b.builtins(false).watch(false),
    );
    let data = rig.data.path();
    std::fs::create_dir_all(data.join("pub")).unwrap();
    std::fs::create_dir_all(data.join("out")).unwrap();
    std::fs::write(data.join("pub/in.txt"), "public").unwrap();
    std::fs::write(data.join("secret.txt"), "secret").unwrap();
    // The grants must exist at load: reload now that they do.
    rig.registry.reload("narrow");
    assert!(rig.registry.wait_loaded(Duration::from_secs(30)));
    let Some(Ok(toolplane_pool::Tool::Process(t))) = rig
        .registry
        .snapshot()
        .by_name("narrow")
        .and_then(|e| e.loaded().cloned())
    else {
        panic!(
            "narrow did not load: {:?}",
            rig.registry.snapshot().by_name("narrow").map(|e| e.state())
        );
    };
    assert!(t.files().contains("Landlock"), "{}", t.files());
    let v = ok_json(&call(&rig, "narrow", "{}"));
    assert_eq!(
        v,
        serde_json::json!({
            "read_granted": true,
            "read_ungranted": false,
            "write_read_only": false,
            "write_granted": true,
            "write_tmp": false,
            "read_system": true,
            "write_shm": false,
            "write_null": true,
            "read_cwd_parent": false,
            "done": true
        })
    );
    assert!(data.join("out/new.txt").exists() && !data.join("pub/new.txt").exists());
    // Without [permissions], the same read succeeds: it is the manifest
    // that narrows.
    assert_eq!(
        ok_json(&call(&rig, "wide", "{}")),
        serde_json::json!({"read": true})
    );
}
