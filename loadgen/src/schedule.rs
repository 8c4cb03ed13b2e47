//! The open-loop schedule: the intended send time of every event, computed
//! from the profile alone (never from how fast the engine answers), and
//! the seeded random source the workload draws from.

use crate::profile::{Expect, Profile};

/// One stretch of the timeline: the warm-up, or one of the profile's
/// phases.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Start, in nanoseconds from the start of the run.
    pub start_ns: u64,
    /// End (exclusive).
    pub end_ns: u64,
    /// Rate at the start, events per second.
    pub from: f64,
    /// Rate at the end.
    pub to: f64,
    /// Burst size and period in nanoseconds.
    pub burst: Option<(u32, u64)>,
    /// The profile phase this is (`None`: warm-up).
    pub phase: Option<usize>,
    /// Whether its events count toward the SLO.
    pub measured: bool,
}

impl Segment {
    fn secs(&self) -> f64 {
        (self.end_ns - self.start_ns) as f64 / 1e9
    }

    /// Offset (ns into the segment) of base event `n`, or `None` past its end.
    fn base_offset(&self, n: u64) -> Option<u64> {
        let n = n as f64;
        let secs = if self.from == self.to {
            n / self.from
        } else {
            // Events by time t: from·t + (to−from)·t²/(2·D); solve for t.
            let a = (self.to - self.from) / (2.0 * self.secs());
            let b = self.from;
            let disc = b * b + 4.0 * a * n;
            if disc < 0.0 {
                return None;
            }
            (-b + disc.sqrt()) / (2.0 * a)
        };
        let ns = secs * 1e9;
        let ns = ns.round();
        (ns.is_finite() && ns >= 0.0 && ns < (self.end_ns - self.start_ns) as f64)
            .then_some(ns as u64)
    }
}

/// Intended send times, in order.
#[derive(Debug, Clone)]
pub struct Schedule {
    segments: Vec<Segment>,
    cur: usize,
    /// Next base event of the current segment, and its time.
    n: u64,
    next_base: Option<u64>,
    /// Next burst of the current segment (1-based), its time, and how many
    /// of its events are still to come.
    k: u64,
    next_burst: Option<u64>,
    burst_left: u32,
}

impl Schedule {
    /// The schedule of a profile: its warm-up (at the first phase's rate)
    /// and then its phases.
    pub fn new(profile: &Profile) -> Schedule {
        let mut segments = Vec::with_capacity(profile.phases.len() + 1);
        let mut t = 0u64;
        if !profile.warmup.is_zero() {
            let first = &profile.phases[0];
            let end = t + profile.warmup.as_nanos() as u64;
            segments.push(Segment {
                start_ns: t,
                end_ns: end,
                from: first.from,
                to: first.from,
                burst: None,
                phase: None,
                measured: false,
            });
            t = end;
        }
        for (i, p) in profile.phases.iter().enumerate() {
            let end = t + p.duration.as_nanos() as u64;
            segments.push(Segment {
                start_ns: t,
                end_ns: end,
                from: p.from,
                to: p.to,
                burst: p.burst.map(|b| (b.size, b.every.as_nanos() as u64)),
                phase: Some(i),
                measured: p.expect == Expect::Sustain,
            });
            t = end;
        }
        let mut s = Schedule {
            segments,
            cur: 0,
            n: 0,
            next_base: None,
            k: 1,
            next_burst: None,
            burst_left: 0,
        };
        s.enter(0);
        s
    }

    fn enter(&mut self, i: usize) {
        self.cur = i;
        self.n = 0;
        self.k = 1;
        let Some(seg) = self.segments.get(i) else {
            self.next_base = None;
            self.next_burst = None;
            return;
        };
        self.next_base = seg.base_offset(0).map(|o| seg.start_ns + o);
        self.next_burst = seg.burst.and_then(|(size, every)| {
            self.burst_left = size;
            let t = seg.start_ns + every;
            (t < seg.end_ns).then_some(t)
        });
    }

    /// The segments, warm-up first.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The segment an intended time falls in.
    pub fn segment_of(&self, t_ns: u64) -> usize {
        self.segments
            .partition_point(|s| s.start_ns <= t_ns)
            .saturating_sub(1)
    }

    /// End of the schedule, ns.
    pub fn end_ns(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.end_ns)
    }

    /// Ends the schedule after segment `i` (a ramp that found its maximum).
    pub fn stop_after(&mut self, i: usize) {
        self.segments.truncate(i + 1);
        if self.cur > i {
            self.enter(self.segments.len());
        }
    }
}

impl Iterator for Schedule {
    type Item = (u64, usize);

