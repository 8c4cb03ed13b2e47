//! The final report: what was asked and what was achieved, latency
//! corrected and uncorrected, per tool and per phase, schedule lag,
//! memory, the engine's own accounting, and the SLO verdict per check.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::driver::{Driven, Verdict};
use crate::memory;
use crate::profile::{Expect, Profile};
use crate::reporter::Reported;
use crate::stats::{Percentiles, Tally};
use crate::units::{Bytes, Nanos, fmt_rate};

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
}

/// The verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Slo {
    /// Every check held.
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
}

fn pct(part: u64, whole: u64) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

impl Report {
    /// Assembles the report and judges the SLO.
    pub fn new(parts: &Parts<'_>) -> Report {
        let Parts {
            profile,
            driven: d,
            reported,
            engine,
            ..
        } = parts;
        let t = &d.totals.tally;
        let secs = (d.window_ns.1.saturating_sub(d.window_ns.0)) as f64 / 1e9;
        let scheduled_in_window: u64 = d
            .timeline
            .iter()
            .zip(&d.segments)
            .filter(|(s, _)| s.phase.is_some() && s.end_ns <= d.window_ns.1)
            .map(|(_, st)| st.tally.scheduled)
            .sum();
        let phases: Vec<PhaseReport> = d
            .timeline
            .iter()
            .zip(&d.segments)
            .enumerate()
            .filter(|(_, (s, _))| s.start_ns < d.window_ns.1)
            .map(|(i, (s, st))| {
                let secs = (s.end_ns - s.start_ns) as f64 / 1e9;
                let phase = s.phase.map(|p| &profile.phases[p]);
                PhaseReport {
                    label: phase.map_or_else(|| "warm-up".into(), |p| p.label.clone()),
                    expect: match phase.map(|p| p.expect) {
                        None => "warmup",
                        Some(Expect::Sustain) => "sustain",
                        Some(Expect::Overload) => "overload",
                    },
                    start_s: s.start_ns as f64 / 1e9,
                    end_s: s.end_ns as f64 / 1e9,
                    target_rate: st.tally.scheduled as f64 / secs,
                    achieved_rate: st.finished_within as f64 / secs,
                    scheduled: st.tally.scheduled,
                    rejected: st.tally.rejected_by_name(),
                    errors: st.tally.failed(),
                    latency_us: Percentiles::of(&st.corrected),
                    verdict: d
                        .verdicts
                        .iter()
                        .find(|(j, _)| *j == i)
                        .map(|(_, v)| v.clone()),
                }
            })
            .collect();
        let max_sustainable_rate = profile.find_max.then(|| {
            d.verdicts
                .iter()
                .filter(|(_, v)| v.pass)
                .map(|(i, _)| d.timeline[*i].from)
                .fold(0.0, f64::max)
        });
        let memory = memory_report(profile, reported, d.window_ns.1 as f64 / 1e9);
        let tools = profile
            .tools
            .iter()
            .zip(&d.tools)
            .map(|(m, s)| {
                (
                    m.name.clone(),
                    ToolReport {
                        scheduled: s.tally.scheduled,
                        outcomes: s.tally.outcomes_by_name(),
                        rejected: s.tally.rejected_total(),
                        latency_us: Percentiles::of(&s.corrected),
                        first_error: s.first_error.clone(),
                    },
                )
            })
            .collect();
        let mut report = Report {
            profile: profile.name.clone(),
            profile_path: profile.path.display().to_string(),
            seed: profile.seed,
            target: parts.target.clone(),
            warmup_s: profile.warmup.as_secs_f64(),
            duration_s: secs,
            target_rate: scheduled_in_window as f64 / secs.max(1e-9),
            achieved_rate: d.finished_in_window as f64 / secs.max(1e-9),
            scheduled: t.scheduled,
            accepted: t.accepted,
            completed: t.completed(),
            unfinished: d.unfinished,
            outcomes: t.outcomes_by_name(),
            rejected: t.rejected_by_name(),
            latency_us: Latency {
                corrected: Percentiles::of(&d.totals.corrected),
                uncorrected: Percentiles::of(&d.totals.uncorrected),
            },
            schedule_lag_us: Percentiles::of(&d.totals.lag),
            tools,
            phases,
            max_sustainable_rate,
            run: RunTotals {
                scheduled: d.all.tally.scheduled,
                outcomes: d.all.tally.outcomes_by_name(),
                rejected: d.all.tally.rejected_by_name(),
                latency_us: Latency {
                    corrected: Percentiles::of(&d.all.corrected),
                    uncorrected: Percentiles::of(&d.all.uncorrected),
                },
            },
            memory,
            engine: EngineReport {
                workers: parts.workers,
                accepted: engine.accepted,
                outcomes: Tally {
                    outcomes: engine.outcomes.0,
                    ..Tally::default()
                }
                .outcomes_by_name(),
                books_balanced: engine.is_balanced(),
                shutdown_ms: engine.shutdown_took.as_secs_f64() * 1e3,
            },
            warnings: Vec::new(),
            slo: Slo {
                pass: true,
                checks: Vec::new(),
            },
        };
        report.warnings = warnings(profile, &report, reported);
        report.slo = judge(profile, &report, d, t);
        report
    }

