//! The registry:
//! - start-up with 1000 tools (copies of the built-ins), until every one
//!   is callable, with a cold module cache (a new, empty directory) and a
//!   warm one (the cache a previous start filled);
//! - hot reload: a new version of a tool's module written over the old
//!   file → the registry reports it replaced → a call answers.
//!
//! `cargo bench --workspace --profile release --bench criterion -- '^registry/'`

use std::time::{Duration, Instant};

use criterion::Criterion;
use toolplane_bench::registry::{populate, start, versioned};
use toolplane_core::Outcome;
use toolplane_pool::{RegistryEvent, builtin};

const TOOLS: usize = 1000;

pub fn startup(c: &mut Criterion) {
    let work = tempfile::TempDir::new().expect("a temporary directory");
    let (tools, data) = (work.path().join("tools"), work.path().join("data"));
    populate(&tools, TOOLS).expect("write the tools");
    std::fs::create_dir_all(&data).expect("data directory");
    let mut g = c.benchmark_group(format!("registry/start-up, {TOOLS} tools"));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    let mut fresh = 0u64;
    g.bench_function("cold cache", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                fresh += 1;
                let cache = work.path().join(format!("cache-cold-{fresh}"));
                let t = Instant::now();
                let registry = start(&tools, &data, &cache, TOOLS, false).expect("start");
                total += t.elapsed();
                drop(registry);
                let _ = std::fs::remove_dir_all(&cache);
            }
            total
        })
    });
    let warm = work.path().join("cache-warm");
    drop(start(&tools, &data, &warm, TOOLS, false).expect("fill the cache"));
    g.bench_function("warm cache", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let registry = start(&tools, &data, &warm, TOOLS, false).expect("start");
                total += t.elapsed();
                drop(registry);
            }
            total
        })
    });
    g.finish();
}

pub fn hot_reload(c: &mut Criterion) {
    let work = tempfile::TempDir::new().expect("a temporary directory");
    let (tools, data, cache) = (
        work.path().join("tools"),
        work.path().join("data"),
        work.path().join("cache"),
    );
    std::fs::create_dir_all(&tools).expect("tools directory");
    std::fs::create_dir_all(&data).expect("data directory");
    let echo = builtin::get("echo").expect("echo is built in");
    std::fs::write(tools.join("echo.toml"), echo.manifest).expect("manifest");
    std::fs::write(tools.join("echo.wasm"), echo.module).expect("module");
    let registry = start(&tools, &data, &cache, 1, true).expect("start");
    let events = registry.subscribe();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut version = 0u64;
    let mut g = c.benchmark_group("registry/hot reload");
    g.sample_size(10);
    g.bench_function("module written → new version callable", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                version += 1;
                while events.try_recv().is_ok() {}
                let module = versioned(echo.module, version);
                let t = Instant::now();
                std::fs::write(tools.join("echo.wasm"), &module).expect("write the module");
                loop {
                    match events.recv_timeout(Duration::from_secs(10)) {
                        Ok(RegistryEvent::Replaced { name }) if name == "echo" => break,
                        Ok(_) => {}
                        Err(e) => panic!("no new version of echo within 10 s: {e}"),
                    }
                }
                let out = rt.block_on(registry.call("echo", b"{}"));
                total += t.elapsed();
                assert!(
                    matches!(out, Outcome::Ok(_)),
                    "the new version answers: {out:?}"
                );
            }
            total
        })
    });
    g.finish();
}
