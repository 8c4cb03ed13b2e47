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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use toolplane_core::{Outcome, ToolId, ToolTable};

use crate::builtin;
use crate::error::LoadError;
use crate::manifest::{Manifest, ManifestError};
use crate::runtime::Runtime;
use crate::tool::LoadedTool;

/// Quiet time after a file event before the registry reloads.
const DEBOUNCE: Duration = Duration::from_millis(40);
/// Subscriber queue length: a subscriber that falls further behind loses
/// events (the registry's listing stays the truth).
const EVENT_QUEUE: usize = 4096;

/// Where a tool came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Built into this binary.
    Builtin,
    /// A manifest in the tools directory.
    File(PathBuf),
}

/// A change in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryEvent {
    /// A new tool is listed (and loading).
    Listed {
        /// The tool.
        name: String,
    },
    /// A tool is callable (first load).
    Loaded {
        /// The tool.
        name: String,
    },
    /// A new version of a tool replaced the old one.
    Replaced {
        /// The tool.
        name: String,
    },
    /// A tool was removed.
    Removed {
        /// The tool.
        name: String,
    },
    /// A tool or file could not be loaded; a previous version, if any,
    /// keeps serving.
    Failed {
        /// The tool, when its name is known.
        name: Option<String>,
        /// The file at fault.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl RegistryEvent {
    /// Whether the list of tools (names, descriptions, schemas) changed:
    /// what MCP's `notifications/tools/list_changed` announces.
    pub fn changes_list(&self) -> bool {
        matches!(
            self,
            RegistryEvent::Listed { .. }
                | RegistryEvent::Replaced { .. }
                | RegistryEvent::Removed { .. }
        )
    }
}

/// A file the registry could not use, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

/// A tool's load state.
#[derive(Debug, Clone)]
pub enum LoadState {
    /// Being compiled or loaded.
    Loading,
    /// Callable.
    Ready,
    /// Could not be loaded.
    Failed(Arc<LoadError>),
}

/// Two failures are equal when they say the same.
impl PartialEq for LoadState {
    fn eq(&self, other: &LoadState) -> bool {
        match (self, other) {
            (LoadState::Loading, LoadState::Loading) | (LoadState::Ready, LoadState::Ready) => true,
            (LoadState::Failed(a), LoadState::Failed(b)) => {
                Arc::ptr_eq(a, b) || a.to_string() == b.to_string()
            }
            _ => false,
        }
    }
}

/// How a tool's load ended: the tool to call, or why there is none
/// (shared by every caller that waited on it).
pub type Loaded = Result<Arc<LoadedTool>, Arc<LoadError>>;

/// One listed tool.
pub struct ToolEntry {
    /// The engine's id for the tool.
    pub id: ToolId,
    /// Its manifest.
    pub manifest: Arc<Manifest>,
    /// Where it came from.
    pub origin: Origin,
    /// The SHA-256 of its manifest file (none for a built-in).
    manifest_digest: Option<[u8; 32]>,
    state: OnceLock<Loaded>,
    ready: tokio::sync::Notify,
    /// The load an on-demand registry has not started yet: the first
    /// [`ToolEntry::wait`] starts it.
    deferred: Mutex<Option<Deferred>>,
}

/// A load left for the first caller (see [`RegistryBuilder::on_demand`]).
/// Weak both ways: an entry dropped from the listing before anyone called
/// it is never loaded, and keeps nothing alive.
struct Deferred {
    entry: Weak<ToolEntry>,
    registry: Weak<Inner>,
    wasm: Wasm,
    seq: u64,
}

impl std::fmt::Debug for ToolEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolEntry")
            .field("name", &self.manifest.name)
            .field("origin", &self.origin)
            .field("state", &self.state())
            .finish()
    }
}

impl ToolEntry {
    /// The load state (`Loading` too for a tool of an on-demand registry
    /// that no one has called yet).
    pub fn state(&self) -> LoadState {
        match self.state.get() {
            None => LoadState::Loading,
            Some(Ok(_)) => LoadState::Ready,
            Some(Err(e)) => LoadState::Failed(Arc::clone(e)),
        }
    }

    /// The loaded tool, when loading is over.
    pub fn loaded(&self) -> Option<&Loaded> {
        self.state.get()
    }

