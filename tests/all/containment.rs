//! What a tool can reach of the server: the tools directory it must not
//! write (a tool that writes a manifest runs code), and what the kernel
//! keeps from a process tool (`tools/README.md`, "What a process tool can
//! reach").

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use toolplane_pool::{LoadState, PoolConfig, Registry, RegistryError, Runtime};

use crate::process::sh_tool;
use crate::wasi::{builtin_module, pool_config, rig_with, write_tool};

fn registry_over(tools: &Path, data: &Path, cache: &Path) -> Result<Registry, RegistryError> {
    let runtime = Runtime::new(pool_config(cache)).expect("runtime");
    Registry::builder(runtime)
        .site(toolplane_pool::SiteConfig {
            data_dir: Some(data.to_owned()),
            ..toolplane_pool::SiteConfig::default()
        })
        .dir(tools)
        .builtins(false)
        .watch(false)
        .build()
}

#[test]
fn a_tools_directory_inside_the_data_directory_is_refused_naming_both() {
    let data = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let inside = data.path().join("tools");
    std::fs::create_dir(&inside).unwrap();
    for (tools, data) in [
        (inside.as_path(), data.path()),
        (data.path(), data.path()),
        // The data directory inside the tools directory.
        (data.path(), inside.as_path()),
    ] {
        let e = registry_over(tools, data, cache.path())
            .expect_err("overlap accepted")
            .to_string();
        assert!(
            e.contains(&tools.display().to_string())
                && e.contains(&data.display().to_string())
                && e.contains("overlap"),
            "{e}"
        );
    }
    // Apart, they are fine.
    let tools = tempfile::tempdir().unwrap();
    assert!(registry_over(tools.path(), data.path(), cache.path()).is_ok());
    let _ = PoolConfig::default();
}