    /// The report for people.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let us = |v: f64| Nanos(v * 1e3);
        let _ = writeln!(
            o,
            "loadgen: profile {} (seed {}) against {}",
            self.profile, self.seed, self.target
        );
        let _ = writeln!(
            o,
            "  rate      target {}  achieved {}  over {:.1} s after {:.1} s warm-up",
            fmt_rate(self.target_rate),
            fmt_rate(self.achieved_rate),
            self.duration_s,
            self.warmup_s
        );
        if let Some(r) = self.max_sustainable_rate {
            let _ = writeln!(
                o,
                "  maximum sustainable rate: {}",
                if r > 0.0 {
                    fmt_rate(r)
                } else {
                    "none (the first step broke the SLO)".into()
                }
            );
        }
        let _ = writeln!(
            o,
            "  events    scheduled {}  accepted {}  completed {}  unfinished {}",
            self.scheduled, self.accepted, self.completed, self.unfinished
        );
        let _ = writeln!(o, "  outcomes  {}", join(&self.outcomes));
        let _ = writeln!(o, "  rejected  {}", join(&self.rejected));
        let _ = writeln!(
            o,
            "  latency          p50       p90       p95       p99     p99.9    p99.99       max"
        );
        for (name, p) in [
            ("corrected", &self.latency_us.corrected),
            ("uncorrected", &self.latency_us.uncorrected),
            ("schedule lag", &self.schedule_lag_us),
        ] {
            let _ = writeln!(
                o,
                "  {name:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                us(p.p50).to_string(),
                us(p.p90).to_string(),
                us(p.p95).to_string(),
                us(p.p99).to_string(),
                us(p.p999).to_string(),
                us(p.p9999).to_string(),
                us(p.max).to_string()
            );
        }
        let _ = writeln!(o, "  per tool (corrected)");
        for (name, t) in &self.tools {
            let p = &t.latency_us;
            let failed: u64 = t
                .outcomes
                .iter()
                .filter(|(k, _)| **k != "ok")
                .map(|(_, v)| v)
                .sum();
            let _ = writeln!(
                o,
                "    {name:<14} n {:>9}  p50 {:>9}  p99 {:>9}  p99.9 {:>9}  max {:>9}  errors {failed}  rejected {}",
                p.count,
                us(p.p50).to_string(),
                us(p.p99).to_string(),
                us(p.p999).to_string(),
                us(p.max).to_string(),
                t.rejected
            );
            if let Some(e) = &t.first_error {
                let _ = writeln!(o, "      first error: {e}");
            }
        }
        if self.phases.len() > 1 {
            let _ = writeln!(o, "  phases");
            for p in &self.phases {
                let verdict = p.verdict.as_ref().map_or(String::new(), |v| {
                    if v.pass {
                        "  holds".into()
                    } else {
                        format!("  breaks: {}", v.reasons.join("; "))
                    }
                });
                let _ = writeln!(
                    o,
                    "    {:>6.1}-{:<6.1}s {:<9} {:<24} achieved {:>9}  p50 {:>9}  p99 {:>9}  rejected {}  errors {}{verdict}",
                    p.start_s,
                    p.end_s,
                    p.expect,
                    p.label,
                    fmt_rate(p.achieved_rate),
                    us(p.latency_us.p50).to_string(),
                    us(p.latency_us.p99).to_string(),
                    p.rejected.values().sum::<u64>(),
                    p.errors,
                );
            }
        }
        let m = &self.memory;
        let _ = writeln!(
            o,
            "  memory    start {}  after warm-up {}  peak {}  end {}  growth {:+.2}% (trend {:+.2}%, {} samples)",
            Bytes(m.start_bytes),
            Bytes(m.warmup_bytes),
            Bytes(m.peak_bytes),
            Bytes(m.end_bytes),
            m.growth_pct,
            m.trend_pct,
            m.samples
        );
        if let Some(h) = &m.heap {
            let _ = writeln!(
                o,
                "  heap      live after warm-up {}  peak {}  end {}  growth {:+.2}% (trend {:+.2}%)",
                Bytes(h.warmup_bytes),
                Bytes(h.peak_bytes),
                Bytes(h.end_bytes),
                h.growth_pct,
                h.trend_pct,
            );
        }
        if let Some(p) = &m.pool_slots {
            let _ = writeln!(
                o,
                "  slots     WASI pool slots kept: start {}  after warm-up {}  peak {}  end {}",
                p.start, p.warmup, p.peak, p.end,
            );
        }
        let e = &self.engine;
        let whose = if e.workers == 0 {
            "  server    its engine over the run (/metrics)".to_string()
        } else {
            format!("  engine    {} workers", e.workers)
        };
        let _ = writeln!(
            o,
            "{whose}, accepted {}, books {}",
            e.accepted,
            if e.books_balanced {
                "balanced"
            } else {
                "NOT BALANCED"
            }
        );
        for w in &self.warnings {
            let _ = writeln!(o, "  WARNING: {w}");
        }
        let _ = writeln!(o, "  SLO {}", if self.slo.pass { "PASS" } else { "FAIL" });
        for c in &self.slo.checks {
            let _ = writeln!(
                o,
                "    [{}] {:<28} {:>14}  limit {}",
                if c.pass { "ok" } else { "FAIL" },
                c.name,
                c.actual,
                c.limit
            );
        }
        let _ = writeln!(o, "{}", self.headline());
        o
    }

    /// Whether the generator's lag is a significant part of the latency:
    /// its p99 over 100 µs and over a fifth of the corrected p99. One
    /// rule for the warning and the one-line verdict.
    pub fn generator_behind(&self) -> bool {
        let lag = self.schedule_lag_us.p99;
        lag > 100.0 && lag > 0.2 * self.latency_us.corrected.p99
    }

    /// The verdict in one line, for someone seeing a run for the first
    /// time: what held (or broke), and whose latency it was.
    pub fn headline(&self) -> String {
        let lag = &self.schedule_lag_us;
        let p99 = self.latency_us.corrected.p99;
        let whose = if self.generator_behind() {
            format!(
                "the generator fell behind (lag p99 {}), so part of that latency is its own",
                Nanos(lag.p99 * 1e3)
            )
        } else {
            format!(
                "the generator kept to its schedule (lag p99 {}), so that latency is the engine's",
                Nanos(lag.p99 * 1e3)
            )
        };
        // The engine's count: its books cover the warm-up too.
        let answered = if self.engine.books_balanced && self.unfinished == 0 {
            format!(
                "all {} accepted events answered, each exactly once",
                self.engine.accepted
            )
        } else {
            format!(
                "{} of {} accepted events answered{}",
                self.completed,
                self.accepted,
                if self.engine.books_balanced {
                    ""
                } else {
                    " and the engine's books do NOT balance"
                }
            )
        };
        let failed: Vec<String> = self
            .slo
            .checks
            .iter()
            .filter(|c| !c.pass)
            .map(|c| format!("{} {} (limit {})", c.name, c.actual, c.limit))
            .collect();
        let verdict = if self.slo.pass {
            format!("PASS, every SLO check held: {answered}")
        } else {
            format!("FAIL: {}; {answered}", failed.join(", "))
        };
        format!(
            "{verdict}; corrected p99 {} at {}; {whose}.",
            Nanos(p99 * 1e3),
            fmt_rate(self.achieved_rate)
        )
    }
}

