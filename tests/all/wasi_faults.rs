//! Fault tools (in WAT): trap, endless loop, memory bomb, stdout flood,
//! non-zero exit, huge output. Each ends in its outcome within its limit,
//! the calls beside it are undisturbed, and the books balance.

use std::time::Duration;

use toolplane_core::Outcome;

use crate::support::run_all;
use crate::wasi::{
    Rig, command_module, engine, error_text, event, fast_module, rig_with, write_tool,
};

fn fault_rig() -> Rig {
    rig_with(
        |_| {},
        |dir| {
            write_tool(dir, "f.trap", &fast_module("unreachable"), "");
            write_tool(
                dir,
                "f.loop",
                &fast_module("(loop $l (br $l)) (i64.const 0)"),
                "[limits]\ntimeout = \"1500ms\"",
            );
            write_tool(
                dir,
                "f.membomb",
                &fast_module(
                    "(block $d (loop $l (br_if $d (i32.eq (memory.grow (i32.const 16)) (i32.const -1))) (br $l))) unreachable",
                ),
                "[limits]\nmemory = \"4 MiB\"",
            );
            write_tool(
                dir,
                "f.huge",
                // A 2 MiB result (grow to 33 pages, return ptr 0, len 2 MiB).
                &fast_module("(drop (memory.grow (i32.const 32))) (i64.const 9007199254740992)"),
                "[limits]\nmax_output = \"1 MiB\"",
            );
            // iovec at 0: 1 KiB at offset 64, written to stdout forever.
            write_tool(
                dir,
                "f.flood",
                &command_module(
                    "(i32.store (i32.const 0) (i32.const 64)) (i32.store (i32.const 4) (i32.const 1024))
                     (loop $l (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))) (br $l))",
                    "",
                ),
                "[limits]\nmax_output = \"64 KiB\"",
            );
            // "boom" to stderr, then exit code 3.
            write_tool(
                dir,
                "f.exit",
                &command_module(
                    "(i32.store (i32.const 0) (i32.const 64)) (i32.store (i32.const 4) (i32.const 4))
                     (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
                     (call $exit (i32.const 3))",
                    "boom",
                ),
                "",
            );
            write_tool(
                dir,
                "f.exit.quiet",
                &command_module("(call $exit (i32.const 7))", ""),
                "",
            );
        },
        |b| b.watch(false),
    )
}

/// Every fault tool of [`fault_rig`].
const FAULTS: [&str; 7] = [
    "f.trap",
    "f.loop",
    "f.membomb",
    "f.huge",
    "f.flood",
    "f.exit",
    "f.exit.quiet",
];

/// Asserts the outcome `tool` must end in.
fn expect(o: &Outcome, tool: &str) {
    match tool {
        "echo" => assert!(
            matches!(o, Outcome::Ok(p) if p.as_slice() == b"{\"n\":1}"),
            "{o:?}"
        ),
        "f.trap" => assert!(
            matches!(o, Outcome::Trap(m) if m.contains("unreachable")),
            "{o:?}"
        ),
        "f.loop" => assert_eq!(*o, Outcome::Timeout),
        "f.membomb" => {
            let m = error_text(o);
            assert!(
                m.contains("memory limit exceeded") && m.contains("limits.memory = 4 MiB"),
                "{m}"
            );
        }
        "f.huge" => {
            let m = error_text(o);
            assert!(m.contains("limits.max_output = 1 MiB"), "{m}");
        }
        "f.flood" => {
            let m = error_text(o);
            assert!(m.contains("limits.max_output = 64 KiB"), "{m}");
        }
        "f.exit" => assert_eq!(error_text(o), "boom"),
        "f.exit.quiet" => assert!(error_text(o).contains("exited with code 7")),
        other => unreachable!("{other}"),
    }
}

#[test]
fn each_fault_ends_in_its_outcome_directly() {
    let rig = fault_rig();
    for tool in FAULTS {
        expect(&crate::wasi::call(&rig, tool, "{}"), tool);
    }
}

