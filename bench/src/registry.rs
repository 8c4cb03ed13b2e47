//! Many tools on disk (copies of the built-ins under distinct names), and
//! a registry started over them: what `registry` benchmarks and the
//! start-up figures in PERF.md measure.

use std::path::Path;
use std::time::Duration;

use toolplane_pool::{LoadState, PoolConfig, Registry, Runtime, SiteConfig, builtin};

/// Writes `n` tools to `dir`: the built-ins in turn, named `<name>-<i>`.
pub fn populate(dir: &Path, n: usize) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let kinds = builtin::BUILTINS;
    for i in 0..n {
        let b = &kinds[i % kinds.len()];
        let name = format!("{}-{i:05}", b.name);
        std::fs::write(dir.join(format!("{name}.wasm")), b.module)?;
        let manifest = b.manifest.replacen(
            &format!("name = \"{}\"", b.name),
            &format!("name = \"{name}\""),
            1,
        );
        std::fs::write(dir.join(format!("{name}.toml")), manifest)?;
    }
    Ok(())
}

/// Starts a runtime and a registry over `tools` (module cache in `cache`,
/// `{data}` grants in `data`), and waits until all `n` tools are callable.
pub fn start(
    tools: &Path,
    data: &Path,
    cache: &Path,
    n: usize,
    watch: bool,
) -> Result<Registry, String> {
    let runtime = Runtime::new(PoolConfig {
        cache_dir: Some(cache.to_owned()),
        ..PoolConfig::default()
    })
    .map_err(|e| e.to_string())?;
    start_with(runtime, tools, data, n, watch, || {})
}

/// The default site, with `data` as the data directory.
pub fn site(data: &Path) -> SiteConfig {
    SiteConfig {
        data_dir: Some(data.to_owned()),
        ..SiteConfig::default()
    }
}

/// [`start`] on a given runtime; `listed` runs when `Registry::build` has
/// returned (every manifest listed), before the wait for the modules.
pub fn start_with(
    runtime: Runtime,
    tools: &Path,
    data: &Path,
    n: usize,
    watch: bool,
    listed: impl FnOnce(),
) -> Result<Registry, String> {
    let registry = Registry::builder(runtime)
        .site(site(data))
        .dir(tools)
        .builtins(false)
        .watch(watch)
        .build()
        .map_err(|e| e.to_string())?;
    listed();
    let count = registry.snapshot().len();
    if count != n {
        return Err(format!(
            "listed {count} tools, expected {n}: {:?}",
            registry.problems()
        ));
    }
    if !registry.wait_loaded(Duration::from_secs(300)) {
        return Err("tools did not load within 300 s".into());
    }
    let snap = registry.snapshot();
    if let Some(e) = snap.iter().find(|e| e.state() != LoadState::Ready) {
        return Err(format!("tool {} is {:?}", e.manifest.name, e.state()));
    }
    Ok(registry)
}

/// `module` with a custom section appended that holds `version`: a module
/// that behaves the same but hashes differently, so writing it over the
/// old file is a new version of the tool.
pub fn versioned(module: &[u8], version: u64) -> Vec<u8> {
    let name = b"toolplane-bench-version";
    let payload = version.to_le_bytes();
    let body = 1 + name.len() + payload.len();
    assert!(body < 128, "one-byte LEB128 sizes");
    let mut out = module.to_vec();
    out.push(0); // custom section
    out.push(body as u8);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&payload);
    out
}