#[test]
fn a_tools_directory_or_manifest_others_can_write_is_refused() {
    let tools = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    sh_tool(tools.path(), "t", "cat", "");
    std::fs::set_permissions(tools.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = registry_over(tools.path(), data.path(), cache.path())
        .expect_err("a world-writable tools directory accepted")
        .to_string();
    assert!(
        e.contains("mode is 0777") && e.contains("chmod go-w"),
        "{e}"
    );
    std::fs::set_permissions(tools.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let manifest = tools.path().join("t.toml");
    std::fs::set_permissions(&manifest, std::fs::Permissions::from_mode(0o666)).unwrap();
    let r = registry_over(tools.path(), data.path(), cache.path()).unwrap();
    assert!(r.wait_loaded(Duration::from_secs(10)));
    assert!(r.snapshot().by_name("t").is_none(), "t was loaded");
    let problems = r.problems();
    assert!(
        problems
            .iter()
            .any(|p| p.path == manifest && p.reason.contains("its group or others can write")),
        "{problems:?}"
    );
}

#[test]
fn a_write_grant_over_the_tools_directory_is_refused() {
    let rig = rig_with(
        |_| {},
        |dir| {
            let tools = dir.display().to_string();
            // A process tool whose grant is the tools directory's parent.
            sh_tool(
                dir,
                "writer",
                "cat",
                &format!("[permissions]\nwrite = [\"{tools}/..\"]\n"),
            );
            // A WASI tool granted the tools directory read-write.
            write_tool(
                dir,
                "wasi_writer",
                builtin_module("fs.write"),
                &format!(
                    "[[permissions.dirs]]\nhost = \"{tools}\"\nguest = \"/data\"\naccess = \"read-write\"\n"
                ),
            );
        },
        |b| b.builtins(false).watch(false),
    );
    let snap = rig.registry.snapshot();
    for name in ["writer", "wasi_writer"] {
        let Some(LoadState::Failed(why)) = snap.by_name(name).map(|e| e.state()) else {
            panic!("{name} loaded");
        };
        let why = why.to_string();
        assert!(
            why.contains("holds the tools directory")
                && why.contains(&rig.tools.path().display().to_string()),
            "{name}: {why}"
        );
    }
}

#[test]
fn a_working_directory_no_grant_covers_is_an_error_naming_it() {
    let rig = rig_with(
        |_| {},
        |dir| {
            sh_tool(
                dir,
                "wide_cwd",
                "cat",
                "cwd = \"/\"\n[permissions]\nread = [\"/tmp\"]\n",
            )
        },
        |b| b.builtins(false).watch(false),
    );
    let Some(LoadState::Failed(why)) = rig
        .registry
        .snapshot()
        .by_name("wide_cwd")
        .map(|e| e.state())
    else {
        panic!("wide_cwd loaded");
    };
    let why = why.to_string();
    assert!(
        why.contains("cwd = /:") && why.contains("does not cover"),
        "{why}"
    );
}

/// A Python probe: what a process tool can reach of the server (this
/// test process runs the registry, so it is the server here).
const PROBE: &str = r#"
import json, os, socket, sys
sys.stdin.read()
server, tools, cache, port = os.environ["SERVER"], os.environ["TOOLS"], os.environ["CACHE"], int(os.environ["PORT"])
def can(f):
    try:
        f()
        return True
    except Exception:
        return False
def connect():
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    s.close()
def write_tools():
    with open(os.path.join(tools, "evil.toml"), "w") as f:
        f.write("name = 'evil'")
status = open("/proc/self/status").read()
field = lambda k: [l.split()[1] for l in status.splitlines() if l.startswith(k + ":")][0]
print(json.dumps({
    "environ": can(lambda: open(f"/proc/{server}/environ", "rb").read()),
    "cmdline": can(lambda: open(f"/proc/{server}/cmdline", "rb").read()),
    "mem": can(lambda: open(f"/proc/{server}/mem", "rb")),
    "mac_key": can(lambda: open(os.path.join(cache, "mac.key"), "rb").read()),
    "write_tools": can(write_tools),
    "connect": can(connect),
    "processes": len([p for p in os.listdir("/proc") if p.isdigit()]),
    "pid": os.getpid(),
    "cap_eff": field("CapEff"),
    "cap_bnd": field("CapBnd"),
    "no_new_privs": field("NoNewPrivs"),
}))
"#;

#[test]
fn a_process_tool_reaches_neither_the_server_nor_its_secrets_nor_its_port() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let cache = tempfile::tempdir().unwrap();
    let cache_path = cache.path().to_owned();
    let rig = rig_with(
        |cfg| cfg.cache_dir = Some(cache_path.clone()),
        |dir| {
            let env = format!(
                "env = {{ SERVER = \"{}\", TOOLS = \"{}\", CACHE = \"{}\", PORT = \"{port}\" }}\n",
                std::process::id(),
                dir.display(),
                cache_path.display()
            );
            for (name, extra) in [
                ("plain", String::new()),
                (
                    "narrowed",
                    "cwd = \"/tmp\"\n[permissions]\nread = [\"/tmp\"]\n".to_string(),
                ),
            ] {
                std::fs::write(
                    dir.join(format!("{name}.toml")),
                    format!(
                        "name = \"{name}\"\nruntime = \"process\"\nprotocol = \"exec\"\ncommand = [\"/usr/bin/python3\", \"-c\", {PROBE:?}]\n{env}{extra}"
                    ),
                )
                .unwrap();
            }
        },
        |b| b.builtins(false).watch(false),
    );
    // The cache's key (made on first use; this rig compiles nothing).
    let key = cache.path().join("mac.key");
    if !key.exists() {
        std::fs::write(&key, "a secret").unwrap();
    }
    for name in ["plain", "narrowed"] {
        let v = crate::wasi::ok_json(&crate::wasi::call(&rig, name, "{}"));
        for key in [
            "environ",
            "cmdline",
            "mem",
            "mac_key",
            "write_tools",
            "connect",
        ] {
            assert_eq!(v[key], false, "{name} could {key}: {v}");
        }
        assert_eq!(v["pid"], 1, "{name} is its namespace's init: {v}");
        assert!(v["processes"].as_u64().unwrap() <= 3, "{name} sees {v}");
        assert_eq!(v["cap_eff"], "0000000000000000", "{name}: {v}");
        assert_eq!(v["cap_bnd"], "0000000000000000", "{name}: {v}");
        assert_eq!(v["no_new_privs"], "1", "{name}: {v}");
    }
    assert!(!rig.tools.path().join("evil.toml").exists());
    drop(listener);
}

#[test]
fn a_narrowed_tool_runs_a_script_from_its_tools_directory_when_granted() {
    let rig = rig_with(
        |_| {},
        |dir| {
            std::fs::write(
                dir.join("answer.sh"),
                "cat >/dev/null; echo '{\"from\":\"script\"}'\n",
            )
            .unwrap();
            for (name, read) in [("granted", "[\".\"]"), ("ungranted", "[]")] {
                std::fs::write(
                    dir.join(format!("{name}.toml")),
                    format!(
                        "name = \"{name}\"\nruntime = \"process\"\nprotocol = \"exec\"\ncommand = [\"/bin/sh\", \"{}/answer.sh\"]\ncwd = \"/usr\"\n[permissions]\nread = {read}\n",
                        dir.display()
                    ),
                )
                .unwrap();
            }
        },
        |b| b.builtins(false).watch(false),
    );
    assert_eq!(
        crate::wasi::ok_json(&crate::wasi::call(&rig, "granted", "{}")),
        serde_json::json!({"from": "script"})
    );
    // The manifest's directory is not granted implicitly.
    let e = crate::wasi::error_text(&crate::wasi::call(&rig, "ungranted", "{}"));
    assert!(
        e.contains("answer.sh") && e.contains("Permission denied"),
        "{e}"
    );
}

#[test]
fn a_program_from_the_data_directory_around_the_tools_directory_or_writable_by_others_is_refused() {
    let rig = rig_with(
        |_| {},
        |dir| {
            std::fs::write(dir.join("run.sh"), "#!/bin/sh\ncat\n").unwrap();
            std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o757))
                .unwrap();
            for (name, program) in [
                ("from_data", "{data}/run.sh"),
                ("around", "../bin/sh"),
                ("writable", "./run.sh"),
            ] {
                std::fs::write(
                    dir.join(format!("{name}.toml")),
                    format!(
                        "name = \"{name}\"\nruntime = \"process\"\nprotocol = \"exec\"\ncommand = [\"{program}\"]\n"
                    ),
                )
                .unwrap();
            }
        },
        |b| b.builtins(false).watch(false),
    );
    let snap = rig.registry.snapshot();
    for (name, says) in [
        ("from_data", "may not lie in the data directory"),
        ("around", "may not leave the manifest's directory"),
        ("writable", "its group or others can write"),
    ] {
        let Some(LoadState::Failed(why)) = snap.by_name(name).map(|e| e.state()) else {
            panic!("{name} loaded");
        };
        assert!(why.to_string().contains(says), "{name}: {why}");
    }
}