    /// Waits until loading is over (starting it, for an on-demand
    /// registry's tool not loaded yet).
    pub async fn wait(&self) -> &Loaded {
        if let Some(s) = self.state.get() {
            return s;
        }
        self.start_deferred();
        loop {
            let notified = self.ready.notified();
            if let Some(s) = self.state.get() {
                return s;
            }
            notified.await;
        }
    }

    /// Waits until loading is over, then checks `input` against the tool's
    /// schema: the tool to call, or the outcome that ends the call before
    /// any instance exists.
    pub(crate) async fn ready_for(&self, input: &[u8]) -> Result<Arc<LoadedTool>, Outcome> {
        let tool = match self.wait().await {
            Ok(t) => Arc::clone(t),
            Err(reason) => return Err(failed_tool(&self.manifest.name, reason)),
        };
        tool.check_input(input)
            .map_err(|e| Outcome::Error(e.into()))?;
        Ok(tool)
    }

    fn finish(&self, result: Loaded) {
        let _ = self.state.set(result);
        self.ready.notify_waiters();
    }

    /// Hands a deferred load to the loaders; once.
    fn start_deferred(&self) {
        let taken = self
            .deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(d) = taken else { return };
        if let (Some(entry), Some(inner)) = (d.entry.upgrade(), d.registry.upgrade()) {
            inner.send(Job {
                entry,
                wasm: d.wasm,
                seq: d.seq,
                replace: false,
            });
        }
    }
}

/// The tools listed at one moment, by [`ToolId`].
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    by_id: Vec<Option<Arc<ToolEntry>>>,
    by_name: BTreeMap<String, ToolId>,
}

impl Snapshot {
    /// The tool with this id.
    pub fn get(&self, id: ToolId) -> Option<&Arc<ToolEntry>> {
        self.by_id.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// The tool with this name.
    pub fn by_name(&self, name: &str) -> Option<&Arc<ToolEntry>> {
        self.by_name.get(name).and_then(|id| self.get(*id))
    }

    /// Every tool, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<ToolEntry>> {
        self.by_name.values().filter_map(|id| self.get(*id))
    }

    /// How many tools are listed.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether no tool is listed.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    fn insert(&mut self, entry: Arc<ToolEntry>) {
        let i = entry.id.0 as usize;
        if self.by_id.len() <= i {
            self.by_id.resize(i + 1, None);
        }
        self.by_name.insert(entry.manifest.name.clone(), entry.id);
        self.by_id[i] = Some(entry);
    }

    fn remove(&mut self, name: &str) -> Option<Arc<ToolEntry>> {
        let id = self.by_name.remove(name)?;
        self.by_id.get_mut(id.0 as usize).and_then(Option::take)
    }
}

/// Builds a [`Registry`].
#[derive(Debug)]
pub struct RegistryBuilder {
    runtime: Runtime,
    dir: Option<PathBuf>,
    builtins: bool,
    watch: bool,
    table: Option<Arc<ToolTable>>,
    loaders: usize,
    on_demand: bool,
}

