//! Registry start-up with many tools: copies of the built-ins under
//! distinct names. Measures, for a cold cache (empty directory) and a warm
//! one (the same directory, a new process-level runtime):
//!
//! - `listed_ms`: `Registry::build` returned, every manifest listed;
//! - `callable_*_ms`: every module loaded (compiled, or mapped from the
//!   cache) and linked, so every tool is callable.
//!
//! `--tools N` (default 1000), `--replicas N` (default 3). Prints a table
//! and one JSON line with medians.

use std::time::Instant;

use toolplane_bench::registry;
use toolplane_pool::{PoolConfig, Runtime, builtin};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Sample {
    runtime_ms: f64,
    listed_ms: f64,
    callable_ms: f64,
}

fn start(
    tools: &std::path::Path,
    data: &std::path::Path,
    cache: &std::path::Path,
    n: usize,
) -> Result<Sample, Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let runtime = Runtime::new(PoolConfig {
        cache_dir: Some(cache.to_owned()),
        data_dir: Some(data.to_owned()),
        ..PoolConfig::default()
    })?;
    let runtime_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t1 = Instant::now();
    let mut listed_ms = 0.0;
    registry::start_with(runtime, tools, n, false, || {
        listed_ms = t1.elapsed().as_secs_f64() * 1e3;
    })?;
    Ok(Sample {
        runtime_ms,
        listed_ms,
        callable_ms: t1.elapsed().as_secs_f64() * 1e3,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut n = 1000usize;
    let mut replicas = 3usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> Result<usize, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{what} wants a positive integer"))
        };
        match a.as_str() {
            "--tools" => n = num("--tools")?,
            "--replicas" => replicas = num("--replicas")?,
            other => {
                return Err(format!(
                    "unknown argument {other:?}; accepted: --tools N, --replicas N"
                )
                .into());
            }
        }
    }
    let work = tempfile::TempDir::new()?;
    let tools = work.path().join("tools");
    let data = work.path().join("data");
    std::fs::create_dir_all(&tools)?;
    std::fs::create_dir_all(&data)?;
    let kinds = builtin::BUILTINS;
    registry::populate(&tools, n)?;
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for r in 0..replicas {
        let cache = work.path().join(format!("cache-{r}"));
        cold.push(start(&tools, &data, &cache, n)?);
        warm.push(start(&tools, &data, &cache, n)?);
    }
    let m = |v: &[Sample], f: fn(&Sample) -> f64| median(v.iter().map(f).collect());
    let spread = |v: &[Sample], f: fn(&Sample) -> f64| {
        let xs: Vec<f64> = v.iter().map(f).collect();
        (
            xs.iter().copied().fold(f64::INFINITY, f64::min),
            xs.iter().copied().fold(0.0, f64::max),
        )
    };
    println!(
        "{n} tools ({} distinct modules), {replicas} replicas, cold cache then warm cache each",
        kinds.len()
    );
    println!();
    println!("| figure | cold median ms (min–max) | warm median ms (min–max) |");
    println!("|---|---|---|");
    for (label, f) in [
        (
            "runtime start",
            (|s: &Sample| s.runtime_ms) as fn(&Sample) -> f64,
        ),
        ("listed", |s: &Sample| s.listed_ms),
        ("all callable", |s: &Sample| s.callable_ms),
    ] {
        let (cl, ch) = spread(&cold, f);
        let (wl, wh) = spread(&warm, f);
        println!(
            "| {label} | {:.1} ({cl:.1}–{ch:.1}) | {:.1} ({wl:.1}–{wh:.1}) |",
            m(&cold, f),
            m(&warm, f)
        );
    }
    let round = |x: f64| (x * 10.0).round() / 10.0;
    println!(
        "{}",
        serde_json::json!({
            "tools": n,
            "replicas": replicas,
            "listed_ms": round(m(&warm, |s| s.listed_ms)),
            "listed_cold_ms": round(m(&cold, |s| s.listed_ms)),
            "callable_warm_ms": round(m(&warm, |s| s.callable_ms)),
            "callable_cold_ms": round(m(&cold, |s| s.callable_ms)),
            "runtime_ms": round(m(&warm, |s| s.runtime_ms)),
        })
    );
    Ok(())
}
