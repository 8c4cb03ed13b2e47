//! The module cache: compiled modules on disk, keyed by the wasm's SHA-256
//! and the engine's compatibility hash, so a hit is an mmap'd
//! `Module::deserialize_file` instead of a compile.
//!
//! Each entry is `<wasm-sha256>-<compat>.cwasm` plus a `.mac` sidecar: an
//! HMAC-SHA256, under a key only this installation has, of the entry's
//! name and bytes. `.cwasm` files are native code, so a hit reads the
//! entry once, checks its MAC and gives wasmtime those same bytes: an
//! entry that is truncated, corrupted, or written by anyone without the
//! key (another entry's code copied over it included: the name is in the
//! MAC) is recompiled and replaced, never run. Entries are written to a
//! temporary file and renamed into place, so readers never see half an
//! entry.
//!
//! The directory is created owner-only (0700) and refused, with its mode
//! or owner named, when another user owns it or others can write to it;
//! the key (`mac.key`, 32 random bytes, 0600) likewise when others can
//! read it.
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

use crate::error::CompileError;

/// A module's SHA-256.
pub type WasmDigest = [u8; 32];

/// Modules kept in memory by digest at most (oldest forgotten first).
const MEMO_CAPACITY: usize = 1024;

/// The cache directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// It cannot be created or read, or its key cannot be made.
    #[error("module cache {}: {source}", path.display())]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Someone else could change what it holds.
    #[error(
        "module cache {}: {why}; it holds native code this process runs, so it must be owned by this user and writable by no one else (chmod 700, or set TOOLPLANE_CACHE_DIR)",
        path.display()
    )]
    Unsafe {
        /// The directory or file.
        path: PathBuf,
        /// What is wrong (the owner, or the mode).
        why: String,
    },
}

/// Bytes of the per-installation MAC key.
const KEY_LEN: usize = 32;

type Mac = hmac::Hmac<Sha256>;

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

type MemoEntry = Arc<OnceLock<Result<Module, CompileError>>>;

/// See the module documentation.
pub struct ModuleCache {
    dir: Option<PathBuf>,
    /// Bytes of wasm being compiled now, and the most allowed at once.
    compiling: Mutex<u64>,
    compiled_one: std::sync::Condvar,
    compile_budget: u64,
    /// The MAC key, when caching on disk.
    key: [u8; KEY_LEN],
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
    slots: HashMap<WasmDigest, MemoEntry>,
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
    /// Compiles run at once while their modules add up to `compile_budget`
    /// bytes at most (one runs whatever its size): compiling takes memory
    /// in proportion to the module (PERF.md, "Reliability under hostile
    /// tools and files"), so this bounds it, whatever the loader count.
    ///
    /// # Errors
    ///
    /// `dir` cannot be created, or others could change what it holds.
    pub fn new(
        dir: Option<PathBuf>,
        engine: &Engine,
        compile_budget: u64,
    ) -> Result<ModuleCache, CacheError> {
        let key = match &dir {
            Some(d) => open_private(d)?,
            None => [0; KEY_LEN],
        };
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let compat = hex(&h.0.finalize()[..8]);
        Ok(ModuleCache {
            dir,
            compiling: Mutex::new(0),
            compiled_one: std::sync::Condvar::new(),
            compile_budget,
            key,
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
    /// The bytes are not a valid module.
    pub fn load(
        &self,
        engine: &Engine,
        wasm: &[u8],
    ) -> Result<(Module, Source, WasmDigest), CompileError> {
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
                let s: MemoEntry = Arc::new(OnceLock::new());
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
    ) -> (Result<Module, CompileError>, Source) {
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
        let module = {
            let _budget = self.compile_budget(wasm.len() as u64);
            match compile(engine, wasm) {
                Ok(m) => m,
                Err(e) => return (Err(e), Source::Compiled),
            }
        };
        self.compiled.fetch_add(1, Ordering::Relaxed);
        if let Some(p) = &path
            && self.write_entry(&module, p).is_err()
        {
            self.write_errors.fetch_add(1, Ordering::Relaxed);
        }
        (Ok(module), Source::Compiled)
    }

    /// Waits until `bytes` more fit in the compile budget (or nothing else
    /// compiles), and holds them until the guard drops.
    fn compile_budget(&self, bytes: u64) -> CompileGuard<'_> {
        let mut now = self.compiling.lock().unwrap_or_else(|p| p.into_inner());
        while *now > 0 && now.saturating_add(bytes) > self.compile_budget {
            now = self
                .compiled_one
                .wait(now)
                .unwrap_or_else(|p| p.into_inner());
        }
        *now += bytes;
        CompileGuard { cache: self, bytes }
    }

    /// The MAC of the entry at `path` holding `bytes`.
    fn mac(&self, path: &Path, bytes: &[u8]) -> Mac {
        use hmac::Mac as _;
        let mut mac = Mac::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        let name = path
            .file_name()
            .map(|n| n.as_encoded_bytes())
            .unwrap_or_default();
        mac.update(&(name.len() as u64).to_le_bytes());
        mac.update(name);
        mac.update(bytes);
        mac
    }

    fn read_entry(&self, engine: &Engine, path: &Path) -> Entry {
        use hmac::Mac as _;
        let Ok(expected) = std::fs::read_to_string(sidecar(path)) else {
            return if path.exists() {
                Entry::Corrupt
            } else {
                Entry::Missing
            };
        };
        let Some(expected) = unhex(expected.trim()) else {
            return Entry::Corrupt;
        };
        let Ok(bytes) = std::fs::read(path) else {
            return Entry::Corrupt;
        };
        if self.mac(path, &bytes).verify_slice(&expected).is_err() {
            return Entry::Corrupt;
        }
        match deserialize_verified(engine, &bytes) {
            Ok(m) => Entry::Hit(m),
            Err(_) => Entry::Corrupt,
        }
    }

    fn write_entry(&self, module: &Module, path: &Path) -> std::io::Result<()> {
        use hmac::Mac as _;
        let bytes = module.serialize().map_err(std::io::Error::other)?;
        let mac = hex(&self.mac(path, &bytes).finalize().into_bytes());
        let dir = path.parent().unwrap_or(Path::new("."));
        let tmp = |ext: &str| {
            dir.join(format!(
                ".{}.{}.{ext}.tmp",
                path.file_name().and_then(|f| f.to_str()).unwrap_or("entry"),
                std::process::id()
            ))
        };
        // The module first, then the sidecar: a reader finding a sidecar finds
        // the module it describes (or a newer one, which then fails its MAC
        // and is compiled again).
        let t = tmp("cwasm");
        let mut f = std::fs::File::create(&t)?;
        f.write_all(&bytes)?;
        drop(f);
        std::fs::rename(&t, path)?;
        let t = tmp("mac");
        std::fs::write(&t, mac)?;
        std::fs::rename(&t, sidecar(path))?;
        Ok(())
    }
}

struct CompileGuard<'c> {
    cache: &'c ModuleCache,
    bytes: u64,
}

impl Drop for CompileGuard<'_> {
    fn drop(&mut self) {
        let mut now = self
            .cache
            .compiling
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *now -= self.bytes;
        self.cache.compiled_one.notify_all();
    }
}