impl RegistryBuilder {
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
        let (jobs_tx, jobs_rx) = flume::unbounded::<Job>();
        let inner = Arc::new_cyclic(|me| Inner {
            me: me.clone(),
            on_demand: self.on_demand,
            runtime: self.runtime,
            table: self.table.unwrap_or_default(),
            dir: self.dir.clone(),
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            version: AtomicU64::new(0),
            subscribers: Mutex::new(Vec::new()),
            problems: Mutex::new(BTreeMap::new()),
            pending: Mutex::new(0),
            settled: Condvar::new(),
            jobs: jobs_tx,
            latest: Mutex::new(HashMap::new()),
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
                    Ok(m) => items.push((m, Origin::Builtin, Wasm::Static(b.module), None)),
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
                        let wasm = path.parent().unwrap_or(dir).join(&m.module);
                        items.push((m, Origin::File(path), Wasm::File(wasm), Some(digest)));
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

/// The registry could not start.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The tools directory cannot be read.
    #[error("tools directory {}: {source}", dir.display())]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The tools directory cannot be watched.
    #[error("cannot watch tools directory {}: {source}", dir.display())]
    Watch {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: notify::Error,
    },
    /// A thread could not be started.
    #[error("cannot start the registry's {what} thread: {source}")]
    Thread {
        /// Which thread.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// See the module documentation. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    /// Itself, for the loads it defers (see [`Deferred`]).
    me: Weak<Inner>,
    on_demand: bool,
    runtime: Runtime,
    table: Arc<ToolTable>,
    dir: Option<PathBuf>,
    snapshot: RwLock<Arc<Snapshot>>,
    version: AtomicU64,
    subscribers: Mutex<Vec<flume::Sender<RegistryEvent>>>,
    /// By file and tool: tools sharing a module each keep their own.
    problems: Mutex<BTreeMap<(PathBuf, String), String>>,
    /// Loads not finished yet.
    pending: Mutex<usize>,
    settled: Condvar,
    jobs: flume::Sender<Job>,
    /// The newest load asked for, per tool name: an older load finishing
    /// late does not replace a newer one.
    latest: Mutex<HashMap<String, u64>>,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("dir", &self.dir)
            .field("tools", &self.snapshot().len())
            .finish_non_exhaustive()
    }
}

enum Wasm {
    Static(&'static [u8]),
    /// To be read by the loader.
    File(PathBuf),
    /// Read already (a reload compared its digest), from this file.
    Read(Vec<u8>, PathBuf),
}

struct Job {
    entry: Arc<ToolEntry>,
    wasm: Wasm,
    seq: u64,
    /// Publish only when loaded (a replacement), or at once (a new tool).
    replace: bool,
}

static SEQ: AtomicU64 = AtomicU64::new(1);

impl Registry {
    /// A registry builder on this runtime.
    pub fn builder(runtime: Runtime) -> RegistryBuilder {
        RegistryBuilder {
            runtime,
            dir: None,
            builtins: true,
            watch: true,
            table: None,
            loaders: std::thread::available_parallelism().map_or(2, |n| n.get()),
            on_demand: false,
        }
    }

    /// The runtime the tools run on.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
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

    /// Calls `name` with `input` outside any engine (scripts, tests, the
    /// CLI): the same checks, sandbox and outcome mapping as an engine call.
    pub async fn call(&self, name: &str, input: &[u8]) -> Outcome {
        let Some(entry) = self.snapshot().by_name(name).cloned() else {
            return Outcome::Error(format!("unknown tool {name:?}").into());
        };
        match entry.ready_for(input).await {
            Ok(tool) => crate::call::once(self.inner.runtime.clone(), tool, input).await,
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
    live: Option<crate::call::LiveInstance>,
}

impl std::fmt::Debug for LiveTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveTool")
            .field("name", &self.name)
            .field("live", &self.live.is_some())
            .finish()
    }
}

impl LiveTool {
    /// Calls the tool with `input`.
    pub async fn call(&mut self, input: &[u8]) -> Outcome {
        let Some(entry) = self.registry.snapshot().by_name(&self.name).cloned() else {
            self.live = None;
            return Outcome::Error(format!("unknown tool {:?}", self.name).into());
        };
        let tool = match entry.ready_for(input).await {
            Ok(t) => t,
            Err(o) => return o,
        };
        if !tool.has_fast_entry() {
            return Outcome::Error(
                format!("tool {}: a live instance needs the fast entry", self.name).into(),
            );
        }
        let rt = self.registry.inner.runtime.clone();
        let idle = self.live.take();
        let mut kept = None;
        // Under the host's deadline like every call: an instance whose call
        // ran out of time is dropped, not kept.
        let outcome = crate::call::bounded(&rt, &tool, async {
            let mut live = match idle {
                Some(l) if Arc::ptr_eq(&l.tool, &tool) => l,
                _ => match crate::call::LiveInstance::new(&rt, Arc::clone(&tool)).await {
                    Ok(l) => l,
                    Err(o) => return o,
                },
            };
            let (outcome, keep) = live.call(&rt, input).await;
            if keep {
                kept = Some(live);
            }
            outcome
        })
        .await;
        self.live = kept;
        outcome
    }
}

impl Registry {
    /// A live instance of the tool `name` (see [`LiveTool`]); the instance
    /// is created on the first call.
    pub fn live(&self, name: &str) -> LiveTool {
        LiveTool {
            registry: self.clone(),
            name: name.to_string(),
            live: None,
        }
    }
}

pub(crate) fn failed_tool(name: &str, reason: &LoadError) -> Outcome {
    Outcome::Error(format!("tool {name} failed to load: {reason}").into())
}

impl Inner {
    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn publish(&self, f: impl FnOnce(&mut Snapshot)) {
        let mut guard = self.snapshot.write().unwrap_or_else(|p| p.into_inner());
        let mut next = Snapshot::clone(&guard);
        f(&mut next);
        *guard = Arc::new(next);
        // Release, paired with the Acquire in `Registry::version`: the
        // new listing is stored (under the lock) before the number moves.
        self.version.fetch_add(1, Ordering::Release);
    }

    fn emit(&self, event: RegistryEvent) {
        let mut subs = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        subs.retain(|tx| {
            !matches!(
                tx.try_send(event.clone()),
                Err(flume::TrySendError::Disconnected(_))
            )
        });
    }

    fn problem(&self, path: &Path, reason: String, name: Option<String>) {
        self.problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                (path.to_owned(), name.clone().unwrap_or_default()),
                reason.clone(),
            );
        self.emit(RegistryEvent::Failed {
            name,
            path: path.to_owned(),
            reason,
        });
    }

    /// Forgets the problems of `path`: all of them, or only `name`'s.
    fn clear_problem(&self, path: &Path, name: Option<&str>) {
        self.problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(p, n), _| p != path || name.is_some_and(|name| n != name && !n.is_empty()));
    }

    /// Lists (or stages the replacement of) a tool and queues its load.
    /// A new (loading) entry for `manifest`, made the newest load of its
    /// name; returns it with its load's sequence number.
    fn new_entry(
        &self,
        manifest: Manifest,
        origin: Origin,
        manifest_digest: Option<[u8; 32]>,
    ) -> (Arc<ToolEntry>, u64) {
        if let Origin::File(p) = &origin {
            self.clear_problem(p, None);
        }
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(manifest.name.clone(), seq);
        let entry = Arc::new(ToolEntry {
            id: self.table.intern(&manifest.name),
            manifest: Arc::new(manifest),
            origin,
            manifest_digest,
            state: OnceLock::new(),
            ready: tokio::sync::Notify::new(),
            deferred: Mutex::new(None),
        });
        (entry, seq)
    }

    fn stage(
        &self,
        manifest: Manifest,
        origin: Origin,
        wasm: Wasm,
        digest: Option<[u8; 32]>,
        from_watch: bool,
    ) {
        let name = manifest.name.clone();
        let (entry, seq) = self.new_entry(manifest, origin, digest);
        // A tool already callable keeps serving until its new version is
        // loaded; anything else is listed (loading) at once.
        let serving = matches!(
            self.snapshot().by_name(&name).map(|e| e.state()),
            Some(LoadState::Ready)
        );
        if !serving {
            let existed = self.snapshot().by_name(&name).is_some();
            self.publish(|s| s.insert(Arc::clone(&entry)));
            if !existed || from_watch {
                self.emit(RegistryEvent::Listed { name: name.clone() });
            }
        }
        let job = Job {
            entry,
            wasm,
            seq,
            replace: serving,
        };
        if serving {
            // A new version of a tool in use: loaded now, as it replaces
            // one that callers are using.
            self.send(job);
        } else {
            self.dispatch(job);
        }
    }

    /// Loads a new tool's module now, or at its first call in an
    /// on-demand registry.
    fn dispatch(&self, job: Job) {
        if !self.on_demand {
            self.send(job);
            return;
        }
        let Job {
            entry, wasm, seq, ..
        } = job;
        *entry.deferred.lock().unwrap_or_else(|p| p.into_inner()) = Some(Deferred {
            entry: Arc::downgrade(&entry),
            registry: self.me.clone(),
            wasm,
            seq,
        });
    }

    /// Hands a load to the loaders, counted until it finishes.
    fn send(&self, job: Job) {
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        if self.jobs.send(job).is_err() {
            self.done_one();
        }
    }

    /// [`Inner::stage`] for many new tools at once (discovery): one
    /// published listing for all of them, not one per tool.
    fn stage_many(&self, items: Vec<(Manifest, Origin, Wasm, Option<[u8; 32]>)>) {
        let snap = self.snapshot();
        let mut jobs = Vec::with_capacity(items.len());
        for (manifest, origin, wasm, digest) in items {
            if matches!(
                snap.by_name(&manifest.name).map(|e| e.state()),
                Some(LoadState::Ready)
            ) {
                self.stage(manifest, origin, wasm, digest, false);
                continue;
            }
            let (entry, seq) = self.new_entry(manifest, origin, digest);
            jobs.push(Job {
                entry,
                wasm,
                seq,
                replace: false,
            });
        }
        self.publish(|s| {
            for j in &jobs {
                s.insert(Arc::clone(&j.entry));
            }
        });
        for j in &jobs {
            self.emit(RegistryEvent::Listed {
                name: j.entry.manifest.name.clone(),
            });
        }
        for job in jobs {
            self.dispatch(job);
        }
    }

    fn done_one(&self) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        *p = p.saturating_sub(1);
        if *p == 0 {
            self.settled.notify_all();
        }
    }