    /// The next intended send time (ns from the start) and its segment.
    fn next(&mut self) -> Option<(u64, usize)> {
        loop {
            if self.cur >= self.segments.len() {
                return None;
            }
            match (self.next_base, self.next_burst) {
                (None, None) => {
                    let next = self.cur + 1;
                    self.enter(next);
                }
                (Some(b), None) => {
                    self.n += 1;
                    let seg = &self.segments[self.cur];
                    self.next_base = seg.base_offset(self.n).map(|o| seg.start_ns + o);
                    return Some((b, self.cur));
                }
                (Some(b), Some(u)) if b < u => {
                    self.n += 1;
                    let seg = &self.segments[self.cur];
                    self.next_base = seg.base_offset(self.n).map(|o| seg.start_ns + o);
                    return Some((b, self.cur));
                }
                (_, Some(u)) => {
                    self.burst_left -= 1;
                    if self.burst_left == 0 {
                        let seg = &self.segments[self.cur];
                        let (size, every) = seg.burst.expect("a burst time implies a burst");
                        self.k += 1;
                        self.burst_left = size;
                        let t = seg.start_ns + self.k * every;
                        self.next_burst = (t < seg.end_ns).then_some(t);
                    }
                    return Some((u, self.cur));
                }
            }
        }
    }
}

/// SplitMix64: a tiny, well-mixed generator whose output for a seed never
/// changes (a checked-in seed must give the same workload forever, which
/// a dependency's unspecified algorithm would not promise).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-32
    /// for the small `n` a profile uses).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// A weighted choice over a few items (weights in percent).
#[derive(Debug, Clone)]
pub struct Weighted {
    cumulative: Vec<u64>,
}

impl Weighted {
    /// From weights (any positive total).
    pub fn new(weights: impl IntoIterator<Item = u32>) -> Weighted {
        let mut sum = 0u64;
        let cumulative = weights
            .into_iter()
            .map(|w| {
                sum += u64::from(w);
                sum
            })
            .collect();
        Weighted { cumulative }
    }

    /// An index drawn with the weights' probabilities.
    #[inline]
    pub fn pick(&self, rng: &mut Rng) -> usize {
        let total = *self.cumulative.last().unwrap_or(&0);
        if total == 0 {
            return 0;
        }
        let x = rng.below(total);
        self.cumulative.partition_point(|&c| c <= x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn profile(rate: &str) -> Profile {
        let text = format!(
            "seed = 1\nwarmup = \"1s\"\n{rate}\n[[tools]]\nname = \"echo\"\nweight = 100\n"
        );
        Profile::from_toml_str(&text, Path::new("t.toml")).unwrap()
    }

    fn times(p: &Profile) -> Vec<(u64, usize)> {
        let mut s = Schedule::new(p);
        std::iter::from_fn(|| s.next()).collect()
    }

    #[test]
    fn constant_rate_is_exact() {
        let p = profile("duration = \"2s\"\n[rate]\nshape = \"constant\"\nrate = \"1k/s\"");
        let t = times(&p);
        assert_eq!(t.len(), 3000);
        assert_eq!(t[0], (0, 0));
        assert_eq!(t[1000], (1_000_000_000, 1));
        assert_eq!(t[2999].0, 2_999_000_000);
        assert!(t.windows(2).all(|w| w[1].0 - w[0].0 == 1_000_000));
    }

    #[test]
    fn ramp_integrates_the_rate() {
        let p =
            profile("duration = \"10s\"\n[rate]\nshape = \"ramp\"\nfrom = \"1k/s\"\nto = \"3k/s\"");
        let t = times(&p);
        // 1000 warm-up events, then (1k + 3k) / 2 × 10 s.
        assert!((t.len() as i64 - 21_000).abs() <= 1, "{}", t.len());
        let gaps: Vec<u64> = t.windows(2).map(|w| w[1].0 - w[0].0).collect();
        assert!(gaps[1500] > gaps[gaps.len() - 10], "the rate rises");
    }

    #[test]
    fn bursts_come_on_top_of_the_rate() {
        let p = profile(
            "duration = \"3s\"\n[rate]\nshape = \"bursts\"\nrate = \"100/s\"\nsize = 50\nevery = \"1s\"",
        );
        let t = times(&p);
        // warm-up 100 + base 300 + bursts at 1 s and 2 s into the phase.
        assert_eq!(t.len(), 100 + 300 + 100);
        let at = |ns: u64| t.iter().filter(|x| x.0 == ns).count();
        assert_eq!(
            at(2_000_000_000),
            51,
            "a burst plus the base event at the same instant"
        );
        assert!(t.windows(2).all(|w| w[0].0 <= w[1].0), "in order");
    }

    #[test]
    fn steps_and_stopping() {
        let p = profile(
            "[rate]\nshape = \"steps\"\nstart = \"1k/s\"\nstep = \"1k/s\"\nmax = \"3k/s\"\nstep_duration = \"1s\"",
        );
        let mut s = Schedule::new(&p);
        assert_eq!(s.segments().len(), 4);
        let mut n = 0;
        while let Some((_, seg)) = s.next() {
            n += 1;
            if seg == 2 {
                s.stop_after(2);
            }
        }
        assert_eq!(n, 1000 + 1000 + 2000);
    }

    #[test]
    fn rng_is_stable_and_weighted_choice_follows_weights() {
        let mut r = Rng::new(42);
        assert_eq!(r.next_u64(), 13679457532755275413);
        let w = Weighted::new([70, 20, 10]);
        let mut hits = [0u32; 3];
        for _ in 0..100_000 {
            hits[w.pick(&mut r)] += 1;
        }
        assert!((hits[0] as i32 - 70_000).abs() < 1500, "{hits:?}");
        assert!((hits[2] as i32 - 10_000).abs() < 800, "{hits:?}");
    }
}
