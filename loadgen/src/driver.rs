//! The generator: one thread that sends every event at its intended time
//! (open loop), takes completions back, and records latency from the
//! intended send time (corrected, as wrk2) and from the actual one.
//!
//! Pacing: the thread sets its timer slack to 1 ns (the default 50 µs
//! would make every sleep late), sleeps until just before the next send
//! time (less its measured wake-up latency), then spins on the clock for
//! the rest, so sends leave close to their time without a coarse sleep and
//! without a core burnt on polling: on a machine whose cores the workers
//! also use, a polling generator takes their time. Its own lag behind the
//! schedule is recorded per send, so a slow generator shows as lag and is
//! never mistaken for a slow engine.
//!
//! Against a server over the network ([`Sink::quantum_ns`]), sends due
//! within [`REMOTE_QUANTUM_NS`] of each other leave together after one
//! sleep instead of one sleep and a spin each: at 30k/s those cost the
//! client about as much CPU as the server spent on the calls, on the same
//! cores. Each event's lateness still counts in its schedule lag and its
//! corrected latency.

use std::time::Duration;

use toolplane_core::{
    Completion, Event, Outcome, OutcomeKind, Producer, RejectReason, ToolId, ToolTable,
};

use crate::profile::Profile;
use crate::remote::{self, Answer};
use crate::schedule::{Schedule, Segment};
use crate::stats::{Interval, Recorder, SegStats, ToolStats};
use crate::workload::Workload;

/// The generator spins (rather than sleeps) before a send for its
/// measured wake-up latency, but never longer than this: a longer wait is
/// a preemption, not timer latency, and spinning through it would take
/// the core from a worker.
pub const SPIN_NS: u64 = 20_000;

/// How long the generator sleeps between checks while the concurrency
/// limit holds its sends back.
pub const LIMIT_POLL_NS: u64 = 20_000;

/// Sends to a server over the network are paced to this granularity
/// (100 µs, against calls that take milliseconds there).
pub const REMOTE_QUANTUM_NS: u64 = 100_000;

/// What the generator sends to: the engine in this process (a
/// [`Producer`]) or a running server ([`remote::Client`]).
pub trait Sink {
    /// Pacing granularity: sends due within this many nanoseconds of
    /// each other may leave together (0: each at its time).
    fn quantum_ns(&self) -> u64 {
        0
    }

    /// Sends one event now.
    ///
    /// # Errors
    ///
    /// The limit that refused it at once.
    fn submit(&mut self, event: Event) -> Result<(), RejectReason>;
    /// Hands every answer received so far to `f`; how many.
    fn drain(&mut self, f: &mut dyn FnMut(Answer)) -> usize;
}

impl Sink for Producer {
    #[inline]
    fn submit(&mut self, event: Event) -> Result<(), RejectReason> {
        Producer::submit(self, event).map_err(|r| r.reason())
    }

    #[inline]
    fn drain(&mut self, f: &mut dyn FnMut(Answer)) -> usize {
        Producer::drain(self, |c| f(Answer::Done(c)))
    }
}

impl Sink for remote::Client {
    fn quantum_ns(&self) -> u64 {
        REMOTE_QUANTUM_NS
    }

    fn submit(&mut self, event: Event) -> Result<(), RejectReason> {
        remote::Client::submit(self, event)
    }

    fn drain(&mut self, f: &mut dyn FnMut(Answer)) -> usize {
        remote::Client::drain(self, f)
    }
}

/// Sleeps that wake close to their deadline: tracks how late the kernel
/// wakes this thread (a moving average) and sleeps that much less.
/// With a quantum, sleeps at least that long and never spins.
#[derive(Debug)]
struct Pacer {
    late_ns: u64,
    quantum_ns: u64,
}

impl Pacer {
    fn new(quantum_ns: u64) -> Pacer {
        // Best effort: without it sleeps are late by the default slack,
        // which the moving average then absorbs.
        let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1));
        Pacer {
            late_ns: 10_000,
            quantum_ns,
        }
    }

    /// Sleeps until about `until`, waking early by the expected lateness;
    /// `now` reads the clock.
    fn sleep_until(&mut self, now: u64, until: u64, clock: impl Fn() -> u64) {
        let budget = until.saturating_sub(now);
        if self.quantum_ns > 0 {
            std::thread::sleep(Duration::from_nanos(budget.max(self.quantum_ns)));
            return;
        }
        let spin = self.late_ns.min(SPIN_NS);
        if budget <= spin {
            std::hint::spin_loop();
            return;
        }
        let ask = budget - spin;
        std::thread::sleep(Duration::from_nanos(ask));
        let late = (clock() - now).saturating_sub(ask);
        // EWMA with weight 1/8, bounded so one long preemption does not
        // make every later sleep short.
        let late = late.min(1_000_000);
        self.late_ns = (self.late_ns * 7 + late) / 8;
    }
}

