//! A process tool's processes are bounded by default — a process count and
//! memory, each process with everything it starts (a cgroup per process
//! where the server may make one, else `RLIMIT_DATA` and no count; see
//! `pool/process/src/cgroup.rs`) — errors name the limit a program
//! reached, and the runtimes' presets start Node, Python and npx inside
//! `[permissions]`.

use std::path::Path;

use toolplane_pool::Tool;

use crate::wasi::{Rig, call, error_text, ok_json, rig_with};

fn exec(dir: &Path, name: &str, command: &[&str], extra: &str) {
    let command: Vec<String> = command.iter().map(|c| format!("{c:?}")).collect();
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!(
            "name = \"{name}\"\nruntime = \"process\"\nprotocol = \"exec\"\ncommand = [{}]\n{extra}",
            command.join(", ")
        ),
    )
    .unwrap();
}

/// How the rig's tool `name` holds its limits (`tools list`'s words).
fn held(rig: &Rig, name: &str) -> String {
    match rig
        .registry
        .snapshot()
        .by_name(name)
        .and_then(|e| e.loaded().cloned())
    {
        Some(Ok(Tool::Process(p))) => p.limits(),
        other => panic!("{name}: not a loaded process tool: {other:?}"),
    }
}

/// Forks sleeping children until a fork fails (or `LIMIT` of them); exits
/// 3 when one failed and `FAIL` is set.
const FORKS: &str = r#"
import os, sys, json, time
sys.stdin.read()
n, failed = 0, False
for i in range(int(os.environ["LIMIT"])):
    try:
        pid = os.fork()
    except OSError:
        failed = True
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    n += 1
if failed and os.environ.get("FAIL"):
    sys.exit(3)
print(json.dumps({"forked": n}))
"#;

