//! Hot reload: the directory watcher, the debounce, and re-reading the
//! tools whose files changed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::loading::Inner;
use super::types::RegistryError;
use crate::kind::{self, LoadInput};
use crate::manifest::{Manifest, Origin};

/// Quiet time after a file event before the registry reloads.
const DEBOUNCE: Duration = Duration::from_millis(40);

impl Inner {
    /// Re-reads the named tools from the directory.
    pub(super) fn reload_names(&self, names: HashSet<String>) {
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
            // Read here to compare: the loader takes what was read.
            let source = LoadInput::read_for_reload(&m, dir, self.runtimes.wasi.config());
            let unchanged = self.snapshot().by_name(&name).is_some_and(|e| {
                matches!(e.loaded(), Some(Ok(t)) if kind::unchanged(t, e.manifest_digest, digest, &source))
            });
            if unchanged {
                continue;
            }
            self.stage(m, Origin::File(path), source, Some(digest), true);
        }
    }

    pub(super) fn start_watch(self: &Arc<Self>, dir: &Path) -> Result<(), RegistryError> {
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
        // Any tool that depends on the file, and the manifest it may be
        // for (one that could not load without it).
        let snap = self.snapshot();
        let mut names: Vec<String> = snap
            .iter()
            .filter(|e| kind::depends_on(&e.manifest, &e.origin, path))
            .map(|e| e.manifest.name.clone())
            .collect();
        if let Some(stem) = kind::manifest_stem(file)
            && self
                .dir
                .as_ref()
                .is_some_and(|d| d.join(format!("{stem}.toml")).exists())
            && !names.iter().any(|n| n == stem)
        {
            names.push(stem.to_string());
        }
        names
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
