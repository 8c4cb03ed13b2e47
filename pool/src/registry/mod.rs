//! The tool registry: the built-in tools and a directory of tools,
//! discovered in parallel, listed as soon as their manifests are read,
//! compiled or loaded from the cache in the background, and reloaded when
//! their files change.
//!
//! Reload rules:
//! - a new manifest lists a new tool at once (loading), callable when its
//!   module is loaded;
//! - a changed manifest or module loads the new version in the background
//!   while the old one keeps serving; new calls get the new version once it
//!   is loaded, calls in flight finish on the version they started with;
//! - a new version that fails to load is reported (path and reason) and the
//!   old version keeps serving;
//! - a removed manifest removes the tool (its calls in flight finish).
//!
//! Every change is sent to subscribers ([`Registry::subscribe`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use toolplane_core::{Outcome, ToolTable};

use crate::kind::{LoadInput, Tool};
use crate::manifest::Manifest;
use toolplane_tool::names::Names;
use toolplane_wasi::Runtime;
use toolplane_wasi::builtin;

mod loading;
mod members;
mod snapshot;
mod types;
mod watch;

use self::loading::{Inner, Job, loader, parallel_parse, read_dir_manifests};
pub use self::snapshot::{LoadState, Loaded, Snapshot, ToolEntry};
pub use self::types::{Problem, RegistryError, RegistryEvent};
pub use crate::manifest::Origin;

/// Subscriber queue length: a subscriber that falls further behind loses
/// events (the registry's listing stays the truth).
const EVENT_QUEUE: usize = 4096;

/// Where the registry's tools load, whatever their kind: the data
/// directory `{data}` names and its size limit, and the calls one tool may
/// hold. (The WASI runtime's own settings are its `PoolConfig`.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteConfig {
    /// The directory `{data}` in manifests refers to.
    pub data_dir: Option<PathBuf>,
    /// The data directory's size limit: writes past it are refused (see
    /// `toolplane_tool::quota`). `u64::MAX` for none.
    pub data_dir_limit: u64,
    /// Calls one tool may hold at once, running and waiting for a turn
    /// together: a process tool's `pool.queue` is cut to fit (a call
    /// beyond is refused `busy` at once), so one slow tool cannot take
    /// every worker slot and the engine's whole in-flight budget.
    /// [`SiteConfig::for_engine`] makes it a quarter of what the engine
    /// runs at once.
    pub tool_backlog: usize,
}

impl Default for SiteConfig {
    fn default() -> SiteConfig {
        SiteConfig {
            data_dir: None,
            data_dir_limit: 1 << 30,
            tool_backlog: 256,
        }
    }
}

impl SiteConfig {
    /// The defaults, with the backlog a quarter of the calls `engine` runs
    /// at once.
    pub fn for_engine(engine: &toolplane_core::Config) -> SiteConfig {
        let running =
            (engine.resolved_workers() * engine.max_concurrent_per_worker).min(engine.max_inflight);
        SiteConfig {
            tool_backlog: (running / 4).max(1),
            ..SiteConfig::default()
        }
    }
}

/// Builds a [`Registry`].
#[derive(Debug)]
pub struct RegistryBuilder {
    runtime: Runtime,
    site: SiteConfig,
    dir: Option<PathBuf>,
    builtins: bool,
    watch: bool,
    table: Option<Arc<ToolTable>>,
    loaders: usize,
    on_demand: bool,
    names: Names,
}

impl RegistryBuilder {
    /// What is served and how MCP names it (default: every tool, `.` in
    /// MCP names as `_`): see [`toolplane_tool::names`].
    pub fn names(mut self, names: Names) -> Self {
        self.names = names;
        self
    }

    /// Where the tools load: the data directory, its limit, the backlog
    /// (default: [`SiteConfig::default`], no data directory and a backlog
    /// of 256; an engine's registry wants [`SiteConfig::for_engine`], the
    /// backlog sized to what the engine runs at once).
    pub fn site(mut self, site: SiteConfig) -> Self {
        self.site = site;
        self
    }

    /// Serves the tools in `dir` (`<tool>.toml` beside its module).
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Serves the built-in tools too (default: yes). A tool in the
    /// directory with a built-in's name replaces it.
    pub fn builtins(mut self, on: bool) -> Self {
        self.builtins = on;
        self
    }

    /// Watches the directory and reloads on change (default: yes).
    pub fn watch(mut self, on: bool) -> Self {
        self.watch = on;
        self
    }

    /// Interns tool names in this table (the engine's), so events carry
    /// the registry's ids.
    pub fn tool_table(mut self, table: Arc<ToolTable>) -> Self {
        self.table = Some(table);
        self
    }

    /// Compiles (or maps from the cache) each tool's module when it is
    /// first called rather than at start (default: no). Tools are listed
    /// as usual, `Loading` until called; a module that does not compile
    /// is found at its first call instead of at start. For one-shot
    /// processes such as `toolplane call`, whose cold start then compiles
    /// the one tool it calls.
    pub fn on_demand(mut self, on: bool) -> Self {
        self.on_demand = on;
        self
    }

