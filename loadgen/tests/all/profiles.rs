//! Profile validation: the checked-in profiles are valid, and each kind of
//! mistake gets an error naming the file, the key and what is accepted.

use std::path::{Path, PathBuf};
use std::process::Command;

use toolplane_loadgen::Profile;
use toolplane_loadgen::profile::builtin_names;

fn profiles_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles")
}

#[test]
fn the_checked_in_profiles_are_valid() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(profiles_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let p = Profile::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
            p.check_tools_offline().unwrap_or_else(|e| panic!("{e}"));
            names.push(p.name);
        }
    }
    names.sort();
    for required in ["burst", "overload", "ramp", "smoke", "soak-10k"] {
        assert!(
            names.iter().any(|n| n == required),
            "profiles/{required}.toml is missing: {names:?}"
        );
    }
}

const GOOD: &str = r#"
seed = 1
duration = "10s"
[rate]
shape = "constant"
rate = "10k/s"
[[tools]]
name = "echo"
weight = 60
[[tools]]
name = "hash.sha256"
weight = 40
"#;

fn error(text: &str) -> String {
    match Profile::from_toml_str(text, Path::new("profiles/bad.toml")) {
        Ok(p) => match p.check_tools(&builtin_names()) {
            Ok(()) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    }
}

fn assert_names(msg: &str, parts: &[&str]) {
    assert!(msg.contains("profiles/bad.toml"), "no file in: {msg}");
    for p in parts {
        assert!(msg.contains(p), "{p:?} missing from: {msg}");
    }
}

#[test]
fn the_good_profile_is_good() {
    let p = Profile::from_toml_str(GOOD, Path::new("profiles/bad.toml")).unwrap();
    p.check_tools(&builtin_names()).unwrap();
}

#[test]
fn an_unknown_key_is_named_with_the_accepted_ones() {
    let m = error(&GOOD.replace("seed = 1", "seed = 1\nduraton = \"5s\""));
    assert_names(&m, &["duraton", "duration", "line"]);
    let m = error(&format!("{GOOD}\n[engine]\nworkerz = 2\n"));
    assert_names(&m, &["workerz", "workers"]);
}

#[test]
fn a_bad_unit_is_named_with_the_accepted_forms() {
    let m = error(&GOOD.replace("\"10k/s\"", "\"10k per second\""));
    assert_names(&m, &["rate.rate", "10k per second", "10k/s"]);
    let m = error(&GOOD.replace("\"10s\"", "\"10 parsecs\""));
    assert_names(&m, &["duration", "10 parsecs", "30s"]);
    let m = error(&format!(
        "{GOOD}\n[payload]\nsizes = [{{ size = \"1 KB/s\", weight = 100 }}]\n"
    ));
    assert_names(&m, &["payload.sizes[0].size", "KiB"]);
    let m = error(&format!("{GOOD}\n[slo]\np99 = \"fast\"\n"));
    assert_names(&m, &["slo.p99", "fast"]);
}

#[test]
fn weights_must_add_up_to_100() {
    let m = error(&GOOD.replace("weight = 40", "weight = 30"));
    assert_names(&m, &["tools[*].weight", "90", "add up to 100"]);
    let m = error(&format!(
        "{GOOD}\n[payload]\nsizes = [{{ size = \"1 KiB\", weight = 50 }}]\n"
    ));
    assert_names(&m, &["payload.sizes[*].weight", "50", "add up to 100"]);
}

#[test]
fn an_unknown_tool_is_named_with_the_tools_there_are() {
    let m = error(&GOOD.replace("\"hash.sha256\"", "\"hash.md5\""));
    assert_names(&m, &["tools[1].name", "hash.md5", "echo", "fs.read"]);
}

#[test]
fn other_mistakes_are_named_too() {
    assert_names(
        &error(&GOOD.replace("\"constant\"", "\"sine\"")),
        &["sine", "constant", "steps"],
    );
    assert_names(
        &error(&format!("{GOOD}\n[engine]\nworkers = 0\n")),
        &["engine.workers"],
    );
    assert_names(
        &error(&format!("{GOOD}\n[slo]\nmax_error_pct = 150\n")),
        &["slo.max_error_pct", "0 to 100"],
    );
    assert_names(
        &error(&format!("{GOOD}\n[pool.modes]\n\"hash.md5\" = \"reuse\"\n")),
        &["pool.modes", "hash.md5", "built-in"],
    );
    assert_names(
        &error(&format!("{GOOD}\n[slo]\nmin_sustainable_rate = \"1k/s\"\n")),
        &["min_sustainable_rate", "find_max"],
    );
    assert_names(
        &error(&format!("connections = 0\n{GOOD}")),
        &["connections", "1 to 65536"],
    );
}

#[test]
fn the_binary_checks_profiles_and_exits_2_on_a_bad_one() {
    let bin = env!("CARGO_BIN_EXE_loadgen");
    let ok = Command::new(bin)
        .arg("check")
        .current_dir(profiles_dir().join(".."))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, GOOD.replace("weight = 40", "weight = 41")).unwrap();
    let out = Command::new(bin).arg("check").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("bad.toml") && text.contains("tools[*].weight"),
        "{text}"
    );
    let out = Command::new(bin)
        .args(["run", "--rate", "fast"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "usage and profile errors exit 2"
    );
    let out = Command::new(bin).arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn output_to_a_reader_that_went_away_ends_quietly() {
    // `loadgen list | head -1`: the pipe's reader is gone before loadgen
    // writes (closed before it starts, so this never races).
    let bin = env!("CARGO_BIN_EXE_loadgen");
    for args in [&["list"][..], &["check"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(bin)
            .args(args)
            .current_dir(profiles_dir().join(".."))
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !err.contains("panicked"),
            "loadgen {args:?}: {:?}\n{err}",
            out.status
        );
    }
    // A write that fails otherwise (a full disk: /dev/full) is an error,
    // not a silently cut report.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = Command::new(bin).arg("list").stdout(full).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(2) && err.contains("cannot write to stdout"),
        "{:?}\n{err}",
        out.status
    );
}

#[test]
fn reporting_latency_adds_the_deterministic_bounds_and_refuses_a_rate_search() {
    let mut ramp = Profile::from_file(profiles_dir().join("ramp.toml")).unwrap();
    let e = ramp.report_latency().unwrap_err().to_string();
    assert!(
        e.contains("find_max") && e.contains("--latency-slo report"),
        "{e}"
    );
    let mut p = Profile::from_file(profiles_dir().join("smoke.toml")).unwrap();
    p.slo.max_error_pct = None;
    p.slo.max_shed_pct = None;
    p.slo.min_rate_pct = None;
    p.report_latency().unwrap();
    assert!(!p.slo.latency_judged);
    assert_eq!(
        (p.slo.max_error_pct, p.slo.max_shed_pct, p.slo.min_rate_pct),
        (Some(0.0), Some(0.0), Some(99.0))
    );
}

#[test]
fn a_profile_that_needs_a_server_is_refused_without_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["run", "serve-rest", "--quiet"])
        .current_dir(profiles_dir().join(".."))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(2) && err.contains("needs_target") && err.contains("--target"),
        "{:?}\n{err}",
        out.status
    );
}
