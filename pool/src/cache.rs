//! The module cache: compiled modules on disk, keyed by the wasm's SHA-256
//! and the engine's compatibility hash, so a hit is an mmap'd
//! `Module::deserialize_file` instead of a compile.
//!
//! Each entry is `<wasm-sha256>-<compat>.cwasm` plus a `.sha256` sidecar
//! holding the digest of the `.cwasm` file. A hit checks the digest before
//! wasmtime maps the file, so a truncated or corrupted entry is recompiled
//! and replaced, never run. Entries are written to a temporary file and
//! renamed into place, so readers never see half an entry.
//!
//! In memory, modules are shared by wasm digest: identical modules (the
//! same tool under several names) compile or load once, even when they are
//! loaded at the same time.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

/// A module's SHA-256.
pub type WasmDigest = [u8; 32];

/// Modules kept in memory by digest at most (oldest forgotten first).
const MEMO_CAPACITY: usize = 1024;

/// The cache directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("module cache {}: {source}", dir.display())]
pub struct CacheError {
    /// The directory.
    pub dir: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// How a module was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Already in memory (an identical module was loaded before).
    Memory,
    /// Mapped from the disk cache.
    Disk,
    /// Compiled (a miss, or a corrupt or stale entry).
    Compiled,
}

/// Counters of the cache's work since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Served from memory.
    pub memory_hits: u64,
    /// Mapped from disk.
    pub disk_hits: u64,
    /// Compiled.
    pub compiled: u64,
    /// Disk entries found corrupt (digest mismatch or refused by wasmtime)
    /// and replaced.
    pub corrupt: u64,
    /// Entries that could not be written (the module still loads).
    pub write_errors: u64,
}

type Slot = Arc<OnceLock<Result<Module, String>>>;

/// See the module documentation.
pub struct ModuleCache {
    dir: Option<PathBuf>,
    compat: String,
    memo: Mutex<Memo>,
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    compiled: AtomicU64,
    corrupt: AtomicU64,
    write_errors: AtomicU64,
}

#[derive(Default)]
struct Memo {
    slots: HashMap<WasmDigest, Slot>,
    order: VecDeque<WasmDigest>,
}

impl std::fmt::Debug for ModuleCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleCache")
            .field("dir", &self.dir)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Feeds wasmtime's compatibility hash into SHA-256.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        // Unused: the digest is taken from the inner state.
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The SHA-256 of `wasm`.
pub fn digest(wasm: &[u8]) -> WasmDigest {
    Sha256::digest(wasm).into()
}

impl ModuleCache {
    /// Opens (creating it) the cache in `dir`; `None` caches in memory only.
    ///
    /// # Errors
    ///
    /// `dir` cannot be created.
    pub fn new(dir: Option<PathBuf>, engine: &Engine) -> Result<ModuleCache, CacheError> {
        if let Some(d) = &dir {
            std::fs::create_dir_all(d).map_err(|source| CacheError {
                dir: d.clone(),
                source,
            })?;
        }
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let compat = hex(&h.0.finalize()[..8]);
        Ok(ModuleCache {
            dir,
            compat,
            memo: Mutex::new(Memo::default()),
            memory_hits: AtomicU64::new(0),
            disk_hits: AtomicU64::new(0),
            compiled: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
        })
    }

