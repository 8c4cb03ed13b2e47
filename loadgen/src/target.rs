//! What loadgen drives. The embedded default starts the engine in this
//! process with the WASI pool and the built-in tools (mode overrides
//! applied to a temporary copy), and a temporary data directory seeded
//! with the files the profile reads. Tests and embedders can hand in an
//! engine of their own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use toolplane_core::Engine;
use toolplane_pool::{PoolConfig, Registry, Runtime, SiteConfig, ToolHandler};

pub use crate::error::TargetError;
use crate::placement::Placement;
use crate::profile::Profile;
use crate::remote::{Remote, Scrape};
use crate::workload;

/// What loadgen drives.
pub enum Backend {
    /// An engine in this process.
    Engine(Engine),
    /// A running `toolplane serve`, over its REST call path.
    Remote(Arc<Remote>),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Engine(e) => write!(f, "Engine({} workers)", e.workers()),
            Backend::Remote(r) => r.fmt(f),
        }
    }
}

/// An engine or a server to drive, with what keeps its tools alive.
pub struct Target {
    /// The engine or server.
    pub backend: Backend,
    /// The tools it serves.
    pub tools: Vec<String>,
    /// For reports: `embedded (2 workers, built-in tools)`.
    pub label: String,
    /// The data directory of the fs tools, if any.
    pub data_dir: Option<PathBuf>,
    /// The WASI pool of an embedded target, whose slot use is sampled
    /// beside resident memory.
    pub runtime: Option<Runtime>,
    /// The generator's core of its own, for the embedded engine.
    pub(crate) placement: Option<Placement>,
    /// What an embedded target holds until its engine has shut down.
    held: Option<Held>,
}

/// Held by an embedded target until its engine has shut down: the
/// registry (its loader threads), the data directory, and the temporary
/// copy of the built-ins when the profile names no tools directory.
struct Held {
    _registry: Registry,
    _data: tempfile::TempDir,
    _tools: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("label", &self.label)
            .field("tools", &self.tools)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// An engine built by the caller serving `tools`.
    pub fn engine(engine: Engine, tools: Vec<String>, label: impl Into<String>) -> Target {
        Target {
            backend: Backend::Engine(engine),
            tools,
            label: label.into(),
            data_dir: None,
            runtime: None,
            placement: None,
            held: None,
        }
    }

    /// The embedded default for `profile`.
    ///
    /// # Errors
    ///
    /// The temporary directories cannot be prepared, the pool cannot
    /// start, or a tool does not load.
    pub fn embedded(profile: &Profile) -> Result<Target, TargetError> {
        let workers = profile.engine.workers.unwrap_or_else(default_workers);
        let placement = if profile.engine.pin_workers {
            Placement::plan(workers)
        } else {
            None
        };
        // Every thread the pool, the registry and the engine start keeps
        // off the generator's core (see crate::placement).
        let mut target = match &placement {
            Some(p) => p.others(|| Target::start_embedded(profile, workers))?,
            None => Target::start_embedded(profile, workers)?,
        };
        target.placement = placement;
        Ok(target)
    }

