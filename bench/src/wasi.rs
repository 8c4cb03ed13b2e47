//! Every way of calling a WASI tool that the benchmarks compare, on the
//! built-in `echo` and `hash.sha256`:
//!
//! 1. [`Mode::Process`]: a process per call (this executable again, which
//!    starts a runtime, maps the module from the cache, runs one call);
//! 2. [`Mode::Naive`]: the naive embedding: wasmtime's default on-demand
//!    allocator, `Linker::instantiate` and a WASI context per call, the
//!    command entry (`_start` over stdin/stdout);
//! 3. [`Mode::FreshCommand`]: the pool, a fresh instance per call, the
//!    command entry;
//! 4. [`Mode::FreshFast`]: the pool, a fresh instance per call, the fast
//!    entry;
//! 5. [`Mode::Reuse`]: one live instance serving call after call.
//!
//! A binary that uses [`Mode::Process`] must call [`child_main`] first
//! thing in `main`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use toolplane_core::Outcome;
use toolplane_pool::{LiveTool, PoolConfig, Registry, Runtime, builtin};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};

/// The tools compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `echo`: returns its input.
    Echo,
    /// `hash.sha256`: the SHA-256 of `data`.
    Sha256,
}

impl Tool {
    /// Both.
    pub const ALL: [Tool; 2] = [Tool::Echo, Tool::Sha256];

    /// The built-in's name.
    pub fn builtin(self) -> &'static str {
        match self {
            Tool::Echo => "echo",
            Tool::Sha256 => "hash.sha256",
        }
    }
}

/// The call modes compared (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A process per call.
    Process,
    /// The naive embedding.
    Naive,
    /// Pooled fresh instance, command entry.
    FreshCommand,
    /// Pooled fresh instance, fast entry.
    FreshFast,
    /// One live instance.
    Reuse,
}

impl Mode {
    /// Every mode, slowest first.
    pub const ALL: [Mode; 5] = [
        Mode::Process,
        Mode::Naive,
        Mode::FreshCommand,
        Mode::FreshFast,
        Mode::Reuse,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Process => "process per call",
            Mode::Naive => "naive embedding",
            Mode::FreshCommand => "fresh, command entry",
            Mode::FreshFast => "fresh, fast entry",
            Mode::Reuse => "reuse",
        }
    }

    /// The short name used on command lines.
    pub fn key(self) -> &'static str {
        match self {
            Mode::Process => "process",
            Mode::Naive => "naive",
            Mode::FreshCommand => "fresh-command",
            Mode::FreshFast => "fresh-fast",
            Mode::Reuse => "reuse",
        }
    }
}

/// A tool input of exactly `size` bytes (at least 11): `{"data":"aaa…"}`,
/// which both tools accept.
pub fn input(size: usize) -> Vec<u8> {
    assert!(size >= 11, "an input is at least {{\"data\":\"\"}}");
    let mut s = String::with_capacity(size);
    s.push_str("{\"data\":\"");
    while s.len() < size - 2 {
        s.push('a');
    }
    s.push_str("\"}");
    s.into_bytes()
}

/// Checks that `outcome` is what `tool` answers to `input`.
pub fn check(tool: Tool, input: &[u8], outcome: &Outcome) -> Result<(), String> {
    match (tool, outcome) {
        (Tool::Echo, Outcome::Ok(p)) if p.as_slice() == input => Ok(()),
        (Tool::Sha256, Outcome::Ok(p))
            if std::str::from_utf8(p).is_ok_and(|s| s.contains("\"sha256\":\"")) =>
        {
            Ok(())
        }
        (tool, other) => Err(format!(
            "{} answered {other:?} to a {}-byte input",
            tool.builtin(),
            input.len()
        )),
    }
}

const CHILD_ENV: &str = "TOOLPLANE_BENCH_ONE_CALL";

/// The child side of [`Mode::Process`]: when this process was started as
/// one, runs the call (stdin in, stdout out) and exits. Call it first in
/// `main`.
pub fn child_main() {
    let Some(spec) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let spec = spec.to_string_lossy().into_owned();
    let mut parts = spec.splitn(3, '\n');
    let (Some(tools), Some(cache), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        eprintln!("{CHILD_ENV} must be TOOLS_DIR\\nCACHE_DIR\\nTOOL");
        std::process::exit(2)
    };
    let code = match one_call(Path::new(tools), Path::new(cache), name) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("one call of {name}: {e}");
            1
        }
    };
    std::process::exit(code)
}

