//! The registry: discovery with bad files, the module cache (hits, corrupt
//! entries, identical modules), hot reload with events, reload under load.

use std::time::{Duration, Instant};

use toolplane_core::Outcome;
use toolplane_pool::{LoadState, RegistryEvent};

use crate::support::{drain_until, submit_all};
use crate::wasi::{
    builtin_module, call, engine, error_text, event, fast_module, ok_json, rig_with, write_tool,
};

/// A fast-entry module that answers `text` (at most 8 bytes) to any input.
fn constant(text: &str) -> Vec<u8> {
    assert!(text.len() <= 8);
    let mut word = [0u8; 8];
    word[..text.len()].copy_from_slice(text.as_bytes());
    let v = i64::from_le_bytes(word);
    fast_module(&format!(
        "(i64.store (i32.const 0) (i64.const {v})) (i64.const {})",
        (text.len() as i64) << 32
    ))
}

#[test]
fn discovery_reports_bad_files_and_serves_the_rest() {
    let rig = rig_with(
        |_| {},
        |dir| {
            for n in ["a", "b", "c"] {
                write_tool(dir, n, builtin_module("echo"), "");
            }
            write_tool(dir, "garbage", b"\0asm\x01\0\0\0 not really", "");
            std::fs::write(dir.join("nomodule.toml"), "name = \"nomodule\"\n").unwrap();
            std::fs::write(
                dir.join("typo.toml"),
                "name = \"typo\"\n[limits]\nmemroy = \"1 MiB\"\n",
            )
            .unwrap();
            std::fs::write(dir.join("wrongname.toml"), "name = \"other\"\n").unwrap();
            write_tool(
                dir,
                "imports",
                &wat::parse_str(r#"(module (import "env" "f" (func)) (func (export "_start")))"#)
                    .unwrap(),
                "",
            );
        },
        |b| b.builtins(false).watch(false),
    );
    for n in ["a", "b", "c"] {
        assert_eq!(
            ok_json(&call(&rig, n, "{\"k\":1}")),
            serde_json::json!({"k":1})
        );
    }
    // Identical modules compile once: one compile for the three copies of
    // echo (two memory hits), one for `imports` (valid, but cannot link).
    let stats = rig.registry.runtime().cache().stats();
    assert_eq!((stats.compiled, stats.memory_hits), (2, 2), "{stats:?}");
    let problems = rig.registry.problems();
    let find = |file: &str| {
        problems
            .iter()
            .find(|p| p.path.file_name().and_then(|f| f.to_str()) == Some(file))
            .unwrap_or_else(|| panic!("no problem reported for {file}: {problems:?}"))
            .reason
            .clone()
    };
    assert!(
        find("garbage.wasm").contains("failed to parse"),
        "{}",
        find("garbage.wasm")
    );
    assert!(
        find("nomodule.wasm").contains("cannot read module"),
        "{}",
        find("nomodule.wasm")
    );
    assert!(
        find("typo.toml").contains("memroy"),
        "{}",
        find("typo.toml")
    );
    assert!(find("wrongname.toml").contains("does not match the file name"));
    assert!(
        find("imports.wasm").contains("env::f"),
        "{}",
        find("imports.wasm")
    );
    // Listed tools that failed say so when called.
    let snap = rig.registry.snapshot();
    assert!(matches!(
        snap.by_name("garbage").unwrap().state(),
        LoadState::Failed(_)
    ));
    assert!(error_text(&call(&rig, "garbage", "{}")).contains("failed to load"));
}

#[test]
fn an_on_demand_registry_loads_a_tool_at_its_first_call_only() {
    let rig = rig_with(
        |_| {},
        |dir| {
            write_tool(dir, "one", &constant("1"), "");
            write_tool(dir, "two", &constant("2"), "");
            write_tool(dir, "garbage", b"\0asm\x01\0\0\0 not really", "");
        },
        |b| b.builtins(false).watch(false).on_demand(true),
    );
    // Listed, nothing compiled: `rig_with`'s wait_loaded returned at once.
    let state = |n: &str| rig.registry.snapshot().by_name(n).unwrap().state();
    for n in ["one", "two", "garbage"] {
        assert_eq!(state(n), LoadState::Loading, "{n}");
    }
    let compiled = || rig.registry.runtime().cache().stats().compiled;
    assert_eq!(compiled(), 0);
    assert!(rig.registry.problems().is_empty());

    assert_eq!(ok_json(&call(&rig, "one", "{}")), serde_json::json!(1));
    assert_eq!(compiled(), 1);
    assert_eq!(state("one"), LoadState::Ready);
    assert_eq!(state("two"), LoadState::Loading);
    // A second call finds it loaded.
    assert_eq!(ok_json(&call(&rig, "one", "{}")), serde_json::json!(1));
    assert_eq!(compiled(), 1);

    // A module that does not compile fails at its first call, with the
    // reason, and is a problem from then on.
    let e = error_text(&call(&rig, "garbage", "{}"));
    assert!(e.contains("failed to parse"), "{e}");
    assert!(matches!(state("garbage"), LoadState::Failed(_)));
    assert!(
        rig.registry
            .problems()
            .iter()
            .any(|p| p.path.ends_with("garbage.wasm")),
        "{:?}",
        rig.registry.problems()
    );
    assert_eq!(state("two"), LoadState::Loading);
}

#[test]
fn unoptimized_modules_run_alike_and_are_cached_apart() {
    let cache = tempfile::TempDir::new().unwrap();
    let open = |optimize: bool| {
        let c = cache.path().to_owned();
        rig_with(
            move |cfg| {
                cfg.cache_dir = Some(c);
                cfg.optimize = optimize;
            },
            |dir| write_tool(dir, "e", builtin_module("echo"), ""),
            |b| b.builtins(false).watch(false),
        )
    };
    let entries = || {
        std::fs::read_dir(cache.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .count()
    };
    let quick = open(false);
    assert_eq!(ok_json(&call(&quick, "e", "{\"x\":1}"))["x"], 1);
    assert_eq!(quick.registry.runtime().cache().stats().compiled, 1);
    drop(quick);
    assert_eq!(entries(), 1);
    // The optimizing engine does not take the unoptimized entry: it
    // compiles its own, beside it, and the next start of each is a hit.
    let full = open(true);
    let s = full.registry.runtime().cache().stats();
    assert_eq!((s.compiled, s.disk_hits, s.corrupt), (1, 0, 0), "{s:?}");
    drop(full);
    assert_eq!(entries(), 2);
    for optimize in [false, true] {
        let again = open(optimize);
        let s = again.registry.runtime().cache().stats();
        assert_eq!(
            (s.compiled, s.disk_hits),
            (0, 1),
            "optimize {optimize}: {s:?}"
        );
        assert_eq!(ok_json(&call(&again, "e", "{\"x\":2}"))["x"], 2);
    }
}

#[test]
fn the_disk_cache_serves_hits_and_replaces_corrupt_entries() {
    let cache = tempfile::TempDir::new().unwrap();
    let cache_path = cache.path().to_owned();
    let open = || {
        let c = cache_path.clone();
        rig_with(
            move |cfg| cfg.cache_dir = Some(c),
            |dir| write_tool(dir, "e", builtin_module("echo"), ""),
            |b| b.builtins(false).watch(false),
        )
    };
    let first = open();
    assert_eq!(first.registry.runtime().cache().stats().compiled, 1);
    let entry = first
        .registry
        .runtime()
        .cache()
        .entry_path(&toolplane_pool::cache::digest(builtin_module("echo")))
        .unwrap();
    assert!(entry.exists());
    drop(first);

    let second = open();
    let s = second.registry.runtime().cache().stats();
    assert_eq!((s.disk_hits, s.compiled), (1, 0), "{s:?}");
    assert_eq!(ok_json(&call(&second, "e", "{\"x\":2}"))["x"], 2);
    drop(second);

    // Flip bytes in the middle of the entry: recompiled and replaced.
    let mut bytes = std::fs::read(&entry).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0xa5;
    }
    std::fs::write(&entry, &bytes).unwrap();
    let third = open();
    let s = third.registry.runtime().cache().stats();
    assert_eq!((s.corrupt, s.compiled, s.disk_hits), (1, 1, 0), "{s:?}");
    assert_eq!(ok_json(&call(&third, "e", "{\"x\":3}"))["x"], 3);
    drop(third);

    // Truncated: the same.
    let len = std::fs::metadata(&entry).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&entry)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    let fourth = open();
    let s = fourth.registry.runtime().cache().stats();
    assert_eq!((s.corrupt, s.compiled), (1, 1), "{s:?}");
    drop(fourth);

    // And the replaced entry is a hit again.
    let fifth = open();
    let s = fifth.registry.runtime().cache().stats();
    assert_eq!((s.disk_hits, s.compiled, s.corrupt), (1, 0, 0), "{s:?}");
}

