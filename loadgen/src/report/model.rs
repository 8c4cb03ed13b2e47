//! What a run's report holds: latencies overall, per tool and per phase,
//! memory, slots, the engine's books, the SLO checks (a leaf: building,
//! judging and printing a report all name these).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::driver::{Driven, Verdict};
use crate::memory;
use crate::profile::Profile;
use crate::progress::Reported;
use crate::stats::Percentiles;

/// Corrected and uncorrected latency.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Completion − intended send time (what a user waiting on the
    /// schedule sees; coordinated omission corrected).
    pub corrected: Percentiles,
    /// Completion − actual send time.
    pub uncorrected: Percentiles,
}

/// One tool of the mix (measured events).
#[derive(Debug, Clone, Serialize)]
pub struct ToolReport {
    /// Events scheduled for it.
    pub scheduled: u64,
    /// Completions by outcome.
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Refused events.
    pub rejected: u64,
    /// Corrected latency.
    pub latency_us: Percentiles,
    /// The first error seen, if any.
    pub first_error: Option<String>,
}

/// One phase (or the warm-up).
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// Its label.
    pub label: String,
    /// `warmup`, `sustain` or `overload`.
    pub expect: &'static str,
    /// Start and end, seconds from the start.
    pub start_s: f64,
    /// End.
    pub end_s: f64,
    /// Events per second asked for.
    pub target_rate: f64,
    /// Completions per second that finished inside the phase.
    pub achieved_rate: f64,
    /// Events scheduled.
    pub scheduled: u64,
    /// Refused, by reason.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Completions that were not `Ok`.
    pub errors: u64,
    /// Corrected latency (2 significant digits).
    pub latency_us: Percentiles,
    /// The step verdict, for profiles that find the maximum rate.
    pub verdict: Option<Verdict>,
}

/// Memory over the run.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    /// Resident bytes at the start of the run (engine and tools up).
    pub start_bytes: u64,
    /// At the end of the warm-up.
    pub warmup_bytes: u64,
    /// Highest sample.
    pub peak_bytes: u64,
    /// Last sample.
    pub end_bytes: u64,
    /// (end − end of warm-up) / end of warm-up, in percent.
    pub growth_pct: f64,
    /// The rise of a least-squares line through the samples after the
    /// warm-up, over the measured window, in percent of where the line
    /// starts: a leak shows as a steady rise, while the allocator's and
    /// the pool's swings of a few MiB either way average out (the end
    /// point alone can land on either side of one).
    pub trend_pct: f64,
    /// Samples taken (one per second).
    pub samples: usize,
    /// Where they were read.
    pub source: Option<memory::Source>,
    /// Live heap bytes (`heap-count` builds only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heap: Option<HeapReport>,
    /// WASI pool slots touched and kept (embedded targets only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_slots: Option<SlotsReport>,
}

/// WASI pool slots touched and kept (in use or warm) over the run: each
/// keeps the pages its instances used resident, so a slot touched for the
/// first time after the warm-up shows as resident growth.
#[derive(Debug, Clone, Serialize)]
pub struct SlotsReport {
    /// At the start of the run.
    pub start: usize,
    /// At the end of the warm-up.
    pub warmup: usize,
    /// Highest sample.
    pub peak: usize,
    /// Last sample.
    pub end: usize,
}

/// Live heap bytes over the run, counted by the `heap-count` build's
/// allocator: growth here is memory the program holds; resident growth
/// without it is the allocator keeping freed pages.
#[derive(Debug, Clone, Serialize)]
pub struct HeapReport {
    /// At the end of the warm-up.
    pub warmup_bytes: u64,
    /// Highest sample.
    pub peak_bytes: u64,
    /// Last sample.
    pub end_bytes: u64,
    /// (end − end of warm-up) / end of warm-up, in percent.
    pub growth_pct: f64,
    /// As [`MemoryReport::trend_pct`], of the live bytes.
    pub trend_pct: f64,
}

