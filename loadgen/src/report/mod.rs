//! The final report: what was asked and what was achieved, latency
//! corrected and uncorrected, per tool and per phase, schedule lag,
//! memory, the engine's own accounting, and the SLO verdict per check.
//! The types and their assembly are here; the text people read in
//! `text.rs`, the SLO verdict and the warnings in `verdict.rs`.

use crate::memory;
use crate::profile::{Expect, Profile};
use crate::progress::Reported;
use crate::stats::{Percentiles, Tally};

mod model;
mod text;
mod verdict;

pub use self::model::*;

use self::verdict::{slo, warnings};

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
            machine: None,
            warnings: Vec::new(),
            slo: Slo {
                pass: true,
                checks: Vec::new(),
            },
        };
        report.warnings = warnings(profile, &report, reported);
        report.slo = slo(profile, &report, d, t);
        report.machine = parts.held.map(|h| verdict::machine(profile, &report, h));
        report
    }
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
