//! Loading: the registry's shared state, staging new tools and new
//! versions, the loader threads that load them (each through its kind,
//! `crate::kind`), and discovery of a tools directory's manifests.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock, Weak};

use toolplane_core::ToolTable;

use super::snapshot::{Deferred, LoadState, Snapshot, ToolEntry};
use super::types::{RegistryError, RegistryEvent};
use crate::kind::Runtimes;
use crate::kind::{self, LoadInput};
use crate::manifest::{Manifest, ManifestError, Origin};

/// A tool to list: its manifest, where it came from, what its load reads
/// and its manifest file's digest.
pub(super) type Staged = (Manifest, Origin, LoadInput, Option<[u8; 32]>);

pub(super) struct Inner {
    /// Itself, for the loads it defers (see [`Deferred`]).
    pub(super) me: Weak<Inner>,
    pub(super) on_demand: bool,
    pub(super) runtimes: Runtimes,
    pub(super) table: Arc<ToolTable>,
    pub(super) dir: Option<PathBuf>,
    pub(super) snapshot: RwLock<Arc<Snapshot>>,
    pub(super) version: AtomicU64,
    pub(super) subscribers: Mutex<Vec<flume::Sender<RegistryEvent>>>,
    /// By file and tool: tools sharing a module each keep their own.
    pub(super) problems: Mutex<BTreeMap<(PathBuf, String), String>>,
    /// Tools of the directory refused because another tool has their MCP
    /// name: read again when a tool is removed (the name may be free).
    pub(super) clashed: Mutex<std::collections::BTreeSet<String>>,
    /// Loads not finished yet.
    pub(super) pending: Mutex<usize>,
    pub(super) settled: Condvar,
    pub(super) jobs: flume::Sender<Job>,
    /// The newest load asked for, per tool name: an older load finishing
    /// late does not replace a newer one.
    pub(super) latest: Mutex<HashMap<String, u64>>,
    /// Failed loads in a row, per tool whose failure may pass (an
    /// upstream that did not start or list): each is retried later.
    pub(super) retries: Mutex<HashMap<String, u32>>,
    pub(super) watcher: Mutex<Option<notify::RecommendedWatcher>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("dir", &self.dir)
            .field("tools", &self.snapshot().len())
            .finish_non_exhaustive()
    }
}

/// One load for the loader threads.
pub(super) struct Job {
    pub(super) entry: Arc<ToolEntry>,
    pub(super) source: LoadInput,
    pub(super) seq: u64,
    /// Publish only when loaded (a replacement), or at once (a new tool).
    pub(super) replace: bool,
}

pub(super) static SEQ: AtomicU64 = AtomicU64::new(1);

/// A failed load that may pass is retried this long after its first
/// failure, then twice as long after each next one, up to [`RETRY_MAX`].
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(300);

/// The file a tool's problem is reported against (a built-in's made-up
/// path).
fn problem_path(origin: &Origin, name: &str) -> PathBuf {
    match origin {
        Origin::File(p) => p.clone(),
        Origin::Builtin => PathBuf::from(format!("<builtin>/{name}.toml")),
    }
}

impl Inner {
    pub(super) fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub(super) fn publish(&self, f: impl FnOnce(&mut Snapshot)) {
        let mut guard = self.snapshot.write().unwrap_or_else(|p| p.into_inner());
        let mut next = Snapshot::clone(&guard);
        f(&mut next);
        *guard = Arc::new(next);
        // Release, paired with the Acquire in `Registry::version`: the
        // new listing is stored (under the lock) before the number moves.
        self.version.fetch_add(1, Ordering::Release);
    }

    pub(super) fn emit(&self, event: RegistryEvent) {
        let mut subs = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        subs.retain(|tx| {
            !matches!(
                tx.try_send(event.clone()),
                Err(flume::TrySendError::Disconnected(_))
            )
        });
    }

