//! Resident memory of this process, from `/proc/self/smaps_rollup` (the
//! kernel's exact sum) or `/proc/self/statm` where that file is missing;
//! and, when loadgen is built with the `heap-count` feature, the bytes the
//! program holds on the heap, which tell a leak (live bytes grow) from the
//! allocator keeping freed memory (resident grows, live bytes do not).

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

/// Where a sample came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `Rss:` of `/proc/self/smaps_rollup`.
    SmapsRollup,
    /// Resident pages of `/proc/self/statm` × 4 KiB.
    Statm,
    /// A server's `process_resident_memory_bytes` (its `/metrics`).
    ServerMetrics,
}

/// One sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds from the start of the run.
    pub t_s: f64,
    /// Resident bytes.
    pub rss_bytes: u64,
    /// Live heap bytes (`heap-count` builds only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heap_bytes: Option<u64>,
    /// WASI pool slots touched and kept (embedded targets only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_slots: Option<usize>,
}

/// Bytes allocated and not yet freed through [`Counting`].
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// A global allocator that counts the bytes live in `A`: one relaxed
/// atomic add per allocation and per free, which is why it is a build
/// feature (`heap-count`) and not always on.
#[derive(Debug)]
pub struct Counting<A>(pub A);

// The one place loadgen implements an allocator.
// SAFETY: every method forwards to `A` with the caller's arguments
// unchanged, so `A`'s guarantees hold; the counting touches no memory the
// caller sees.
#[allow(unsafe_code)]
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc`, passed on.
        let p = unsafe { self.0.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc_zeroed`, passed on.
        let p = unsafe { self.0.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { self.0.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc`, passed on.
        let p = unsafe { self.0.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

/// Live heap bytes when [`Counting`] is the global allocator (before
/// `main` something has always been allocated), `None` otherwise.
pub fn heap_live() -> Option<u64> {
    let n = LIVE.load(Ordering::Relaxed);
    (n > 0).then_some(n as u64)
}

/// The resident set size in bytes, and where it was read.
pub fn resident() -> Option<(u64, Source)> {
    if let Ok(text) = std::fs::read_to_string("/proc/self/smaps_rollup") {
        let kb = text.lines().find_map(|l| {
            let rest = l.strip_prefix("Rss:")?;
            rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
        });
        if let Some(kb) = kb {
            return Some((kb * 1024, Source::SmapsRollup));
        }
    }
    // statm counts pages; the page size is 4 KiB on the platforms this
    // fallback serves (smaps_rollup exists since Linux 4.14).
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some((pages * 4096, Source::Statm))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_a_plausible_rss() {
        let (bytes, _) = super::resident().expect("procfs is readable on Linux");
        assert!(bytes > 1 << 20 && bytes < 1 << 40, "{bytes}");
        // Touching 64 MiB shows.
        let v = std::hint::black_box(vec![1u8; 64 << 20]);
        let (after, _) = super::resident().unwrap();
        assert!(after >= bytes + (32 << 20), "{bytes} -> {after}");
        drop(v);
    }

    #[test]
    #[allow(unsafe_code)]
    fn counting_follows_allocations_and_frees() {
        use std::alloc::{GlobalAlloc, Layout, System};
        let a = super::Counting(System);
        let before = super::LIVE.load(std::sync::atomic::Ordering::Relaxed);
        let live = || super::LIVE.load(std::sync::atomic::Ordering::Relaxed) - before;
        let l = Layout::from_size_align(1000, 8).unwrap();
        // SAFETY: a non-zero-size layout; each pointer is freed once with
        // the layout (and size) it was last allocated with.
        unsafe {
            let p = a.alloc(l);
            assert!(!p.is_null());
            assert_eq!(live(), 1000);
            let p = a.realloc(p, l, 5000);
            assert_eq!(live(), 5000);
            let z = a.alloc_zeroed(l);
            assert_eq!(live(), 6000);
            a.dealloc(z, l);
            a.dealloc(p, Layout::from_size_align(5000, 8).unwrap());
        }
        assert_eq!(live(), 0);
    }
}