/// Reporting interval.
pub const INTERVAL_NS: u64 = 1_000_000_000;

/// Why a step did not hold, or that it did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Verdict {
    /// Whether every check held.
    pub pass: bool,
    /// What broke, in words.
    pub reasons: Vec<String>,
}

/// Judges one phase against the profile's SLO: latency thresholds on its
/// corrected latency, achieved rate, rejections, errors, and (while the
/// run goes on) events still outstanding.
pub fn judge_segment(profile: &Profile, seg: &Segment, s: &SegStats) -> Verdict {
    let slo = &profile.slo;
    let mut reasons = Vec::new();
    for (key, q, limit) in &slo.latency {
        if s.corrected.is_empty() {
            break;
        }
        let v = if *q >= 100.0 {
            s.corrected.max()
        } else {
            s.corrected.value_at_quantile(q / 100.0)
        };
        if v > limit.as_nanos() as u64 {
            reasons.push(format!(
                "{key} {} > {}",
                crate::units::Nanos(v as f64),
                humantime::format_duration(*limit)
            ));
        }
    }
    let secs = (seg.end_ns - seg.start_ns) as f64 / 1e9;
    let target = s.tally.scheduled as f64 / secs;
    let achieved = s.finished_within as f64 / secs;
    let min_rate = slo.min_rate_pct.unwrap_or(99.0);
    if target > 0.0 && achieved < target * min_rate / 100.0 {
        reasons.push(format!(
            "achieved {} < {min_rate}% of {}",
            crate::units::fmt_rate(achieved),
            crate::units::fmt_rate(target)
        ));
    }
    let t = &s.tally;
    let shed_pct = 100.0 * t.rejected_total() as f64 / t.scheduled.max(1) as f64;
    if shed_pct > slo.max_shed_pct.unwrap_or(0.0) {
        reasons.push(format!("{} rejected ({shed_pct:.2}%)", t.rejected_total()));
    }
    let err_pct = 100.0 * t.failed() as f64 / t.completed().max(1) as f64;
    if err_pct > slo.max_error_pct.unwrap_or(0.0) {
        reasons.push(format!("{} errors ({err_pct:.2}%)", t.failed()));
    }
    if s.outstanding() * 1000 > t.accepted.max(1) {
        reasons.push(format!("{} events still in flight", s.outstanding()));
    }
    Verdict {
        pass: reasons.is_empty(),
        reasons,
    }
}

/// What the generator hands back.
#[derive(Debug)]
pub struct Driven {
    /// Measured events (post warm-up, `sustain` phases).
    pub totals: Recorder,
    /// Per tool of the mix, over the measured events.
    pub tools: Vec<ToolStats>,
    /// Per segment (warm-up first when there is one).
    pub segments: Vec<SegStats>,
    /// The timeline as scheduled (before any early stop).
    pub timeline: Vec<Segment>,
    /// Step verdicts made during the run (`find_max`), by segment.
    pub verdicts: Vec<(usize, Verdict)>,
    /// The last segment run, when a step broke the SLO and the run stopped.
    pub stopped_after: Option<usize>,
    /// Completions whose finish fell in the measured window.
    pub finished_in_window: u64,
    /// The measured window, ns from the start.
    pub window_ns: (u64, u64),
    /// Accepted events that did not complete within the drain timeout.
    pub unfinished: u64,
    /// Sends, completions and rejections over the whole run.
    pub all: Recorder,
}

/// Where intervals go, and where they come back from for reuse.
#[derive(Debug)]
pub struct Channels {
    /// Filled intervals, to the reporter.
    pub tx: flume::Sender<Box<Interval>>,
    /// Emptied intervals, back from the reporter.
    pub free: flume::Receiver<Box<Interval>>,
}

struct State {
    clock: quanta::Clock,
    start: u64,
    timeline: Vec<Segment>,
    tool_index: Vec<usize>,
    interval: Box<Interval>,
    all: Recorder,
    totals: Recorder,
    tools: Vec<ToolStats>,
    segments: Vec<SegStats>,
    in_flight: u64,
    finished_in_window: u64,
    window_ns: (u64, u64),
}

impl State {
    #[inline]
    fn now(&self) -> u64 {
        self.clock.delta_as_nanos(self.start, self.clock.raw())
    }