fn join(m: &BTreeMap<&'static str, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join("  ")
}

fn memory_report(profile: &Profile, r: &Reported, end_s: f64) -> MemoryReport {
    // Steady state only: samples taken while events drain and the
    // engine stops after the schedule are not the run's memory.
    let s: Vec<memory::Sample> = r
        .memory
        .iter()
        .copied()
        .filter(|x| x.t_s <= end_s + 0.5)
        .collect();
    let s = &s;
    let first = s.first().map_or(0, |x| x.rss_bytes);
    let warm = profile.warmup.as_secs_f64();
    let warmup_bytes = s
        .iter()
        .find(|x| x.t_s >= warm)
        .map_or(first, |x| x.rss_bytes);
    let end = s.last().map_or(0, |x| x.rss_bytes);
    let after: Vec<(f64, u64)> = s
        .iter()
        .filter(|x| x.t_s >= warm)
        .map(|x| (x.t_s, x.rss_bytes))
        .collect();
    let heap: Vec<(f64, u64)> = s
        .iter()
        .filter(|x| x.t_s >= warm)
        .filter_map(|x| Some((x.t_s, x.heap_bytes?)))
        .collect();
    let heap = match (heap.first(), heap.last()) {
        (Some(&(_, w)), Some(&(_, e))) => Some(HeapReport {
            warmup_bytes: w,
            peak_bytes: heap.iter().map(|x| x.1).max().unwrap_or(0),
            end_bytes: e,
            growth_pct: 100.0 * (e as f64 - w as f64) / w as f64,
            trend_pct: trend_pct(&heap),
        }),
        _ => None,
    };
    let slots: Vec<(f64, usize)> = s
        .iter()
        .filter_map(|x| Some((x.t_s, x.pool_slots?)))
        .collect();
    let pool_slots = slots.first().map(|&(_, start)| SlotsReport {
        start,
        warmup: slots.iter().find(|x| x.0 >= warm).map_or(start, |x| x.1),
        peak: slots.iter().map(|x| x.1).max().unwrap_or(start),
        end: slots.last().map_or(start, |x| x.1),
    });
    MemoryReport {
        start_bytes: first,
        warmup_bytes,
        peak_bytes: s.iter().map(|x| x.rss_bytes).max().unwrap_or(0),
        end_bytes: end,
        growth_pct: if warmup_bytes == 0 {
            0.0
        } else {
            100.0 * (end as f64 - warmup_bytes as f64) / warmup_bytes as f64
        },
        trend_pct: trend_pct(&after),
        samples: s.len(),
        source: r.memory_source,
        heap,
        pool_slots,
    }
}

