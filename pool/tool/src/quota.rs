//! The data directory's size limit and the per-call write quota.
//!
//! Two checks, both made by the host:
//! - **per call**: a tool reserves bytes before writing them
//!   (`toolplane.reserve_write`, which the SDK's file helpers call); a call
//!   may reserve its manifest's `limits.max_write` at most;
//! - **the data directory**: its size is measured by walking it (at start
//!   and, at most every [`REWALK`], after calls of tools that may write),
//!   plus what was reserved since the walk began (a directory whose walk
//!   takes longer is walked less often: a tenth of a core at most). A reservation that would
//!   take it past `data_dir_limit` is refused, and so is any call of a tool
//!   with a read-write grant while it is at the limit, so a tool that
//!   writes without reserving overshoots by at most what it writes between
//!   two walks.
//!
//! Overwrites and deletions free space: the next walk sees it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use toolplane_units::fmt_size;

/// The least time between two walks of the data directory.
const REWALK: Duration = Duration::from_millis(200);
/// Entries a walk visits at most (a directory of millions of files is
/// measured by its first ten million, and said so).
const MAX_ENTRIES: u64 = 10_000_000;

/// The data directory's accounting. Shared by the runtime's calls and its
/// walker thread.
#[derive(Debug)]
pub struct DataQuota {
    pub dir: PathBuf,
    pub limit: u64,
    /// Bytes the last walk found.
    walked: AtomicU64,
    /// Bytes reserved since the last walk began.
    reserved: AtomicU64,
    /// A walk is wanted (a write-capable call ended).
    dirty: Mutex<bool>,
    wake: Condvar,
    stop: AtomicBool,
}

impl DataQuota {
    /// Measures `dir` once and starts the walker thread.
    pub fn start(dir: &Path, limit: u64) -> std::io::Result<Arc<DataQuota>> {
        let q = Arc::new(DataQuota {
            dir: dir.to_owned(),
            limit,
            walked: AtomicU64::new(walk(dir)),
            reserved: AtomicU64::new(0),
            dirty: Mutex::new(false),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&q);
        std::thread::Builder::new()
            .name("toolplane-quota".into())
            .spawn(move || {
                // Background work at the lowest priority (nice 19, this
                // thread only: Linux keeps nice per thread), so a walk waits
                // for a worker to sleep instead of preempting it: a walk of
                // a thousand files takes about 1.6 ms, which a call on that
                // core would otherwise wait out (PERF.md, "The main job on
                // two cores"). Best effort: an error leaves it at nice 0.
                let _ = rustix::process::setpriority_process(None, 19);
                loop {
                    let Some(q) = weak.upgrade() else { return };
                    {
                        let mut dirty = q.dirty.lock().unwrap_or_else(|p| p.into_inner());
                        while !*dirty && !q.stop.load(Ordering::Relaxed) {
                            dirty = q
                                .wake
                                .wait_timeout(dirty, Duration::from_secs(1))
                                .unwrap_or_else(|p| p.into_inner())
                                .0;
                            if Arc::strong_count(&q) == 1 {
                                return;
                            }
                        }
                        *dirty = false;
                    }
                    if q.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    // Reservations made from here on are not in the walk.
                    q.reserved.store(0, Ordering::Relaxed);
                    let started = std::time::Instant::now();
                    q.walked.store(walk(&q.dir), Ordering::Relaxed);
                    drop(q);
                    // A big directory is walked less often: at most a tenth
                    // of a core goes to walking it.
                    std::thread::sleep(REWALK.max(started.elapsed() * 10));
                }
            })?;
        Ok(q)
    }

    /// The directory's size as known now.
    pub fn used(&self) -> u64 {
        self.walked
            .load(Ordering::Relaxed)
            .saturating_add(self.reserved.load(Ordering::Relaxed))
    }

    /// Asks for a walk (a call that may have written ended).
    pub fn touched(&self) {
        let mut dirty = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        if !*dirty {
            *dirty = true;
            self.wake.notify_one();
        }
    }

    /// The refusal of a call of a write-capable tool while the directory is
    /// at its limit.
    pub fn full(&self) -> Option<String> {
        let used = self.used();
        (used >= self.limit).then(|| self.message(used, 0))
    }

    /// Reserves `bytes` of the directory; the refusal's message otherwise.
    pub fn reserve(&self, bytes: u64) -> Result<(), String> {
        let before = self.reserved.fetch_add(bytes, Ordering::Relaxed);
        let used = self.walked.load(Ordering::Relaxed).saturating_add(before);
        if used.saturating_add(bytes) > self.limit {
            self.reserved.fetch_sub(bytes, Ordering::Relaxed);
            return Err(self.message(used, bytes));
        }
        Ok(())
    }

    fn message(&self, used: u64, asked: u64) -> String {
        let asked = if asked > 0 {
            format!("writing {} more would exceed", fmt_size(asked))
        } else {
            "it is at".to_string()
        };
        format!(
            "the data directory {} holds {}: {asked} its limit, [pool] data_dir_limit = {}",
            self.dir.display(),
            fmt_size(used),
            fmt_size(self.limit)
        )
    }
}

impl Drop for DataQuota {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.notify_all();
    }
}

/// The bytes of the files under `dir` (symlinks are not followed).
fn walk(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut seen = 0u64;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            seen += 1;
            if seen > MAX_ENTRIES {
                return total;
            }
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                total = total.saturating_add(meta.len());
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_at_the_limit_and_walks_see_deletions() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![0u8; 600]).unwrap();
        let q = DataQuota::start(dir.path(), 1000).unwrap();
        assert_eq!(q.used(), 600);
        q.reserve(300).unwrap();
        let e = q.reserve(200).unwrap_err();
        assert!(e.contains("data_dir_limit = 1000 B"), "{e}");
        assert!(q.full().is_none());
        q.reserve(100).unwrap();
        assert!(q.full().is_some());
        std::fs::remove_file(dir.path().join("a")).unwrap();
        q.touched();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while q.used() != 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(q.used(), 0);
    }
}
