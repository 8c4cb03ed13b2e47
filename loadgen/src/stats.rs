//! What the generator records: corrected and uncorrected latency, the
//! schedule lag, outcome and rejection counts, per interval, per tool and
//! per phase.

use hdrhistogram::Histogram;
use serde::Serialize;
use toolplane_core::{OutcomeKind, RejectReason};

/// The largest latency recorded exactly (one hour, in ns); larger ones
/// saturate.
pub const HIST_MAX_NS: u64 = 3_600_000_000_000;

/// A latency histogram in nanoseconds with 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3).expect("static histogram bounds are valid")
}

/// A coarser one (2 significant digits) for per-phase figures, of which a
/// step profile has many.
pub fn coarse_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, 2).expect("static histogram bounds are valid")
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// 99.99th percentile.
    pub p9999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// Samples.
    pub count: u64,
}

impl Percentiles {
    /// Of a histogram of nanoseconds.
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let us = |ns: u64| ns as f64 / 1e3;
        Percentiles {
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p95: us(h.value_at_quantile(0.95)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            p9999: us(h.value_at_quantile(0.9999)),
            max: us(h.max()),
            mean: h.mean() / 1e3,
            count: h.len(),
        }
    }

    /// The figure named as in a profile's SLO (`p50` … `max`).
    pub fn get(&self, key: &str) -> Option<f64> {
        Some(match key {
            "p50" => self.p50,
            "p90" => self.p90,
            "p95" => self.p95,
            "p99" => self.p99,
            "p999" => self.p999,
            "p9999" => self.p9999,
            "max" => self.max,
            _ => return None,
        })
    }
}

/// Counts of one set of events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Events the schedule asked to send.
    pub scheduled: u64,
    /// Events the engine accepted.
    pub accepted: u64,
    /// Completions by [`OutcomeKind`] index.
    pub outcomes: [u64; OutcomeKind::ALL.len()],
    /// Refusals by [`RejectReason`] index.
    pub rejected: [u64; RejectReason::ALL.len()],
}

impl Tally {
    /// Completed events.
    pub fn completed(&self) -> u64 {
        self.outcomes.iter().sum()
    }

    /// Completed events that did not end `Ok`.
    pub fn failed(&self) -> u64 {
        self.completed() - self.outcomes[OutcomeKind::Ok as usize]
    }

    /// Refused events.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// Outcomes by name.
    pub fn outcomes_by_name(&self) -> std::collections::BTreeMap<&'static str, u64> {
        OutcomeKind::ALL
            .iter()
            .map(|k| (k.as_str(), self.outcomes[*k as usize]))
            .collect()
    }

    /// Rejections by name.
    pub fn rejected_by_name(&self) -> std::collections::BTreeMap<&'static str, u64> {
        RejectReason::ALL
            .iter()
            .map(|r| (r.as_str(), self.rejected[*r as usize]))
            .collect()
    }
}

/// Everything recorded about a set of events.
#[derive(Debug, Clone)]
pub struct Recorder {
    /// Completion − intended send time.
    pub corrected: Histogram<u64>,
    /// Completion − actual send time.
    pub uncorrected: Histogram<u64>,
    /// Actual − intended send time, per send.
    pub lag: Histogram<u64>,
    /// Counts.
    pub tally: Tally,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            corrected: histogram(),
            uncorrected: histogram(),
            lag: histogram(),
            tally: Tally::default(),
        }
    }
}

impl Recorder {
    /// One send: its lag behind the schedule, and whether it was accepted.
    #[inline]
    pub fn sent(&mut self, lag_ns: u64, refused: Option<RejectReason>) {
        self.lag.saturating_record(lag_ns.max(1));
        self.tally.scheduled += 1;
        match refused {
            None => self.tally.accepted += 1,
            Some(r) => self.tally.rejected[r as usize] += 1,
        }
    }

    /// One completion.
    #[inline]
    pub fn completed(&mut self, corrected_ns: u64, uncorrected_ns: u64, kind: OutcomeKind) {
        self.corrected.saturating_record(corrected_ns.max(1));
        self.uncorrected.saturating_record(uncorrected_ns.max(1));
        self.tally.outcomes[kind as usize] += 1;
    }

    /// Empties it for reuse (keeps the allocations).
    pub fn reset(&mut self) {
        self.corrected.reset();
        self.uncorrected.reset();
        self.lag.reset();
        self.tally = Tally::default();
    }
}

/// One reporting interval (about a second), sent from the generator to
/// the reporter and recycled.
#[derive(Debug, Clone, Default)]
pub struct Interval {
    /// Start, ns from the start of the run.
    pub start_ns: u64,
    /// End.
    pub end_ns: u64,
    /// Events in flight at its end.
    pub in_flight: u64,
    /// What happened in it: sends, and completions (whenever their events
    /// were scheduled).
    pub rec: Recorder,
}

/// One tool of the mix, over the measured events.
#[derive(Debug, Clone)]
pub struct ToolStats {
    /// Corrected latency.
    pub corrected: Histogram<u64>,
    /// Counts.
    pub tally: Tally,
    /// The first error message seen, for the report.
    pub first_error: Option<String>,
}

impl Default for ToolStats {
    fn default() -> Self {
        ToolStats {
            corrected: histogram(),
            tally: Tally::default(),
            first_error: None,
        }
    }
}

/// One segment of the timeline (warm-up or phase).
#[derive(Debug, Clone)]
pub struct SegStats {
    /// Corrected latency of its events (2 significant digits).
    pub corrected: Histogram<u64>,
    /// Counts of its events.
    pub tally: Tally,
    /// Completions (of any event) whose finish fell inside it.
    pub finished_within: u64,
}

impl Default for SegStats {
    fn default() -> Self {
        SegStats {
            corrected: coarse_histogram(),
            tally: Tally::default(),
            finished_within: 0,
        }
    }
}

impl SegStats {
    /// Accepted events not completed yet.
    pub fn outstanding(&self) -> u64 {
        self.tally.accepted.saturating_sub(self.tally.completed())
    }
}
