//! Nothing a process tool starts outlives the server or the one-shot CLI:
//! plain children, ones that ignore SIGTERM, double-forked, `setpgid` and
//! `setsid` ones — after a `SIGKILL` of the server too (each process runs
//! as the init of a PID namespace whose other members the kernel kills
//! with it; `pool/process/src/contain.rs`).

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

/// An exec tool `name` running `sh -c script`, with `extra` manifest
/// lines (a `[limits]` table among them).
fn exec_tool(dirs: &Dirs, name: &str, script: &str, extra: &str) {
    std::fs::write(
        dirs.tools.path().join(format!("{name}.toml")),
        format!(
            "name = \"{name}\"\nruntime = \"process\"\nprotocol = \"exec\"\ncommand = [\"sh\", \"-c\", {script:?}]\n{extra}"
        ),
    )
    .unwrap();
}

const LONG: &str = "[limits]\ntimeout = \"60s\"\n";

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

/// Calls `tool` over REST from a thread, not waiting for its answer (the
/// call stays in flight while the test kills the server).
fn call_in_background(server: &Server, tool: &str) {
    let url = server.url(&format!("/v1/tools/{tool}/call"));
    std::thread::spawn(move || {
        let _ = Command::new("curl")
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
}

/// `SIGKILL`s the server; the processes with `marker` still there 5 s on.
fn sigkill_then_left(server: &Server, marker: &str) -> Vec<u32> {
    let kill = Command::new("kill")
        .args(["-KILL", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    gone_within(marker, Duration::from_secs(5))
}

#[test]
fn nothing_a_tool_started_survives_a_sigkill_of_the_server() {
    let dirs = Dirs::new();
    let marker = marker();
    exec_tool(&dirs, "spawner", &spawner(&marker, "exec sleep 600"), LONG);
    let server = Server::start(&dirs, &[], &[], None);
    // The call stays in flight: its descendants are running.
    call_in_background(&server, "spawner");
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
    let groups = cgroups_of(server.pid());
    let no_cgroups = server.stderr().contains("no cgroups for process tools");
    assert_eq!(
        groups.is_empty(),
        no_cgroups,
        "{groups:?}\n{}",
        server.stderr()
    );
    let left = sigkill_then_left(&server, &marker);
    assert!(
        left.is_empty(),
        "{} survived the server: {left:?}",
        left.len()
    );
    // What remains are its empty control groups, removed by the next
    // server when it starts its first process tool.
    let next = Server::start(&dirs, &[], &[], None);
    let out = Command::new("curl")
        .args([
            "-s",
            "-m",
            "10",
            "-H",
            "content-type: application/json",
            "-d",
            "{}",
        ])
        .arg(next.url("/v1/tools/echo/call"))
        .output()
        .unwrap();
    assert!(out.status.success());
    call_in_background(&next, "spawner");
    let deadline = Instant::now() + Duration::from_secs(10);
    while groups.iter().any(|g| g.exists()) {
        assert!(Instant::now() < deadline, "left behind: {groups:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The control groups the server `pid` made (`toolplane-<pid namespace>-
/// <pid>-<start>`), in every hierarchy.
fn cgroups_of(pid: u32) -> Vec<std::path::PathBuf> {
    let out = Command::new("find")
        .args(["/sys/fs/cgroup", "-maxdepth", "5", "-type", "d", "-name"])
        .arg(format!("toolplane-*-{pid}-*"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(std::path::PathBuf::from)
        .collect()
}

#[test]
fn nothing_a_tool_started_survives_the_one_shot_cli() {
    let dirs = Dirs::new();
    let marker = marker();
    exec_tool(
        &dirs,
        "spawner",
        &spawner(&marker, "echo '{\"ok\":true}'"),
        LONG,
    );
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

/// One slow tool cannot starve the rest: its backlog (running and
/// waiting) is bounded below what the engine holds, so the calls past it
/// are refused `busy` at once and `echo` keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_tool_backlog_is_refused_busy_and_echo_keeps_answering() {
    let dirs = Dirs::new();
    exec_tool(
        &dirs,
        "slow",
        "cat >/dev/null; sleep 5; echo '{}'",
        "[pool]\nmax = 1\n[limits]\ntimeout = \"3s\"\n",
    );
    let server = std::sync::Arc::new(Server::start(&dirs, &[], &[], None));
    let c = crate::support::client();
    let mut calls = Vec::new();
    for _ in 0..600 {
        let (c, s) = (c.clone(), std::sync::Arc::clone(&server));
        calls.push(tokio::spawn(async move {
            crate::rest::post(&c, &s, "slow", "{}").await.0
        }));
    }
    // While the slow tool's backlog is full, echo answers at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..20 {
        let started = Instant::now();
        let (st, v) = crate::rest::post(&c, &server, "echo", &format!(r#"{{"i":{i}}}"#)).await;
        assert_eq!(st, 200, "{v}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "echo waited {:?} behind the slow tool",
            started.elapsed()
        );
    }
    let mut busy = 0;
    for h in calls {
        if h.await.unwrap() == 429 {
            busy += 1;
        }
    }
    // One runs and 64 wait (pool.queue's default); the rest are refused.
    assert!(busy >= 500, "only {busy} of 600 refused");
}

/// A set `up` served by the test upstream in `mode`
/// (`tests/fixtures/mcp/hostile.py`), with `extra` manifest lines.
fn upstream_set(dirs: &Dirs, mode: &str, extra: &str) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/mcp/hostile.py")
        .canonicalize()
        .unwrap();
    std::fs::write(
        dirs.tools.path().join("up.toml"),
        format!(
            "name = \"up\"\nruntime = \"process\"\nprotocol = \"mcp\"\ncommand = [\"python3\", {:?}, {mode:?}]\n{extra}",
            script.display().to_string()
        ),
    )
    .unwrap();
}

fn cli(dirs: &Dirs, args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .args(args)
        .arg("--tools")
        .arg(dirs.tools.path())
        .arg("--data")
        .arg(dirs.data.path())
        .env("TOOLPLANE_CACHE_DIR", cache_dir())
        .output()
        .unwrap()
}

#[test]
fn the_one_shot_cli_calls_a_member_of_a_set() {
    let dirs = Dirs::new();
    upstream_set(&dirs, "healthy", "");
    let out = cli(&dirs, &["call", "up.echo", r#"{"said":"hi"}"#]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(r#"\"said\": \"hi\""#), "{stdout}");
}

#[test]
fn tools_list_and_check_are_bounded_by_a_stuck_upstream() {
    let dirs = Dirs::new();
    upstream_set(&dirs, "silent-list", "[limits]\nstartup_timeout = \"1s\"\n");
    for args in [&["tools", "list"][..], &["check"][..]] {
        let started = Instant::now();
        let out = cli(&dirs, args);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{args:?} took {:?}",
            started.elapsed()
        );
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            all.contains("tools/list") && all.contains("1s"),
            "{args:?}: {all}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_clients_first_list_has_the_members_of_sets_loading() {
    use rmcp::ServiceExt;
    let dirs = Dirs::new();
    upstream_set(&dirs, "healthy", "");
    let mut cmd = tokio::process::Command::from(crate::support::serve_command(&dirs));
    cmd.arg("--stdio");
    let transport = rmcp::transport::TokioChildProcess::new(cmd).unwrap();
    let client = ().serve(transport).await.expect("MCP initialize over stdio");
    let tools = client.list_all_tools().await.unwrap();
    assert!(
        tools.iter().any(|t| t.name == "up_echo"),
        "{:?}",
        tools.iter().map(|t| t.name.to_string()).collect::<Vec<_>>()
    );
    client.cancel().await.unwrap();
}

/// The server's CPU time so far, in clock ticks (utime + stime).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (which may hold spaces) end with ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stderr_flood_costs_the_server_little() {
    let dirs = Dirs::new();
    exec_tool(
        &dirs,
        "flood",
        "cat >/dev/null; exec cat /dev/zero >&2",
        "[limits]\ntimeout = \"3s\"\n",
    );
    let server = Server::start(&dirs, &[], &[], None);
    let c = crate::support::client();
    let before = cpu_ticks(server.pid());
    let started = Instant::now();
    let (st, v) = crate::rest::post(&c, &server, "flood", "{}").await;
    assert_eq!(st, 504, "{v}");
    let spent = cpu_ticks(server.pid()) - before;
    // Ticks are 1/100 s: under a fifth of a core over the call.
    assert!(
        spent * 10 < started.elapsed().as_millis() as u64 / 5,
        "the server spent {spent} ticks reading {:?} of stderr",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_do_not_grow_with_a_sets_member_count() {
    let dirs = Dirs::new();
    upstream_set(&dirs, "many", "");
    // hostile.py's `many` mode takes the count as its next argument.
    let manifest = std::fs::read_to_string(dirs.tools.path().join("up.toml"))
        .unwrap()
        .replace("\"many\"]", "\"many\", \"500\"]");
    std::fs::write(dirs.tools.path().join("up.toml"), manifest).unwrap();
    let server = Server::start(&dirs, &[], &[], None);
    let c = crate::support::client();
    // The set loads in the background: wait for its members.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed: serde_json::Value = c
            .get(server.url("/v1/tools"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["name"].as_str().unwrap().starts_with("up."))
            .count()
            == 500
        {
            break;
        }
        assert!(Instant::now() < deadline, "the 500 members were not listed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = c
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let process_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("toolplane_process_"))
        .collect();
    assert!(
        process_lines.iter().any(|l| l.contains(r#"tool="up""#)),
        "{process_lines:?}"
    );
    assert!(
        !process_lines.iter().any(|l| l.contains(r#"tool="up.t"#)),
        "members have series of their own"
    );
    assert!(text.len() < 256 << 10, "/metrics is {} bytes", text.len());
}

#[test]
fn a_program_that_clears_its_death_signal_still_dies_with_the_server() {
    let dirs = Dirs::new();
    let marker = marker();
    // PR_SET_PDEATHSIG (1) to 0: the program's own death signal cleared.
    let script = format!(
        "import ctypes, sys, time\nsys.stdin.read()\nctypes.CDLL(None).prctl(1, 0, 0, 0, 0)\nprint('{{}}', flush=True)\ntime.sleep(600)  # {marker}\n"
    );
    std::fs::write(
        dirs.tools.path().join("stubborn.toml"),
        format!(
            "name = \"stubborn\"\nruntime = \"process\"\nprotocol = \"exec\"\ncommand = [\"python3\", \"-c\", {script:?}, \"{marker}\"]\n[limits]\ntimeout = \"60s\"\n"
        ),
    )
    .unwrap();
    let server = Server::start(&dirs, &[], &[], None);
    call_in_background(&server, "stubborn");
    let deadline = Instant::now() + Duration::from_secs(20);
    while with_marker(&marker).is_empty() {
        assert!(
            Instant::now() < deadline,
            "it did not start\n{}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let left = sigkill_then_left(&server, &marker);
    assert!(left.is_empty(), "it survived the server: {left:?}");
}

#[test]
fn relative_tools_and_data_directories_name_the_same_places_for_a_program() {
    // `--tools tools --data data` from their parent: the program (relative
    // to its manifest) and {data} are found from its own working
    // directory, the manifest's.
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let (tools, data) = (root.path().join("tools"), root.path().join("data"));
    std::fs::create_dir(&tools).unwrap();
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("note"), "from data").unwrap();
    std::fs::write(
        tools.join("prog.sh"),
        "#!/bin/sh\ncat >/dev/null\nprintf '{\"note\":\"%s\"}' \"$(cat \"$1/note\")\"\n",
    )
    .unwrap();
    std::fs::set_permissions(
        tools.join("prog.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(
        tools.join("rel.toml"),
        "name = \"rel\"\nruntime = \"process\"\nprotocol = \"exec\"\ncommand = [\"./prog.sh\", \"{data}\"]\n",
    )
    .unwrap();
    let out = Command::new(binary())
        .current_dir(root.path())
        .args(["call", "rel", "{}", "--tools", "tools", "--data", "data"])
        .env("TOOLPLANE_CACHE_DIR", cache_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"note":"from data"}"#
    );
}
