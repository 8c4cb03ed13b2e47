//! Builds the built-in guest tools (`../../tools`, a workspace of its own)
//! for wasm32-wasip1 and embeds them: each tool's manifest and module.
//!
//! The nested cargo uses its own target directory, so it never waits on the
//! lock of the build that runs this script. It inherits the outer build's
//! jobserver.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip1";

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir.join("..").join("..");
    let tools = root.join("tools");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| if d.is_relative() { root.join(d) } else { d })
        .unwrap_or_else(|| root.join("target"))
        .join("wasm-tools");

    for f in [
        "Cargo.toml",
        "Cargo.lock",
        "sdk",
        "echo",
        "hash-sha256",
        "fs-read",
        "fs-write",
        "sleep",
    ] {
        println!("cargo:rerun-if-changed={}", tools.join(f).display());
    }

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            TARGET,
            "--manifest-path",
        ])
        .arg(tools.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir)
        // The outer build's flags and wrappers (loom's cfg, clippy) are for
        // the host crates, not for the guests.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .expect("running cargo to build the guest tools");
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("may not be installed") || stderr.contains("E0463") {
            "\n\nThe wasm32-wasip1 target is not installed: run `./dev setup` (or `rustup target add wasm32-wasip1`)."
        } else {
            ""
        };
        panic!(
            "building the guest tools in {} failed:\n{stderr}{hint}",
            tools.display()
        );
    }

    let built = target_dir.join(TARGET).join("release");
    let staged = out.join("tools");
    std::fs::create_dir_all(&staged).expect("creating OUT_DIR/tools");
    let mut entries = String::from("&[\n");
    let mut crates: Vec<_> = std::fs::read_dir(&tools)
        .expect("reading tools/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").exists() && p.file_name().is_some_and(|f| f != "sdk"))
        .collect();
    crates.sort();
    for dir in crates {
        let krate = dir
            .file_name()
            .and_then(|f| f.to_str())
            .expect("utf-8 crate dir")
            .to_string();
        for manifest in toml_files(&dir) {
            let name = manifest
                .file_name()
                .and_then(|f| f.to_str())
                .and_then(|f| f.strip_suffix(".toml"))
                .expect("a .toml file name")
                .to_string();
            let wasm = built.join(format!("{krate}.wasm"));
            assert!(
                wasm.exists(),
                "the guest build did not produce {}",
                wasm.display()
            );
            let staged_wasm = staged.join(format!("{name}.wasm"));
            let staged_toml = staged.join(format!("{name}.toml"));
            std::fs::copy(&wasm, &staged_wasm).expect("staging a guest module");
            std::fs::copy(&manifest, &staged_toml).expect("staging a guest manifest");
            entries.push_str(&format!(
                "    Builtin {{ name: {name:?}, manifest_path: {mp:?}, manifest: include_str!({st:?}), module: include_bytes!({sw:?}) }},\n",
                mp = format!("tools/{krate}/{name}.toml"),
                st = staged_toml.display().to_string(),
                sw = staged_wasm.display().to_string(),
            ));
        }
    }
    entries.push(']');
    std::fs::write(out.join("builtins.rs"), entries).expect("writing builtins.rs");
    println!("cargo:rustc-env=TOOLPLANE_BUILTIN_DIR={}", staged.display());
}

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("reading a tool crate")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "toml")
                && p.file_name().is_some_and(|f| f != "Cargo.toml")
        })
        .collect();
    v.sort();
    v
}