fn one_call(tools: &Path, cache: &Path, name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input)?;
    let cfg = PoolConfig {
        cache_dir: Some(cache.to_owned()),
        instances: 4,
        ..PoolConfig::default()
    };
    let registry = Registry::builder(Runtime::new(cfg)?)
        .dir(tools)
        .builtins(false)
        .watch(false)
        .loaders(1)
        .build()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match rt.block_on(registry.call(name, &input)) {
        Outcome::Ok(p) => std::io::stdout().write_all(&p)?,
        other => return Err(format!("{other:?}").into()),
    }
    Ok(())
}

/// A tools directory with both tools in every pooled mode, the registry
/// over it, the naive embeddings, and one directory per tool for the
/// process-per-call child.
#[derive(Debug)]
pub struct Fixture {
    dir: tempfile::TempDir,
    /// The registry over `dir/tools`.
    pub registry: Registry,
    cache: PathBuf,
    naive: Vec<(Tool, Naive)>,
}

/// The name of `tool` in `mode` in the fixture's registry.
fn variant(tool: Tool, mode: Mode) -> String {
    let suffix = match mode {
        Mode::FreshCommand => "cmd",
        Mode::FreshFast | Mode::Process => "fresh",
        Mode::Reuse => "live",
        Mode::Naive => "naive",
    };
    format!("{}.{suffix}", tool.builtin())
}

