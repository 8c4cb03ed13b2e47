//! Where the generator runs: on a core of its own when the embedded engine
//! leaves one, with nothing of this process beside it.
//!
//! Pinning the workers and the generator is not enough (PERF.md, "The main
//! job on two cores"): the engine's other threads (the epoch ticker, which
//! wakes every 250 µs while calls run, the data-quota walker, the loaders)
//! and loadgen's reporter were put by the scheduler on the core the
//! workers leave idle, the generator's, and each of their wake-ups made a
//! send late (schedule lag p99 285–470 µs at 10k/s; 33–49 µs without
//! them). So the target starts every thread with an affinity mask that
//! leaves the generator's core out ([`Placement::others`]); the generator
//! then asks for real-time priority there ([`Placement::enter`]), which
//! kernel threads at normal priority (DAMON's `kdamond`, workqueues) do not
//! delay (max lag 3.8–4.7 ms without it, 1.3–1.5 ms with it). Both are
//! best effort and the report says what the generator got.

use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};

/// The generator's core and the mask of every other thread.
#[derive(Clone, Copy)]
pub struct Placement {
    generator: usize,
    others: CpuSet,
}

impl std::fmt::Debug for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Placement")
            .field("generator", &self.generator)
            .finish_non_exhaustive()
    }
}

/// What the generator got: reported with the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entered {
    /// The core it runs on, alone.
    pub cpu: usize,
    /// Real-time priority (`SCHED_FIFO` 1), or why not.
    pub realtime: Result<(), rustix::io::Errno>,
}

impl std::fmt::Display for Entered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "generator alone on cpu {}", self.cpu)?;
        match &self.realtime {
            Ok(()) => write!(f, " at real-time priority"),
            Err(e) => write!(
                f,
                " (real-time priority refused: {e}; kernel threads may delay sends)"
            ),
        }
    }
}

impl Placement {
    /// For an engine of `workers` pinned workers: the last core this
    /// process may use goes to the generator, the rest to everything else;
    /// `None` when there are not more cores than workers (then the
    /// generator shares, and sleeps rather than spins).
    pub fn plan(workers: usize) -> Option<Placement> {
        let mask = sched_getaffinity(None).ok()?;
        let cpus: Vec<usize> = (0..CpuSet::MAX_CPU).filter(|&c| mask.is_set(c)).collect();
        if cpus.len() <= workers {
            return None;
        }
        let generator = *cpus.last()?;
        let mut others = mask;
        others.unset(generator);
        Some(Placement { generator, others })
    }

    /// Runs `f` with this thread's affinity narrowed to the other cores,
    /// then restores it: the threads `f` starts keep the narrow mask (a
    /// thread inherits its creator's), and the engine's workers pin
    /// themselves within it.
    pub fn others<T>(&self, f: impl FnOnce() -> T) -> T {
        /// Puts the mask back however `f` ends.
        struct Restore(Option<CpuSet>);
        impl Drop for Restore {
            fn drop(&mut self) {
                if let Some(b) = &self.0 {
                    let _ = sched_setaffinity(None, b);
                }
            }
        }
        let _restore = Restore(sched_getaffinity(None).ok());
        let _ = sched_setaffinity(None, &self.others);
        f()
    }

    /// Moves the calling thread (the generator) to its core and asks for
    /// real-time priority there.
    pub fn enter(&self) -> Entered {
        let mut mine = CpuSet::new();
        mine.set(self.generator);
        let _ = sched_setaffinity(None, &mine);
        Entered {
            cpu: self.generator,
            realtime: realtime(),
        }
    }
}

/// `SCHED_FIFO` at the lowest real-time priority for the calling thread.
/// It preempts every normal thread on its core at once, and the kernel's
/// real-time throttling (95% of each second by default) leaves that core's
/// kernel threads their time even if the generator never sleeps.
fn realtime() -> Result<(), rustix::io::Errno> {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: `param` is a valid `sched_param` that outlives the call, and
    // pid 0 names the calling thread; the call reads `param` only.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &raw const param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(rustix::io::Errno::from_raw_os_error(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ))
    }
}
