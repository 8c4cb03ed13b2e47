//! Judging a run: the SLO checks the profile asks for, the rule for "the
//! generator fell behind", and the warnings about what makes a run's
//! figures less than they seem.

use super::model::{Check, Explained, MachineReport, Report, Slo, pct};
use crate::driver::Driven;
use crate::profile::Profile;
use crate::progress::Reported;
use crate::stats::Tally;
use crate::units::{Nanos, fmt_rate};

impl Report {
    /// Whether the generator's lag is a significant part of the latency:
    /// its p99 over 100 µs and over a fifth of the corrected p99. One
    /// rule for the warning and the one-line verdict.
    pub fn generator_behind(&self) -> bool {
        let lag = self.schedule_lag_us.p99;
        lag > 100.0 && lag > 0.2 * self.latency_us.corrected.p99
    }
}

/// What the machine took, and the first failed latency check its holds
/// alone explain: they make more events later than the check's limit than
/// its percentile allows.
pub(super) fn machine(profile: &Profile, r: &Report, held: &crate::held::Held) -> MachineReport {
    let explains = profile.slo.latency.iter().find_map(|(key, q, limit)| {
        let name = format!("{LATENCY}{key}");
        let failed = r.slo.checks.iter().any(|c| c.name == name && !c.pass);
        if !failed {
            return None;
        }
        let late = held.late_past(*limit, r.achieved_rate, r.engine.workers);
        let allowed = (r.completed as f64 * (1.0 - q / 100.0)).floor() as u64;
        (late > allowed).then_some(Explained {
            check: name,
            late,
            allowed,
        })
    });
    MachineReport {
        held: held.clone(),
        explains,
    }
}

pub(super) fn warnings(profile: &Profile, r: &Report, reported: &Reported) -> Vec<String> {
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
    // Refusals in a sustained run: the rate asked is above what the engine
    // holds here (a queue filled), which the counts alone do not say.
    let refused: u64 = ["full", "shed", "inflight_limit"]
        .iter()
        .filter_map(|k| r.rejected.get(k))
        .sum();
    if refused > 0 && !profile.find_max && profile.concurrency.is_none() {
        w.push(format!(
            "the engine refused {refused} of {} events ({:.1}%) for load (full, shed or over the in-flight limit): {} is more than it sustains on this machine; `loadgen run ramp` finds the highest rate whose p99 holds",
            r.scheduled,
            100.0 * refused as f64 / r.scheduled.max(1) as f64,
            fmt_rate(r.target_rate)
        ));
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

/// How a latency check's name begins.
const LATENCY: &str = "corrected ";

pub(super) fn slo(profile: &Profile, r: &Report, d: &Driven, t: &Tally) -> Slo {
    let slo = &profile.slo;
    let mut checks = Vec::new();
    let mut check = |name: String, limit: String, actual: String, pass: bool| {
        checks.push(Check {
            name,
            limit,
            actual,
            pass,
            judged: true,
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
                format!("{LATENCY}{key}"),
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
    // Reported, not judged: a tail a machine's stall can move. A run with
    // no latency sample at all (nothing answered) is still judged.
    if !slo.latency_judged && r.latency_us.corrected.count > 0 {
        for c in checks.iter_mut().filter(|c| c.name.starts_with(LATENCY)) {
            c.judged = false;
        }
    }
    Slo {
        pass: checks.iter().all(|c| c.pass || !c.judged),
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
