//! `loadgen machine`: what this machine imposes on the generator's core,
//! measured from there with the generator's placement and priority. A
//! profile whose lag or latency bounds are below these figures asks for
//! more than the machine gives.
//!
//! Two probes, one after the other, on the generator's core: a thread with
//! the generator's priority that sleeps for a period and records how late
//! it wakes (what the generator's pacer sleeps through), and a thread at
//! normal priority that spins on the clock and records every gap between
//! two reads (anything that took the core: interrupts, kernel threads, the
//! hypervisor). Run it idle, and beside a load (`loadgen run … &`).

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::placement::{Entered, Placement};
use crate::target::default_workers;

/// Percentiles of one probe, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// 99.99th percentile.
    pub p9999: u64,
    /// The largest.
    pub max: u64,
}

impl Spread {
    fn of(h: &Histogram<u64>) -> Spread {
        Spread {
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            max: h.max(),
        }
    }
}

/// What the probes saw.
#[derive(Debug, Clone)]
pub struct Probed {
    /// Where they ran (`None`: no core to spare, so anywhere).
    pub placement: Option<Entered>,
    /// The sleep period.
    pub period: Duration,
    /// How late each sleep woke.
    pub late: Spread,
    /// Gaps between consecutive clock reads while spinning.
    pub gaps: Spread,
    /// Gaps of 100 µs or more, and of 1 ms or more.
    pub gaps_over: (u64, u64),
    /// How long each probe ran.
    pub each: Duration,
}

/// Runs both probes for `each`, on the core the generator of an embedded
/// run would get, at its priority.
pub fn probe(each: Duration, period: Duration) -> Probed {
    let (placement, late) = std::thread::scope(|s| {
        s.spawn(|| {
            let placement = Placement::plan(default_workers()).map(|p| p.enter());
            let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1));
            let mut late = crate::stats::histogram();
            let start = Instant::now();
            let mut next = start + period;
            while start.elapsed() < each {
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
                let now = Instant::now();
                late.saturating_record(now.saturating_duration_since(next).as_nanos() as u64);
                next += period;
                if next < now {
                    next = now + period;
                }
            }
            (placement, Spread::of(&late))
        })
        .join()
        .expect("the probe does not panic")
    });
    let cpu = placement.as_ref().map(|e| e.cpu);
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(id) = cpu {
                core_affinity::set_for_current(core_affinity::CoreId { id });
            }
            let mut gaps = crate::stats::histogram();
            let (mut over_100us, mut over_1ms) = (0, 0);
            let start = Instant::now();
            let mut last = start;
            while last.duration_since(start) < each {
                let now = Instant::now();
                let gap = now.duration_since(last).as_nanos() as u64;
                gaps.saturating_record(gap);
                over_100us += u64::from(gap >= 100_000);
                over_1ms += u64::from(gap >= 1_000_000);
                last = now;
            }
            Probed {
                placement,
                period,
                late,
                gaps: Spread::of(&gaps),
                gaps_over: (over_100us, over_1ms),
                each,
            }
        })
        .join()
        .expect("the probe does not panic")
    })
}

impl std::fmt::Display for Probed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let us = |ns: u64| format!("{:.1}µs", ns as f64 / 1e3);
        match &self.placement {
            Some(e) => writeln!(f, "probing as the {e}")?,
            None => writeln!(
                f,
                "probing on any core (no core to spare for the generator)"
            )?,
        }
        let s = self.late;
        writeln!(
            f,
            "  sleeps of {}, woken late by   p50 {}  p99 {}  p99.9 {}  p99.99 {}  max {}",
            us(self.period.as_nanos() as u64),
            us(s.p50),
            us(s.p99),
            us(s.p999),
            us(s.p9999),
            us(s.max)
        )?;
        let g = self.gaps;
        writeln!(
            f,
            "  spinning (normal priority), gaps between reads   p99 {}  p99.9 {}  p99.99 {}  max {}",
            us(g.p99),
            us(g.p999),
            us(g.p9999),
            us(g.max)
        )?;
        write!(
            f,
            "  interruptions of 100µs or more: {} ({:.1}/s), of 1ms or more: {}, in {:.0} s of spinning",
            self.gaps_over.0,
            self.gaps_over.0 as f64 / self.each.as_secs_f64(),
            self.gaps_over.1,
            self.each.as_secs_f64()
        )
    }
}