    pub(super) fn problem(&self, path: &Path, reason: String, name: Option<String>) {
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
    pub(super) fn clear_problem(&self, path: &Path, name: Option<&str>) {
        self.problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(p, n), _| p != path || name.is_some_and(|name| n != name && !n.is_empty()));
    }

    /// Whether `manifest` may be listed beside what `snap` lists and the
    /// names `batch` takes (MCP name → tool): it is served
    /// (`[tools] expose`), and its MCP name is no other tool's. A clash is
    /// a problem of its file naming both tools.
    pub(super) fn admit(
        &self,
        snap: &Snapshot,
        batch: &HashMap<String, String>,
        manifest: &Manifest,
        origin: &Origin,
    ) -> bool {
        let names = snap.names();
        let name = &manifest.name;
        let served = if manifest.is_set() {
            names.may_serve_set(name)
        } else {
            names.serves(name)
        };
        if !served {
            tracing::debug!(tool = %name, "not served: no [tools] expose pattern matches it");
            return false;
        }
        let mcp = names.mcp_name(name);
        if names.separator.as_str() != "." && !toolplane_tool::names::Separator::portable(&mcp) {
            let path = problem_path(origin, name);
            let why = format!(
                "tool {name}: its MCP name {mcp} is longer than the 64 characters clients accept; shorten the name (or its set's)"
            );
            tracing::warn!("{why}");
            self.problem(&path, why, Some(name.clone()));
            return false;
        }
        let other = snap
            .mcp_clash(name)
            .map(|e| e.manifest.name.clone())
            .or_else(|| batch.get(mcp.as_ref()).filter(|o| *o != name).cloned());
        let Some(other) = other else {
            return true;
        };
        let path = problem_path(origin, name);
        let why = format!(
            "tool {name}: its MCP name {mcp} is also tool {other}'s (MCP names put {sep:?} for each dot); rename one, or set [tools] mcp_separator",
            sep = names.separator.as_str()
        );
        tracing::warn!("{why}");
        self.problem(&path, why, Some(name.clone()));
        self.note_clash(name, origin);
        false
    }

