//! `loadgen --target`: the same open-loop measurement over the REST call
//! path of a running server.

use std::path::Path;

use toolplane_loadgen::{Profile, RunOptions, Target};

use crate::support::{Dirs, Server};

fn profile(body: &str) -> Profile {
    Profile::from_toml_str(body, Path::new("remote.toml")).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn drives_a_server_open_loop_and_checks_its_books() {
    let dirs = Dirs::new();
    let s = Server::start(&dirs, &[], &[], None);
    let p = profile(
        r#"
seed = 3
warmup = "500ms"
duration = "2s"
connections = 8
[rate]
shape = "constant"
rate = "500/s"
[[tools]]
name = "echo"
weight = 70
[[tools]]
name = "hash.sha256"
weight = 30
[payload]
sizes = [{ size = "64 B", weight = 100 }]
"#,
    );
    let target = Target::remote(&p, &s.url(""), None).unwrap();
    assert!(target.tools.contains(&"echo".to_string()));
    let out = toolplane_loadgen::run(&p, target, &RunOptions::default()).unwrap();
    let r = &out.report;
    assert_eq!(r.outcomes["ok"], 1000, "{}", r.text());
    assert_eq!(r.rejected.values().sum::<u64>(), 0, "{}", r.text());
    assert!(
        (r.achieved_rate - 500.0).abs() <= 5.0,
        "achieved {} of 500/s\n{}",
        r.achieved_rate,
        r.text()
    );
    // The server's engine saw every event of the run, warm-up included,
    // and answered each.
    assert_eq!(r.engine.accepted, 1250, "{}", r.text());
    assert!(r.engine.books_balanced, "{}", r.text());
    assert!(r.memory.samples >= 2, "the server's memory was sampled");
    assert!(
        r.text().contains("toolplane serve at http://"),
        "{}",
        r.text()
    );
}

#[test]
fn refusals_come_back_as_rejections_not_latency() {
    let dirs = Dirs::new();
    // One call in flight at a time on the server, against 8 connections of
    // 50 ms sleeps: most calls are refused with 429 (inflight_limit).
    let s = Server::start(&dirs, &[], &[("TOOLPLANE_MAX_INFLIGHT", "1")], None);
    let p = profile(
        r#"
seed = 4
warmup = "0s"
duration = "2s"
connections = 8
[rate]
shape = "constant"
rate = "100/s"
[[tools]]
name = "sleep"
weight = 100
input = { ms = 50 }
"#,
    );
    let target = Target::remote(&p, &s.url(""), None).unwrap();
    let out = toolplane_loadgen::run(&p, target, &RunOptions::default()).unwrap();
    let r = &out.report;
    let refused = r.rejected["inflight_limit"];
    let ok = r.outcomes["ok"];
    assert!(refused > 50, "{}", r.text());
    assert!(ok > 10, "{}", r.text());
    assert_eq!(ok + refused, 200, "every event answered once\n{}", r.text());
    assert_eq!(
        r.latency_us.corrected.count,
        ok,
        "refusals are not latency samples\n{}",
        r.text()
    );
    assert_eq!(r.engine.accepted, ok, "{}", r.text());
}

#[test]
fn a_remote_target_gets_the_files_its_profile_reads() {
    let dirs = Dirs::new();
    let s = Server::start(&dirs, &[], &[], None);
    // fs.read events read `loadgen/read-<size>.txt`; before the server's
    // data directory was seeded, every one of them answered 422.
    let p = profile(
        r#"
seed = 5
warmup = "0s"
duration = "1s"
connections = 4
[rate]
shape = "constant"
rate = "200/s"
[[tools]]
name = "fs.read"
weight = 50
[[tools]]
name = "fs.write"
weight = 50
[payload]
sizes = [{ size = "64 B", weight = 50 }, { size = "4 KiB", weight = 50 }]
"#,
    );
    let target = Target::remote(&p, &s.url(""), None).unwrap();
    let out = toolplane_loadgen::run(&p, target, &RunOptions::default()).unwrap();
    let r = &out.report;
    assert_eq!(r.outcomes["ok"], 200, "{}", r.text());
    for size in [64, 4096] {
        let f = dirs.data.path().join(format!("loadgen/read-{size}.txt"));
        assert_eq!(
            std::fs::metadata(&f).unwrap().len(),
            size,
            "{}",
            f.display()
        );
    }
}