#[test]
fn processes_are_bounded_by_default_and_the_error_names_the_limit() {
    let rig = rig_with(
        |_| {},
        |dir| {
            exec(
                dir,
                "bomb",
                &["/usr/bin/python3", "-c", FORKS],
                "env = { LIMIT = \"300\" }",
            );
            exec(
                dir,
                "small",
                &["/usr/bin/python3", "-c", FORKS],
                "env = { LIMIT = \"100\", FAIL = \"1\" }\n[limits]\nprocesses = 16",
            );
        },
        |b| b.builtins(false).watch(false),
    );
    let how = held(&rig, "bomb");
    assert!(how.contains("256 processes"), "{how}");
    let forked = ok_json(&call(&rig, "bomb", "{}"))["forked"]
        .as_u64()
        .unwrap();
    assert!(
        how.contains("cgroup") && forked < 256 || !how.contains("cgroup") && forked == 300,
        "{forked} forks with {how}"
    );
    let e = error_text(&call(&rig, "small", "{}"));
    if how.contains("cgroup") {
        assert!(
            e.contains("exit status: 3")
                && e.contains("reached its process limit (limits.processes = 16"),
            "{e}"
        );
    }
    // The limit is each process's: the next call starts afresh.
    assert!(
        ok_json(&call(&rig, "bomb", "{}"))["forked"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[test]
fn a_program_over_its_memory_is_stopped_and_the_error_names_the_limit() {
    let rig = rig_with(
        |_| {},
        |dir| {
            exec(
                dir,
                "hog",
                &[
                    "/usr/bin/python3",
                    "-c",
                    "import sys\nsys.stdin.read()\nb = b'x' * (200 << 20)\nprint(len(b))",
                ],
                "[limits]\nmemory = \"64 MiB\"",
            );
            exec(
                dir,
                "modest",
                &[
                    "/usr/bin/python3",
                    "-c",
                    "import sys\nsys.stdin.read()\nb = b'x' * (20 << 20)\nprint(len(b))",
                ],
                "[limits]\nmemory = \"64 MiB\"",
            );
        },
        |b| b.builtins(false).watch(false),
    );
    let e = error_text(&call(&rig, "hog", "{}"));
    if held(&rig, "hog").contains("cgroup") {
        assert!(
            e.contains("reached its memory limit (limits.memory = 64 MiB)"),
            "{e}"
        );
    } else {
        assert!(e.contains("MemoryError"), "{e}");
    }
    assert_eq!(ok_json(&call(&rig, "modest", "{}")), 20 << 20);
}

#[test]
fn node_starts_under_the_default_limits_and_under_half_a_gibibyte() {
    const NODE: &str = "process.stdin.resume(); process.stdin.on('end', () => console.log(JSON.stringify({ node: process.version })))";
    let rig = rig_with(
        |_| {},
        |dir| {
            exec(dir, "plain", &["node", "-e", NODE], "");
            exec(
                dir,
                "half",
                &["node", "-e", NODE],
                "[limits]\nmemory = \"512 MiB\"",
            );
        },
        |b| b.builtins(false).watch(false),
    );
    for name in ["plain", "half"] {
        let v = ok_json(&call(&rig, name, "{}"));
        assert!(v["node"].as_str().unwrap().starts_with('v'), "{name}: {v}");
    }
}

#[test]
fn presets_start_python_and_node_scripts_inside_permissions() {
    let rig = rig_with(
        |_| {},
        |dir| {
            std::fs::write(
                dir.join("answer.py"),
                "import sys, json, os\nsys.stdin.read()\nprint(json.dumps({'unbuffered': os.environ.get('PYTHONUNBUFFERED')}))\n",
            )
            .unwrap();
            std::fs::write(
                dir.join("answer.js"),
                "process.stdin.resume(); process.stdin.on('end', () => console.log(JSON.stringify({ node: true })))\n",
            )
            .unwrap();
            for (name, command, preset) in [
                ("py", ["python3", "answer.py"], "preset = \"python\"\n"),
                ("py_bare", ["python3", "answer.py"], ""),
                ("js", ["node", "answer.js"], "preset = \"node\"\n"),
            ] {
                exec(
                    dir,
                    name,
                    &command,
                    &format!("{preset}[permissions]\nread = []"),
                );
            }
        },
        |b| b.builtins(false).watch(false),
    );
    assert_eq!(
        ok_json(&call(&rig, "py", "{}")),
        serde_json::json!({"unbuffered": "1"})
    );
    assert_eq!(
        ok_json(&call(&rig, "js", "{}")),
        serde_json::json!({"node": true})
    );
    // Without a preset nothing is granted implicitly: not the working
    // directory (the manifest's), where the script is.
    let e = error_text(&call(&rig, "py_bare", "{}"));
    assert!(e.contains("cwd") && e.contains("does not cover it"), "{e}");
}

#[test]
fn the_npx_preset_runs_a_package_from_a_cache_of_its_own_without_network() {
    // The tool's own npm cache (never the operator's ~/.npm, which a
    // narrowed tool could otherwise rewrite): filled once with the
    // network, then run from it offline.
    let data = tempfile::tempdir().unwrap();
    let data_path = data.path().display().to_string();
    let load = |network: &str| {
        rig_with(
            |_| {},
            |dir| {
                let command = [
                    "npx",
                    "-y",
                    "@modelcontextprotocol/server-filesystem@2026.8.31",
                    data_path.as_str(),
                ];
                crate::mcp_upstream::mcp_manifest(
                    dir,
                    "npxfs",
                    &command,
                    &format!(
                        "preset = \"npx\"\nnetwork = \"{network}\"\ncwd = {data_path:?}\n[limits]\nstartup_timeout = \"120s\"\n[permissions]\nwrite = [{data_path:?}]\n"
                    ),
                );
            },
            |b| b.builtins(false).watch(false),
        )
    };
    for network in ["host", "none"] {
        let rig = load(network);
        let v = ok_json(&call(&rig, "npxfs.list_allowed_directories", "{}"));
        assert!(
            v.to_string().contains(&data_path),
            "npx under the preset, network = {network}: {v}"
        );
    }
    let home = std::env::var("HOME").unwrap();
    let cache = std::env::var("XDG_CACHE_HOME").unwrap_or(format!("{home}/.cache"));
    assert!(
        Path::new(&cache).join("toolplane/npx/npxfs/_npx").is_dir(),
        "the tool's own cache under {cache}"
    );
}

#[test]
fn a_preset_grants_neither_the_root_nor_the_home_directory() {
    // /bin/python3's prefix is /: not granted, so a file elsewhere stays
    // out of reach.
    let secret = tempfile::tempdir().unwrap();
    std::fs::write(secret.path().join("s"), "secret").unwrap();
    let rig = rig_with(
        |_| {},
        |dir| {
            std::fs::write(
                dir.join("peek.py"),
                "import json, sys\nsys.stdin.read()\ntry:\n    open(sys.argv[1]).read()\n    print(json.dumps({'read': True}))\nexcept OSError:\n    print(json.dumps({'read': False}))\n",
            )
            .unwrap();
            exec(
                dir,
                "peek",
                &[
                    "/bin/python3",
                    "peek.py",
                    &secret.path().join("s").display().to_string(),
                ],
                "preset = \"python\"\n[permissions]\nread = []",
            );
        },
        |b| b.builtins(false).watch(false),
    );
    assert_eq!(
        ok_json(&call(&rig, "peek", "{}")),
        serde_json::json!({"read": false})
    );
}

#[test]
fn limits_and_presets_are_checked_naming_the_key() {
    for (extra, words) in [
        (
            "[limits]\nprocesses = 0",
            "limits.processes = 0 is out of range",
        ),
        (
            "[limits]\nmemory = \"512 KiB\"",
            "limits.memory = 512 KiB is out of range",
        ),
        ("preset = \"ruby\"", "preset = \"ruby\" is not a preset"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        exec(dir.path(), "t", &["/bin/true"], extra);
        let text = std::fs::read_to_string(dir.path().join("t.toml")).unwrap();
        let e =
            toolplane_pool::Manifest::from_toml_str(&text, &dir.path().join("t.toml")).unwrap_err();
        assert!(e.to_string().contains(words), "{extra}: {e}");
    }
}

#[test]
fn the_data_directory_limit_binds_process_tools_that_may_write_there() {
    let rig = crate::wasi::rig_with_site(
        |site| site.data_dir_limit = 64 << 10,
        |_| {},
        |dir| {
            crate::process::sh_tool(
                dir,
                "writer",
                "cat >/dev/null; head -c 100000 /dev/zero > \"$DATA/big-$$\"; echo '{}'",
                "env = { DATA = \"{data}\" }",
            );
            // Narrowed, and granted nothing in the data directory.
            crate::process::sh_tool(
                dir,
                "reader",
                "cat",
                "cwd = \"/tmp\"\n[permissions]\nread = [\"/tmp\"]",
            );
        },
        |b| b.builtins(false).watch(false),
    );
    // Past the limit by what one call wrote (no reservations here)…
    assert_eq!(ok_json(&call(&rig, "writer", "{}")), serde_json::json!({}));
    // …then refused, naming the limit, once the walk saw it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let e = loop {
        match call(&rig, "writer", "{}") {
            toolplane_core::Outcome::Error(e) => break e.to_string(),
            _ => assert!(
                std::time::Instant::now() < deadline,
                "writes went on past data_dir_limit"
            ),
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(e.contains("data_dir_limit = 64 KiB"), "{e}");
    // A tool that cannot write there is not refused.
    assert_eq!(
        ok_json(&call(&rig, "reader", r#"{"a":1}"#)),
        serde_json::json!({"a": 1})
    );
}
