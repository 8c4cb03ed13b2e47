//! Metrics: per-worker counters and latency histograms, merged only when
//! somebody asks ([`Engine::metrics`](crate::Engine::metrics)).
//!
//! Each worker keeps its counts in plain integers during a pass and
//! publishes them with one relaxed store per counter per pass into its own
//! cache-padded block, so no two threads write the same cache line.
//! Histograms (hdrhistogram, 3 significant digits) stay local to the
//! worker and hold raw clock ticks, so the hot path never scales a value; a
//! snapshot request over the control channel makes the worker send a copy,
//! and the engine merges the copies and converts them to nanoseconds.
//!
//! ## Metrics
//!
//! - `accepted`: events admission accepted (counted by their producer or
//!   by the injector).
//! - `outcomes`: completed events by [`OutcomeKind`]. After shutdown,
//!   `accepted == outcomes.total()`.
//! - `rejected`: refusals by [`RejectReason`].
//! - `in_flight`: accepted and not yet completed.
//! - `undelivered`: completions whose receiver was gone (a dropped
//!   producer or ticket); their outcomes still count.
//! - `spans_exported` / `spans_dropped`: sampled spans handed to the
//!   exporter, and those dropped because its ring was full.
//! - per worker: `queue_depth` (events waiting in its rings, injector queue
//!   and per-key queues as of its last pass) and `calls_in_flight`.
//! - `queue_wait`, `service`, `end_to_end`: histograms in nanoseconds,
//!   admission to start, start to finish, admission to finish.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::admission::RejectReason;
use crate::outcome::OutcomeKind;

/// Highest value the histograms track (larger values saturate): 2^40 ticks
/// or nanoseconds, over 6 minutes at any TSC rate below 3 GHz.
const HIST_MAX: u64 = 1 << 40;

/// Counts by [`OutcomeKind`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutcomeCounts(pub [u64; 7]);

impl OutcomeCounts {
    /// The count of one kind.
    pub fn get(&self, kind: OutcomeKind) -> u64 {
        self.0[kind as usize]
    }

    /// All outcomes.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    pub(crate) fn add(&mut self, other: &OutcomeCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }
}

/// Counts by [`RejectReason`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RejectCounts(pub [u64; 5]);

impl RejectCounts {
    /// The count of one reason.
    pub fn get(&self, reason: RejectReason) -> u64 {
        self.0[reason as usize]
    }

    /// All refusals.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    pub(crate) fn add(&mut self, other: &RejectCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }
}

/// The three latency histograms, in nanoseconds. (Workers record raw clock
/// ticks, so the hot path never scales a value; a snapshot converts.)
#[derive(Debug, Clone)]
pub struct Latencies {
    /// Admission to start.
    pub queue_wait: Histogram<u64>,
    /// Start to finish.
    pub service: Histogram<u64>,
    /// Admission to finish.
    pub end_to_end: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        let h = || {
            Histogram::new_with_bounds(1, HIST_MAX, 3).expect("static histogram bounds are valid")
        };
        Latencies {
            queue_wait: h(),
            service: h(),
            end_to_end: h(),
        }
    }
}

impl Latencies {
    /// Records one event, in raw clock ticks.
    #[inline]
    pub(crate) fn record(&mut self, queue_wait: u64, service: u64) {
        self.queue_wait.saturating_record(queue_wait.max(1));
        self.service.saturating_record(service.max(1));
        self.end_to_end
            .saturating_record((queue_wait + service).max(1));
    }

    /// Converts histograms of raw ticks to nanoseconds (bucket by bucket,
    /// within the histograms' 3 significant digits).
    pub(crate) fn ticks_to_nanos(&self, clock: &quanta::Clock) -> Latencies {
        let convert = |h: &Histogram<u64>| {
            let mut out = Histogram::new_with_bounds(1, HIST_MAX, 3)
                .expect("static histogram bounds are valid");
            for v in h.iter_recorded() {
                let ns = clock
                    .delta_as_nanos(0, v.value_iterated_to())
                    .clamp(1, HIST_MAX);
                out.record_n(ns, v.count_at_value())
                    .expect("value clamped into bounds");
            }
            out
        };
        Latencies {
            queue_wait: convert(&self.queue_wait),
            service: convert(&self.service),
            end_to_end: convert(&self.end_to_end),
        }
    }

    pub(crate) fn merge(&mut self, other: &Latencies) {
        // Same bounds everywhere, so `add` cannot fail.
        let _ = self.queue_wait.add(&other.queue_wait);
        let _ = self.service.add(&other.service);
        let _ = self.end_to_end.add(&other.end_to_end);
    }
}

/// One worker's live gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerMetrics {
    /// Events waiting (rings, injector queue, per-key queues).
    pub queue_depth: u64,
    /// Calls started and not finished.
    pub calls_in_flight: u64,
    /// Whether the worker thread is still running.
    pub alive: bool,
}

