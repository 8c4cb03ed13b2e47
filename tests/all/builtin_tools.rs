//! The built-in tools, through the engine and directly: results, the fs
//! sandbox, input errors, reuse-mode recycling, and many parked calls.

use std::time::{Duration, Instant};

use toolplane_core::Outcome;

use crate::support::run_all;
use crate::wasi::{
    builtin_module, builtins, call, engine, error_text, event, ok_json, rig_with, write_tool,
};

#[test]
fn every_builtin_answers_through_the_engine() {
    let rig = builtins();
    let e = engine(&rig, 2, 16);
    let mut p = e.producer();
    let events = vec![
        event(&rig, "echo", r#"{"x":[1,2,3]}"#).with_tag(0),
        event(&rig, "hash.sha256", r#"{"data":"abc"}"#).with_tag(1),
        event(
            &rig,
            "hash.sha256",
            r#"{"data":"YWJj","encoding":"base64","rounds":3}"#,
        )
        .with_tag(2),
        event(
            &rig,
            "fs.write",
            r#"{"path":"d/a.txt","content":"hello","create_dirs":true}"#,
        )
        .with_key(7)
        .with_tag(3),
        event(
            &rig,
            "fs.write",
            r#"{"path":"d/a.txt","content":" world","append":true}"#,
        )
        .with_key(7)
        .with_tag(4),
        event(&rig, "fs.read", r#"{"path":"d/a.txt"}"#)
            .with_key(7)
            .with_tag(5),
        event(
            &rig,
            "fs.read",
            r#"{"path":"d/a.txt","offset":6,"length":3}"#,
        )
        .with_key(7)
        .with_tag(6),
        event(&rig, "sleep", r#"{"ms":5}"#).with_tag(7),
    ];
    let mut done = run_all(&mut p, events, Duration::from_secs(30));
    done.sort_by_key(|c| c.tag);
    let out: Vec<_> = done.iter().map(|c| ok_json(&c.outcome)).collect();
    assert_eq!(out[0], serde_json::json!({"x":[1,2,3]}));
    assert_eq!(
        out[1]["sha256"],
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(out[1]["bytes"], 3);
    // Three chained rounds differ from one, and from the data's own hash.
    assert_eq!(out[2]["rounds"], 3);
    assert_ne!(out[2]["sha256"], out[1]["sha256"]);
    assert_eq!(out[3]["bytes_written"], 5);
    assert_eq!(out[4]["bytes_written"], 6);
    assert_eq!(out[5]["content"], "hello world");
    assert_eq!(out[5]["encoding"], "utf8");
    assert_eq!(out[5]["eof"], true);
    assert_eq!(out[6]["content"], "wor");
    assert_eq!(out[6]["eof"], false);
    assert_eq!(out[7]["slept_ms"], 5);
    assert_eq!(
        std::fs::read_to_string(rig.data.path().join("d/a.txt")).unwrap(),
        "hello world"
    );
    let report = e.shutdown(Duration::from_secs(5));
    assert!(report.is_balanced(), "{report:?}");
    assert_eq!(report.outcomes.get(toolplane_core::OutcomeKind::Ok), 8);
}

#[test]
fn fs_tools_stay_inside_the_data_directory() {
    let rig = builtins();
    let outside = tempfile::TempDir::new().unwrap();
    std::fs::write(outside.path().join("secret"), "s3cret").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), rig.data.path().join("link"))
        .unwrap();
    std::os::unix::fs::symlink(outside.path(), rig.data.path().join("dirlink")).unwrap();
    for (tool, input, expect) in [
        ("fs.read", r#"{"path":"../secret"}"#, "`..` is not allowed"),
        (
            "fs.read",
            r#"{"path":"a/../../secret"}"#,
            "`..` is not allowed",
        ),
        (
            "fs.read",
            r#"{"path":"/etc/passwd"}"#,
            "absolute paths are not allowed",
        ),
        (
            "fs.write",
            r#"{"path":"/tmp/x","content":"x"}"#,
            "absolute paths are not allowed",
        ),
        ("fs.read", r#"{"path":"link"}"#, "cannot open \"link\""),
        (
            "fs.read",
            r#"{"path":"dirlink/secret"}"#,
            "cannot open \"dirlink/secret\"",
        ),
        (
            "fs.write",
            r#"{"path":"dirlink/new","content":"x"}"#,
            "cannot open for writing",
        ),
        ("fs.read", r#"{"path":"missing.txt"}"#, "no such file"),
    ] {
        let msg = error_text(&call(&rig, tool, input));
        assert!(msg.contains(expect), "{tool} {input}: {msg}");
        assert!(!msg.contains("s3cret"));
    }
    assert!(!outside.path().join("new").exists());
    // Non-UTF-8 content comes back as base64, and can be asked for.
    std::fs::write(rig.data.path().join("bin"), [0xff, 0x00, 0x80]).unwrap();
    let out = ok_json(&call(&rig, "fs.read", r#"{"path":"bin"}"#));
    assert_eq!(out["encoding"], "base64");
    assert_eq!(out["content"], "/wCA");
    let out = ok_json(&call(
        &rig,
        "fs.write",
        r#"{"path":"b2","content":"/wCA","encoding":"base64"}"#,
    ));
    assert_eq!(out["bytes_written"], 3);
    assert_eq!(
        std::fs::read(rig.data.path().join("b2")).unwrap(),
        [0xff, 0x00, 0x80]
    );
}

#[test]
fn a_read_only_grant_refuses_writes() {
    let rig = rig_with(
        |_| {},
        |dir| {
            write_tool(
                dir,
                "ro.write",
                builtin_module("fs.write"),
                "[[permissions.dirs]]\nhost = \"{data}\"\nguest = \"/data\"\naccess = \"read-only\"",
            )
        },
        |b| b.builtins(false).watch(false),
    );
    let msg = error_text(&call(&rig, "ro.write", r#"{"path":"x.txt","content":"x"}"#));
    assert!(msg.contains("cannot open for writing \"x.txt\""), "{msg}");
    assert!(!rig.data.path().join("x.txt").exists());
}

#[test]
fn bad_input_is_refused_before_the_call_with_the_field_named() {
    let rig = builtins();
    let e = engine(&rig, 2, 16);
    let unknown = rig.registry.tool_table().intern("no.such.tool");
    let mut p = e.producer();
    let events = vec![
        toolplane_core::Event::new(unknown, b"{}".as_slice()).with_tag(0),
        event(&rig, "echo", "{not json").with_tag(1),
        event(&rig, "echo", "[1,2]").with_tag(2),
        event(&rig, "hash.sha256", r#"{"data":5}"#).with_tag(3),
        event(&rig, "hash.sha256", r#"{"data":"x","rounds":0}"#).with_tag(4),
        event(&rig, "fs.read", r#"{"path":"a","mode":"x"}"#).with_tag(5),
        event(&rig, "sleep", r#"{}"#).with_tag(6),
    ];
    let mut done = run_all(&mut p, events, Duration::from_secs(30));
    done.sort_by_key(|c| c.tag);
    let msgs: Vec<String> = done.iter().map(|c| error_text(&c.outcome)).collect();
    assert!(
        msgs[0].contains("unknown tool \"no.such.tool\""),
        "{}",
        msgs[0]
    );
    assert!(
        msgs[1].contains("tool echo: input is not valid JSON"),
        "{}",
        msgs[1]
    );
    assert!(
        msgs[2].contains("input must be a JSON object"),
        "{}",
        msgs[2]
    );
    assert!(msgs[3].contains("at /data:"), "{}", msgs[3]);
    assert!(msgs[4].contains("at /rounds:"), "{}", msgs[4]);
    assert!(msgs[5].contains("mode"), "{}", msgs[5]);
    assert!(msgs[6].contains("ms"), "{}", msgs[6]);
    // None of them ran: nothing was compiled or instantiated for them, and
    // every pool slot is free again.
    assert_eq!(
        rig.registry.runtime().free_slots(),
        rig.registry.runtime().config().instances as usize
    );
    assert!(e.shutdown(Duration::from_secs(5)).is_balanced());
}

#[test]
fn the_command_entry_gives_the_same_results() {
    let rig = rig_with(
        |_| {},
        |dir| {
            write_tool(
                dir,
                "echo.cmd",
                builtin_module("echo"),
                "entry = \"command\"",
            );
            write_tool(
                dir,
                "hash.cmd",
                builtin_module("hash.sha256"),
                "entry = \"command\"",
            );
        },
        |b| b.watch(false),
    );
    for (cmd, fast, input) in [
        ("echo.cmd", "echo", r#"{"a":"b"}"#),
        ("hash.cmd", "hash.sha256", r#"{"data":"abc","rounds":2}"#),
    ] {
        let o = call(&rig, cmd, input);
        assert!(matches!(o, Outcome::Ok(_)), "{o:?}");
        assert_eq!(o, call(&rig, fast, input));
    }
    // A tool error in the command entry: message from stderr, non-zero exit.
    let msg = error_text(&call(&rig, "hash.cmd", r#"{"data":"a","rounds":2000000}"#));
    assert!(msg.contains("rounds = 2000000 is out of range"), "{msg}");
}

#[test]
fn reuse_mode_keeps_state_and_recycles_after_n_calls_and_after_a_trap() {
    let wasm = wat::parse_str(
        r#"(module
            (global (mut i32) (i32.const 0))
            (memory (export "memory") 1)
            (func (export "toolplane_alloc") (param i32) (result i32) i32.const 1024)
            (func (export "toolplane_call") (param i32 i32) (result i64)
                (global.set 0 (i32.add (global.get 0) (i32.const 1)))
                (if (i32.eq (local.get 1) (i32.const 2)) (then unreachable))
                (i32.store8 (i32.const 0) (i32.add (i32.const 48) (global.get 0)))
                (i64.const 4294967296)))"#,
    )
    .unwrap();
    let rig = rig_with(
        |_| {},
        |dir| {
            write_tool(
                dir,
                "count.reuse",
                &wasm,
                "mode = \"reuse\"\n[limits]\nrecycle_after = 3",
            );
            write_tool(dir, "count.fresh", &wasm, "");
        },
        |b| b.builtins(false).watch(false),
    );
    let e = engine(&rig, 1, 4);
    let mut p = e.producer();
    let inputs = [
        "{\"a\":1}",
        "{\"a\":1}",
        "{\"a\":1}",
        "{\"a\":1}",
        "{}",
        "{\"a\":1}",
        "{\"a\":1}",
    ];
    let run = |p: &mut toolplane_core::Producer, tool: &str| -> Vec<Outcome> {
        let events = inputs
            .iter()
            .enumerate()
            .map(|(i, input)| event(&rig, tool, input).with_key(1).with_tag(i as u64));
        let mut done = run_all(p, events, Duration::from_secs(30));
        done.sort_by_key(|c| c.tag);
        done.into_iter().map(|c| c.outcome).collect()
    };
    let text = |o: &Outcome| match o {
        Outcome::Ok(p) => String::from_utf8_lossy(p).into_owned(),
        Outcome::Trap(_) => "trap".into(),
        other => format!("{other:?}"),
    };
    let reuse: Vec<_> = run(&mut p, "count.reuse").iter().map(text).collect();
    // 1 2 3, recycled after 3 calls; then 1, a trap (its instance is
    // dropped), and a fresh count after it.
    assert_eq!(reuse, ["1", "2", "3", "1", "trap", "1", "2"]);
    let fresh: Vec<_> = run(&mut p, "count.fresh").iter().map(text).collect();
    assert_eq!(fresh, ["1", "1", "1", "1", "trap", "1", "1"]);
    assert!(e.shutdown(Duration::from_secs(5)).is_balanced());
}

#[test]
fn a_thousand_sleeps_overlap_and_echo_calls_pass_them() {
    let rig = builtins();
    let e = engine(&rig, 2, 600);
    let mut p = e.producer();
    let start = Instant::now();
    let sleeps = (0..1000u64).map(|i| event(&rig, "sleep", r#"{"ms":10}"#).with_tag(i));
    let echoes = (0..50u64).map(|i| event(&rig, "echo", r#"{"n":1}"#).with_tag(10_000 + i));
    let done = run_all(&mut p, sleeps.chain(echoes), Duration::from_secs(30));
    let took = start.elapsed();
    assert_eq!(done.len(), 1050);
    assert!(
        done.iter().all(|c| matches!(c.outcome, Outcome::Ok(_))),
        "{:?}",
        done.iter().find(|c| !matches!(c.outcome, Outcome::Ok(_)))
    );
    // Queued one after another they would take 10 s (5 s per worker); they
    // overlap instead.
    assert!(
        took < Duration::from_millis(2500),
        "1000 × 10 ms sleeps took {took:?}"
    );
    // Echo calls submitted after the sleeps do not wait for them: each
    // finished before the last sleep did.
    let last_sleep = done
        .iter()
        .filter(|c| c.tag < 10_000)
        .map(|c| c.times.finished)
        .max()
        .unwrap();
    let last_echo = done
        .iter()
        .filter(|c| c.tag >= 10_000)
        .map(|c| c.times.finished)
        .max()
        .unwrap();
    assert!(
        last_echo < last_sleep,
        "echo calls queued behind the sleeps"
    );
    assert!(e.shutdown(Duration::from_secs(5)).is_balanced());
}

/// The output check is the registry's, for every caller: an embedded
/// engine and `Registry::call` refuse output that does not match the
/// tool's `output_schema`, as the server does.
#[test]
fn an_embedded_caller_gets_the_output_check() {
    let rig = rig_with(
        |_| {},
        |dir| {
            write_tool(
                dir,
                "strict",
                builtin_module("echo"),
                "[output_schema]\ntype = \"object\"\nrequired = [\"y\"]",
            )
        },
        |b| b,
    );
    let e = engine(&rig, 1, 4);
    let mut p = e.producer();
    let events = vec![
        event(&rig, "strict", r#"{"y":1}"#).with_tag(0),
        event(&rig, "strict", r#"{"x":1}"#).with_tag(1),
    ];
    let mut done = run_all(&mut p, events, Duration::from_secs(30));
    done.sort_by_key(|c| c.tag);
    assert_eq!(ok_json(&done[0].outcome), serde_json::json!({"y":1}));
    let m = error_text(&done[1].outcome);
    assert!(m.contains("output_schema") && m.contains("\"y\""), "{m}");
    let m = error_text(&call(&rig, "strict", r#"{"x":1}"#));
    assert!(m.contains("output_schema"), "{m}");
}
