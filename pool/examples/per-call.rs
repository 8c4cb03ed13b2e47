//! Per-call cost of the `echo` tool with a 1 KiB input, five ways, in one
//! run, interleaved (each round runs every mode once, in turn):
//!
//! 1. process per call: spawn a process that loads the module from the
//!    cache and runs one call (and `wasmtime run`, when on PATH);
//! 2. naive embedding: default allocator, `Linker::instantiate` and a WASI
//!    context per call, command entry;
//! 3. pooled fresh instance, command entry (stdin/stdout);
//! 4. pooled fresh instance, fast entry;
//! 5. reuse: one live instance, fast entry.
//!
//! Prints a table and one JSON line. Flags: `--rounds N` (default 7),
//! `--calls N` per mode and round (default 2000; process modes run 1/50th),
//! `--only MODE` (e.g. `fresh_fast_us`) for profiling one mode, `--untuned`
//! for wasmtime's pooling defaults (no resident slots, no batched decommit).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use toolplane_core::Outcome;
use toolplane_pool::{PoolConfig, Registry, Runtime, builtin};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn input() -> Vec<u8> {
    // {"data":"aaaa…"} of exactly 1024 bytes.
    let mut s = String::from("{\"data\":\"");
    while s.len() < 1024 - 2 {
        s.push('a');
    }
    s.push_str("\"}");
    assert_eq!(s.len(), 1024);
    s.into_bytes()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--one-call") {
        return one_call(Path::new(&args[1]), Path::new(&args[2]));
    }
    let mut rounds = 7usize;
    let mut calls = 2000usize;
    let mut only: Option<String> = None;
    let mut tune = PoolConfig::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |what: &str| -> Result<usize, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{what} wants a positive integer"))
        };
        match a.as_str() {
            "--rounds" => rounds = num("--rounds")?,
            "--calls" => calls = num("--calls")?,
            "--only" => only = it.next().cloned(),
            "--keep-resident" => tune.keep_resident = num("--keep-resident")?,
            "--decommit-batch" => tune.decommit_batch = num("--decommit-batch")?,
            "--untuned" => {
                // wasmtime's pooling defaults: every freed slot is
                // madvise'd away at once, and refaulted by the next call.
                tune.keep_resident = 0;
                tune.decommit_batch = 1;
                tune.pagemap_scan = false;
            }
            other => {
                return Err(
                    format!("unknown argument {other:?}; accepted: --rounds N, --calls N, --only MODE, --keep-resident BYTES, --decommit-batch N, --untuned").into(),
                );
            }
        }
    }
    let spawn_calls = (calls / 50).max(5);

    let work = tempfile::TempDir::new()?;
    let tools = work.path().join("tools");
    let cache = work.path().join("cache");
    std::fs::create_dir_all(&tools)?;
    let echo = builtin::get("echo").ok_or("echo is not built in")?;
    std::fs::write(tools.join("echo.wasm"), echo.module)?;
    std::fs::write(tools.join("echo.toml"), echo.manifest)?;
    std::fs::write(tools.join("echo.cmd.wasm"), echo.module)?;
    std::fs::write(
        tools.join("echo.cmd.toml"),
        "name = \"echo.cmd\"\nentry = \"command\"\n",
    )?;
    std::fs::write(tools.join("echo.live.wasm"), echo.module)?;
    std::fs::write(
        tools.join("echo.live.toml"),
        "name = \"echo.live\"\nmode = \"reuse\"\n",
    )?;

    let mut cfg = tune.clone();
    cfg.cache_dir = Some(cache.clone());
    let runtime = Runtime::new(cfg)?;
    let registry = Registry::builder(runtime)
        .dir(&tools)
        .builtins(false)
        .watch(false)
        .build()?;
    if !registry.wait_loaded(Duration::from_secs(60)) || !registry.problems().is_empty() {
        return Err(format!("tools did not load: {:?}", registry.problems()).into());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let naive = Naive::new(echo.module)?;
    let input = input();
    let wasmtime_bin = which("wasmtime");
    let exe = std::env::current_exe()?;

    let mut modes: Vec<(&str, Vec<f64>)> = vec![
        ("process_us", vec![]),
        ("naive_us", vec![]),
        ("fresh_command_us", vec![]),
        ("fresh_fast_us", vec![]),
        ("reuse_us", vec![]),
    ];
    if wasmtime_bin.is_some() {
        modes.push(("wasmtime_run_us", vec![]));
    }
    if let Some(o) = &only {
        modes.retain(|(n, _)| n == o);
        if modes.is_empty() {
            return Err(format!("--only {o:?}: not a mode").into());
        }
    }
    let mut live = registry.live("echo.live");
    // Warm up every path once (and check every path answers the input).
    rt.block_on(async {
        for name in ["echo", "echo.cmd"] {
            expect_echo(&registry.call(name, &input).await, &input);
        }
        expect_echo(&live.call(&input).await, &input);
        expect_echo(&naive.call(&input).await, &input);
    });
    expect_echo(&spawn_one(&exe, &tools, &cache, &input)?, &input);

    for _round in 0..rounds {
        for (name, samples) in modes.iter_mut() {
            let per_call = match *name {
                "process_us" => time(spawn_calls, || {
                    let _ = spawn_one(&exe, &tools, &cache, &input);
                }),
                "wasmtime_run_us" => {
                    let bin = wasmtime_bin.as_ref().expect("checked above");
                    let module = tools.join("echo.wasm");
                    time(spawn_calls, || {
                        let _ = run_piped(Command::new(bin).arg("run").arg(&module), &input);
                    })
                }
                "naive_us" => rt.block_on(time_async(calls, || naive.call(&input))),
                "fresh_command_us" => {
                    rt.block_on(time_async(calls, || registry.call("echo.cmd", &input)))
                }
                "fresh_fast_us" => rt.block_on(time_async(calls, || registry.call("echo", &input))),
                "reuse_us" => {
                    let start = Instant::now();
                    rt.block_on(async {
                        for _ in 0..calls {
                            std::hint::black_box(live.call(&input).await);
                        }
                    });
                    start.elapsed() / calls as u32
                }
                _ => unreachable!(),
            };
            samples.push(per_call.as_secs_f64() * 1e6);
        }
    }

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    println!(
        "echo, 1 KiB input; {rounds} rounds interleaved; {calls} calls per in-process mode and round, {spawn_calls} per process mode"
    );
    println!(
        "machine: {} cores, {cpu}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!("| mode | median µs/call | min | max |");
    println!("|---|---|---|---|");
    let mut json = serde_json::Map::new();
    let med = |v: &[f64]| median(v);
    for (name, samples) in &modes {
        let (lo, hi) = spread(samples);
        println!("| {name} | {:.2} | {lo:.2} | {hi:.2} |", med(samples));
        json.insert(
            (*name).to_string(),
            serde_json::json!((med(samples) * 100.0).round() / 100.0),
        );
    }
    let get = |k: &str| {
        modes
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| med(v))
            .unwrap_or(f64::NAN)
    };
    let ratios = [
        (
            "naive_over_fresh_fast",
            get("naive_us") / get("fresh_fast_us"),
        ),
        (
            "naive_over_fresh_command",
            get("naive_us") / get("fresh_command_us"),
        ),
        (
            "process_over_fresh_fast",
            get("process_us") / get("fresh_fast_us"),
        ),
    ];
    println!();
    for (k, v) in ratios {
        println!("{k}: {v:.1}×");
        json.insert(k.to_string(), serde_json::json!((v * 10.0).round() / 10.0));
    }
    json.insert("rounds".into(), rounds.into());
    json.insert("calls".into(), calls.into());
    println!("{}", serde_json::Value::Object(json));
    Ok(())
}

