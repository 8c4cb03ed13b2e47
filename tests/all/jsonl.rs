//! Process tools with the `jsonl` protocol: real Python and Node workers
//! (the examples in `tools/examples/jsonl/`, and a misbehaving worker in
//! `tests/fixtures/jsonl/`), kept warm, shared, supervised and stopped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use toolplane_core::{Outcome, RejectReason};
use toolplane_pool::process::ProcessStats;
use toolplane_pool::{LoadState, Registry, Tool};

use crate::support::running;
use crate::wasi::{Rig, block_on, call, error_text, ok_json, rig_with};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Copies the example worker `file` and its manifest `<name>.toml` into
/// `dir`, appending `extra` to the manifest.
fn example(dir: &Path, name: &str, file: &str, extra: &str) {
    let ex = repo().join("tools/examples/jsonl");
    std::fs::copy(ex.join(file), dir.join(file)).unwrap();
    let mut manifest = std::fs::read_to_string(ex.join(format!("{name}.toml"))).unwrap();
    manifest.push_str(extra);
    std::fs::write(dir.join(format!("{name}.toml")), manifest).unwrap();
}

/// A tool `name` running the faulty worker, with `extra` manifest keys.
fn faulty(dir: &Path, name: &str, extra: &str) {
    let script = repo().join("tests/fixtures/jsonl/faulty.py");
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!(
            "name = \"{name}\"\nruntime = \"process\"\nprotocol = \"jsonl\"\ncommand = [\"python3\", {:?}]\n{extra}",
            script.display().to_string()
        ),
    )
    .unwrap();
}

fn process_tool(registry: &Registry, name: &str) -> Arc<toolplane_pool::process::ProcessTool> {
    let snap = registry.snapshot();
    match snap.by_name(name).and_then(|e| e.loaded().cloned()) {
        Some(Ok(Tool::Process(p))) => p,
        other => panic!("{name}: not a loaded process tool: {other:?}"),
    }
}

fn stats(rig: &Rig, name: &str) -> ProcessStats {
    process_tool(&rig.registry, name).stats()
}