/// See [`MemoryReport::trend_pct`]; `samples` are (seconds, bytes).
fn trend_pct(samples: &[(f64, u64)]) -> f64 {
    let n = samples.len() as f64;
    if n < 3.0 {
        return 0.0;
    }
    let (st, sy) = samples
        .iter()
        .fold((0.0, 0.0), |(a, b), &(t, y)| (a + t, b + y as f64));
    let (mt, my) = (st / n, sy / n);
    let (cov, var) = samples.iter().fold((0.0, 0.0), |(c, v), &(t, y)| {
        let dt = t - mt;
        (c + dt * (y as f64 - my), v + dt * dt)
    });
    if var == 0.0 {
        return 0.0;
    }
    let slope = cov / var;
    let t0 = samples.iter().map(|x| x.0).fold(f64::INFINITY, f64::min);
    let t1 = samples
        .iter()
        .map(|x| x.0)
        .fold(f64::NEG_INFINITY, f64::max);
    let start = my + slope * (t0 - mt);
    if start <= 0.0 {
        0.0
    } else {
        100.0 * slope * (t1 - t0) / start
    }
}

fn warnings(profile: &Profile, r: &Report, reported: &Reported) -> Vec<String> {
    let mut w = Vec::new();
    let lag = &r.schedule_lag_us;
    let p99 = r.latency_us.corrected.p99;
    if r.generator_behind() {
        if let Some(c) = profile.concurrency {
            w.push(format!(
                "sends fell behind the schedule (lag p99 {}, max {}) waiting for the concurrency limit of {c} events in flight; corrected latency charges that wait to the engine, as a connection-bound client would see it",
                Nanos(lag.p99 * 1e3),
                Nanos(lag.max * 1e3)
            ));
        } else {
            w.push(format!(
                "THE GENERATOR FELL BEHIND ITS SCHEDULE: lag p99 {} (max {}) against corrected p99 {}; part of the latency is the generator's, not the engine's. Lower the rate or give the generator a core",
                Nanos(lag.p99 * 1e3),
                Nanos(lag.max * 1e3),
                Nanos(p99 * 1e3)
            ));
        }
    }
    if r.memory.samples < 3 {
        w.push(format!(
            "only {} memory samples: the run is too short for the growth figure to mean much",
            r.memory.samples
        ));
    }
    if let Some(e) = &reported.hlog_error {
        w.push(e.clone());
    }
    if r.unfinished > 0 {
        w.push(format!(
            "{} accepted events did not complete within the drain timeout of {}",
            r.unfinished,
            humantime::format_duration(profile.drain_timeout)
        ));
    }
    w
}