/// A rig with one exec tool, `probe`, running the Python `script`, its
/// manifest ending with `extra`; and `ok` (cat) beside it.
fn python_probe(script: &str, extra: &str) -> crate::wasi::Rig {
    rig_with(
        |_| {},
        |dir| {
            std::fs::write(
                dir.join("probe.toml"),
                format!(
                    "name = \"probe\"\nruntime = \"process\"\nprotocol = \"exec\"\ncommand = [\"/usr/bin/python3\", \"-c\", {script:?}]\n{extra}"
                ),
            )
            .unwrap();
            sh_tool(dir, "ok", "cat", "");
        },
        |b| b.builtins(false).watch(false),
    )
}

/// Fresh directories `/run/<name>-<pid>`, removed when dropped (a test
/// that fails leaves none behind).
struct UnderRun(Vec<std::path::PathBuf>);

impl UnderRun {
    fn new(names: &[&str]) -> UnderRun {
        let me = std::process::id();
        let dirs: Vec<std::path::PathBuf> = names
            .iter()
            .map(|n| std::path::PathBuf::from(format!("/run/{n}-{me}")))
            .collect();
        for d in &dirs {
            let _ = std::fs::remove_dir_all(d);
            std::fs::create_dir(d).expect("the tests write under /run (they run as root)");
        }
        UnderRun(dirs)
    }
}

