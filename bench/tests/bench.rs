//! The benchmark crate's own tests: its statistics and thread crew, and
//! `compare` (the binary behind PERF.md's comparison tables) run briefly
//! on every scenario. One binary for all of them; building it also puts
//! `target/release/compare` beside the other binaries after `./dev run`.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use toolplane_bench::crew::Crew;
use toolplane_bench::stats::{Better, Side, summary, table};

#[test]
fn summary_takes_the_middle_and_the_ends() {
    let s = summary(&[3.0, 1.0, 2.0, 10.0, 5.0]);
    assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 10.0));
    assert!(summary(&[]).median.is_nan());
}

#[test]
fn ratios_are_per_replica_and_face_the_right_way() {
    let sides = [
        Side {
            name: "a".into(),
            replicas: vec![2.0, 4.0, 6.0],
        },
        Side {
            name: "base".into(),
            replicas: vec![1.0, 1.0, 3.0],
        },
    ];
    let rate = table("events/s", Better::Higher, "base", &sides);
    assert!(
        rate.contains("| a | 4.00 | 2.00–6.00 | 2.00 (2.00–4.00) |"),
        "{rate}"
    );
    assert!(
        rate.contains("| base | 1.00 | 1.00–3.00 | 1 (baseline) |"),
        "{rate}"
    );
    let time = table("µs", Better::Lower, "base", &sides);
    assert!(
        time.contains("| a | 4.00 | 2.00–6.00 | 0.50 (0.25–0.50) |"),
        "{time}"
    );
}

#[test]
fn every_iteration_runs_once_per_round() {
    let total = Arc::new(AtomicU64::new(0));
    let t = total.clone();
    let crew = Crew::start(
        3,
        move |_| t.clone(),
        |t: &mut Arc<AtomicU64>, share| {
            t.fetch_add(share, Ordering::Relaxed);
        },
    );
    crew.run(10);
    crew.run(7);
    crew.run_each(5);
    drop(crew);
    assert_eq!(total.load(Ordering::Relaxed), 32);
}

/// Runs `compare ARGS`; its stdout, after checking it succeeded.
fn compare(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_compare"))
        .args(args)
        .output()
        .expect("running compare");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "compare {args:?}: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The numbers in the table row that starts with `| name |`.
fn row(out: &str, name: &str) -> Vec<f64> {
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("| {name} |")))
        .unwrap_or_else(|| panic!("no row {name:?} in:\n{out}"));
    line.split('|')
        .skip(2)
        .filter_map(|c| c.split_whitespace().next())
        .filter_map(|c| c.replace(['\u{a0}', ','], "").parse().ok())
        .collect()
}

#[test]
fn compare_engine_measures_the_three_sides() {
    let out = compare(&["engine", "--seconds", "0.2", "--replicas", "1"]);
    for side in ["toolplane engine", "crossbeam-channel pool", "flume pool"] {
        let rate = row(&out, side)[0];
        assert!(rate > 0.0, "{side}: {rate}\n{out}");
    }
    assert!(out.contains("engine allocations per event"), "{out}");
}

#[test]
fn compare_wasi_times_every_mode() {
    let out = compare(&[
        "wasi", "--rounds", "1", "--calls", "20", "--sizes", "64", "--tools", "echo",
    ]);
    assert!(out.contains("### echo with a 64-byte input"), "{out}");
    assert!(out.contains("process per call"), "{out}");
    assert!(out.contains("fresh"), "{out}");
}

#[test]
fn compare_registry_times_start_up_and_a_first_call_on_demand() {
    let out = compare(&["registry", "--tools", "20", "--replicas", "1"]);
    for figure in [
        "listed",
        "all callable",
        "on demand: runtime, listing and one call answered",
    ] {
        let ms = row(&out, figure);
        assert!(
            ms.len() >= 2 && ms.iter().all(|x| *x > 0.0),
            "{figure}: {ms:?}\n{out}"
        );
    }
}

#[test]
fn compare_refuses_an_unknown_scenario_with_its_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_compare"))
        .arg("nonsense")
        .output()
        .expect("running compare");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unrecognized subcommand 'nonsense'") && err.contains("Usage: compare"),
        "{err}"
    );
}