/// Waits up to 10 s for `cond` on the tool's stats.
fn wait_for(rig: &Rig, name: &str, what: &str, cond: impl Fn(&ProcessStats) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = stats(rig, name);
        if cond(&s) {
            return;
        }
        assert!(Instant::now() < deadline, "{name}: {what}: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `calls` (tool, input) at once on one current-thread runtime.
fn concurrently(rig: &Rig, calls: Vec<(&str, String)>) -> Vec<Outcome> {
    block_on(async {
        let futures = calls
            .iter()
            .map(|(t, i)| rig.registry.call(t, i.as_bytes()));
        futures_util::future::join_all(futures).await
    })
}

#[test]
fn a_python_worker_stays_warm_and_answers_every_call() {
    let rig = rig_with(
        |_| {},
        |dir| example(dir, "wordcount", "wordcount.py", ""),
        |b| b.builtins(false).watch(false),
    );
    // min = 1: started at load, before any call.
    wait_for(&rig, "wordcount", "one process at load", |s| s.alive == 1);
    let first = ok_json(&call(&rig, "wordcount", r#"{"text":"one two  three"}"#));
    assert_eq!(
        (first["words"].as_u64(), first["chars"].as_u64()),
        (Some(3), Some(14))
    );
    // The same process answers the next calls (max_inflight 1, one at a time).
    for _ in 0..20 {
        let v = ok_json(&call(&rig, "wordcount", r#"{"text":"x"}"#));
        assert_eq!(v["worker"], first["worker"]);
    }
    // A bad input is refused by the schema before any process sees it; an
    // input the worker cannot use is that call's error, and it lives on.
    let e = error_text(&call(&rig, "wordcount", r#"{"txt":"x"}"#));
    assert!(e.contains("schema"), "{e}");
    let s = stats(&rig, "wordcount");
    assert_eq!((s.alive, s.restarts, s.down.is_some()), (1, 0, false));
    assert_eq!(s.service.count, 21);
}

/// One process read by many reactors: callers on four threads (each its
/// own current-thread runtime, as engine workers are) overlap calls of
/// distinct lengths on one Node process, and each gets its own answer;
/// calls that time out are cancelled, and the worker's answers to those
/// cancels, written when no caller waits any more, are read all the same
/// (unread, they would get the process killed as hung 1 s later).
#[test]
fn callers_on_many_threads_share_one_process_and_each_gets_its_own_answer() {
    let rig = rig_with(
        |_| {},
        |dir| {
            let ex = repo().join("tools/examples/jsonl");
            std::fs::copy(ex.join("nap.js"), dir.join("nap.js")).unwrap();
            std::fs::write(
                dir.join("one.toml"),
                "name = \"one\"\nruntime = \"process\"\nprotocol = \"jsonl\"\ncommand = [\"node\", \"nap.js\"]\n[pool]\nmin = 1\nmax = 1\nmax_inflight_per_process = 256\n[limits]\ntimeout = \"300ms\"\n",
            )
            .unwrap();
        },
        |b| b.builtins(false).watch(false),
    );
    let pid = |o: &Outcome| ok_json(o)["worker"].as_u64().unwrap();
    let first = pid(&call(&rig, "one", r#"{"ms":0}"#));
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let rig = &rig;
            s.spawn(move || {
                block_on(async move {
                    for wave in 0..40u64 {
                        let ms: Vec<u64> = (0..8).map(|i| (t * 3 + wave + i) % 7).collect();
                        let inputs: Vec<String> =
                            ms.iter().map(|m| format!("{{\"ms\":{m}}}")).collect();
                        let out = futures_util::future::join_all(
                            inputs
                                .iter()
                                .map(|i| rig.registry.call("one", i.as_bytes())),
                        )
                        .await;
                        for (m, o) in ms.iter().zip(&out) {
                            let v = ok_json(o);
                            assert_eq!(
                                (v["slept"].as_u64(), v["worker"].as_u64()),
                                (Some(*m), Some(first))
                            );
                        }
                    }
                });
            });
        }
    });
    let out = concurrently(
        &rig,
        (0..10)
            .map(|_| ("one", r#"{"ms":5000}"#.to_string()))
            .collect(),
    );
    assert!(out.iter().all(|o| matches!(o, Outcome::Timeout)), "{out:?}");
    // Past the 1 s a cancelled call has to be answered in.
    std::thread::sleep(Duration::from_millis(1500));
    let s = stats(&rig, "one");
    assert_eq!((s.alive, s.restarts), (1, 0), "{s:?}");
    assert_eq!(pid(&call(&rig, "one", r#"{"ms":0}"#)), first);
}

#[test]
fn a_thousand_overlapping_calls_share_four_node_processes() {
    let rig = rig_with(
        |_| {},
        |dir| example(dir, "nap", "nap.js", ""),
        |b| b.builtins(false).watch(false),
    );
    // Warm the four processes, so the measured wave is not node's start-up.
    let warm = concurrently(
        &rig,
        (0..4 * 256)
            .map(|_| ("nap", r#"{"ms":200}"#.to_string()))
            .collect(),
    );
    assert!(warm.iter().all(|o| matches!(o, Outcome::Ok(_))));
    assert_eq!(stats(&rig, "nap").alive, 4);
    let started = Instant::now();
    let out = concurrently(
        &rig,
        (0..1000)
            .map(|_| ("nap", r#"{"ms":500}"#.to_string()))
            .collect(),
    );
    let wall = started.elapsed();
    let mut pids = std::collections::BTreeSet::new();
    for o in &out {
        let v = ok_json(o);
        assert_eq!(v["slept"], 500);
        pids.insert(v["worker"].as_u64().unwrap());
    }
    assert_eq!(out.len(), 1000);
    assert_eq!(
        pids.len(),
        4,
        "the calls spread over the pool's four processes"
    );
    // About one sleep: they overlap, not queue.
    assert!(
        wall < Duration::from_millis(2500),
        "{wall:?} for 1000 × 500 ms"
    );
}

#[test]
fn faults_end_only_their_own_calls_and_the_process_is_replaced() {
    let rig = rig_with(
        |_| {},
        |dir| {
            faulty(
                dir,
                "faulty",
                "[pool]\nmax = 1\nmax_inflight_per_process = 8\n[limits]\ntimeout = \"1s\"\nmax_output = \"64 KiB\"\n",
            );
            example(dir, "wordcount", "wordcount.py", "");
        },
        |b| b.builtins(false).watch(false),
    );
    let pid = |o: &Outcome| ok_json(o)["worker"].as_u64().unwrap();
    let first = pid(&call(&rig, "faulty", r#"{"do":"ok"}"#));
    // A long answer, under the cap, arrives whole (the pipe gives it in
    // pieces).
    let big = call(&rig, "faulty", r#"{"do":"flood","bytes":60000}"#);
    assert_eq!(ok_json(&big).as_str().map(str::len), Some(60000));
    for (fault, expect) in [
        (r#"{"do":"crash"}"#, "exited (exit status: 7)"),
        (r#"{"do":"garbage"}"#, "not a response"),
        (
            r#"{"do":"flood","bytes":200000}"#,
            "longer than limits.max_output = 64 KiB",
        ),
    ] {
        // The fault beside healthy calls on another tool.
        let mut calls = vec![("faulty", fault.to_string())];
        calls.extend((0..10).map(|i| ("wordcount", format!(r#"{{"text":"w{i}"}}"#))));
        let out = concurrently(&rig, calls);
        let e = error_text(&out[0]);
        assert!(e.contains(expect), "{fault}: {e}");
        for o in &out[1..] {
            assert_eq!(ok_json(o)["words"], 1);
        }
        // The next call gets a new process.
        let next = pid(&call(&rig, "faulty", r#"{"do":"ok"}"#));
        assert_ne!(next, first, "{fault}: the process was not replaced");
    }
    // A call that hangs times out; its process ignores the cancel and is
    // killed, and calls that were in flight on it end with the reason.
    let hung = pid(&call(&rig, "faulty", r#"{"do":"ok"}"#));
    let started = Instant::now();
    let out = concurrently(&rig, vec![("faulty", r#"{"do":"hang"}"#.into())]);
    assert!(matches!(out[0], Outcome::Timeout), "{:?}", out[0]);
    assert!(started.elapsed() < Duration::from_secs(3));
    // Killed 1 s after the cancel, and replaced: a call that lands on it
    // meanwhile ends with that reason, or finds it stopping.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let o = call(&rig, "faulty", r#"{"do":"ok"}"#);
        match &o {
            Outcome::Ok(_) if pid(&o) != hung => break,
            Outcome::Ok(_) => {}
            _ => {
                let e = error_text(&o);
                assert!(
                    e.contains("within 1s of its cancel") || e.contains("its process is stopping"),
                    "{o:?}"
                );
            }
        }
        assert!(
            Instant::now() < deadline,
            "the hung process {hung} lives on"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = stats(&rig, "faulty");
    assert_eq!(s.restarts, 4, "{s:?}");
    assert!(s.down.is_none(), "{s:?}");
}

#[test]
fn a_crash_loop_backs_off_and_shows_the_tool_down() {
    let rig = rig_with(
        |_| {},
        |dir| {
            std::fs::write(
                dir.join("broken.toml"),
                "name = \"broken\"\nruntime = \"process\"\nprotocol = \"jsonl\"\ncommand = [\"sh\", \"-c\", \"echo 'cannot open the model' >&2; exit 2\"]\n[pool]\nmin = 1\n",
            )
            .unwrap();
        },
        |b| b.builtins(false).watch(false),
    );
    // min = 1 keeps restarting it, backing off, until it is down.
    wait_for(&rig, "broken", "down", |s| s.down.is_some());
    let snap = rig.registry.snapshot();
    let LoadState::Down(why) = snap.by_name("broken").unwrap().state() else {
        panic!("not down");
    };
    assert!(
        why.contains("cannot open the model") && why.contains("exit status: 2"),
        "{why}"
    );
    // Down: a call fails at once with the reason, without a new process.
    let restarts = stats(&rig, "broken").restarts;
    let started = Instant::now();
    let e = error_text(&call(&rig, "broken", "{}"));
    assert!(
        e.contains("keep failing") && e.contains("cannot open the model"),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_millis(200));
    assert!(stats(&rig, "broken").restarts <= restarts + 1);
}

/// A program that is gone by the time a process starts fails every start
/// the same way: the tool is down at its first failure, with the reason,
/// not after a crash loop's restarts.
#[test]
fn a_program_gone_after_loading_puts_the_tool_down_at_once() {
    let bin = tempfile::TempDir::new().unwrap();
    let program = bin.path().join("worker.sh");
    std::fs::write(&program, "#!/bin/sh\nexec cat\n").unwrap();
    std::fs::set_permissions(
        &program,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let manifest = format!(
        "name = \"gone\"\nruntime = \"process\"\nprotocol = \"jsonl\"\ncommand = [{:?}]\n",
        program.display().to_string()
    );
    let rig = rig_with(
        |_| {},
        |dir| std::fs::write(dir.join("gone.toml"), manifest).unwrap(),
        |b| b.builtins(false).watch(false),
    );
    std::fs::remove_file(&program).unwrap();
    let e = error_text(&call(&rig, "gone", "{}"));
    assert!(
        e.contains("cannot start") && e.contains("No such file"),
        "{e}"
    );
    let s = stats(&rig, "gone");
    assert_eq!(s.restarts, 1, "{s:?}");
    let why = s.down.expect("down after one failed start");
    assert!(
        why.contains("its program cannot be run") && why.contains("No such file"),
        "{why}"
    );
}

#[test]
fn processes_are_recycled_retired_when_idle_and_bounded_by_the_queue() {
    let rig = rig_with(
        |_| {},
        |dir| {
            faulty(dir, "recycled", "[pool]\nrecycle_after = 3\n");
            faulty(dir, "idle", "[pool]\nidle_timeout = \"300ms\"\n");
            faulty(
                dir,
                "narrow",
                "[pool]\nmax = 1\nqueue = 2\n[limits]\ntimeout = \"1s\"\n",
            );
        },
        |b| b.builtins(false).watch(false),
    );
    let pid = |o: &Outcome| ok_json(o)["worker"].as_u64().unwrap();
    let pids: Vec<u64> = (0..7)
        .map(|_| pid(&call(&rig, "recycled", r#"{"do":"ok"}"#)))
        .collect();
    assert!(pids[0] == pids[1] && pids[1] == pids[2], "{pids:?}");
    assert!(
        pids[3] != pids[2] && pids[3] == pids[5] && pids[6] != pids[5],
        "{pids:?}"
    );
    assert_eq!(
        stats(&rig, "recycled").restarts,
        0,
        "recycling is no restart"
    );

    let _ = pid(&call(&rig, "idle", r#"{"do":"ok"}"#));
    assert_eq!(stats(&rig, "idle").alive, 1);
    wait_for(&rig, "idle", "stopped when idle", |s| s.alive == 0);

    // One process, one call at a time, two may wait: of four at once, one
    // runs, two wait (and time out behind the hung one), one is refused.
    let out = concurrently(
        &rig,
        (0..4)
            .map(|_| ("narrow", r#"{"do":"hang"}"#.to_string()))
            .collect(),
    );
    let refused = out
        .iter()
        .filter(|o| {
            matches!(o, Outcome::Refused(RejectReason::Busy, e)
                if e.contains("tool narrow is busy") && e.contains("pool.queue = 2"))
        })
        .count();
    let timed_out = out.iter().filter(|o| matches!(o, Outcome::Timeout)).count();
    assert_eq!((refused, timed_out), (1, 3), "{out:?}");
    assert_eq!(stats(&rig, "narrow").refused, 1);
}

#[test]
fn no_process_outlives_the_registry_not_even_a_child_that_ignores_sigterm() {
    let secs = 60_000 + std::process::id() % 10_000;
    let marker = format!("sleep\0{secs}\0");
    let script = repo().join("tests/fixtures/jsonl/faulty.py");
    let rig = rig_with(
        |_| {},
        |dir| {
            let sh = format!(
                "trap '' TERM; (trap '' TERM; exec sleep {secs}) & exec python3 {}",
                script.display()
            );
            std::fs::write(
                dir.join("forks.toml"),
                format!("name = \"forks\"\nruntime = \"process\"\nprotocol = \"jsonl\"\ncommand = [\"sh\", \"-c\", {sh:?}]\n[pool]\nmin = 2\n"),
            )
            .unwrap();
        },
        |b| b.builtins(false).watch(false),
    );
    assert!(matches!(
        call(&rig, "forks", r#"{"do":"ok"}"#),
        Outcome::Ok(_)
    ));
    wait_for(&rig, "forks", "two processes", |s| s.alive == 2);
    assert!(running(&marker));
    drop(rig);
    let deadline = Instant::now() + Duration::from_secs(5);
    while running(&marker) {
        assert!(Instant::now() < deadline, "a child outlived the registry");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_manifest_changed_under_load_loses_no_call_and_answers_none_twice() {
    let rig = rig_with(
        |_| {},
        |dir| {
            faulty(
                dir,
                "worker",
                "[pool]\nmax = 2\nmax_inflight_per_process = 4\n",
            )
        },
        |b| b.builtins(false).watch(true),
    );
    let old = process_tool(&rig.registry, "worker");
    let engine = crate::wasi::engine(&rig, 2, 32);
    let mut p = engine.producer();
    let mut out = Vec::new();
    let mut sent = 0u64;
    let mut send = |p: &mut toolplane_core::Producer, out: &mut Vec<_>| {
        let e = crate::wasi::event(&rig, "worker", r#"{"do":"ok"}"#).with_tag(sent);
        crate::support::submit_all(p, [e], out);
        sent += 1;
    };
    for _ in 0..1000 {
        send(&mut p, &mut out);
    }
    // A new version (more processes, same program) while calls keep coming.
    faulty(
        rig.tools.path(),
        "worker",
        "[pool]\nmax = 3\nmax_inflight_per_process = 4\n",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while Arc::ptr_eq(&process_tool(&rig.registry, "worker"), &old) {
        assert!(Instant::now() < deadline, "the new version never loaded");
        send(&mut p, &mut out);
    }
    for _ in 0..1000 {
        send(&mut p, &mut out);
    }
    let total = sent as usize;
    crate::support::drain_until(&mut p, &mut out, total, Duration::from_secs(120));
    let mut tags: Vec<u64> = out.iter().map(|c| c.tag).collect();
    tags.sort_unstable();
    tags.dedup();
    assert_eq!(
        (out.len(), tags.len()),
        (total, total),
        "each call answered once"
    );
    let failed: Vec<_> = out
        .iter()
        .filter(|c| !matches!(c.outcome, Outcome::Ok(_)))
        .collect();
    assert!(
        failed.is_empty(),
        "{} calls failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    // Both versions served (an event runs on the version listed when a
    // worker takes it), between them every call.
    let new = process_tool(&rig.registry, "worker");
    let listed = rig.registry.snapshot().by_name("worker").cloned().unwrap();
    assert_eq!(listed.manifest.process().unwrap().pool.max, 3);
    let (a, b) = (old.stats().service.count, new.stats().service.count);
    assert!(
        a >= 1 && b >= 1 && a + b == total as u64,
        "old {a} + new {b}, of {total}"
    );
    drop(p);
    assert!(engine.shutdown(Duration::from_secs(5)).is_balanced());
    // The old version's processes stop once it is dropped.
    drop(old);
}

#[test]
fn a_worker_with_several_tools_is_a_set_and_each_call_names_its_tool() {
    let script = r#"
import json, sys
for line in sys.stdin:
    req = json.loads(line)
    if req.get("cancel"):
        continue
    s = req["input"].get("s", "")
    out = {"upper": s.upper, "lower": s.lower}[req["tool"]]()
    print(json.dumps({"id": req["id"], "output": {"tool": req["tool"], "s": out}}), flush=True)
"#;
    let rig = rig_with(
        |_| {},
        |dir| {
            std::fs::write(
                dir.join("text.toml"),
                format!(
                    "name = \"text\"\nruntime = \"process\"\nprotocol = \"jsonl\"\ncommand = [\"python3\", \"-c\", {script:?}]\n\
                     [[tools]]\nname = \"upper\"\ndescription = \"Upper-cases s\"\n[tools.input_schema]\ntype = \"object\"\nrequired = [\"s\"]\n\
                     [[tools]]\nname = \"lower\"\ndescription = \"Lower-cases s\"\n"
                ),
            )
            .unwrap();
        },
        |b| b.builtins(false).watch(false),
    );
    let snap = rig.registry.snapshot();
    assert!(snap.by_name("text").unwrap().is_set());
    let upper = snap.by_name("text.upper").expect("text.upper listed");
    assert_eq!(
        (upper.manifest.description.as_str(), upper.set.as_deref()),
        ("Upper-cases s", Some("text"))
    );
    assert!(snap.by_name("text.lower").is_some());
    assert_eq!(
        ok_json(&call(&rig, "text.upper", r#"{"s":"MiXed"}"#)),
        serde_json::json!({"tool": "upper", "s": "MIXED"})
    );
    assert_eq!(
        ok_json(&call(&rig, "text.lower", r#"{"s":"MiXed"}"#)),
        serde_json::json!({"tool": "lower", "s": "mixed"})
    );
    // Each member's own schema: upper requires s, lower does not.
    let e = error_text(&call(&rig, "text.upper", "{}"));
    assert!(e.contains("text.upper") && e.contains("schema"), "{e}");
    assert_eq!(ok_json(&call(&rig, "text.lower", "{}"))["s"], "");
    // One pool for both: one process answered all of them.
    assert_eq!(stats(&rig, "text.upper").alive, 1);
    let e = error_text(&call(&rig, "text", "{}"));
    assert!(
        e.contains("is a set of tools") && e.contains("text.lower"),
        "{e}"
    );
}

#[test]
fn a_reload_stops_the_processes_of_the_version_it_replaces() {
    let marker = format!("reload-marker-{}", std::process::id());
    let script = repo().join("tests/fixtures/jsonl/faulty.py");
    // The interpreter itself: a version manager's shim (pyenv) runs
    // shells with the same arguments while it starts, counted as well.
    let manifest = |extra: &str| {
        format!(
            "name = \"warm\"\nruntime = \"process\"\nprotocol = \"jsonl\"\ncommand = [\"/usr/bin/python3\", {:?}, {marker:?}]\n[pool]\nmin = 2\nmax = 2\n{extra}",
            script.display().to_string()
        )
    };
    let first = manifest("");
    let rig = rig_with(
        |_| {},
        |dir| std::fs::write(dir.join("warm.toml"), &first).unwrap(),
        |b| b.builtins(false).watch(false),
    );
    let count = || crate::support::running_with(&marker);
    wait_for(&rig, "warm", "two processes", |s| s.alive == 2);
    assert_eq!(count(), 2);
    // A worker that has had no call since keeps the listing it last saw,
    // and with it the old version: its processes must stop all the same.
    let mut stale = Vec::new();
    for round in 0..3 {
        stale.push(rig.registry.snapshot());
        std::fs::write(
            rig.tools.path().join("warm.toml"),
            manifest(&format!("# version {round}\n")),
        )
        .unwrap();
        rig.registry.reload("warm");
        assert!(rig.registry.wait_loaded(Duration::from_secs(30)));
        assert!(matches!(
            call(&rig, "warm", r#"{"do":"ok"}"#),
            Outcome::Ok(_)
        ));
        wait_for(&rig, "warm", "two processes", |s| s.alive == 2);
        let deadline = Instant::now() + Duration::from_secs(5);
        while count() != 2 {
            assert!(
                Instant::now() < deadline,
                "round {round}: {} processes run, 2 are wanted",
                count()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