    fn finish(&self, job: Job) {
        let Job {
            entry,
            wasm,
            seq,
            replace,
        } = job;
        let name = entry.manifest.name.clone();
        let (bytes, path) = match &wasm {
            Wasm::Static(b) => (Ok(std::borrow::Cow::Borrowed(*b)), None),
            Wasm::File(p) => (
                read_module(self.runtime.config(), p).map(std::borrow::Cow::Owned),
                Some(p.clone()),
            ),
            Wasm::Read(b, p) => (Ok(std::borrow::Cow::Borrowed(&b[..])), Some(p.clone())),
        };
        let base = match &entry.origin {
            Origin::File(p) => p.parent().map(Path::to_path_buf),
            Origin::Builtin => None,
        };
        let result = bytes.and_then(|b| {
            LoadedTool::load(
                &self.runtime,
                Arc::clone(&entry.manifest),
                base.as_deref(),
                &b,
            )
        });
        let current = self
            .latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name)
            == Some(&seq);
        let report_path = path.clone().unwrap_or_else(|| match &entry.origin {
            Origin::File(p) => p.clone(),
            Origin::Builtin => PathBuf::from(format!("<builtin>/{name}.wasm")),
        });
        match result {
            Ok(tool) => {
                entry.finish(Ok(Arc::new(tool)));
                if let Some(p) = &path {
                    self.clear_problem(p, Some(&name));
                }
                if current {
                    if replace {
                        self.publish(|s| s.insert(Arc::clone(&entry)));
                        self.emit(RegistryEvent::Replaced { name });
                    } else {
                        // Already listed; the state change is visible through it.
                        self.emit(RegistryEvent::Loaded { name });
                    }
                }
            }
            Err(reason) => {
                // The problem first: whoever sees the entry failed (a
                // caller waiting on it) finds the problem listed too.
                if current {
                    self.problem(&report_path, reason.to_string(), Some(name));
                }
                entry.finish(Err(Arc::new(reason)));
            }
        }
        self.done_one();
    }

    fn remove(&self, name: &str) {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), SEQ.fetch_add(1, Ordering::Relaxed));
        let mut removed = false;
        self.publish(|s| removed = s.remove(name).is_some());
        if removed {
            self.emit(RegistryEvent::Removed {
                name: name.to_string(),
            });
        }
    }

    /// Re-reads the named tools from the directory.
    fn reload_names(&self, names: HashSet<String>) {
        let Some(dir) = &self.dir else { return };
        for name in names {
            let path = dir.join(format!("{name}.toml"));
            if !path.exists() {
                self.clear_problem(&path, None);
                let is_file_tool = matches!(
                    self.snapshot().by_name(&name).map(|e| &e.origin),
                    Some(Origin::File(_))
                );
                if is_file_tool {
                    self.remove(&name);
                }
                continue;
            }
            let (m, digest) = match Manifest::from_file_digest(&path) {
                Ok(r) => r,
                Err(e) => {
                    self.problem(&e.path, e.message, Some(name));
                    continue;
                }
            };
            let wasm_path = dir.join(&m.module);
            let wasm = match read_module(self.runtime.config(), &wasm_path) {
                // Read here to compare: the loader takes these bytes.
                Ok(bytes) => {
                    let unchanged = self.snapshot().by_name(&name).is_some_and(|e| {
                        e.manifest_digest == Some(digest)
                            && matches!(e.loaded(), Some(Ok(t)) if t.digest == crate::cache::digest(&bytes))
                    });
                    if unchanged {
                        continue;
                    }
                    Wasm::Read(bytes, wasm_path)
                }
                // The loader reports it, the old version serving meanwhile.
                Err(_) => Wasm::File(wasm_path),
            };
            self.stage(m, Origin::File(path), wasm, Some(digest), true);
        }
    }

    fn start_watch(self: &Arc<Self>, dir: &Path) -> Result<(), RegistryError> {
        use notify::Watcher as _;
        let (tx, rx) = flume::unbounded::<PathBuf>();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res
                && changes_content(&ev.kind)
            {
                for p in ev.paths {
                    let _ = tx.send(p);
                }
            }
        })
        .map_err(|source| RegistryError::Watch {
            dir: dir.to_owned(),
            source,
        })?;
        watcher
            .watch(dir, notify::RecursiveMode::NonRecursive)
            .map_err(|source| RegistryError::Watch {
                dir: dir.to_owned(),
                source,
            })?;
        *self.watcher.lock().unwrap_or_else(|p| p.into_inner()) = Some(watcher);
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("toolplane-reload".into())
            .spawn(move || watch_loop(&weak, &rx))
            .map_err(|source| RegistryError::Thread {
                what: "reload",
                source,
            })?;
        Ok(())
    }

    /// The names a changed file concerns.
    fn names_for(&self, path: &Path) -> Vec<String> {
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
            return Vec::new();
        };
        if file.starts_with('.') {
            return Vec::new();
        }
        if let Some(stem) = file.strip_suffix(".toml") {
            return vec![stem.to_string()];
        }
        if file.ends_with(".wasm") {
            // Any tool whose manifest names this module.
            let snap = self.snapshot();
            let mut names: Vec<String> = snap
                .iter()
                .filter(|e| matches!(&e.origin, Origin::File(m) if m.parent().map(|d| d.join(&e.manifest.module)) == Some(path.to_path_buf())))
                .map(|e| e.manifest.name.clone())
                .collect();
            if let Some(stem) = file.strip_suffix(".wasm")
                && self
                    .dir
                    .as_ref()
                    .is_some_and(|d| d.join(format!("{stem}.toml")).exists())
                && !names.iter().any(|n| n == stem)
            {
                names.push(stem.to_string());
            }
            return names;
        }
        Vec::new()
    }
}

