//! `toolplane tools list`, `toolplane call` and `toolplane check`.

use std::process::{Command, Output};

use crate::support::{Dirs, binary, cache_dir};

pub(crate) fn toolplane(args: &[&str]) -> Output {
    toolplane_with(args, &[])
}

/// `toolplane ARGS` with extra environment variables.
pub(crate) fn toolplane_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(binary())
        .args(args)
        .env("TOOLPLANE_CACHE_DIR", cache_dir())
        .envs(env.iter().copied())
        .output()
        .expect("the toolplane binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn tools_list_shows_every_tool_with_its_limits_and_permissions() {
    let dirs = Dirs::new();
    let tools = dirs.tools.path().to_str().unwrap();
    let data = dirs.data.path().to_str().unwrap();
    let out = toolplane(&["tools", "list", "--tools", tools, "--data", data, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = list.iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(
        names,
        ["echo", "fs.read", "fs.write", "hash.sha256", "sleep"]
    );
    let read = &list[1];
    assert_eq!(read["state"], "ready");
    let dirs_granted = read["permissions"]["dirs"].as_array().unwrap();
    assert!(
        dirs_granted
            .iter()
            .any(|d| d.as_str().unwrap().contains("read-only")),
        "{read}"
    );
    assert!(read["limits"]["timeout_ms"].as_u64().unwrap() > 0);

    let out = toolplane(&["tools", "list", "--tools", tools, "--data", data]);
    assert!(out.status.success());
    let t = text(&out.stdout);
    assert!(
        t.contains("sleep  [ready]") && t.contains("permissions: none"),
        "{t}"
    );
}

#[test]
fn call_prints_the_output_or_fails_with_the_reason() {
    let dirs = Dirs::new();
    let data = dirs.data.path().to_str().unwrap();
    let out = toolplane(&["call", "hash.sha256", r#"{"data":"abc"}"#, "--data", data]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["sha256"],
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );

    let out = toolplane(&["call", "sleep", r#"{"ms":"x"}"#, "--data", data]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/ms"), "{}", text(&out.stderr));

    let out = toolplane(&["call", "nope", "{}", "--data", data]);
    assert_eq!(out.status.code(), Some(1));
    let e = text(&out.stderr);
    assert!(
        e.contains("unknown tool \"nope\"") && e.contains("echo"),
        "{e}"
    );
}

#[test]
fn check_lists_every_problem_with_its_path() {
    let dirs = Dirs::new();
    let tools = dirs.tools.path().to_str().unwrap();
    let data = dirs.data.path().to_str().unwrap();
    let out = toolplane(&["check", "--tools", tools, "--data", data]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("ok: 5 tools"),
        "{}",
        text(&out.stdout)
    );

    // A manifest with an unknown key, and a module that is not wasm.
    std::fs::write(
        dirs.tools.path().join("bad.toml"),
        "name = \"bad\"\ncolour = 1\n",
    )
    .unwrap();
    std::fs::write(
        dirs.tools.path().join("junk.toml"),
        "name = \"junk\"\ndescription = \"x\"\n",
    )
    .unwrap();
    std::fs::write(dirs.tools.path().join("junk.wasm"), b"not wasm").unwrap();
    let out = toolplane(&["check", "--tools", tools, "--data", data]);
    assert_eq!(out.status.code(), Some(1));
    let e = text(&out.stderr);
    assert!(e.contains("2 problems"), "{e}");
    assert!(e.contains("bad.toml") && e.contains("colour"), "{e}");
    assert!(e.contains("junk"), "{e}");

    // A bad configuration file is a usage error naming the file and key.
    let config = dirs.data.path().join("toolplane.toml");
    std::fs::write(&config, "[server]\nport = 1\n").unwrap();
    let out = toolplane(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let e = text(&out.stderr);
    assert!(e.contains("toolplane.toml") && e.contains("port"), "{e}");
}

/// The commented sample configuration is a file `check` accepts, and it
/// names every key the server reads.
#[test]
fn the_example_configuration_is_accepted_and_complete() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../toolplane.example.toml");
    let dirs = Dirs::new();
    let data = dirs.data.path().to_str().unwrap();
    let out = toolplane(&[
        "check",
        "--config",
        example.to_str().unwrap(),
        "--data",
        data,
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).starts_with("ok: 5 tools"),
        "{}",
        text(&out.stdout)
    );
    // Every key of the server's configuration appears, set or commented.
    let written = std::fs::read_to_string(&example).unwrap();
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config.rs"),
    )
    .unwrap();
    let engine = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/src/config.rs"),
    )
    .unwrap();
    let clients = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/clients.rs"),
    )
    .unwrap();
    let oauth = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/oauth.rs"),
    )
    .unwrap();
    let audit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/audit.rs"),
    )
    .unwrap();
    let cluster = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cluster.rs"),
    )
    .unwrap();
    // The keys: the fields of config.rs's file structs, and the engine's
    // table of keys.
    let mut keys: Vec<String> = Vec::new();
    let mut in_file_struct = false;
    for line in source
        .lines()
        .chain(clients.lines())
        .chain(oauth.lines())
        .chain(audit.lines())
        .chain(cluster.lines())
    {
        let line = line.strip_prefix("pub ").unwrap_or(line);
        if line.starts_with("struct ") && line.contains("File") || line.starts_with("struct File") {
            in_file_struct = true;
        } else if line.starts_with('}') {
            in_file_struct = false;
        } else if in_file_struct
            && let Some((field, _)) = line.trim().split_once(": ")
            && !field.starts_with("//")
            && !field.starts_with('#')
        {
            keys.push(field.trim_start_matches("pub ").to_owned());
        }
    }
    for line in engine.lines() {
        if let Some(rest) = line.strip_prefix("//! | `")
            && let Some((key, _)) = rest.split_once('`')
        {
            keys.push(key.to_owned());
        }
    }
    assert!(keys.len() > 30, "{keys:?}");
    for key in [
        "server", "engine", "pool", "token", "clients", "oauth", "audit", "cluster",
    ] {
        keys.retain(|k| k != key);
    }
    assert!(
        written.contains("# [[clients]]")
            && written.contains("# [oauth]")
            && written.contains("# [audit]")
            && written.contains("# [cluster]")
    );
    for key in &keys {
        // A key, or a table's header (`[clients.tools_rate]`).
        assert!(
            written.contains(&format!("{key} =")) || written.contains(&format!(".{key}]")),
            "toolplane.example.toml does not name {key}"
        );
    }
}

