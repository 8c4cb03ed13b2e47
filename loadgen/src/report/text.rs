//! The report for people: every section as text, and the one-line
//! verdict that ends it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::model::Report;
use crate::units::{Bytes, Nanos, fmt_rate};

impl Report {
    /// The report for people.
    pub fn text(&self) -> String {
        let mut o = String::new();
        self.text_counts(&mut o);
        self.text_latency(&mut o);
        self.text_phases(&mut o);
        self.text_memory(&mut o);
        self.text_verdict(&mut o);
        o
    }

    /// What was asked, what was achieved, and where every event went.
    fn text_counts(&self, o: &mut String) {
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
    }

    /// Latency corrected, uncorrected and the generator's lag, then per
    /// tool.
    fn text_latency(&self, o: &mut String) {
        let us = |v: f64| Nanos(v * 1e3);
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
    }

    /// Each phase of a profile with several, and its verdict.
    fn text_phases(&self, o: &mut String) {
        let us = |v: f64| Nanos(v * 1e3);
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
    }

    /// Resident memory, the live heap when counted, the pool's slots.
    fn text_memory(&self, o: &mut String) {
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
        if let Some(mr) = &self.machine {
            let h = &mr.held;
            let _ = write!(
                o,
                "  machine   workers waited for their core {:.1} ms (wake-ups included); host steal on their cpus {:.1} ms",
                h.waited_ms, h.stolen_ms
            );
            match h.longest() {
                Some(l) => {
                    let _ = writeln!(
                        o,
                        "; held {:.1} ms in {} holds, longest {:.1} ms at {:.1} s (worker {})",
                        h.held_ms(),
                        h.holds.len(),
                        l.ms,
                        l.at_s,
                        l.worker
                    );
                }
                None => {
                    let _ = writeln!(o, "; no hold (2 ms or more lost in 10 ms)");
                }
            }
        }
    }

    /// The engine's books, the warnings, the SLO checks and the one-line
    /// verdict.
    fn text_verdict(&self, o: &mut String) {
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
                match (c.pass, c.judged) {
                    (true, _) => "ok",
                    (false, true) => "FAIL",
                    (false, false) => "over",
                },
                c.name,
                c.actual,
                c.limit
            );
        }
        if self.slo.checks.iter().any(|c| !c.judged) {
            let _ = writeln!(
                o,
                "    (latency reported, not judged: --latency-slo report)"
            );
        }
        let _ = writeln!(o, "{}", self.headline());
    }

    /// The verdict in one line, for someone seeing a run for the first
    /// time: what held (or broke), and whose latency it was.
    pub fn headline(&self) -> String {
        let lag = &self.schedule_lag_us;
        let p99 = self.latency_us.corrected.p99;
        let machine = self
            .machine
            .as_ref()
            .and_then(|m| Some((m.explains.as_ref()?, m.held.longest()?, &m.held)));
        let whose = if self.generator_behind() {
            format!(
                "the generator fell behind (lag p99 {}), so part of that latency is its own",
                Nanos(lag.p99 * 1e3)
            )
        } else if let Some((e, longest, held)) = machine {
            format!(
                "the machine held the worker's core for {:.1} ms at {:.1} s ({:.1} ms in all): that alone makes about {} events later than the {} limit, where {} are allowed, so that latency is the machine's, not the engine's",
                longest.ms,
                longest.at_s,
                held.held_ms(),
                e.late,
                e.check,
                e.allowed
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
            .filter(|c| !c.pass && c.judged)
            .map(|c| format!("{} {} (limit {})", c.name, c.actual, c.limit))
            .collect();
        let over: Vec<String> = self
            .slo
            .checks
            .iter()
            .filter(|c| !c.pass && !c.judged)
            .map(|c| format!("{} {} (limit {})", c.name, c.actual, c.limit))
            .collect();
        let verdict = if self.slo.pass && !over.is_empty() {
            format!(
                "PASS on the judged checks, latency over its bound (reported only): {}; {answered}",
                over.join(", ")
            )
        } else if self.slo.pass {
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