    /// Threads that compile and load modules (default: the cores).
    pub fn loaders(mut self, n: usize) -> Self {
        self.loaders = n.max(1);
        self
    }

    /// Lists every tool (manifests are read in parallel) and starts
    /// loading their modules in the background. Returns once the tools are
    /// listed; [`Registry::wait_loaded`] waits until they are callable.
    ///
    /// # Errors
    ///
    /// The directory cannot be read or watched. Bad manifests and modules
    /// are not errors: they are reported by [`Registry::problems`] and as
    /// events.
    pub fn build(self) -> Result<Registry, RegistryError> {
        if let Some(dir) = &self.dir {
            if let Some(data) = &self.site.data_dir
                && (toolplane_tool::files::covers(data, dir)
                    || toolplane_tool::files::covers(dir, data))
            {
                return Err(RegistryError::ToolsInData {
                    tools: dir.clone(),
                    data: data.clone(),
                });
            }
            if let Ok(meta) = std::fs::metadata(dir)
                && let Some(why) = toolplane_tool::files::others_can_write(&meta)
            {
                return Err(RegistryError::Unsafe {
                    dir: dir.clone(),
                    why,
                });
            }
        }
        let quota = match &self.site.data_dir {
            Some(dir) if self.site.data_dir_limit < u64::MAX => Some(
                toolplane_tool::quota::DataQuota::start(dir, self.site.data_dir_limit).map_err(
                    |source| RegistryError::Thread {
                        what: "data directory quota",
                        source,
                    },
                )?,
            ),
            _ => None,
        };
        let site = toolplane_tool::Site {
            data_dir: self.site.data_dir.clone(),
            quota,
            hidden: self
                .runtime
                .cache()
                .dir()
                .map(Path::to_path_buf)
                .into_iter()
                .collect(),
            backlog: self.site.tool_backlog,
        };
        let (jobs_tx, jobs_rx) = flume::unbounded::<Job>();
        let inner = Arc::new_cyclic(|me| Inner {
            me: me.clone(),
            on_demand: self.on_demand,
            runtimes: crate::kind::Runtimes::new(self.runtime, site),
            table: self.table.unwrap_or_default(),
            dir: self.dir.clone(),
            snapshot: RwLock::new(Arc::new(Snapshot::new(Arc::new(self.names)))),
            version: AtomicU64::new(0),
            subscribers: Mutex::new(Vec::new()),
            problems: Mutex::new(BTreeMap::new()),
            clashed: Mutex::new(std::collections::BTreeSet::new()),
            pending: Mutex::new(0),
            settled: Condvar::new(),
            jobs: jobs_tx,
            latest: Mutex::new(HashMap::new()),
            retries: Mutex::new(HashMap::new()),
            watcher: Mutex::new(None),
        });
        for i in 0..self.loaders {
            let rx = jobs_rx.clone();
            let weak = Arc::downgrade(&inner);
            std::thread::Builder::new()
                .name(format!("toolplane-loader-{i}"))
                .spawn(move || loader(&weak, &rx))
                .map_err(|source| RegistryError::Thread {
                    what: "loader",
                    source,
                })?;
        }
        let registry = Registry { inner };
        if self.builtins {
            let mut items = Vec::new();
            for b in builtin::BUILTINS {
                match Manifest::from_toml_str(b.manifest, Path::new(b.manifest_path)) {
                    Ok(m) => items.push((m, Origin::Builtin, LoadInput::Static(b.module), None)),
                    Err(e) => registry.inner.problem(&e.path, e.message.clone(), None),
                }
            }
            registry.inner.stage_many(items);
        }
        if let Some(dir) = &self.dir {
            let manifests = read_dir_manifests(dir)?;
            let mut items = Vec::new();
            for r in parallel_parse(&manifests) {
                match r {
                    Ok((path, m, digest)) => {
                        let source = LoadInput::of_file(&m, &path);
                        items.push((m, Origin::File(path), source, Some(digest)));
                    }
                    Err(e) => registry.inner.problem(&e.path, e.message.clone(), None),
                }
            }
            registry.inner.stage_many(items);
            if self.watch {
                registry.inner.start_watch(dir)?;
            }
        }
        Ok(registry)
    }
}