fn expect_echo(o: &Outcome, input: &[u8]) {
    match o {
        Outcome::Ok(p) if p.as_slice() == input => {}
        other => panic!("echo did not echo: {other:?}"),
    }
}

fn time(n: usize, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed() / n as u32
}

async fn time_async<F: std::future::Future<Output = Outcome>>(
    n: usize,
    mut f: impl FnMut() -> F,
) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(f().await);
    }
    start.elapsed() / n as u32
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        f64::NAN
    } else {
        s[s.len() / 2]
    }
}

fn spread(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo, hi)
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(bin))
            .find(|p| p.is_file())
    })
}

fn run_piped(cmd: &mut Command, input: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    child.stdin.take().expect("piped").write_all(input)?;
    let out = child.wait_with_output()?;
    Ok(out.stdout)
}

fn spawn_one(
    exe: &Path,
    tools: &Path,
    cache: &Path,
    input: &[u8],
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let out = run_piped(
        Command::new(exe).arg("--one-call").arg(tools).arg(cache),
        input,
    )?;
    Ok(Outcome::Ok(out.as_slice().into()))
}

/// The child of "process per call": start, load echo from the cache, run
/// one call with stdin as input, print the output.
fn one_call(tools: &Path, cache: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::{Read, Write};
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
    match rt.block_on(registry.call("echo", &input)) {
        Outcome::Ok(p) => std::io::stdout().write_all(&p)?,
        other => return Err(format!("{other:?}").into()),
    }
    Ok(())
}

/// The naive embedding: on-demand allocator, no `InstancePre`, a WASI
/// context and `Linker::instantiate` per call, the command entry.
struct Naive {
    engine: wasmtime::Engine,
    module: wasmtime::Module,
    linker: wasmtime::Linker<wasmtime_wasi::p1::WasiP1Ctx>,
}

impl Naive {
    fn new(wasm: &[u8]) -> wasmtime::Result<Naive> {
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

    async fn call(&self, input: &[u8]) -> Outcome {
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