    /// `name` (found at `origin`) was refused for a clash: a file's tool
    /// is read again when a tool goes away.
    fn note_clash(&self, name: &str, origin: &Origin) {
        if matches!(origin, Origin::File(_)) {
            self.clashed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.to_owned());
        }
    }

    /// `entry` lost its MCP name to `other` while it was being listed.
    pub(super) fn refuse_clash(&self, entry: &ToolEntry, other: &str) {
        let name = &entry.manifest.name;
        let path = problem_path(&entry.origin, name);
        let snap = self.snapshot();
        let names = snap.names();
        let why = format!(
            "tool {name}: its MCP name {} is also tool {other}'s (MCP names put {:?} for each dot); rename one, or set [tools] mcp_separator",
            names.mcp_name(name),
            names.separator.as_str()
        );
        tracing::warn!("{why}");
        self.problem(&path, why, Some(name.clone()));
        // A set's member comes back with its set's next list.
        if entry.set.is_none() {
            self.note_clash(name, &entry.origin);
        }
    }

    /// Lists (or stages the replacement of) a tool and queues its load.
    /// A new (loading) entry for `manifest`, made the newest load of its
    /// name; returns it with its load's sequence number.
    pub(super) fn new_entry(
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
            set: None,
            manifest_digest,
            state: OnceLock::new(),
            ready: tokio::sync::Notify::new(),
            deferred: Mutex::new(None),
        });
        (entry, seq)
    }

    pub(super) fn stage(
        &self,
        manifest: Manifest,
        origin: Origin,
        source: LoadInput,
        digest: Option<[u8; 32]>,
        from_watch: bool,
    ) {
        if !self.admit(&self.snapshot(), &HashMap::new(), &manifest, &origin) {
            return;
        }
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
            // Checked again under the lock: a set's members may have taken
            // the MCP name since.
            let mut clash = None;
            self.publish(|s| match s.mcp_clash(&name) {
                Some(other) => clash = Some(other.manifest.name.clone()),
                None => s.insert(Arc::clone(&entry)),
            });
            if let Some(other) = clash {
                self.refuse_clash(&entry, &other);
                return;
            }
            if !existed || from_watch {
                self.emit(RegistryEvent::Listed { name: name.clone() });
            }
        }
        let job = Job {
            entry,
            source,
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
    pub(super) fn dispatch(&self, job: Job) {
        if !self.on_demand {
            self.send(job);
            return;
        }
        let Job {
            entry, source, seq, ..
        } = job;
        // Weak both ways: an entry dropped from the listing before anyone
        // called it is never loaded, and keeps nothing alive.
        let (weak_entry, registry) = (Arc::downgrade(&entry), self.me.clone());
        let start: Deferred = Box::new(move || {
            if let (Some(entry), Some(inner)) = (weak_entry.upgrade(), registry.upgrade()) {
                inner.send(Job {
                    entry,
                    source,
                    seq,
                    replace: false,
                });
            }
        });
        *entry.deferred.lock().unwrap_or_else(|p| p.into_inner()) = Some(start);
    }

    /// Hands a load to the loaders, counted until it finishes.
    pub(super) fn send(&self, job: Job) {
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        if self.jobs.send(job).is_err() {
            self.done_one();
        }
    }

    /// [`Inner::stage`] for many new tools at once (discovery): one
    /// published listing for all of them, not one per tool.
    pub(super) fn stage_many(&self, mut items: Vec<Staged>) {
        // By name: of two tools whose MCP names clash, the first listed
        // keeps it, the same one at every start.
        items.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        let snap = self.snapshot();
        let mut jobs = Vec::with_capacity(items.len());
        let mut batch = HashMap::new();
        for (manifest, origin, source, digest) in items {
            if !self.admit(&snap, &batch, &manifest, &origin) {
                continue;
            }
            batch.insert(
                snap.names().mcp_name(&manifest.name).into_owned(),
                manifest.name.clone(),
            );
            if matches!(
                snap.by_name(&manifest.name).map(|e| e.state()),
                Some(LoadState::Ready)
            ) {
                self.stage(manifest, origin, source, digest, false);
                continue;
            }
            let (entry, seq) = self.new_entry(manifest, origin, digest);
            jobs.push(Job {
                entry,
                source,
                seq,
                replace: false,
            });
        }
        // Checked again under the lock, as `stage` does.
        let mut clashed = Vec::new();
        self.publish(|s| {
            jobs.retain(|j| match s.mcp_clash(&j.entry.manifest.name) {
                Some(other) => {
                    clashed.push((Arc::clone(&j.entry), other.manifest.name.clone()));
                    false
                }
                None => {
                    s.insert(Arc::clone(&j.entry));
                    true
                }
            });
        });
        for (e, other) in clashed {
            self.refuse_clash(&e, &other);
        }
        for j in &jobs {
            self.emit(RegistryEvent::Listed {
                name: j.entry.manifest.name.clone(),
            });
        }
        for job in jobs {
            self.dispatch(job);
        }
    }

    pub(super) fn done_one(&self) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        *p = p.saturating_sub(1);
        if *p == 0 {
            self.settled.notify_all();
        }
    }

    pub(super) fn finish(&self, job: Job) {
        let Job {
            entry,
            source,
            seq,
            replace,
        } = job;
        let name = entry.manifest.name.clone();
        let (result, path) = kind::load(&self.runtimes, &entry.manifest, &entry.origin, source);
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
                let set = tool.set();
                if let Some(p) = &path {
                    self.clear_problem(p, Some(&name));
                }
                if current {
                    self.retries
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&name);
                    if replace {
                        let mut old = None;
                        self.publish(|s| {
                            old = s.by_name(&name).cloned();
                            s.insert(Arc::clone(&entry));
                        });
                        // The version it replaces stops its processes once
                        // their calls are answered.
                        if let Some(old) = old.filter(|o| !Arc::ptr_eq(o, &entry)) {
                            old.retire();
                        }
                    }
                    // A set's members are listed before it is ready, so a
                    // caller that waited for the set finds them.
                    if let Some(set) = &set {
                        // Told of changes first, then listed: a change
                        // between the two is published either way.
                        let (inner, weak_entry, weak_set) =
                            (self.me.clone(), Arc::downgrade(&entry), set.downgrade());
                        set.on_change(Box::new(move || {
                            if let (Some(inner), Some(entry), Some(set)) =
                                (inner.upgrade(), weak_entry.upgrade(), weak_set.upgrade())
                            {
                                inner.publish_members(&entry, &set);
                            }
                        }));
                        self.publish_members(&entry, set);
                    }
                }
                entry.finish(Ok(tool));
                if current {
                    if replace {
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
                let retry = (current
                    && reason.may_pass()
                    && !self.on_demand
                    && matches!(entry.origin, Origin::File(_)))
                .then(|| self.retry_later(&name, seq));
                if current {
                    let text = match retry {
                        Some(delay) => format!("{reason} (retried in {delay:?})"),
                        None => reason.to_string(),
                    };
                    self.problem(&report_path, text, Some(name));
                }
                entry.finish(Err(Arc::new(reason)));
            }
        }
        self.done_one();
    }

    /// Loads `name` again later, unless something replaced this load
    /// (`seq`) meanwhile: 1 s after its first failure, doubling to 5 min.
    /// The delay.
    fn retry_later(&self, name: &str, seq: u64) -> std::time::Duration {
        let attempt = {
            let mut r = self.retries.lock().unwrap_or_else(|p| p.into_inner());
            let n = r.entry(name.to_string()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let delay =
            (RETRY_FIRST * 2u32.saturating_pow(attempt.saturating_sub(1).min(16))).min(RETRY_MAX);
        tracing::warn!("tool {name} failed to load (attempt {attempt}): retried in {delay:?}");
        let (weak, name) = (self.me.clone(), name.to_string());
        let spawned = std::thread::Builder::new()
            .name("toolplane-retry".into())
            .spawn(move || {
                std::thread::sleep(delay);
                let Some(inner) = weak.upgrade() else { return };
                let still = inner
                    .latest
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&name)
                    == Some(&seq);
                if still {
                    inner.reload_names([name].into_iter().collect());
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot retry a failed load later: {e}");
        }
        delay
    }

    pub(super) fn remove(&self, name: &str) {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), SEQ.fetch_add(1, Ordering::Relaxed));
        let mut removed = Vec::new();
        let mut gone = None;
        self.publish(|s| {
            if let Some(e) = s.remove(name) {
                removed.push(name.to_string());
                gone = Some(e);
            }
            // A set's members go with it.
            let members: Vec<String> = s
                .iter()
                .filter(|e| e.set.as_deref() == Some(name))
                .map(|e| e.manifest.name.clone())
                .collect();
            for m in members {
                s.remove(&m);
                removed.push(m);
            }
        });
        if let Some(e) = gone {
            e.retire();
        }
        for name in removed {
            self.emit(RegistryEvent::Removed { name });
        }
        // A tool refused for taking this one's MCP name may be listed now
        // (read again; refused again if its name is still taken).
        let clashed: std::collections::HashSet<String> =
            std::mem::take(&mut *self.clashed.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .filter(|n| n != name)
                .collect();
        if !clashed.is_empty() {
            self.reload_names(clashed);
        }
    }
}

pub(super) fn loader(weak: &Weak<Inner>, rx: &flume::Receiver<Job>) {
    while let Ok(job) = rx.recv() {
        let Some(inner) = weak.upgrade() else { return };
        inner.finish(job);
    }
}

pub(super) fn read_dir_manifests(dir: &Path) -> Result<Vec<PathBuf>, RegistryError> {
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

pub(super) fn parallel_parse(paths: &[PathBuf]) -> Vec<Parsed> {
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