fn next_event(
    rx: &flume::Receiver<RegistryEvent>,
    want: impl Fn(&RegistryEvent) -> bool,
) -> RegistryEvent {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(e) if want(&e) => return e,
            Ok(_) => {}
            Err(_) => panic!("no matching registry event within 20 s"),
        }
    }
}

#[test]
fn hot_reload_adds_replaces_and_removes_tools_and_says_so() {
    let rig = rig_with(|_| {}, |_| {}, |b| b.builtins(false));
    let events = rig.registry.subscribe();
    let dir = rig.tools.path();

    write_tool(dir, "t", &constant("v1"), "");
    next_event(
        &events,
        |e| matches!(e, RegistryEvent::Listed { name } if name == "t"),
    );
    next_event(
        &events,
        |e| matches!(e, RegistryEvent::Loaded { name } if name == "t"),
    );
    assert_eq!(call(&rig, "t", "{}"), Outcome::Ok(b"v1".as_slice().into()));

    // Replace the module: the new version serves once loaded.
    std::fs::write(dir.join("t.wasm"), constant("v2")).unwrap();
    let e = next_event(&events, |e| matches!(e, RegistryEvent::Replaced { .. }));
    assert!(e.changes_list());
    assert_eq!(call(&rig, "t", "{}"), Outcome::Ok(b"v2".as_slice().into()));

    // A broken replacement is reported with its path; v2 keeps serving.
    std::fs::write(dir.join("t.wasm"), b"not wasm at all").unwrap();
    match next_event(&events, |e| matches!(e, RegistryEvent::Failed { .. })) {
        RegistryEvent::Failed { name, path, reason } => {
            assert_eq!(name.as_deref(), Some("t"));
            assert_eq!(path, dir.join("t.wasm"));
            assert!(!reason.is_empty());
        }
        _ => unreachable!(),
    }
    assert_eq!(call(&rig, "t", "{}"), Outcome::Ok(b"v2".as_slice().into()));
    assert!(
        rig.registry
            .problems()
            .iter()
            .any(|p| p.path == dir.join("t.wasm"))
    );

    // Fixed: the problem clears.
    std::fs::write(dir.join("t.wasm"), constant("v3")).unwrap();
    next_event(&events, |e| matches!(e, RegistryEvent::Replaced { .. }));
    assert_eq!(call(&rig, "t", "{}"), Outcome::Ok(b"v3".as_slice().into()));
    assert!(
        rig.registry.problems().is_empty(),
        "{:?}",
        rig.registry.problems()
    );

    // Removing the manifest removes the tool.
    std::fs::remove_file(dir.join("t.toml")).unwrap();
    next_event(
        &events,
        |e| matches!(e, RegistryEvent::Removed { name } if name == "t"),
    );
    assert!(error_text(&call(&rig, "t", "{}")).contains("unknown tool"));
}