impl Drop for UnderRun {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

#[test]
fn a_narrowed_tool_reaches_no_socket_under_run_but_those_granted() {
    // Sockets by path reach past namespaces (systemd's private socket,
    // D-Bus, docker.sock): two of ours under /run, one granted.
    let run = UnderRun::new(&["toolplane-test", "toolplane-grant"]);
    let (hidden, granted) = (&run.0[0], &run.0[1]);
    let _a = std::os::unix::net::UnixListener::bind(hidden.join("s")).unwrap();
    let _b = std::os::unix::net::UnixListener::bind(granted.join("s")).unwrap();
    const PROBE: &str = r#"
import json, os, socket, sys
sys.stdin.read()
def reach(p):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(p)
        return True
    except OSError:
        return False
print(json.dumps({"hidden": reach(os.environ["HIDDEN"]), "granted": reach(os.environ["GRANTED"]), "resolv": os.path.exists("/etc/resolv.conf")}))
"#;
    let rig = python_probe(
        PROBE,
        &format!(
            "cwd = \"/tmp\"\nnetwork = \"host\"\nenv = {{ HIDDEN = \"{}\", GRANTED = \"{}\" }}\n[permissions]\nread = [\"/tmp\", \"{}\"]\n",
            hidden.join("s").display(),
            granted.join("s").display(),
            granted.display()
        ),
    );
    let v = crate::wasi::ok_json(&crate::wasi::call(&rig, "probe", "{}"));
    assert_eq!(
        v,
        serde_json::json!({"hidden": false, "granted": true, "resolv": true})
    );
    assert_eq!(
        crate::wasi::ok_json(&crate::wasi::call(&rig, "ok", r#"{"a":1}"#)),
        serde_json::json!({"a": 1})
    );
}

#[test]
#[cfg(target_arch = "x86_64")] // the probe names x86_64 system call numbers
fn a_seccomp_filter_refuses_new_namespaces_keyrings_and_io_uring_but_not_threads() {
    const PROBE: &str = r#"
import ctypes, json, os, subprocess, sys, threading
sys.stdin.read()
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def errno_of(nr, *args):
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return 0 if rc >= 0 else ctypes.get_errno()
# x86_64 numbers: unshare 272, keyctl 250, io_uring_setup 425, bpf 321, clone3 435
params = ctypes.create_string_buffer(120)
out = {
    "unshare_user": errno_of(272, 0x10000000),
    "unshare_ns": errno_of(272, 0x00020000),
    "keyctl": errno_of(250, 0, -3, 0),
    "io_uring": errno_of(425, 4, ctypes.addressof(params)),
    "bpf": errno_of(321, 0, 0, 0),
    "clone3": errno_of(435, 0, 0),
}
box = []
t = threading.Thread(target=lambda: box.append(1)); t.start(); t.join()
out["thread"] = box == [1]
out["subprocess"] = subprocess.run(["true"]).returncode == 0
print(json.dumps(out))
"#;
    let rig = python_probe(PROBE, "");
    let v = crate::wasi::ok_json(&crate::wasi::call(&rig, "probe", "{}"));
    // EPERM and ENOSYS on Linux.
    let (eperm, enosys) = (1, 38);
    assert_eq!(
        v,
        serde_json::json!({
            "unshare_user": eperm, "unshare_ns": eperm, "keyctl": eperm,
            "io_uring": eperm, "bpf": eperm, "clone3": enosys,
            "thread": true, "subprocess": true,
        }),
        "{v}"
    );
}

#[test]
fn a_tool_running_as_root_can_leave_neither_its_cgroup_nor_write_kernel_knobs() {
    // Root without capabilities still owns cgroupfs and /proc/sys files:
    // both are read-only in its mount namespace.
    const PROBE: &str = r#"
import json, os, sys
sys.stdin.read()
def can_write(path, data):
    try:
        with open(path, "w") as f:
            f.write(data)
        return True
    except OSError:
        return False
out = {}
with open("/proc/sys/kernel/core_pattern") as f:
    out["core_pattern"] = can_write("/proc/sys/kernel/core_pattern", f.read())
out["sysrq"] = can_write("/proc/sysrq-trigger", "h")
for line in open("/proc/self/cgroup"):
    _, ctl, path = line.strip().split(":", 2)
    for name in ("pids", "memory"):
        if name in ctl.split(",") and os.path.isdir(f"/sys/fs/cgroup/{name}"):
            own = f"/sys/fs/cgroup/{name}{path}"
            out[f"{name}_limit"] = can_write(f"{own}/{name}.max" if name == "pids" else f"{own}/memory.limit_in_bytes", "max" if name == "pids" else "-1")
            out[f"{name}_leave"] = can_write(f"/sys/fs/cgroup/{name}/cgroup.procs", "0")
out["in_group"] = any("toolplane-" in l for l in open("/proc/self/cgroup"))
print(json.dumps(out))
"#;
    let rig = python_probe(PROBE, "");
    let v = crate::wasi::ok_json(&crate::wasi::call(&rig, "probe", "{}"));
    let obj = v.as_object().unwrap();
    for (k, can) in obj {
        if k != "in_group" {
            assert_eq!(can, false, "the tool could write {k}: {v}");
        }
    }
    // Where the server makes cgroups, the probe saw and tried them.
    if v["in_group"] == true {
        assert!(
            obj.contains_key("pids_leave") && obj.contains_key("memory_leave"),
            "{v}"
        );
    }
}

#[test]
fn a_narrowed_program_under_run_starts_and_a_grant_gone_from_run_breaks_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let run = UnderRun::new(&["toolplane-prog", "toolplane-gone"]);
    let (prog_dir, gone) = (&run.0[0], &run.0[1]);
    let prog = prog_dir.join("prog.sh");
    std::fs::write(&prog, "#!/bin/sh\nexec cat\n").unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let rig = rig_with(
        |_| {},
        |dir| {
            std::fs::write(
                dir.join("under.toml"),
                format!(
                    "name = \"under\"\nruntime = \"process\"\nprotocol = \"exec\"\ncommand = [\"{}\"]\ncwd = \"/tmp\"\n[permissions]\nread = [\"/tmp\"]\n",
                    prog.display()
                ),
            )
            .unwrap();
            sh_tool(
                dir,
                "granted",
                "cat",
                &format!(
                    "cwd = \"/tmp\"\n[permissions]\nread = [\"/tmp\", \"{}\"]",
                    gone.display()
                ),
            );
        },
        |b| b.builtins(false).watch(false),
    );
    assert_eq!(
        crate::wasi::ok_json(&crate::wasi::call(&rig, "under", r#"{"a":1}"#)),
        serde_json::json!({"a": 1})
    );
    std::fs::remove_dir(gone).unwrap();
    assert_eq!(
        crate::wasi::ok_json(&crate::wasi::call(&rig, "granted", r#"{"b":2}"#)),
        serde_json::json!({"b": 2})
    );
}