enum Entry {
    Hit(Module),
    Missing,
    Corrupt,
}

fn sidecar(path: &Path) -> PathBuf {
    path.with_extension("mac")
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Compiles `wasm` (binary, or text).
fn compile(engine: &Engine, wasm: &[u8]) -> Result<Module, CompileError> {
    if !wasm.starts_with(b"\0asm") && std::str::from_utf8(wasm).is_err() {
        return Err(CompileError::NotWasm);
    }
    Module::new(engine, wasm).map_err(|e| CompileError::invalid(&e))
}

/// Creates `dir` owner-only, checks no one else can change it, and returns
/// its MAC key (made on first use).
fn open_private(dir: &Path) -> Result<[u8; KEY_LEN], CacheError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| CacheError::Io { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    let me = unsafe { libc::geteuid() };
    let check = |path: &Path, meta: &std::fs::Metadata, others: u32, what: &str| {
        if meta.uid() != me {
            return Err(CacheError::Unsafe {
                path: path.to_owned(),
                why: format!(
                    "it is owned by uid {}, not by this user (uid {me})",
                    meta.uid()
                ),
            });
        }
        if meta.mode() & others != 0 {
            return Err(CacheError::Unsafe {
                path: path.to_owned(),
                why: format!("its mode is {:04o}: {what}", meta.mode() & 0o7777),
            });
        }
        Ok(())
    };
    let meta = std::fs::metadata(dir).map_err(io(dir))?;
    check(dir, &meta, 0o022, "others can write to it")?;
    let key_path = dir.join("mac.key");
    if !key_path.exists() {
        // Written whole under a temporary name, then linked into place: a
        // process starting beside this one reads a whole key or makes its own.
        let mut key = [0u8; KEY_LEN];
        getrandom::fill(&mut key).map_err(|e| CacheError::Io {
            path: key_path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let tmp = dir.join(format!(".mac.key.{}.tmp", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(&key).map_err(io(&tmp))?;
        drop(f);
        let linked = std::fs::hard_link(&tmp, &key_path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => return Ok(key),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(&key_path)(e)),
        }
    }
    let meta = std::fs::symlink_metadata(&key_path).map_err(io(&key_path))?;
    if !meta.is_file() {
        return Err(CacheError::Unsafe {
            path: key_path,
            why: "it is not a regular file".into(),
        });
    }
    check(&key_path, &meta, 0o077, "others can read or write it")?;
    let bytes = std::fs::read(&key_path).map_err(io(&key_path))?;
    bytes.try_into().map_err(|b: Vec<u8>| CacheError::Unsafe {
        path: key_path,
        why: format!("it holds {} bytes, not a {KEY_LEN}-byte key", b.len()),
    })
}

/// Loads a cache entry's bytes whose MAC was just checked.
#[allow(unsafe_code)]
fn deserialize_verified(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Module> {
    // SAFETY: `deserialize` requires bytes produced by `Module::serialize`
    // of a compatible engine. These bytes are the ones whose MAC was just
    // verified (read once: no file can be swapped in between), and only
    // `write_entry` makes MACs, with a key no other user can read, over
    // `Module::serialize`'s output and the entry's name, which carries the
    // engine's compatibility hash (wasmtime also checks its own header).
    unsafe { Module::deserialize(engine, bytes) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_wait_for_the_budget_and_one_runs_whatever_its_size() {
        let cache = ModuleCache::new(None, &Engine::default(), 100).unwrap();
        let big = cache.compile_budget(1000);
        drop(big);
        let a = cache.compile_budget(80);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let _b = cache.compile_budget(50);
                tx.send(()).unwrap();
            });
            assert!(
                rx.recv_timeout(std::time::Duration::from_millis(200))
                    .is_err(),
                "80 + 50 bytes compiled at once with a budget of 100"
            );
            drop(a);
            rx.recv_timeout(std::time::Duration::from_secs(5))
                .expect("the second compile starts once the first ends");
        });
    }
}