    fn start_embedded(profile: &Profile, workers: usize) -> Result<Target, TargetError> {
        let io = |what: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| TargetError::Io { what, path, source }
        };
        let parent = data_parent();
        let data = tempfile::Builder::new()
            .prefix("loadgen-data-")
            .tempdir_in(&parent)
            .map_err(io("creating a data directory in", &parent))?;
        for f in workload::data_files(profile) {
            let p = data.path().join(&f.path);
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
            }
            std::fs::write(&p, workload::data_file_contents(f.size)).map_err(io("writing", &p))?;
        }
        std::fs::create_dir_all(data.path().join("loadgen"))
            .map_err(io("creating", &data.path().join("loadgen")))?;

        let mut temp_tools = None;
        let (dir, builtins) = match &profile.pool.tools_dir {
            Some(_) if !profile.pool.modes.is_empty() => {
                return Err(TargetError::Profile {
                    path: profile.path.clone(),
                    why: "pool.modes overrides the built-ins' modes in a temporary copy; with pool.tools_dir set, set `mode` in the tools' manifests instead",
                });
            }
            Some(dir) => (dir.clone(), true),
            None => {
                let tools = tempfile::Builder::new()
                    .prefix("loadgen-tools-")
                    .tempdir()
                    .map_err(io("creating a tools directory in", &std::env::temp_dir()))?;
                toolplane_pool::builtin::install(tools.path())
                    .map_err(io("installing the built-in tools in", tools.path()))?;
                for (name, mode) in &profile.pool.modes {
                    let path = tools.path().join(format!("{name}.toml"));
                    let text = std::fs::read_to_string(&path).map_err(io("reading", &path))?;
                    let mut table: toml::Table =
                        toml::from_str(&text).map_err(|source| TargetError::Manifest {
                            path: path.clone(),
                            source,
                        })?;
                    let mode = match mode {
                        toolplane_pool::Mode::Fresh => "fresh",
                        toolplane_pool::Mode::Reuse => "reuse",
                    };
                    table.insert("mode".into(), toml::Value::String(mode.into()));
                    std::fs::write(&path, table.to_string()).map_err(io("writing", &path))?;
                }
                let dir = tools.path().to_owned();
                temp_tools = Some(tools);
                (dir, false)
            }
        };
        let mut pool = PoolConfig::for_engine(&profile.engine);
        if let Some(n) = profile.pool.instances {
            pool.instances = n;
        }
        // The data directory is the private temporary directory made above
        // (0700): no one else can put a FIFO in it or stall it, so file
        // operations run on the workers, the faster way (PERF.md,
        // "Reliability under hostile tools and files"), unless the profile
        // says otherwise. The pool's own default is off.
        pool.fs_inline = profile.pool.fs_inline.unwrap_or(true);
        if let Some(n) = profile.pool.warm_slots {
            pool.max_unused_warm_slots = n;
        }
        let runtime = Runtime::new(pool).map_err(start("the WASI pool"))?;
        let registry = Registry::builder(runtime.clone())
            .site(SiteConfig {
                data_dir: Some(data.path().to_owned()),
                ..SiteConfig::for_engine(&profile.engine)
            })
            .dir(&dir)
            .builtins(builtins)
            .watch(false)
            .build()
            .map_err(start("the tool registry"))?;
        if !registry.wait_loaded(LOAD_WAIT) {
            return Err(TargetError::NotLoaded { within: LOAD_WAIT });
        }
        if let Some(p) = registry.problems().into_iter().next() {
            return Err(TargetError::Tool {
                path: p.path,
                reason: p.reason,
            });
        }
        let tools: Vec<String> = registry
            .snapshot()
            .iter()
            .map(|e| e.manifest.name.clone())
            .collect();
        let mut config = profile.engine.clone();
        // Counted before the mask was narrowed (a count taken inside
        // would leave the generator's core out twice).
        config.workers = Some(workers);
        let engine = Engine::builder()
            .config(config)
            .tools(registry.tool_table())
            .build(ToolHandler::new(registry.clone()))
            .map_err(start("the engine"))?;
        let label = format!(
            "embedded: {} workers, {} tools{}, data in {}",
            engine.workers(),
            if builtins { "built-in and" } else { "built-in" },
            if builtins {
                format!(" {}", dir.display())
            } else {
                String::new()
            },
            parent.display(),
        );
        let data_dir = Some(data.path().to_owned());
        Ok(Target {
            backend: Backend::Engine(engine),
            tools,
            label,
            data_dir,
            runtime: Some(runtime),
            placement: None,
            held: Some(Held {
                _registry: registry,
                _data: data,
                _tools: temp_tools,
            }),
        })
    }

    /// A running server at `url` (`http://HOST:PORT`), its data directory
    /// seeded with the files `profile` reads.
    ///
    /// # Errors
    ///
    /// The URL is malformed, the server does not answer `GET /v1/tools`,
    /// or the files cannot be written.
    pub fn remote(
        profile: &Profile,
        url: &str,
        token: Option<&str>,
    ) -> Result<Target, TargetError> {
        let remote = Remote::connect(url, token)?;
        remote.seed(&workload::data_files(profile))?;
        Ok(Target {
            tools: remote.tools.clone(),
            label: format!("toolplane serve at http://{} (REST)", remote.authority()),
            backend: Backend::Remote(Arc::new(remote)),
            data_dir: None,
            runtime: None,
            placement: None,
            held: None,
        })
    }

    /// The engine's accounting: after shutdown for an engine in this
    /// process; for a server, what its engine accepted and answered since
    /// `before` (its `/metrics`), the server left running.
    pub fn shutdown(self, grace: Duration, before: Option<Scrape>) -> toolplane_core::Report {
        let Target { backend, held, .. } = self;
        let r = match backend {
            Backend::Engine(engine) => engine.shutdown(grace),
            Backend::Remote(remote) => {
                let after = remote.scrape().unwrap_or_default();
                let before = before.unwrap_or_default();
                let mut outcomes = toolplane_core::OutcomeCounts::default();
                for (i, o) in outcomes.0.iter_mut().enumerate() {
                    *o = after.outcomes[i].saturating_sub(before.outcomes[i]);
                }
                toolplane_core::Report {
                    accepted: after.accepted.saturating_sub(before.accepted),
                    outcomes,
                    rejected: toolplane_core::RejectCounts::default(),
                    undelivered: 0,
                    spans_exported: 0,
                    spans_dropped: 0,
                    shutdown_took: Duration::ZERO,
                }
            }
        };
        drop(held);
        r
    }
}

/// Where the temporary data directory goes: `$TMPDIR` when set, else
/// `/dev/shm` (memory) where it exists, else the system temp directory.
/// On a disk, `fs.write` load measures the disk's journal and writeback
/// (PERF.md: p99 6 ms on disk against 0.3 ms in memory on this machine),
/// not the engine; set `TMPDIR` to measure a disk on purpose.
pub fn data_parent() -> PathBuf {
    if std::env::var_os("TMPDIR").is_none() {
        let shm = Path::new("/dev/shm");
        if shm.is_dir()
            && tempfile::Builder::new()
                .prefix("loadgen-probe-")
                .tempdir_in(shm)
                .is_ok()
        {
            return shm.to_owned();
        }
    }
    std::env::temp_dir()
}

/// Workers of the embedded engine when the profile does not say: one per
/// core but one, which the generator takes. On a machine whose every core
/// runs a worker, the generator and the workers take turns on a core in
/// scheduler time slices (milliseconds), and that shows as latency that is
/// neither the engine's nor the generator's (PERF.md: p99 3.9 ms at 50k/s
/// with 2 workers on 2 cores, 0.27 ms with 1 worker and the generator on
/// the other core).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

/// How long the embedded target waits for its tools to load.
const LOAD_WAIT: Duration = Duration::from_secs(300);

/// [`TargetError::Start`] of `what`, for `map_err`.
fn start<E: Into<crate::error::BoxError>>(what: &'static str) -> impl FnOnce(E) -> TargetError {
    move |e| TargetError::Start {
        what,
        source: e.into(),
    }
}
