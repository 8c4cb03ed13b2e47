//! What an upstream MCP server controls is bounded: how long it takes to
//! list its tools, how many pages and tools it lists, their names and
//! schemas, how long its answer lines are, how often it says its list
//! changed. Each probe is `tests/fixtures/mcp/hostile.py` in one of its
//! modes, beside a healthy tool that must keep answering.

use std::path::Path;
use std::time::{Duration, Instant};

use toolplane_core::Outcome;
use toolplane_pool::LoadState;

use crate::mcp_upstream::{mcp_manifest, members, repo};
use crate::process::sh_tool;
use crate::wasi::{Rig, call, error_text, ok_json, rig_with};

fn hostile() -> String {
    repo()
        .join("tests/fixtures/mcp/hostile.py")
        .display()
        .to_string()
}

/// A set `name` run by the hostile upstream in `mode`.
fn upstream(dir: &Path, name: &str, mode: &[&str], extra: &str) {
    let script = hostile();
    let mut command = vec!["python3", script.as_str()];
    command.extend_from_slice(mode);
    mcp_manifest(dir, name, &command, extra);
}

/// A healthy exec tool beside the probes.
fn healthy(dir: &Path) {
    sh_tool(dir, "ok", "cat", "");
}

fn failed(rig: &Rig, name: &str) -> String {
    match rig.registry.snapshot().by_name(name).map(|e| e.state()) {
        Some(LoadState::Failed(why)) => why.to_string(),
        other => panic!("{name}: not failed: {other:?}"),
    }
}

fn still_answers(rig: &Rig) {
    assert_eq!(
        ok_json(&call(rig, "ok", r#"{"still":"here"}"#)),
        serde_json::json!({"still": "here"})
    );
}

#[test]
fn upstreams_that_never_list_their_tools_hold_no_loader_and_fail_in_time() {
    let started = Instant::now();
    let rig = rig_with(
        |_| {},
        |dir| {
            // More stuck sets than loader threads.
            for name in ["mute1", "mute2", "mute3"] {
                upstream(
                    dir,
                    name,
                    &["silent-list"],
                    "[limits]\nstartup_timeout = \"500ms\"\n",
                );
            }
            healthy(dir);
        },
        |b| b.builtins(false).watch(false),
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "loading took {:?}",
        started.elapsed()
    );
    for name in ["mute1", "mute2", "mute3"] {
        let why = failed(&rig, name);
        assert!(why.contains("tools/list") && why.contains("500ms"), "{why}");
    }
    still_answers(&rig);
}

#[test]
fn a_list_without_end_is_refused_at_its_page_bound() {
    let rig = rig_with(
        |_| {},
        |dir| {
            upstream(dir, "pages", &["endless-pages"], "");
            upstream(dir, "many", &["many", "50000"], "");
            healthy(dir);
        },
        |b| b.builtins(false).watch(false),
    );
    let why = failed(&rig, "pages");
    assert!(why.contains("64 pages"), "{why}");
    let why = failed(&rig, "many");
    assert!(why.contains("more than 1024 tools"), "{why}");
    assert!(members(&rig, "many").is_empty());
    still_answers(&rig);
}

#[test]
fn listed_names_follow_the_manifest_rules_and_are_listed_once() {
    let rig = rig_with(
        |_| {},
        |dir| {
            upstream(dir, "names", &["names"], "");
            upstream(dir, "twice", &["twice"], "");
            upstream(dir, "schema", &["big-schema"], "");
            healthy(dir);
        },
        |b| b.builtins(false).watch(false),
    );
    // A name against the rule is a problem, and that tool is left out;
    // the others serve.
    assert_eq!(members(&rig, "names"), ["ok"]);
    let problems: Vec<String> = rig
        .registry
        .problems()
        .iter()
        .map(ToString::to_string)
        .collect();
    for bad in [
        "names.: \"\": a tool needs a name",
        "names.a.b: \"a.b\": name each tool",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(bad)),
            "{bad} not in {problems:?}"
        );
    }
    let why = failed(&rig, "twice");
    assert!(why.contains("\"ok\" twice"), "{why}");
    let why = failed(&rig, "schema");
    assert!(why.contains("inputSchema") && why.contains("big"), "{why}");
    still_answers(&rig);
}

#[test]
fn an_answer_over_max_output_fails_at_once_and_the_process_is_replaced() {
    let rig = rig_with(
        |_| {},
        |dir| {
            upstream(
                dir,
                "long",
                &["long-answer", "200000"],
                "[pool]\nmax = 1\n[limits]\nmax_output = \"64 KiB\"\ntimeout = \"20s\"\n",
            )
        },
        |b| b.builtins(false).watch(false),
    );
    let short = ok_json(&call(&rig, "long.echo", r#"{"n":1}"#));
    assert!(short.to_string().contains("\\\"n\\\": 1"), "{short}");
    let started = Instant::now();
    let e = error_text(&call(&rig, "long.echo", r#"{"long":true}"#));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the call waited {:?}",
        started.elapsed()
    );
    assert!(e.contains("limits.max_output = 64 KiB"), "{e}");
    // A fresh process answers the next call.
    let again = call(&rig, "long.echo", r#"{"n":2}"#);
    assert!(matches!(again, Outcome::Ok(_)), "{again:?}");
}

#[test]
fn a_list_changed_storm_is_coalesced() {
    let count = tempfile::NamedTempFile::new().unwrap();
    let file = count.path().display().to_string();
    let rig = rig_with(
        |_| {},
        |dir| {
            upstream(
                dir,
                "storm",
                &["storm", "3000", &file],
                "[pool]\nmin = 1\nmax = 1\n",
            )
        },
        |b| b.builtins(false).watch(false),
    );
    // Once the storm has passed, the set still serves.
    std::thread::sleep(Duration::from_secs(2));
    assert!(matches!(call(&rig, "storm.echo", "{}"), Outcome::Ok(_)));
    let lists: u64 = std::fs::read_to_string(count.path())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(lists < 100, "3,000 notifications made {lists} re-lists");
}

#[test]
fn a_set_whose_upstream_failed_at_load_is_retried_until_it_loads() {
    let mark = tempfile::tempdir().unwrap();
    let gate = mark.path().join("second-start");
    let script = hostile();
    let rig = rig_with(
        |_| {},
        |dir| {
            healthy(dir);
            // Down at the first start (it exits), up from the second.
            let sh = format!(
                "if [ -e {gate} ]; then exec python3 {script} healthy; fi; touch {gate}; echo 'upstream down' >&2; exit 1",
                gate = gate.display()
            );
            mcp_manifest(dir, "flaky", &["sh", "-c", &sh], "");
        },
        |b| b.builtins(false).watch(false),
    );
    let why = failed(&rig, "flaky");
    assert!(why.contains("upstream down"), "{why}");
    let problems = rig.registry.problems();
    assert!(
        problems
            .iter()
            .any(|p| p.to_string().contains("retried in 1s")),
        "{problems:?}"
    );
    still_answers(&rig);
    // Retried a second later, with nothing changed: it loads, its members
    // answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(
        rig.registry.snapshot().by_name("flaky").map(|e| e.state()),
        Some(LoadState::Ready)
    ) {
        assert!(
            Instant::now() < deadline,
            "never retried: {}",
            failed(&rig, "flaky")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let v = ok_json(&call(&rig, "flaky.echo", r#"{"x":1}"#));
    assert!(v.to_string().contains("\\\"x\\\": 1"), "{v}");
    assert!(
        rig.registry.problems().is_empty(),
        "{:?}",
        rig.registry.problems()
    );
}