/// A merged snapshot of the engine's metrics. See the module docs for the
/// meaning of each field.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Events accepted.
    pub accepted: u64,
    /// Completed events by kind.
    pub outcomes: OutcomeCounts,
    /// Refusals by reason.
    pub rejected: RejectCounts,
    /// Accepted and not completed.
    pub in_flight: u64,
    /// Completions whose receiver was gone.
    pub undelivered: u64,
    /// Sampled spans handed to the exporter.
    pub spans_exported: u64,
    /// Sampled spans dropped on a full export ring.
    pub spans_dropped: u64,
    /// Per-worker gauges.
    pub workers: Vec<WorkerMetrics>,
    /// Latency histograms merged over the workers.
    pub latency: Latencies,
    /// Workers that did not answer the snapshot request in time (their
    /// histograms are missing from `latency`).
    pub stale_workers: usize,
}

/// The final accounting returned by [`Engine::shutdown`](crate::Engine::shutdown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Events accepted over the engine's life.
    pub accepted: u64,
    /// Outcomes by kind; cancelled ones include what shutdown cut short.
    pub outcomes: OutcomeCounts,
    /// Refusals by reason.
    pub rejected: RejectCounts,
    /// Completions whose receiver was gone.
    pub undelivered: u64,
    /// Sampled spans exported and dropped.
    pub spans_exported: u64,
    /// Sampled spans dropped on a full export ring.
    pub spans_dropped: u64,
    /// How long shutdown took.
    pub shutdown_took: Duration,
}

impl Report {
    /// `accepted == ok + error + timeout + trap + panicked + cancelled`.
    pub fn is_balanced(&self) -> bool {
        self.accepted == self.outcomes.total()
    }
}

/// What a worker publishes for readers, written only by that worker.
#[derive(Debug, Default)]
pub(crate) struct WorkerCounters {
    outcomes: [AtomicU64; 7],
    undelivered: AtomicU64,
    spans_exported: AtomicU64,
    spans_dropped: AtomicU64,
    queue_depth: AtomicU64,
    calls_in_flight: AtomicU64,
    pub(crate) alive: AtomicBool,
    /// The worker thread's kernel id (Linux; 0 elsewhere or before it runs).
    pub(crate) tid: std::sync::atomic::AtomicI32,
}

/// The worker-local side of [`WorkerCounters`].
#[derive(Debug, Default, Clone)]
pub(crate) struct LocalCounters {
    pub(crate) outcomes: OutcomeCounts,
    pub(crate) undelivered: u64,
    pub(crate) spans_exported: u64,
    pub(crate) spans_dropped: u64,
    pub(crate) queue_depth: u64,
    pub(crate) calls_in_flight: u64,
}

impl WorkerCounters {
    /// Worker: publish the local totals (one relaxed store each).
    pub(crate) fn publish(&self, local: &LocalCounters) {
        for (a, v) in self.outcomes.iter().zip(local.outcomes.0) {
            a.store(v, Ordering::Relaxed);
        }
        self.undelivered.store(local.undelivered, Ordering::Relaxed);
        self.spans_exported
            .store(local.spans_exported, Ordering::Relaxed);
        self.spans_dropped
            .store(local.spans_dropped, Ordering::Relaxed);
        self.queue_depth.store(local.queue_depth, Ordering::Relaxed);
        self.calls_in_flight
            .store(local.calls_in_flight, Ordering::Relaxed);
    }

    pub(crate) fn read(&self) -> LocalCounters {
        let mut outcomes = OutcomeCounts::default();
        for (o, a) in outcomes.0.iter_mut().zip(&self.outcomes) {
            *o = a.load(Ordering::Relaxed);
        }
        LocalCounters {
            outcomes,
            undelivered: self.undelivered.load(Ordering::Relaxed),
            spans_exported: self.spans_exported.load(Ordering::Relaxed),
            spans_dropped: self.spans_dropped.load(Ordering::Relaxed),
            queue_depth: self.queue_depth.load(Ordering::Relaxed),
            calls_in_flight: self.calls_in_flight.load(Ordering::Relaxed),
        }
    }
}

/// Admission counts of one producer (or of the injector), written only by
/// that producer except for the injector's, which use atomic adds.
#[derive(Debug, Default)]
pub(crate) struct AdmissionCounters {
    accepted: AtomicU64,
    rejected: [AtomicU64; 5],
}

impl AdmissionCounters {
    /// Single writer: a load and a store, no locked instruction.
    #[inline]
    pub(crate) fn bump_accepted(&self) {
        let v = self.accepted.load(Ordering::Relaxed);
        self.accepted.store(v + 1, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn bump_rejected(&self, reason: RejectReason) {
        let a = &self.rejected[reason as usize];
        a.store(a.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Many writers.
    pub(crate) fn add_accepted_shared(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_rejected_shared(&self, reason: RejectReason) {
        self.rejected[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    pub(crate) fn rejected(&self) -> RejectCounts {
        let mut r = RejectCounts::default();
        for (o, a) in r.0.iter_mut().zip(&self.rejected) {
            *o = a.load(Ordering::Relaxed);
        }
        r
    }

    /// Folds a retired producer's counts into this (shared) block.
    pub(crate) fn absorb(&self, other: &AdmissionCounters) {
        self.accepted.fetch_add(other.accepted(), Ordering::Relaxed);
        for (a, b) in self.rejected.iter().zip(&other.rejected) {
            a.fetch_add(b.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }
}