    /// The cache directory, if it caches on disk.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The file an entry for `digest` lives in.
    pub fn entry_path(&self, digest: &WasmDigest) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{}-{}.cwasm", hex(digest), self.compat)))
    }

    /// The cache's counters.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            memory_hits: self.memory_hits.load(Ordering::Relaxed),
            disk_hits: self.disk_hits.load(Ordering::Relaxed),
            compiled: self.compiled.load(Ordering::Relaxed),
            corrupt: self.corrupt.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
        }
    }

    /// Forgets the modules held in memory (the disk cache stays).
    pub fn clear_memory(&self) {
        let mut memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
        memo.slots.clear();
        memo.order.clear();
    }

    /// The module for `wasm`: from memory, from disk, or compiled (and then
    /// written to disk). Concurrent loads of the same bytes share one
    /// compile.
    ///
    /// # Errors
    ///
    /// The bytes are not a valid module (wasmtime's message).
    pub fn load(
        &self,
        engine: &Engine,
        wasm: &[u8],
    ) -> Result<(Module, Source, WasmDigest), String> {
        let digest = digest(wasm);
        let slot = {
            let mut memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = memo.slots.get(&digest) {
                Arc::clone(s)
            } else {
                if memo.order.len() >= MEMO_CAPACITY
                    && let Some(old) = memo.order.pop_front()
                {
                    memo.slots.remove(&old);
                }
                let s: Slot = Arc::new(OnceLock::new());
                memo.slots.insert(digest, Arc::clone(&s));
                memo.order.push_back(digest);
                s
            }
        };
        let mut source = Source::Memory;
        let result = slot.get_or_init(|| {
            let (r, s) = self.load_uncached(engine, wasm, &digest);
            source = s;
            r
        });
        if source == Source::Memory {
            self.memory_hits.fetch_add(1, Ordering::Relaxed);
        }
        match result {
            Ok(m) => Ok((m.clone(), source, digest)),
            Err(e) => {
                // Do not keep failures: the same bytes fail the same way,
                // but memory is for modules.
                let mut memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
                memo.slots.remove(&digest);
                memo.order.retain(|d| d != &digest);
                Err(e.clone())
            }
        }
    }

    fn load_uncached(
        &self,
        engine: &Engine,
        wasm: &[u8],
        digest: &WasmDigest,
    ) -> (Result<Module, String>, Source) {
        let path = self.entry_path(digest);
        if let Some(p) = &path {
            match self.read_entry(engine, p) {
                Entry::Hit(m) => {
                    self.disk_hits.fetch_add(1, Ordering::Relaxed);
                    return (Ok(m), Source::Disk);
                }
                Entry::Corrupt => {
                    self.corrupt.fetch_add(1, Ordering::Relaxed);
                }
                Entry::Missing => {}
            }
        }
        let module = match Module::new(engine, wasm) {
            Ok(m) => m,
            Err(e) => return (Err(format!("{e:#}")), Source::Compiled),
        };
        self.compiled.fetch_add(1, Ordering::Relaxed);
        if let Some(p) = &path
            && write_entry(&module, p).is_err()
        {
            self.write_errors.fetch_add(1, Ordering::Relaxed);
        }
        (Ok(module), Source::Compiled)
    }

    fn read_entry(&self, engine: &Engine, path: &Path) -> Entry {
        let sidecar = sidecar(path);
        let Ok(expected) = std::fs::read_to_string(&sidecar) else {
            return if path.exists() {
                Entry::Corrupt
            } else {
                Entry::Missing
            };
        };
        let Ok(bytes) = std::fs::read(path) else {
            return Entry::Corrupt;
        };
        if hex(&Sha256::digest(&bytes)) != expected.trim() {
            return Entry::Corrupt;
        }
        drop(bytes);
        match deserialize_checked(engine, path) {
            Ok(m) => Entry::Hit(m),
            Err(_) => Entry::Corrupt,
        }
    }
}

enum Entry {
    Hit(Module),
    Missing,
    Corrupt,
}

fn sidecar(path: &Path) -> PathBuf {
    path.with_extension("sha256")
}

/// Maps a cache entry whose digest was just checked against its sidecar.
#[allow(unsafe_code)]
fn deserialize_checked(engine: &Engine, path: &Path) -> wasmtime::Result<Module> {
    // SAFETY: `deserialize_file` requires bytes produced by
    // `Module::serialize` of a compatible engine and unchanged since. The
    // file is in the cache directory only this cache writes to; it was
    // written by `write_entry` from `Module::serialize`; its SHA-256 matched
    // the sidecar written after it just before this call, so it is not
    // truncated or corrupted; and its name carries the engine's
    // compatibility hash (wasmtime also checks its own header). A file
    // swapped by another writer between the digest check and this map is
    // outside what the cache defends against: the directory is private to
    // toolplane.
    unsafe { Module::deserialize_file(engine, path) }
}

fn write_entry(module: &Module, path: &Path) -> std::io::Result<()> {
    let bytes = module.serialize().map_err(std::io::Error::other)?;
    let digest = hex(&Sha256::digest(&bytes));
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = |ext: &str| {
        dir.join(format!(
            ".{}.{}.{ext}.tmp",
            path.file_name().and_then(|f| f.to_str()).unwrap_or("entry"),
            std::process::id()
        ))
    };
    // The module first, then the sidecar: a reader finding a sidecar finds
    // the module it describes.
    let t = tmp("cwasm");
    let mut f = std::fs::File::create(&t)?;
    f.write_all(&bytes)?;
    drop(f);
    std::fs::rename(&t, path)?;
    let t = tmp("sha256");
    std::fs::write(&t, digest)?;
    std::fs::rename(&t, sidecar(path))?;
    Ok(())
}
