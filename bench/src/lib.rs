//! The pieces toolplane's benchmarks share: the criterion and iai-callgrind
//! suites in `benches/` and the `compare` binary.
//!
//! - [`stats`]: medians, spreads and the Markdown tables `compare` prints;
//! - [`crew`]: persistent threads released together by a barrier, for
//!   criterion's `iter_custom` across threads;
//! - [`pools`]: the engine and its baselines (a crossbeam-channel and a
//!   flume worker pool with the same handler, threads, pinning and
//!   completion path), driven to saturation;
//! - [`wasi`]: a tools directory with every per-call mode of the pool, the
//!   naive embedding and process per call, for `echo` and `hash.sha256`;
//! - [`registry`]: many tools on disk, and a registry started over them;
//! - [`mcp`]: a load client for MCP servers on stdio (the peer comparison).

pub mod clients;
pub mod crew;
pub mod mcp;
pub mod pools;
pub mod process;
pub mod registry;
pub mod stats;
pub mod wasi;

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering};

/// Allocations (and reallocations) made through [`CountingMimalloc`].
pub static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// mimalloc with an allocation counter; a binary installs it with
/// `#[global_allocator]` to count allocations per event.
#[derive(Debug)]
pub struct CountingMimalloc;

static INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;

// SAFETY: every method forwards to mimalloc with the caller's arguments
// unchanged, so mimalloc's guarantees are ours; counting touches no memory
// the allocator hands out.
unsafe impl GlobalAlloc for CountingMimalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { INNER.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `INNER.alloc` with this layout.
        unsafe { INNER.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { INNER.realloc(ptr, layout, new_size) }
    }
}

/// The machine, for the head of a report: cores and CPU model.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!(
        "{} cores, {cpu}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )
}
