//! Atomics used by toolplane's own lock-free protocols, swapped for loom's
//! under `cfg(loom)` so the protocols can be model-checked (the pattern of
//! crossbeam's `primitive` module and tokio's `loom/`).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering, fence};

/// One step of a wait loop: backs off on real threads, yields to the model
/// under loom (which cannot explore a loop that never yields).
pub(crate) struct Spin(#[cfg(not(loom))] crossbeam_utils::Backoff);

impl Spin {
    pub(crate) fn new() -> Spin {
        #[cfg(not(loom))]
        return Spin(crossbeam_utils::Backoff::new());
        #[cfg(loom)]
        return Spin();
    }

    pub(crate) fn wait(&self) {
        #[cfg(not(loom))]
        self.0.snooze();
        #[cfg(loom)]
        loom::thread::yield_now();
    }
}

/// Runs a loom model with a preemption bound of 3, which loom's docs
/// recommend: it finds the bugs that need few preemptions, and those are
/// nearly all of them, in seconds instead of hours.
#[cfg(all(test, loom))]
pub(crate) fn loom_model<F: Fn() + Sync + Send + 'static>(f: F) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}