/// Whether a file event can mean new content: creations, writes, renames,
/// removals, a writer closing the file. Not opens, reads and closes after
/// reading: the registry reads the files it watches, and reacting to its
/// own reads made it reload forever.
fn changes_content(kind: &notify::EventKind) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}

/// Reads a module named by a manifest: a regular file within
/// `max_module_size`, within `read_timeout`.
fn read_module(cfg: &crate::runtime::PoolConfig, path: &Path) -> Result<Vec<u8>, LoadError> {
    let limits = crate::files::ReadLimits {
        max: cfg.max_module_size,
        key: "[pool] max_module_size",
        timeout: cfg.read_timeout,
    };
    crate::files::read_checked(path, limits).map_err(LoadError::module)
}

fn loader(weak: &Weak<Inner>, rx: &flume::Receiver<Job>) {
    while let Ok(job) = rx.recv() {
        let Some(inner) = weak.upgrade() else { return };
        inner.finish(job);
    }
}

fn watch_loop(weak: &Weak<Inner>, rx: &flume::Receiver<PathBuf>) {
    while let Ok(first) = rx.recv() {
        let mut paths = vec![first];
        // Wait for the writer to finish: until the directory is quiet.
        let started = Instant::now();
        while let Ok(p) = rx.recv_timeout(DEBOUNCE) {
            paths.push(p);
            if started.elapsed() > Duration::from_secs(1) {
                break;
            }
        }
        let Some(inner) = weak.upgrade() else { return };
        let mut names = HashSet::new();
        for p in &paths {
            names.extend(inner.names_for(p));
        }
        inner.reload_names(names);
    }
}

fn read_dir_manifests(dir: &Path) -> Result<Vec<PathBuf>, RegistryError> {
    let err = |source| RegistryError::Dir {
        dir: dir.to_owned(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".toml") && !name.starts_with('.') {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Reads manifests on all cores.
type Parsed = Result<(PathBuf, Manifest, [u8; 32]), ManifestError>;

fn parse_one(p: &Path) -> Parsed {
    Manifest::from_file_digest(p).map(|(m, d)| (p.to_path_buf(), m, d))
}

fn parallel_parse(paths: &[PathBuf]) -> Vec<Parsed> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(paths.len().max(1));
    if threads <= 1 || paths.len() < 16 {
        return paths.iter().map(|p| parse_one(p)).collect();
    }
    let chunk = paths.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = paths
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(|p| parse_one(p)).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}
