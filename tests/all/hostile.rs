//! Hostile tools, files and directories: what someone with a tools
//! directory or a data directory can do must end in a clear outcome, on
//! time, without stalling a worker, reloading forever, running someone
//! else's code or filling the disk.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use toolplane_core::Outcome;
use toolplane_pool::{LoadState, PoolConfig, Registry, RegistryEvent, Runtime};

use crate::wasi::{builtin_module, call, engine, error_text, event, ok_json, rig_with, write_tool};

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(status.success());
}

/// A command tool that opens `name` in its first preopened directory for
/// reading (WASI `path_open` on fd 3), with the data directory granted.
fn opener(name: &str) -> Vec<u8> {
    let len = name.len();
    wat::parse_str(format!(
        r#"(module
            (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 64) "{name}")
            (func (export "_start")
                (drop (call $open (i32.const 3) (i32.const 0) (i32.const 64) (i32.const {len})
                    (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 32)))))"#
    ))
    .unwrap()
}

const DATA_RW: &str =
    "[[permissions.dirs]]\nhost = \"{data}\"\nguest = \"/data\"\naccess = \"read-write\"\n";

#[test]
fn a_fifo_in_the_data_directory_stalls_no_worker_and_its_call_ends_at_the_deadline() {
    let rig = rig_with(
        |_| {},
        |dir| {
            write_tool(
                dir,
                "t.open",
                &opener("fifo"),
                &format!("[limits]\ntimeout = \"500ms\"\n{DATA_RW}"),
            )
        },
        |b| b.watch(false),
    );
    mkfifo(&rig.data.path().join("fifo"));
    // The built-in refuses it before opening it.
    let started = Instant::now();
    let o = call(&rig, "fs.read", r#"{"path":"fifo"}"#);
    assert!(error_text(&o).contains("not a regular file"), "{o:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
    // A tool that opens it anyway ends at its deadline, and the calls
    // beside it on the same (only) worker are answered meanwhile.
    let engine = engine(&rig, 1, 64);
    let mut p = engine.producer();
    let started = Instant::now();
    p.submit(event(&rig, "t.open", "{}")).unwrap();
    let mut echo_done = 0;
    let mut open_outcome = None;
    let mut sent = 0;
    while open_outcome.is_none() && started.elapsed() < Duration::from_secs(10) {
        if sent < 20 {
            p.submit(event(&rig, "echo", r#"{"n":1}"#)).unwrap();
            sent += 1;
        }
        p.drain(|c| {
            if c.tool == rig.registry.tool_table().get("echo").unwrap() {
                assert!(matches!(c.outcome, Outcome::Ok(_)), "{:?}", c.outcome);
                echo_done += 1;
            } else {
                open_outcome = Some((c.outcome.clone(), started.elapsed()));
            }
        });
        std::thread::sleep(Duration::from_millis(10));
    }
    let (o, took) = open_outcome.expect("the call blocked on the FIFO was answered");
    assert_eq!(o, Outcome::Timeout);
    assert!(
        took < Duration::from_millis(1500),
        "answered after {took:?}"
    );
    assert!(
        echo_done >= 10,
        "echo calls beside it answered: {echo_done}"
    );
    // Shutdown does not wait for the thread still blocked in open(2).
    let started = Instant::now();
    let report = engine.shutdown(Duration::from_secs(1));
    assert!(report.is_balanced(), "{report:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_deadline_fires_while_the_guest_sleeps_with_or_without_a_directory() {
    let rig = rig_with(
        |_| {},
        |dir| {
            write_tool(
                dir,
                "s.plain",
                builtin_module("sleep"),
                "[limits]\ntimeout = \"300ms\"",
            );
            write_tool(
                dir,
                "s.dir",
                builtin_module("sleep"),
                &format!("[limits]\ntimeout = \"300ms\"\n{DATA_RW}"),
            );
        },
        |b| b.watch(false),
    );
    for tool in ["s.plain", "s.dir"] {
        let started = Instant::now();
        let o = call(&rig, tool, r#"{"ms":5000}"#);
        let took = started.elapsed();
        assert_eq!(o, Outcome::Timeout, "{tool}");
        assert!(
            took >= Duration::from_millis(280) && took < Duration::from_millis(1000),
            "{tool}: answered after {took:?}"
        );
    }
    // A live instance (the embedders' LiveTool) too.
    let mut live = rig.registry.live("s.plain");
    let started = Instant::now();
    let o = crate::wasi::block_on(live.call(br#"{"ms":5000}"#));
    assert_eq!(o, Outcome::Timeout);
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    drop(live);
    let free = rig.registry.runtime().free_slots();
    assert_eq!(
        free,
        rig.registry.runtime().config().instances as usize,
        "slots freed"
    );
}

#[test]
fn an_idle_watched_directory_reloads_nothing_and_same_content_is_no_change() {
    let rig = rig_with(
        |_| {},
        |dir| {
            for i in 0..8 {
                write_tool(dir, &format!("e{i}"), builtin_module("echo"), "");
            }
        },
        |b| b.builtins(false).watch(true),
    );
    let events = rig.registry.subscribe();
    let version = rig.registry.version();
    let dir = rig.tools.path().to_owned();
    // Readers of the files (the registry itself, `cat`, a backup) are not
    // writers.
    for e in std::fs::read_dir(&dir).unwrap() {
        let _ = std::fs::read(e.unwrap().path()).unwrap();
    }
    // Identical content written again: a write event, the same hashes.
    let same = std::fs::read(dir.join("e0.toml")).unwrap();
    std::fs::write(dir.join("e0.toml"), &same).unwrap();
    std::thread::sleep(Duration::from_secs(10));
    let seen: Vec<RegistryEvent> = events.try_iter().collect();
    assert!(seen.is_empty(), "an idle registry changed: {seen:?}");
    assert_eq!(rig.registry.version(), version);
    // A real change is still seen.
    std::fs::write(
        dir.join("e1.toml"),
        "name = \"e1\"\ndescription = \"changed\"\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut replaced = false;
    while !replaced && Instant::now() < deadline {
        if let Ok(RegistryEvent::Replaced { name }) =
            events.recv_timeout(Duration::from_millis(100))
        {
            replaced = name == "e1";
        }
    }
    assert!(replaced, "the changed manifest was reloaded");
}

#[test]
fn a_module_must_be_a_regular_file_under_the_limit_and_errors_never_show_its_content() {
    let started = Instant::now();
    let rig = rig_with(
        |cfg| cfg.max_module_size = 1 << 20,
        |dir| {
            mkfifo(&dir.join("fifo.wasm"));
            std::fs::write(dir.join("big.wasm"), vec![0u8; 2 << 20]).unwrap();
            std::fs::write(dir.join("text.wasm"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
            for (name, module) in [
                ("m.zero", "/dev/zero"),
                ("m.fifo", "fifo.wasm"),
                ("m.big", "big.wasm"),
                ("m.passwd", "text.wasm"),
            ] {
                std::fs::write(
                    dir.join(format!("{name}.toml")),
                    format!("name = \"{name}\"\ndescription = \"d\"\nmodule = \"{module}\"\n"),
                )
                .unwrap();
            }
        },
        |b| b.watch(false),
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    let snap = rig.registry.snapshot();
    let reason = |name: &str| match snap.by_name(name).unwrap().state() {
        LoadState::Failed(why) => why.to_string(),
        other => panic!("{name}: {other:?}"),
    };
    assert!(
        reason("m.zero").contains("a character device"),
        "{}",
        reason("m.zero")
    );
    assert!(reason("m.fifo").contains("a FIFO"), "{}", reason("m.fifo"));
    assert!(
        reason("m.big").contains("[pool] max_module_size = 1 MiB"),
        "{}",
        reason("m.big")
    );
    let passwd = reason("m.passwd");
    assert!(!passwd.contains("root:x"), "{passwd}");
    assert!(
        !rig.registry
            .problems()
            .iter()
            .any(|p| p.reason.contains("root:x")),
        "{:?}",
        rig.registry.problems()
    );
    // The built-ins beside them serve.
    ok_json(&call(&rig, "echo", "{}"));
}

#[test]
fn tools_sharing_a_broken_module_each_keep_their_problem() {
    let rig = rig_with(
        |_| {},
        |dir| {
            std::fs::write(dir.join("shared.wasm"), b"\0asm\x01\0\0\0garbage").unwrap();
            for name in ["a", "b"] {
                std::fs::write(
                    dir.join(format!("{name}.toml")),
                    format!("name = \"{name}\"\ndescription = \"d\"\nmodule = \"shared.wasm\"\n"),
                )
                .unwrap();
            }
        },
        |b| b.watch(false),
    );
    let problems = rig.registry.problems();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems.iter().any(|p| p.reason.starts_with("tool a:")));
    assert!(problems.iter().any(|p| p.reason.starts_with("tool b:")));
}

#[test]
fn the_module_cache_refuses_a_directory_others_can_write_and_entries_without_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let open = |cache: &Path| {
        Runtime::new(PoolConfig {
            cache_dir: Some(cache.to_owned()),
            ..PoolConfig::default()
        })
    };
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = open(&shared).unwrap_err().to_string();
    assert!(e.contains("mode is 0777") && e.contains("shared"), "{e}");

    // A fresh cache is created owner-only, its key too.
    let cache = dir.path().join("cache");
    let rt = open(&cache).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cache), 0o700);
    assert_eq!(mode(&cache.join("mac.key")), 0o600);
    let echo = builtin_module("echo");
    let hash = builtin_module("hash.sha256");
    rt.cache().load(rt.engine(), echo).unwrap();
    rt.cache().load(rt.engine(), hash).unwrap();
    let entry = |wasm: &[u8]| {
        rt.cache()
            .entry_path(&toolplane_pool::cache::digest(wasm))
            .unwrap()
    };
    // Poisoning: echo's compiled code (and its sidecar) over hash.sha256's.
    let (from, to) = (entry(echo), entry(hash));
    std::fs::copy(&from, &to).unwrap();
    std::fs::copy(from.with_extension("mac"), to.with_extension("mac")).unwrap();
    drop(rt);
    let rt = open(&cache).unwrap();
    let (_, source, _) = rt.cache().load(rt.engine(), hash).unwrap();
    assert_eq!(
        source,
        toolplane_pool::cache::Source::Compiled,
        "the copied entry is not trusted"
    );
    assert_eq!(rt.cache().stats().corrupt, 1);
    // And a key others can read is refused.
    drop(rt);
    std::fs::set_permissions(
        cache.join("mac.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let e = open(&cache).unwrap_err().to_string();
    assert!(e.contains("mac.key") && e.contains("0644"), "{e}");
}

#[test]
fn writes_stop_at_the_call_quota_and_at_the_data_directory_limit() {
    let rig = crate::wasi::rig_with_site(
        |site| site.data_dir_limit = 100 << 10,
        |_| {},
        |dir| {
            let manifest = include_str!("../../tools/fs-write/fs.write.toml")
                .replace("name = \"fs.write\"", "name = \"small.write\"")
                .replace("[limits]\n", "[limits]\nmax_write = \"1 KiB\"\n");
            std::fs::write(dir.join("small.write.toml"), manifest).unwrap();
            std::fs::write(dir.join("small.write.wasm"), builtin_module("fs.write")).unwrap();
        },
        |b| b.watch(false),
    );
    let write = |tool: &str, path: &str, n: usize, append: bool| {
        let content = "x".repeat(n);
        call(
            &rig,
            tool,
            &format!(r#"{{"path":"{path}","content":"{content}","append":{append}}}"#),
        )
    };
    ok_json(&write("small.write", "a", 1000, false));
    let e = error_text(&write("small.write", "a", 2000, false));
    assert!(e.contains("limits.max_write = 1 KiB"), "{e}");
    ok_json(&write("fs.write", "b", 60 << 10, false));
    let e = error_text(&write("fs.write", "c", 60 << 10, true));
    assert!(e.contains("[pool] data_dir_limit = 100 KiB"), "{e}");
    assert!(!rig.data.path().join("c").exists());
    // Space freed is seen again (after the next walk).
    std::fs::remove_file(rig.data.path().join("b")).unwrap();
    ok_json(&call(&rig, "fs.read", r#"{"path":"a"}"#));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let o = write("fs.write", "c", 60 << 10, true);
        if matches!(o, Outcome::Ok(_)) {
            break;
        }
        assert!(Instant::now() < deadline, "{o:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_reader_never_sees_a_half_written_file() {
    let rig = crate::wasi::builtins();
    let big = "a".repeat(64 << 10);
    let small = "b".repeat(100);
    ok_json(&call(
        &rig,
        "fs.write",
        &format!(r#"{{"path":"f","content":"{big}"}}"#),
    ));
    let reg: Registry = rig.registry.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = std::sync::Arc::clone(&stop);
        let (big, small) = (big.clone(), small.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let c = if i % 2 == 0 { &small } else { &big };
                let input = format!(r#"{{"path":"f","content":"{c}"}}"#);
                let o = crate::wasi::block_on(reg.call("fs.write", input.as_bytes()));
                assert!(matches!(o, Outcome::Ok(_)), "{o:?}");
                i += 1;
            }
        })
    };
    let mut seen = [0usize; 2];
    for _ in 0..300 {
        let v = ok_json(&call(&rig, "fs.read", r#"{"path":"f"}"#));
        match v["bytes"].as_u64().unwrap() {
            100 => seen[0] += 1,
            n if n == 64 << 10 => seen[1] += 1,
            n => panic!("a reader saw {n} bytes"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert!(seen[0] + seen[1] == 300, "{seen:?}");
}

#[test]
fn input_is_checked_for_utf8_and_depth_before_any_tool_runs() {
    let rig = crate::wasi::builtins();
    let echo = rig
        .registry
        .snapshot()
        .by_name("echo")
        .unwrap()
        .loaded()
        .cloned();
    let echo = echo.unwrap().unwrap();
    let e = echo.check_input(b"{\"a\":\"\xff\xfe\"}").unwrap_err();
    assert!(e.contains("not valid UTF-8"), "{e}");
    let deep = |n: usize| format!("{{\"a\":{}{}}}", "[".repeat(n), "]".repeat(n));
    echo.check_input(deep(100).as_bytes()).unwrap();
    let e = echo.check_input(deep(500_000).as_bytes()).unwrap_err();
    assert!(e.contains("nests deeper than 128"), "{e}");
    // Brackets inside strings are text.
    echo.check_input(format!("{{\"a\":\"{}\"}}", "[".repeat(1000)).as_bytes())
        .unwrap();
}