/// Of two tools with one MCP name, the one refused is listed once the
/// other goes, without its own file changing.
#[test]
fn a_tool_refused_for_a_name_clash_is_listed_when_the_other_goes() {
    let rig = rig_with(|_| {}, |_| {}, |b| b.builtins(false));
    let events = rig.registry.subscribe();
    let dir = rig.tools.path();
    write_tool(dir, "a.b", &constant("dotted"), "");
    next_event(
        &events,
        |e| matches!(e, RegistryEvent::Loaded { name } if name == "a.b"),
    );
    write_tool(dir, "a_b", &constant("under"), "");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !rig
        .registry
        .problems()
        .iter()
        .any(|p| p.reason.contains("also tool a.b"))
    {
        assert!(std::time::Instant::now() < deadline, "no clash reported");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(rig.registry.snapshot().by_name("a_b").is_none());

    std::fs::remove_file(dir.join("a.b.toml")).unwrap();
    next_event(
        &events,
        |e| matches!(e, RegistryEvent::Loaded { name } if name == "a_b"),
    );
    assert_eq!(
        call(&rig, "a_b", "{}"),
        Outcome::Ok(b"under".as_slice().into())
    );
    assert!(
        rig.registry.problems().is_empty(),
        "{:?}",
        rig.registry.problems()
    );
}

#[test]
fn reload_under_load_loses_no_call_and_serves_no_half_loaded_tool() {
    let rig = rig_with(
        |_| {},
        |dir| write_tool(dir, "t", &constant("v0"), ""),
        |b| b.builtins(false),
    );
    let events = rig.registry.subscribe();
    let e = engine(&rig, 2, 32);
    let dir = rig.tools.path().to_owned();
    let writer = std::thread::spawn(move || {
        for v in 1..=6 {
            std::thread::sleep(Duration::from_millis(60));
            let tmp = dir.join(".t.wasm.tmp");
            std::fs::write(&tmp, constant(&format!("v{v}"))).unwrap();
            std::fs::rename(&tmp, dir.join("t.wasm")).unwrap();
        }
        std::thread::sleep(Duration::from_millis(60));
        std::fs::remove_file(dir.join("t.toml")).unwrap();
    });
    let mut p = e.producer();
    let mut done = Vec::new();
    let mut sent = 0usize;
    let start = Instant::now();
    while !writer.is_finished() || start.elapsed() < Duration::from_millis(600) {
        let batch = (0..50).map(|i| event(&rig, "t", "{}").with_key(i));
        sent += 50;
        submit_all(&mut p, batch, &mut done);
        std::thread::sleep(Duration::from_millis(1));
        if start.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    writer.join().unwrap();
    next_event(&events, |e| matches!(e, RegistryEvent::Removed { .. }));
    for _ in 0..20 {
        sent += 1;
        submit_all(&mut p, [event(&rig, "t", "{}")], &mut done);
    }
    drain_until(&mut p, &mut done, sent, Duration::from_secs(30));
    let mut seen = std::collections::BTreeSet::new();
    for c in &done {
        match &c.outcome {
            Outcome::Ok(v) => {
                seen.insert(String::from_utf8_lossy(v).into_owned());
            }
            Outcome::Error(m) if m.contains("unknown tool") => {
                seen.insert("removed".into());
            }
            other => panic!("a call during reload ended in {other:?}"),
        }
    }
    assert!(seen.contains("v0") && seen.contains("removed"), "{seen:?}");
    assert!(seen.len() >= 4, "too few versions served: {seen:?}");
    // The last calls, after the removal, found no tool.
    assert!(
        done.iter()
            .rev()
            .take(5)
            .all(|c| matches!(&c.outcome, Outcome::Error(_)))
    );
    let report = e.shutdown(Duration::from_secs(5));
    assert!(report.is_balanced(), "{report:?}");
    assert_eq!(report.accepted, sent as u64);
}

#[test]
fn a_call_checked_by_its_caller_is_checked_again_only_by_another_version() {
    use std::sync::Arc;
    use toolplane_pool::PerCall;

    let rig = rig_with(|_| {}, |_| {}, |b| b.builtins(false));
    let events = rig.registry.subscribe();
    let dir = rig.tools.path();
    let open = "[input_schema]\ntype = \"object\"\n";
    write_tool(dir, "t", &constant("v1"), open);
    next_event(
        &events,
        |e| matches!(e, RegistryEvent::Loaded { name } if name == "t"),
    );
    let current = || {
        let entry = crate::wasi::block_on(rig.registry.resolve("t")).expect("listed");
        let tool = crate::wasi::block_on(entry.wait())
            .as_ref()
            .expect("loaded")
            .clone();
        (entry.id, tool)
    };
    let (id, v1) = current();
    let input = b"{\"a\":1}";
    let (event_v1, checked_by_v1) =
        PerCall::checked_event(id, &v1, input, Default::default()).expect("v1 takes any object");

    // A reload between the caller's check and the run: v2 requires a field
    // the input lacks, so the worker running v2 checks again and refuses.
    std::fs::write(
        dir.join("t.toml"),
        format!("name = \"t\"\ndescription = \"test tool\"\n{open}required = [\"must\"]\n"),
    )
    .unwrap();
    next_event(&events, |e| matches!(e, RegistryEvent::Replaced { .. }));
    let (_, v2) = current();
    assert!(PerCall::checked_event(id, &v2, input, Default::default()).is_err());

    let e = engine(&rig, 1, 4);
    let mut p = e.producer();
    let mut out = Vec::new();
    crate::support::submit_all(&mut p, [event_v1], &mut out);
    drain_until(&mut p, &mut out, 1, Duration::from_secs(20));
    assert!(
        error_text(&out[0].outcome).contains("must"),
        "{:?}",
        out[0].outcome
    );
    assert_eq!(
        checked_by_v1.form(),
        Some(toolplane_pool::kind::OutputForm::Json),
        "the worker records the form of the version it ran"
    );

    // Checked against the version that runs: it runs.
    let good = b"{\"must\":1}";
    let (event, checked_by_v2) = PerCall::checked_event(id, &v2, good, Default::default()).unwrap();
    out.clear();
    crate::support::submit_all(&mut p, [event], &mut out);
    drain_until(&mut p, &mut out, 1, Duration::from_secs(20));
    assert_eq!(out[0].outcome, Outcome::Ok(b"v1".as_slice().into()));
    assert_eq!(
        checked_by_v2.form(),
        Some(toolplane_pool::kind::OutputForm::Json)
    );

    // The context attached again, to an input v2 refuses: this event's
    // input was never checked, and the worker checks it.
    out.clear();
    let reused = toolplane_core::Event::new(id, input.as_slice())
        .with_attached(Arc::clone(&checked_by_v2) as toolplane_core::Attached);
    crate::support::submit_all(&mut p, [reused], &mut out);
    drain_until(&mut p, &mut out, 1, Duration::from_secs(20));
    assert!(
        error_text(&out[0].outcome).contains("must"),
        "{:?}",
        out[0].outcome
    );
    drop(p);
    e.shutdown(Duration::from_secs(5));
}