    fn segment_of(&self, t: u64) -> usize {
        self.timeline
            .partition_point(|s| s.start_ns <= t)
            .saturating_sub(1)
    }

    #[inline]
    fn complete(&mut self, c: Completion) {
        let finished = self.clock.delta_as_nanos(self.start, c.times.finished);
        let submitted = self.clock.delta_as_nanos(self.start, c.times.submitted);
        let intended = c.tag;
        let corrected = finished.saturating_sub(intended);
        let uncorrected = finished.saturating_sub(submitted);
        let kind = c.outcome.kind();
        self.in_flight -= 1;
        self.interval.rec.completed(corrected, uncorrected, kind);
        self.all.completed(corrected, uncorrected, kind);
        let seg = self.segment_of(intended);
        let s = &mut self.segments[seg];
        s.corrected.saturating_record(corrected.max(1));
        s.tally.outcomes[kind as usize] += 1;
        let fseg = self.segment_of(finished);
        if finished < self.timeline[fseg].end_ns {
            self.segments[fseg].finished_within += 1;
        }
        if (self.window_ns.0..self.window_ns.1).contains(&finished) {
            self.finished_in_window += 1;
        }
        if self.timeline[seg].measured {
            self.totals.completed(corrected, uncorrected, kind);
            let t = self
                .tool_index
                .get(c.tool.0 as usize)
                .copied()
                .unwrap_or(usize::MAX);
            if let Some(tool) = self.tools.get_mut(t) {
                tool.corrected.saturating_record(corrected.max(1));
                tool.tally.outcomes[kind as usize] += 1;
                if kind != OutcomeKind::Ok && tool.first_error.is_none() {
                    tool.first_error = Some(describe(&c.outcome));
                }
            }
        }
    }

    /// A refusal that came back after the send (a server's 429): the
    /// event counts as rejected, not accepted, and is no latency sample.
    fn refused(&mut self, tag: u64, tool: ToolId, reason: RejectReason) {
        fn reclassify(t: &mut crate::stats::Tally, r: RejectReason) {
            t.accepted = t.accepted.saturating_sub(1);
            t.rejected[r as usize] += 1;
        }
        self.in_flight -= 1;
        self.interval.rec.tally.rejected[reason as usize] += 1;
        reclassify(&mut self.all.tally, reason);
        let seg = self.segment_of(tag);
        reclassify(&mut self.segments[seg].tally, reason);
        if self.timeline[seg].measured {
            reclassify(&mut self.totals.tally, reason);
            let t = self
                .tool_index
                .get(tool.0 as usize)
                .copied()
                .unwrap_or(usize::MAX);
            if let Some(tool) = self.tools.get_mut(t) {
                reclassify(&mut tool.tally, reason);
            }
        }
    }

    fn drain(&mut self, p: &mut dyn Sink) -> usize {
        p.drain(&mut |a| match a {
            Answer::Done(c) => self.complete(c),
            Answer::Refused { tag, tool, reason } => self.refused(tag, tool, reason),
        })
    }

    fn flush(&mut self, now: u64, ch: &Channels) {
        let next = ch.free.try_recv().unwrap_or_default();
        let mut done = std::mem::replace(&mut self.interval, next);
        done.end_ns = now;
        done.in_flight = self.in_flight;
        self.interval.rec.reset();
        self.interval.start_ns = now;
        // The reporter gone (it failed) must not stop the run.
        let _ = ch.tx.send(done);
    }
}

fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Error(m) | Outcome::Trap(m) | Outcome::Panicked(m) => {
            format!("{}: {m}", o.kind().as_str())
        }
        other => other.kind().as_str().to_owned(),
    }
}