#[test]
fn tools_install_writes_the_builtins_as_a_tools_directory_that_serves() {
    let dirs = Dirs::new();
    let target = dirs.data.path().join("my-tools");
    let out = toolplane(&["tools", "install", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    for name in ["echo", "fs.read", "fs.write", "hash.sha256", "sleep"] {
        assert!(target.join(format!("{name}.toml")).is_file(), "{name}");
        assert!(target.join(format!("{name}.wasm")).is_file(), "{name}");
        assert!(listed.contains(&format!("{name}.toml")), "{listed}");
    }
    let out = toolplane(&["check", "--tools", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn check_counts_the_tools_a_client_is_offered() {
    // A set (a jsonl worker with [[tools]]) is offered as its members: the
    // count is tools/list's, not the registry's entries.
    let dirs = Dirs::new();
    std::fs::write(
        dirs.tools.path().join("text.toml"),
        "name = \"text\"\nruntime = \"process\"\nprotocol = \"jsonl\"\ncommand = [\"cat\"]\n\
         [[tools]]\nname = \"upper\"\ndescription = \"u\"\n\
         [[tools]]\nname = \"lower\"\ndescription = \"l\"\n",
    )
    .unwrap();
    let tools = dirs.tools.path().to_str().unwrap();
    let data = dirs.data.path().to_str().unwrap();
    let out = toolplane(&["check", "--tools", tools, "--data", data]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("ok: 7 tools ("),
        "{}",
        text(&out.stdout)
    );
}