#[test]
fn an_idle_runtime_stops_ticking_and_a_call_wakes_it() {
    let rig = fault_rig();
    let rt = rig.registry.runtime();
    expect(&crate::wasi::call(&rig, "echo", "{\"n\":1}"), "echo");
    // Past the ticker's linger (100 ms of ticks) with no call running.
    std::thread::sleep(Duration::from_millis(400));
    let idle = rt.epochs();
    std::thread::sleep(Duration::from_millis(300));
    let still = rt.epochs();
    assert!(
        still - idle <= 1,
        "an idle runtime ticked {} times in 300 ms",
        still - idle
    );
    // A call wakes the ticker: the endless loop still ends in its 1.5 s
    // timeout (the host's deadline or the epoch's, whichever comes first:
    // each tick takes at least its period, so at most this many).
    assert_eq!(crate::wasi::call(&rig, "f.loop", "{}"), Outcome::Timeout);
    let ticks = rt.epochs() - still;
    let expected = Duration::from_millis(1500).as_nanos() / rt.config().epoch_tick.as_nanos();
    assert!(
        u128::from(ticks) >= expected / 2,
        "{ticks} ticks during a 1.5 s timeout at one per {:?}",
        rt.config().epoch_tick
    );
}

#[test]
fn a_finished_call_leaves_its_slot_warm_and_none_in_use() {
    let rig = fault_rig();
    let rt = rig.registry.runtime();
    let before = rt.slot_use();
    assert_eq!(before.in_use, 0, "slots in use before any call: {before:?}");
    expect(&crate::wasi::call(&rig, "echo", "{\"n\":1}"), "echo");
    let after = rt.slot_use();
    assert_eq!(
        after.in_use, 0,
        "slots in use after the call ended: {after:?}"
    );
    assert!(
        after.warm >= 1 && after.touched() >= before.touched().max(1),
        "the call's slot is not kept warm: before {before:?}, after {after:?}"
    );
    assert!(
        after.warm_bytes > 0,
        "a warm slot keeps no pages resident: {after:?}"
    );
}

#[test]
fn faults_beside_echo_calls_on_two_workers_keep_the_books_balanced() {
    let rig = fault_rig();
    let e = engine(&rig, 2, 64);
    let mut p = e.producer();
    let mut names = Vec::new();
    let mut events = Vec::new();
    // Loops first, on both workers, then every other fault and a stream of
    // echo calls beside them.
    for k in 0..2u64 {
        names.push("f.loop");
        events.push(
            event(&rig, "f.loop", "{}")
                .with_key(k)
                .with_tag(names.len() as u64 - 1),
        );
    }
    for round in 0..4 {
        for f in FAULTS.iter().filter(|f| **f != "f.loop") {
            names.push(f);
            events.push(event(&rig, f, "{}").with_tag(names.len() as u64 - 1));
        }
        for i in 0..50u64 {
            names.push("echo");
            events.push(
                event(&rig, "echo", "{\"n\":1}")
                    .with_key(100 + round * 50 + i)
                    .with_tag(names.len() as u64 - 1),
            );
        }
    }
    let done = run_all(&mut p, events, Duration::from_secs(60));
    assert_eq!(done.len(), names.len());
    for c in &done {
        expect(&c.outcome, names[c.tag as usize]);
    }
    // Every echo finished while the endless loops were still running on
    // both workers: the loops yield at each epoch tick.
    let first_timeout = done
        .iter()
        .filter(|c| c.outcome == Outcome::Timeout)
        .map(|c| c.times.finished)
        .min()
        .unwrap();
    let last_echo = done
        .iter()
        .filter(|c| names[c.tag as usize] == "echo")
        .map(|c| c.times.finished)
        .max()
        .unwrap();
    assert!(
        last_echo < first_timeout,
        "echo calls waited for the endless loops"
    );
    // Every slot went back to the pool.
    let rt = rig.registry.runtime();
    assert_eq!(rt.free_slots(), rt.config().instances as usize);
    let report = e.shutdown(Duration::from_secs(5));
    assert!(report.is_balanced(), "{report:?}");
    assert_eq!(report.accepted, names.len() as u64);
}
