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

/// The fast half of an asymmetric Dekker pair: a compiler fence where the
/// kernel offers a process-wide barrier (`membarrier(2)` with
/// `MEMBARRIER_CMD_PRIVATE_EXPEDITED`), otherwise a SeqCst fence. It orders
/// this thread's accesses only against a [`heavy_barrier`] on another
/// thread (the technique of Linux's `membarrier`, liburcu and folly's
/// `asymmetricLightBarrier`).
///
/// Producers pay this on every submit. Measured with the `saturate`
/// example on the 2-core machine, the two SeqCst fences it replaces were
/// about 60% of the producer's time (PERF.md, "Producer barriers").
#[inline]
pub(crate) fn light_barrier() {
    #[cfg(not(loom))]
    if membarrier::available() {
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        return;
    }
    fence(Ordering::SeqCst);
}

/// The slow half: every running thread of the process passes a full
/// barrier before this returns. Paid by a worker about to park and by
/// shutdown, never per event.
pub(crate) fn heavy_barrier() {
    #[cfg(not(loom))]
    if membarrier::available() {
        membarrier::private_expedited();
        return;
    }
    fence(Ordering::SeqCst);
}

#[cfg(all(not(loom), not(miri), target_os = "linux"))]
mod membarrier {
    use std::sync::OnceLock;

    // From include/uapi/linux/membarrier.h.
    const CMD_QUERY: libc::c_long = 0;
    const CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
    const CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

    static AVAILABLE: OnceLock<bool> = OnceLock::new();

    fn call(cmd: libc::c_long) -> libc::c_long {
        // SAFETY: membarrier(cmd, flags = 0, cpu_id = 0) takes no pointers
        // and touches no memory of ours; an unsupported command returns -1.
        unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                cmd,
                0 as libc::c_long,
                0 as libc::c_long,
            )
        }
    }

    /// Whether private expedited membarrier is supported and this process
    /// is registered for it (decided once; every thread sees the same
    /// answer, so both halves of a pair always agree).
    #[inline]
    pub(super) fn available() -> bool {
        *AVAILABLE.get_or_init(|| {
            let supported = call(CMD_QUERY);
            let needed = CMD_PRIVATE_EXPEDITED | CMD_REGISTER_PRIVATE_EXPEDITED;
            supported >= 0
                && supported & needed == needed
                && call(CMD_REGISTER_PRIVATE_EXPEDITED) == 0
        })
    }

    pub(super) fn private_expedited() {
        // After a successful registration this command cannot fail; if it
        // did, producers relying on it would race, so stop loudly.
        assert_eq!(
            call(CMD_PRIVATE_EXPEDITED),
            0,
            "membarrier(PRIVATE_EXPEDITED) failed after registration"
        );
    }
}

/// Elsewhere (and under Miri, which cannot run the syscall) both halves of
/// the pair are SeqCst fences.
#[cfg(all(not(loom), any(miri, not(target_os = "linux"))))]
mod membarrier {
    pub(super) fn available() -> bool {
        false
    }

    pub(super) fn private_expedited() {}
}

#[cfg(all(test, not(loom)))]
mod tests {
    #[test]
    fn barriers_run() {
        // On Linux this registers and issues a real membarrier; elsewhere
        // both halves are fences. Either way the pair must not fail.
        super::light_barrier();
        super::heavy_barrier();
        super::light_barrier();
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