/// See the module documentation. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl Registry {
    /// A registry builder on this runtime.
    pub fn builder(runtime: Runtime) -> RegistryBuilder {
        RegistryBuilder {
            runtime,
            site: SiteConfig::default(),
            dir: None,
            builtins: true,
            watch: true,
            table: None,
            loaders: std::thread::available_parallelism().map_or(2, |n| n.get()),
            on_demand: false,
            names: Names::default(),
        }
    }

    /// The runtime the tools run on.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtimes.wasi
    }

    /// The table tool names are interned in: pass it to the engine with
    /// `EngineBuilder::tools`.
    pub fn tool_table(&self) -> Arc<ToolTable> {
        Arc::clone(&self.inner.table)
    }

    /// The tools directory, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.inner.dir.as_deref()
    }

    /// The tools listed now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.snapshot()
    }

    /// A number that changes whenever the listing does.
    pub fn version(&self) -> u64 {
        // Pairs with the Release increment in `publish`: a caller that sees
        // a new version and then takes the snapshot gets that listing or a
        // later one.
        self.inner.version.load(Ordering::Acquire)
    }

    /// Files that could not be used, with the reason.
    pub fn problems(&self) -> Vec<Problem> {
        let p = self
            .inner
            .problems
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        p.iter()
            .map(|((path, name), reason)| Problem {
                path: path.clone(),
                reason: if name.is_empty() {
                    reason.clone()
                } else {
                    format!("tool {name}: {reason}")
                },
            })
            .collect()
    }

    /// Receives every later change. A subscriber that falls more than a few
    /// thousand events behind loses events, never blocks the registry.
    pub fn subscribe(&self) -> flume::Receiver<RegistryEvent> {
        let (tx, rx) = flume::bounded(EVENT_QUEUE);
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tx);
        rx
    }

    /// Waits until no load is in progress; `false` on timeout. (In an
    /// on-demand registry, a load no one has asked for is not in progress.)
    pub fn wait_loaded(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut pending = self.inner.pending.lock().unwrap_or_else(|p| p.into_inner());
        while *pending > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            pending = self
                .inner
                .settled
                .wait_timeout(pending, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// Re-reads the tool `name` from the tools directory now (what the
    /// watcher does on a change).
    pub fn reload(&self, name: &str) {
        self.inner
            .reload_names([name.to_string()].into_iter().collect());
    }

    /// The tool `name`; when it is not listed and names a member of a set
    /// still loading (`<set>.<tool>`), once that set has loaded (its load
    /// is bounded by its `limits.startup_timeout`; on an on-demand
    /// registry this starts it), as a call to a WASI tool still loading
    /// waits for it. A member of a set that failed to load resolves to
    /// the set, so that calling it says why.
    pub async fn resolve(&self, name: &str) -> Option<Arc<ToolEntry>> {
        let snap = self.snapshot();
        if let Some(e) = snap.by_either(name) {
            return Some(Arc::clone(e));
        }
        // `<set>.<tool>`, or its MCP name `<set's MCP name><separator><tool>`.
        let sep = snap.names().separator.as_str();
        let member_of = |e: &ToolEntry| {
            let set = e.manifest.name.as_str();
            let mcp = snap.names().mcp_name(set);
            name.strip_prefix(set)
                .is_some_and(|rest| rest.starts_with('.'))
                || name
                    .strip_prefix(mcp.as_ref())
                    .is_some_and(|rest| rest.starts_with(sep))
        };
        let set = snap
            .iter()
            .filter(|e| e.is_set() && member_of(e))
            .max_by_key(|e| e.manifest.name.len())
            .cloned()?;
        let failed = set.wait().await.is_err();
        // A set that failed answers for its members: a call gets why.
        self.snapshot()
            .by_either(name)
            .cloned()
            .or_else(|| failed.then_some(set))
    }

    /// Calls `name` with `input` outside any engine (scripts, tests, the
    /// CLI): the same checks, sandbox and outcome mapping as an engine call.
    pub async fn call(&self, name: &str, input: &[u8]) -> Outcome {
        let Some(entry) = self.resolve(name).await else {
            return Outcome::Error(format!("unknown tool {name:?}").into());
        };
        match entry.ready_for(input).await {
            Ok(tool) => crate::kind::call_once(&self.inner.runtimes, tool, input).await,
            Err(o) => o,
        }
    }
}

/// A live instance of one tool, for embedders that call the same tool many
/// times from one task: each call reuses the instance (as reuse mode does on
/// a worker), and the instance is recycled after `recycle_after` calls,
/// after a trap, or when the registry has a new version of the tool.
pub struct LiveTool {
    registry: Registry,
    name: String,
    live: toolplane_wasi::Held,
}

impl std::fmt::Debug for LiveTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveTool")
            .field("name", &self.name)
            .field("live", &self.live)
            .finish()
    }
}

impl LiveTool {
    /// Calls the tool with `input`.
    pub async fn call(&mut self, input: &[u8]) -> Outcome {
        let Some(entry) = self.registry.snapshot().by_name(&self.name).cloned() else {
            self.live.clear();
            return Outcome::Error(format!("unknown tool {:?}", self.name).into());
        };
        let tool = match entry.ready_for(input).await {
            Ok(Tool::Wasi(t)) => t,
            Ok(Tool::Process(_)) => {
                return Outcome::Error(
                    format!("tool {}: a live instance needs a WASI tool", self.name).into(),
                );
            }
            Err(o) => return o,
        };
        let out = self
            .live
            .run_unchecked(&self.registry.inner.runtimes.wasi, Arc::clone(&tool), input)
            .await;
        crate::kind::checked(out, |out| tool.check_output(out))
    }
}

impl Registry {
    /// A live instance of the tool `name` (see [`LiveTool`]); the instance
    /// is created on the first call.
    pub fn live(&self, name: &str) -> LiveTool {
        LiveTool {
            registry: self.clone(),
            name: name.to_string(),
            live: toolplane_wasi::Held::default(),
        }
    }
}