/// The engine's own accounting after shutdown.
#[derive(Debug, Clone, Serialize)]
pub struct EngineReport {
    /// Worker threads (0: a server target, whose figures are its
    /// `/metrics` deltas over the run).
    pub workers: usize,
    /// Events it accepted.
    pub accepted: u64,
    /// Its outcomes by kind.
    pub outcomes: BTreeMap<&'static str, u64>,
    /// `accepted == sum of outcomes`.
    pub books_balanced: bool,
    /// How long shutdown took, ms.
    pub shutdown_ms: f64,
}

/// One SLO check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// The threshold, as written.
    pub limit: String,
    /// What was measured.
    pub actual: String,
    /// Whether it held.
    pub pass: bool,
    /// Whether it decides the verdict (false: reported only).
    pub judged: bool,
}

/// The verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Slo {
    /// Every judged check held.
    pub pass: bool,
    /// The checks.
    pub checks: Vec<Check>,
}

/// Everything about a run (`--json` writes this).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The profile's name.
    pub profile: String,
    /// Its file.
    pub profile_path: String,
    /// Its seed.
    pub seed: u64,
    /// What was driven.
    pub target: String,
    /// Warm-up, seconds.
    pub warmup_s: f64,
    /// Measured length as run, seconds (shorter when a step profile stopped).
    pub duration_s: f64,
    /// Events per second the measured window asked for.
    pub target_rate: f64,
    /// Completions per second that finished inside the measured window.
    pub achieved_rate: f64,
    /// Events scheduled in the measured (`sustain`) phases.
    pub scheduled: u64,
    /// Accepted.
    pub accepted: u64,
    /// Completed.
    pub completed: u64,
    /// Accepted but not completed within the drain timeout.
    pub unfinished: u64,
    /// Completions by outcome (measured events).
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Refusals by reason (measured events).
    pub rejected: BTreeMap<&'static str, u64>,
    /// Latency of the measured events, µs.
    pub latency_us: Latency,
    /// How far behind its schedule the generator sent (measured events), µs.
    pub schedule_lag_us: Percentiles,
    /// Per tool (measured events).
    pub tools: BTreeMap<String, ToolReport>,
    /// Per phase, warm-up first.
    pub phases: Vec<PhaseReport>,
    /// For step profiles with `find_max`: the highest step rate that held.
    pub max_sustainable_rate: Option<f64>,
    /// The whole run, warm-up and overload phases included.
    pub run: RunTotals,
    /// Memory.
    pub memory: MemoryReport,
    /// The engine's accounting.
    pub engine: EngineReport,
    /// What the machine took from the workers (embedded targets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine: Option<MachineReport>,
    /// Things a reader must know before trusting the figures.
    pub warnings: Vec<String>,
    /// The verdict.
    pub slo: Slo,
}

/// Totals over the whole run.
#[derive(Debug, Clone, Serialize)]
pub struct RunTotals {
    /// Events scheduled.
    pub scheduled: u64,
    /// Completions by outcome.
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Refusals by reason.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Latency, µs.
    pub latency_us: Latency,
}

/// Inputs the report is made of.
#[derive(Debug)]
pub struct Parts<'a> {
    /// The profile run.
    pub profile: &'a Profile,
    /// The target's label.
    pub target: String,
    /// Its worker count.
    pub workers: usize,
    /// The generator's records.
    pub driven: &'a Driven,
    /// The reporter's records.
    pub reported: &'a Reported,
    /// The engine's accounting.
    pub engine: &'a toolplane_core::Report,
    /// What the machine took from the workers (embedded targets).
    pub held: Option<&'a crate::held::Held>,
}

/// What the machine took from the engine's workers, and whether that alone
/// explains a failed latency check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MachineReport {
    /// The holds.
    #[serde(flatten)]
    pub held: crate::held::Held,
    /// The first failed latency check the holds alone explain.
    pub explains: Option<Explained>,
}

/// A failed latency check the machine's holds explain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explained {
    /// The check's name.
    pub check: String,
    /// About how many events the holds alone made later than its limit.
    pub late: u64,
    /// How many the percentile allows.
    pub allowed: u64,
}

pub(crate) fn pct(part: u64, whole: u64) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}
