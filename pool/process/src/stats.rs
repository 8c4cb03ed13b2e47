//! What a process tool counts, for `/metrics`: processes by state,
//! restarts, calls waiting, and the latency of waiting and of service.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds (Prometheus' `le`).
pub const LATENCY_BUCKETS: [f64; 18] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A latency histogram with fixed buckets, lock-free to record.
#[derive(Default)]
pub(crate) struct Latency {
    counts: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Latency {
    pub(crate) fn record(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| s <= b) {
            self.counts[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_ns
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    fn snapshot(&self) -> LatencySnapshot {
        let mut cumulative = [0; LATENCY_BUCKETS.len()];
        let mut n = 0;
        for (c, b) in cumulative.iter_mut().zip(&self.counts) {
            n += b.load(Relaxed);
            *c = n;
        }
        LatencySnapshot {
            cumulative,
            count: self.count.load(Relaxed),
            sum: Duration::from_nanos(self.sum_ns.load(Relaxed)),
        }
    }
}

/// A histogram's counts at one moment.
#[derive(Debug, Clone)]
pub struct LatencySnapshot {
    /// Observations at or below each of [`LATENCY_BUCKETS`].
    pub cumulative: [u64; LATENCY_BUCKETS.len()],
    /// All observations.
    pub count: u64,
    /// Their sum.
    pub sum: Duration,
}

/// Counters one process tool shares between its calls and its supervisor.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) alive: AtomicU64,
    pub(crate) starting: AtomicU64,
    pub(crate) restarts: AtomicU64,
    pub(crate) queued: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) queue_wait: Latency,
    pub(crate) service: Latency,
}

impl Counters {
    pub(crate) fn snapshot(&self, down: Option<Arc<str>>) -> ProcessStats {
        ProcessStats {
            alive: self.alive.load(Relaxed),
            starting: self.starting.load(Relaxed),
            restarts: self.restarts.load(Relaxed),
            queued: self.queued.load(Relaxed),
            refused: self.refused.load(Relaxed),
            down,
            queue_wait: self.queue_wait.snapshot(),
            service: self.service.snapshot(),
        }
    }
}

/// A process tool's state and counts at one moment.
#[derive(Debug, Clone)]
pub struct ProcessStats {
    /// Processes running and ready for calls.
    pub alive: u64,
    /// Processes being started.
    pub starting: u64,
    /// Processes that ended without being asked to (crashed, exited, killed
    /// for a hung call or for garbage on stdout) or failed to start.
    pub restarts: u64,
    /// Calls waiting for a turn now.
    pub queued: u64,
    /// Calls refused because `pool.queue` calls were waiting already.
    pub refused: u64,
    /// Why the tool is failed (its processes keep failing), if it is.
    pub down: Option<Arc<str>>,
    /// Time from a call's start to a process taking it.
    pub queue_wait: LatencySnapshot,
    /// Time from a process taking a call to its answer.
    pub service: LatencySnapshot,
}
