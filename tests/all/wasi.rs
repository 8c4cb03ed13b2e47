//! Helpers for the WASI tool tests: a runtime and registry over temporary
//! directories, an engine on them, and fault tools written in WAT.

use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;
use toolplane_core::{Engine, Event, Outcome};
use toolplane_pool::{PoolConfig, Registry, RegistryBuilder, Runtime, SiteConfig, ToolHandler};

/// Temporary tools, data and cache directories and a registry over them.
pub struct Rig {
    pub tools: TempDir,
    pub data: TempDir,
    /// Kept for the rig's life (the cache lives in it).
    pub _cache: TempDir,
    pub registry: Registry,
}

/// A pool configuration over `cache`.
pub fn pool_config(cache: &Path) -> PoolConfig {
    PoolConfig {
        cache_dir: Some(cache.to_owned()),
        ..PoolConfig::default()
    }
}

/// A rig whose tools directory `setup` fills before the registry starts;
/// `build` adjusts the registry builder (built-ins, watching).
pub fn rig_with(
    config: impl FnOnce(&mut PoolConfig),
    setup: impl FnOnce(&Path),
    build: impl FnOnce(RegistryBuilder) -> RegistryBuilder,
) -> Rig {
    rig_with_site(|_| {}, config, setup, build)
}

/// [`rig_with`], its site (the data directory's limit, the backlog) set
/// by `site`.
pub fn rig_with_site(
    site: impl FnOnce(&mut SiteConfig),
    config: impl FnOnce(&mut PoolConfig),
    setup: impl FnOnce(&Path),
    build: impl FnOnce(RegistryBuilder) -> RegistryBuilder,
) -> Rig {
    let tools = TempDir::new().unwrap();
    let data = TempDir::new().unwrap();
    let cache = TempDir::new().unwrap();
    setup(tools.path());
    let mut cfg = pool_config(cache.path());
    config(&mut cfg);
    let mut at = SiteConfig {
        data_dir: Some(data.path().to_owned()),
        ..SiteConfig::default()
    };
    site(&mut at);
    let runtime = Runtime::new(cfg).expect("runtime");
    let registry = build(Registry::builder(runtime).site(at).dir(tools.path()))
        .build()
        .expect("registry");
    assert!(
        registry.wait_loaded(Duration::from_secs(60)),
        "tools did not load within 60 s"
    );
    Rig {
        tools,
        data,
        _cache: cache,
        registry,
    }
}

/// The built-in tools over temporary directories.
pub fn builtins() -> Rig {
    rig_with(|_| {}, |_| {}, |b| b.watch(false))
}

/// An engine running the rig's tools.
pub fn engine(rig: &Rig, workers: usize, max_concurrent: usize) -> Engine {
    crate::support::builder(workers)
        .max_concurrent_per_worker(max_concurrent)
        .tools(rig.registry.tool_table())
        .build(ToolHandler::new(rig.registry.clone()))
        .expect("engine")
}

/// An event for the tool `name`.
pub fn event(rig: &Rig, name: &str, input: &str) -> Event {
    let id = rig
        .registry
        .tool_table()
        .get(name)
        .unwrap_or_else(|| panic!("tool {name} is not interned"));
    Event::new(id, input.as_bytes())
}

/// Runs one call outside the engine.
pub fn call(rig: &Rig, name: &str, input: &str) -> Outcome {
    block_on(rig.registry.call(name, input.as_bytes()))
}

/// Runs `f` to completion on a current-thread runtime (as a worker does).
pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The JSON output of a successful call; panics with the outcome otherwise.
pub fn ok_json(o: &Outcome) -> serde_json::Value {
    match o {
        Outcome::Ok(p) => serde_json::from_slice(p).unwrap_or_else(|e| {
            panic!("output is not JSON ({e}): {:?}", String::from_utf8_lossy(p))
        }),
        other => panic!("expected Ok, got {other:?}"),
    }
}

/// The message of an `Error` outcome; panics otherwise.
pub fn error_text(o: &Outcome) -> String {
    match o {
        Outcome::Error(m) => m.to_string(),
        other => panic!("expected Error, got {other:?}"),
    }
}

/// A module with the fast entry whose `toolplane_call` body is `body`
/// (it must leave an i64 on the stack, or not return).
pub fn fast_module(body: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
            (memory (export "memory") 1)
            (func (export "toolplane_alloc") (param i32) (result i32) i32.const 1024)
            (func (export "toolplane_call") (param i32 i32) (result i64) {body})
            (func (export "_start")))"#
    ))
    .expect("valid WAT")
}

/// A command module (WASI `fd_write` and `proc_exit` imported) whose
/// `_start` body is `body`; memory holds `data` at offset 64.
pub fn command_module(body: &str, data: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (data (i32.const 64) "{data}")
            (func (export "_start") {body}))"#
    ))
    .expect("valid WAT")
}

/// Writes a tool: `<name>.wasm` and a manifest with `extra` lines.
pub fn write_tool(dir: &Path, name: &str, wasm: &[u8], extra: &str) {
    std::fs::write(dir.join(format!("{name}.wasm")), wasm).unwrap();
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!("name = \"{name}\"\ndescription = \"test tool\"\n{extra}\n"),
    )
    .unwrap();
}

/// The built-in module `name`.
pub fn builtin_module(name: &str) -> &'static [u8] {
    toolplane_pool::builtin::get(name)
        .unwrap_or_else(|| panic!("no built-in tool {name}: the guest build did not embed it"))
        .module
}
