//! Connection counts: a leaf the acceptor (`listen.rs`), the app and
//! `/metrics` share.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Connection counts, shared by the acceptor, the HTTP threads and
/// `/metrics`.
#[derive(Debug, Default)]
pub struct Connections {
    pub(crate) open: AtomicUsize,
    pub(crate) max: AtomicUsize,
    pub(crate) reserve_total: AtomicU64,
    pub(crate) refused_total: AtomicU64,
    pub(crate) at_cap: AtomicBool,
}

impl Connections {
    /// Open connections.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// `server.max_connections`.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// Connections accepted above the cap, in the reserve.
    pub fn reserve_total(&self) -> u64 {
        self.reserve_total.load(Ordering::Relaxed)
    }

    /// Connections closed at once beyond the reserve.
    pub fn refused_total(&self) -> u64 {
        self.refused_total.load(Ordering::Relaxed)
    }
}