fn judge(profile: &Profile, r: &Report, d: &Driven, t: &Tally) -> Slo {
    let slo = &profile.slo;
    let mut checks = Vec::new();
    let mut check = |name: String, limit: String, actual: String, pass: bool| {
        checks.push(Check {
            name,
            limit,
            actual,
            pass,
        })
    };
    let us = |v: f64| Nanos(v * 1e3).to_string();
    if profile.find_max {
        let best = r.max_sustainable_rate.unwrap_or(0.0);
        match slo.min_sustainable_rate {
            Some(min) => check(
                "max sustainable rate".into(),
                format!(">= {}", fmt_rate(min)),
                fmt_rate(best),
                best >= min,
            ),
            None => check(
                "max sustainable rate".into(),
                "a step holds".into(),
                fmt_rate(best),
                best > 0.0,
            ),
        }
    } else {
        for (key, _, limit) in &slo.latency {
            let v = r.latency_us.corrected.get(key).unwrap_or(f64::INFINITY);
            check(
                format!("corrected {key}"),
                format!("<= {}", humantime::format_duration(*limit)),
                us(v),
                v * 1e3 <= limit.as_nanos() as f64,
            );
        }
        if let Some(max) = slo.max_error_pct {
            let bad = t.failed() + d.unfinished;
            let p = pct(bad, t.completed() + d.unfinished);
            check(
                "errors".into(),
                format!("<= {max}%"),
                format!("{bad} ({p:.3}%)"),
                p <= max,
            );
        }
        if let Some(max) = slo.max_shed_pct {
            let p = pct(t.rejected_total(), t.scheduled);
            check(
                "rejected".into(),
                format!("<= {max}%"),
                format!("{} ({p:.3}%)", t.rejected_total()),
                p <= max,
            );
        }
        if let Some(min) = slo.min_rate_pct {
            for p in r.phases.iter().filter(|p| p.expect == "sustain") {
                let got = pct_f(p.achieved_rate, p.target_rate);
                check(
                    format!("rate of {}", p.label),
                    format!(">= {min}% of target"),
                    format!("{} ({got:.2}%)", fmt_rate(p.achieved_rate)),
                    got >= min,
                );
            }
        }
    }
    if let Some(max) = slo.max_memory_growth_pct {
        let (g, e) = (r.memory.trend_pct, r.memory.growth_pct);
        check(
            "memory growth after warm-up (trend)".into(),
            format!("<= {max}%"),
            format!("{g:+.2}% (end point {e:+.2}%)"),
            g <= max,
        );
    }
    check(
        "every accepted event answered".into(),
        "0 unfinished".into(),
        d.unfinished.to_string(),
        d.unfinished == 0,
    );
    check(
        "engine books balanced".into(),
        "accepted == outcomes".into(),
        format!(
            "{} == {}",
            r.engine.accepted,
            r.engine.outcomes.values().sum::<u64>()
        ),
        r.engine.books_balanced,
    );
    Slo {
        pass: checks.iter().all(|c| c.pass),
        checks,
    }
}

fn pct_f(part: f64, whole: f64) -> f64 {
    if whole <= 0.0 {
        100.0
    } else {
        100.0 * part / whole
    }
}