/// Runs the profile's schedule against `p`, whose timestamps are taken
/// on `clock` and whose tool ids are `table`'s.
pub fn drive(
    p: &mut dyn Sink,
    clock: &quanta::Clock,
    table: &ToolTable,
    profile: &Profile,
    mut workload: Workload,
    ch: &Channels,
) -> Driven {
    let mut schedule = Schedule::new(profile);
    let timeline = schedule.segments().to_vec();
    let mut tool_index = vec![usize::MAX; table.len() + 1];
    for (i, t) in profile.tools.iter().enumerate() {
        if let Some(id) = table.get(&t.name) {
            let id = id.0 as usize;
            if id >= tool_index.len() {
                tool_index.resize(id + 1, usize::MAX);
            }
            tool_index[id] = i;
        }
    }
    let window = (
        timeline
            .iter()
            .find(|s| s.phase.is_some())
            .map_or(0, |s| s.start_ns),
        schedule.end_ns(),
    );
    let clock = clock.clone();
    let mut st = State {
        start: clock.raw(),
        clock,
        segments: vec![SegStats::default(); timeline.len()],
        timeline,
        tool_index,
        interval: Box::default(),
        all: Recorder::default(),
        totals: Recorder::default(),
        tools: vec![ToolStats::default(); profile.tools.len()],
        in_flight: 0,
        finished_in_window: 0,
        window_ns: window,
    };
    let limit = profile.concurrency.map_or(u64::MAX, |c| c as u64);
    let mut pacer = Pacer::new(p.quantum_ns());
    let mut next_flush = INTERVAL_NS;
    let mut verdicts = Vec::new();
    let mut stopped_after = None;
    // Step verdicts wait for a settle time into the next step, so the
    // step's last events can complete.
    let mut next_judged = 0usize;
    let judge_at = |st: &State, i: usize| {
        let s = &st.timeline[i];
        s.end_ns + ((s.end_ns - s.start_ns) / 4).min(250_000_000)
    };

    'schedule: while let Some((t, seg)) = schedule.next() {
        loop {
            let now = st.now();
            if now >= next_flush {
                st.flush(now, ch);
                next_flush = now - now % INTERVAL_NS + INTERVAL_NS;
            }
            if profile.find_max {
                while next_judged < seg && now >= judge_at(&st, next_judged) {
                    let i = next_judged;
                    next_judged += 1;
                    if st.timeline[i].phase.is_none() {
                        continue;
                    }
                    let v = judge_segment(profile, &st.timeline[i], &st.segments[i]);
                    let pass = v.pass;
                    verdicts.push((i, v));
                    if !pass {
                        stopped_after = Some(i);
                        schedule.stop_after(i);
                        break 'schedule;
                    }
                }
            }
            if now >= t && st.in_flight < limit {
                break;
            }
            if st.drain(p) > 0 {
                continue;
            }
            if now < t {
                pacer.sleep_until(now, t.min(next_flush), || st.now());
            } else {
                // Held back by the concurrency limit: wait for completions.
                std::thread::sleep(Duration::from_nanos(LIMIT_POLL_NS));
            }
        }
        let (event, tool) = workload.next_event(t);
        let sent = st.now();
        let refused = p.submit(event).err();
        let lag = sent.saturating_sub(t);
        st.interval.rec.sent(lag, refused);
        st.all.sent(lag, refused);
        let s = &mut st.segments[seg];
        s.tally.scheduled += 1;
        match refused {
            None => {
                st.in_flight += 1;
                s.tally.accepted += 1;
            }
            Some(r) => s.tally.rejected[r as usize] += 1,
        }
        if st.timeline[seg].measured {
            st.totals.sent(lag, refused);
            let t = &mut st.tools[tool].tally;
            t.scheduled += 1;
            match refused {
                None => t.accepted += 1,
                Some(r) => t.rejected[r as usize] += 1,
            }
        }
        st.drain(p);
    }

    // The schedule is over: wait for what is in flight.
    let deadline = st.now() + profile.drain_timeout.as_nanos() as u64;
    while st.in_flight > 0 && st.now() < deadline {
        if st.drain(p) == 0 {
            std::thread::sleep(Duration::from_micros(50));
        }
        let now = st.now();
        if now >= next_flush {
            st.flush(now, ch);
            next_flush = now - now % INTERVAL_NS + INTERVAL_NS;
        }
    }
    let now = st.now();
    st.flush(now, ch);
    // Judge the steps not judged yet (the last one, or all when the run
    // was short), in order, up to the first that broke.
    if profile.find_max && stopped_after.is_none() {
        for i in next_judged..st.timeline.len() {
            if st.timeline[i].phase.is_none() {
                continue;
            }
            let v = judge_segment(profile, &st.timeline[i], &st.segments[i]);
            let pass = v.pass;
            verdicts.push((i, v));
            if !pass {
                stopped_after = Some(i);
                break;
            }
        }
    }
    let window_ns = match stopped_after {
        Some(i) => (st.window_ns.0, st.timeline[i].end_ns),
        None => st.window_ns,
    };
    Driven {
        unfinished: st.in_flight,
        totals: st.totals,
        tools: st.tools,
        segments: st.segments,
        timeline: st.timeline,
        verdicts,
        stopped_after,
        finished_in_window: st.finished_in_window,
        window_ns,
        all: st.all,
    }
}
