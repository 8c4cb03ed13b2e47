//! Nothing a process tool starts outlives the server or the one-shot CLI:
//! plain children, ones that ignore SIGTERM, double-forked, `setpgid` and
//! `setsid` ones — after a `SIGKILL` of the server too (each process runs
//! as the init of a PID namespace whose other members the kernel kills
//! with it; `pool/src/process/contain.rs`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Dirs, Server, binary, cache_dir};

/// A marker no other process has: `sleep` takes it as a number of seconds.
fn marker() -> String {
    format!(
        "6000.{}{}",
        std::process::id(),
        Instant::now().elapsed().subsec_nanos() % 1000
    )
}

/// The processes whose command line holds `marker`.
fn with_marker(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(marker).then_some(pid)
        })
        .collect()
}

/// A script that leaves five kinds of descendants, each running
/// `sleep MARKER`, then sleeps itself unless `exit` is given.
fn spawner(marker: &str, then: &str) -> String {
    format!(
        "cat >/dev/null\n\
         sleep {marker} &\n\
         sh -c 'trap \"\" TERM HUP; sleep {marker}' &\n\
         (sleep {marker} &)\n\
         setsid sleep {marker} &\n\
         perl -e 'setpgrp(0,0); exec @ARGV' sleep {marker} &\n\
         sleep 0.3\n\
         {then}"
    )
}

fn exec_tool(dirs: &Dirs, name: &str, script: &str) {
    std::fs::write(
        dirs.tools.path().join(format!("{name}.toml")),
        format!(
            "name = \"{name}\"\nruntime = \"process\"\nprotocol = \"exec\"\ncommand = [\"sh\", \"-c\", {script:?}]\n[limits]\ntimeout = \"60s\"\n"
        ),
    )
    .unwrap();
}

fn gone_within(marker: &str, wait: Duration) -> Vec<u32> {
    let deadline = Instant::now() + wait;
    loop {
        let left = with_marker(marker);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn nothing_a_tool_started_survives_a_sigkill_of_the_server() {
    let dirs = Dirs::new();
    let marker = marker();
    exec_tool(&dirs, "spawner", &spawner(&marker, "exec sleep 600"));
    let server = Server::start(&dirs, &[], &[], None);
    let url = server.url("/v1/tools/spawner/call");
    // The call stays in flight: its descendants are running.
    std::thread::spawn(move || {
        let _ = std::process::Command::new("curl")
            .args([
                "-s",
                "-m",
                "30",
                "-H",
                "content-type: application/json",
                "-d",
                "{}",
                &url,
            ])
            .stdout(Stdio::null())
            .status();
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while with_marker(&marker).len() < 5 {
        assert!(
            Instant::now() < deadline,
            "the descendants did not start: {:?}\n{}",
            with_marker(&marker),
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let kill = Command::new("kill")
        .args(["-KILL", &server_pid(&server).to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let left = gone_within(&marker, Duration::from_secs(5));
    assert!(
        left.is_empty(),
        "{} survived the server: {left:?}",
        left.len()
    );
}

fn server_pid(server: &Server) -> u32 {
    server.pid()
}

#[test]
fn nothing_a_tool_started_survives_the_one_shot_cli() {
    let dirs = Dirs::new();
    let marker = marker();
    exec_tool(&dirs, "spawner", &spawner(&marker, "echo '{\"ok\":true}'"));
    let out = Command::new(binary())
        .args(["call", "spawner", "{}", "--tools"])
        .arg(dirs.tools.path())
        .arg("--data")
        .arg(dirs.data.path())
        .env("TOOLPLANE_CACHE_DIR", cache_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"ok\""));
    let left = gone_within(&marker, Duration::from_secs(3));
    assert!(
        left.is_empty(),
        "{} survived the call: {left:?}",
        left.len()
    );
}