/// The built-in's manifest under `name`, in `mode` (`fresh` or `reuse`),
/// with the command entry when asked.
fn manifest(tool: Tool, name: &str, mode: &str, command: bool) -> Result<String, String> {
    let b = builtin::get(tool.builtin())
        .ok_or_else(|| format!("{} is not built in", tool.builtin()))?;
    let mut out = format!("name = \"{name}\"\nmode = \"{mode}\"\n");
    if command {
        out.push_str("entry = \"command\"\n");
    }
    // Top-level keys come before the first table: replace ours there.
    let mut top = true;
    for line in b.manifest.lines() {
        top &= !line.trim_start().starts_with('[');
        let key = line.split('=').next().unwrap_or("").trim();
        if !(top && matches!(key, "name" | "mode" | "entry")) {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

impl Fixture {
    /// Writes the tools, starts a runtime with `config` (its cache
    /// directory replaced by one inside the fixture) and waits until every
    /// tool is loaded.
    pub fn new(config: PoolConfig) -> Result<Fixture, Box<dyn std::error::Error>> {
        let dir = tempfile::TempDir::new()?;
        let tools = dir.path().join("tools");
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(&tools)?;
        let mut naive = Vec::new();
        for tool in Tool::ALL {
            let b = builtin::get(tool.builtin()).ok_or("not built in")?;
            for (mode, m, command) in [
                (Mode::FreshFast, "fresh", false),
                (Mode::FreshCommand, "fresh", true),
                (Mode::Reuse, "reuse", false),
            ] {
                let name = variant(tool, mode);
                std::fs::write(tools.join(format!("{name}.wasm")), b.module)?;
                std::fs::write(
                    tools.join(format!("{name}.toml")),
                    manifest(tool, &name, m, command)?,
                )?;
            }
            let alone = dir.path().join(format!("process-{}", tool.builtin()));
            std::fs::create_dir_all(&alone)?;
            let name = variant(tool, Mode::Process);
            std::fs::write(alone.join(format!("{name}.wasm")), b.module)?;
            std::fs::write(
                alone.join(format!("{name}.toml")),
                manifest(tool, &name, "fresh", false)?,
            )?;
            naive.push((tool, Naive::new(b.module)?));
        }
        let runtime = Runtime::new(PoolConfig {
            cache_dir: Some(cache.clone()),
            ..config
        })?;
        let registry = Registry::builder(runtime)
            .dir(&tools)
            .builtins(false)
            .watch(false)
            .build()?;
        if !registry.wait_loaded(Duration::from_secs(120)) || !registry.problems().is_empty() {
            return Err(format!("tools did not load: {:?}", registry.problems()).into());
        }
        Ok(Fixture {
            dir,
            registry,
            cache,
            naive,
        })
    }

    /// A caller of `tool` in `mode`.
    pub fn caller(&self, tool: Tool, mode: Mode) -> Caller<'_> {
        match mode {
            Mode::Process => Caller::Process {
                exe: std::env::current_exe().expect("the current executable"),
                spec: format!(
                    "{}\n{}\n{}",
                    self.dir
                        .path()
                        .join(format!("process-{}", tool.builtin()))
                        .display(),
                    self.cache.display(),
                    variant(tool, Mode::Process)
                ),
            },
            Mode::Naive => Caller::Naive(
                &self
                    .naive
                    .iter()
                    .find(|(t, _)| *t == tool)
                    .expect("every tool has a naive embedding")
                    .1,
            ),
            Mode::FreshCommand | Mode::FreshFast => {
                Caller::Registry(&self.registry, variant(tool, mode))
            }
            Mode::Reuse => Caller::Live(Box::new(self.registry.live(&variant(tool, mode)))),
        }
    }
}

/// One tool in one mode, ready to call.
#[derive(Debug)]
pub enum Caller<'a> {
    /// A process per call: this executable with the child spec.
    Process {
        /// This executable.
        exe: PathBuf,
        /// What [`child_main`] reads.
        spec: String,
    },
    /// The naive embedding.
    Naive(&'a Naive),
    /// A pooled fresh instance of this tool.
    Registry(&'a Registry, String),
    /// A live instance.
    Live(Box<LiveTool>),
}

impl Caller<'_> {
    /// One call.
    pub async fn call(&mut self, input: &[u8]) -> Outcome {
        match self {
            Caller::Process { exe, spec } => {
                match run_child(Command::new(&*exe).env(CHILD_ENV, &*spec), input) {
                    Ok(out) => Outcome::Ok(out.as_slice().into()),
                    Err(e) => Outcome::Error(format!("process per call: {e}").into()),
                }
            }
            Caller::Naive(n) => n.call(input).await,
            Caller::Registry(r, name) => r.call(name, input).await,
            Caller::Live(live) => live.call(input).await,
        }
    }
}

fn run_child(cmd: &mut Command, input: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().expect("piped").write_all(input)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

/// The naive embedding: on-demand allocator, no `InstancePre`, a WASI
/// context and `Linker::instantiate` per call, the command entry.
pub struct Naive {
    engine: wasmtime::Engine,
    module: wasmtime::Module,
    linker: wasmtime::Linker<wasmtime_wasi::p1::WasiP1Ctx>,
}

impl std::fmt::Debug for Naive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Naive").finish_non_exhaustive()
    }
}

impl Naive {
    /// Compiles `wasm` for wasmtime's default engine.
    pub fn new(wasm: &[u8]) -> wasmtime::Result<Naive> {
        let engine = wasmtime::Engine::default();
        let module = wasmtime::Module::new(&engine, wasm)?;
        let mut linker = wasmtime::Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |t| t)?;
        Ok(Naive {
            engine,
            module,
            linker,
        })
    }

    /// One call: stdin in, stdout out.
    pub async fn call(&self, input: &[u8]) -> Outcome {
        let stdout = MemoryOutputPipe::new(1 << 20);
        let wasi = WasiCtxBuilder::new()
            .stdin(MemoryInputPipe::new(input.to_vec()))
            .stdout(stdout.clone())
            .build_p1();
        let mut store = wasmtime::Store::new(&self.engine, wasi);
        let run = async {
            let instance = self
                .linker
                .instantiate_async(&mut store, &self.module)
                .await?;
            let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
            start.call_async(&mut store, ()).await
        };
        match run.await {
            Ok(()) => {}
            Err(e)
                if e.downcast_ref::<wasmtime_wasi::I32Exit>()
                    .is_some_and(|x| x.0 == 0) => {}
            Err(e) => return Outcome::Error(format!("{e:#}").into()),
        }
        Outcome::Ok(stdout.contents().as_ref().into())
    }
}
