//! The progress (reporter) thread: takes the generator's intervals, shows progress
//! (a bar on a terminal, one line per interval otherwise), writes the
//! HdrHistogram interval log, keeps the series for the plot, and samples
//! resident memory every second.

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::memory::{self, Sample};
use crate::stats::{Interval, Percentiles};
use crate::units::{Bytes, Nanos, fmt_rate};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A bar on a terminal, lines otherwise.
    Auto,
    /// One line per interval on stderr.
    Lines,
    /// Nothing.
    Quiet,
}

/// One interval, for the plot and the JSON report.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// End of the interval, seconds from the start.
    pub t_s: f64,
    /// Sends per second.
    pub sent_rate: f64,
    /// Completions per second.
    pub done_rate: f64,
    /// Corrected latency of the interval's completions.
    pub corrected_us: Percentiles,
    /// Uncorrected latency.
    pub uncorrected_us: Percentiles,
    /// Schedule lag p99, µs.
    pub lag_p99_us: f64,
    /// Rejections in the interval.
    pub rejected: u64,
    /// Completions that were not `Ok`.
    pub errors: u64,
    /// Events in flight at its end.
    pub in_flight: u64,
}

/// What the reporter hands back.
#[derive(Debug, Default)]
pub struct Reported {
    /// One point per interval.
    pub points: Vec<Point>,
    /// One memory sample per second.
    pub memory: Vec<Sample>,
    /// Where memory was read.
    pub memory_source: Option<memory::Source>,
    /// A failure writing the interval log.
    pub hlog_error: Option<String>,
}

/// Reporter settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How to show progress.
    pub progress: Progress,
    /// Planned length of the run (warm-up + phases).
    pub total: Duration,
    /// Warm-up length.
    pub warmup: Duration,
    /// Interval log file.
    pub hlog: Option<PathBuf>,
    /// Name shown in progress.
    pub label: String,
    /// Sample this server's memory (its `/metrics`) instead of this
    /// process's.
    pub remote: Option<std::sync::Arc<crate::remote::Remote>>,
    /// An embedded target's WASI pool, whose touched slots are sampled
    /// with memory.
    pub runtime: Option<toolplane_pool::Runtime>,
}

/// Starts the reporter; it ends when the generator drops its sender.
pub fn spawn(
    settings: Settings,
    rx: flume::Receiver<Box<Interval>>,
    free: flume::Sender<Box<Interval>>,
) -> std::thread::JoinHandle<Reported> {
    std::thread::Builder::new()
        .name("loadgen-reporter".into())
        .spawn(move || {
            // Nice 19 (this thread only): its once-a-second work waits for
            // a worker to sleep rather than preempting it.
            let _ = rustix::process::setpriority_process(None, 19);
            report(settings, rx, free)
        })
        .expect("spawning the reporter thread")
}

type Log = (std::io::BufWriter<std::fs::File>, V2DeflateSerializer);

fn report(
    settings: Settings,
    rx: flume::Receiver<Box<Interval>>,
    free: flume::Sender<Box<Interval>>,
) -> Reported {
    let start = Instant::now();
    // Room for the whole run, so that the report's own vectors do not
    // grow (and show as memory growth) while it runs.
    let seconds = settings.total.as_secs() as usize + 16;
    let mut out = Reported {
        points: Vec::with_capacity(seconds),
        memory: Vec::with_capacity(seconds),
        ..Reported::default()
    };
    let sample = |out: &mut Reported| {
        let reading = match &settings.remote {
            Some(r) => r
                .scrape()
                .and_then(|s| s.rss_bytes)
                .map(|b| (b, memory::Source::ServerMetrics)),
            None => memory::resident(),
        };
        let heap = settings.remote.is_none().then(memory::heap_live).flatten();
        let slots = settings.runtime.as_ref().map(|r| r.slot_use().touched());
        if let Some((bytes, src)) = reading {
            out.memory.push(Sample {
                t_s: start.elapsed().as_secs_f64(),
                rss_bytes: bytes,
                heap_bytes: heap,
                pool_slots: slots,
            });
            out.memory_source = Some(src);
        }
    };
    sample(&mut out);
    let mut log: Option<Log> = None;
    if let Some(path) = &settings.hlog {
        match std::fs::File::create(path) {
            Ok(f) => log = Some((std::io::BufWriter::new(f), V2DeflateSerializer::new())),
            Err(e) => out.hlog_error = Some(format!("cannot create {}: {e}", path.display())),
        }
    }
    let mode = match settings.progress {
        Progress::Auto if std::io::stderr().is_terminal() => Mode::Bar(bar(&settings)),
        Progress::Auto | Progress::Lines => Mode::Lines,
        Progress::Quiet => Mode::Quiet,
    };
    let now_sys = SystemTime::now();
    let mut writer_parts = log.as_mut();
    let mut writer = writer_parts.as_mut().and_then(|(w, s)| {
        IntervalLogWriterBuilder::new()
            .add_comment("toolplane loadgen: latency in ns; untagged = corrected (from intended send time), tag=uncorrected (from actual send time)")
            .with_start_time(now_sys)
            .with_base_time(now_sys)
            .with_max_value_divisor(1e6)
            .begin_log_with(w, s)
            .ok()
    });
    let mut next_sample = Duration::from_secs(1);
    loop {
        let wait = next_sample.saturating_sub(start.elapsed());
        match rx.recv_timeout(wait) {
            Ok(interval) => {
                let point = point_of(&interval);
                if let Some(w) = writer.as_mut() {
                    let st = Duration::from_nanos(interval.start_ns);
                    let d = Duration::from_nanos(interval.end_ns.saturating_sub(interval.start_ns));
                    let r = w
                        .write_histogram(&interval.rec.corrected, st, d, None)
                        .and_then(|()| {
                            w.write_histogram(
                                &interval.rec.uncorrected,
                                st,
                                d,
                                Tag::new("uncorrected"),
                            )
                        });
                    if let Err(e) = r {
                        out.hlog_error = Some(format!("writing the interval log: {e}"));
                        writer = None;
                    }
                }
                let mem = out.memory.last().copied();
                let phase = if Duration::from_nanos(interval.start_ns) < settings.warmup {
                    "warm-up "
                } else {
                    ""
                };
                match &mode {
                    Mode::Bar(b) => {
                        b.set_position(interval.end_ns / 1_000_000);
                        b.set_message(format!("{phase}{}", line(&point, mem)));
                    }
                    Mode::Lines => {
                        let mut e = std::io::stderr().lock();
                        let _ = writeln!(
                            e,
                            "[{:>7.1}s/{:.0}s] {}{phase}{}",
                            point.t_s,
                            settings.total.as_secs_f64(),
                            settings.label,
                            line(&point, mem)
                        );
                    }
                    Mode::Quiet => {}
                }
                out.points.push(point);
                let _ = free.send(interval);
            }
            Err(flume::RecvTimeoutError::Timeout) => {}
            Err(flume::RecvTimeoutError::Disconnected) => break,
        }
        if start.elapsed() >= next_sample {
            sample(&mut out);
            next_sample += Duration::from_secs(1);
        }
    }
    sample(&mut out);
    drop(writer);
    if let Some((w, _)) = writer_parts.as_mut()
        && let Err(e) = w.flush()
    {
        out.hlog_error = Some(format!("writing the interval log: {e}"));
    }
    if let Mode::Bar(b) = mode {
        b.finish_and_clear();
    }
    out
}

enum Mode {
    Bar(ProgressBar),
    Lines,
    Quiet,
}

fn bar(settings: &Settings) -> ProgressBar {
    let b = ProgressBar::with_draw_target(
        Some(settings.total.as_millis() as u64),
        ProgressDrawTarget::stderr(),
    );
    b.set_style(
        ProgressStyle::with_template("{prefix} {elapsed:>4}/{len_s} [{bar:24.cyan/blue}] {msg}")
            .expect("static template")
            .with_key(
                "len_s",
                |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{}s", s.len().unwrap_or(0) / 1000);
                },
            )
            .progress_chars("=> "),
    );
    b.set_prefix(settings.label.clone());
    b
}

fn point_of(i: &Interval) -> Point {
    let secs = (i.end_ns.saturating_sub(i.start_ns)).max(1) as f64 / 1e9;
    let t = &i.rec.tally;
    Point {
        t_s: i.end_ns as f64 / 1e9,
        sent_rate: t.scheduled as f64 / secs,
        done_rate: t.completed() as f64 / secs,
        corrected_us: Percentiles::of(&i.rec.corrected),
        uncorrected_us: Percentiles::of(&i.rec.uncorrected),
        lag_p99_us: if i.rec.lag.is_empty() {
            0.0
        } else {
            i.rec.lag.value_at_quantile(0.99) as f64 / 1e3
        },
        rejected: t.rejected_total(),
        errors: t.failed(),
        in_flight: i.in_flight,
    }
}

fn line(p: &Point, mem: Option<Sample>) -> String {
    let us = |v: f64| Nanos(v * 1e3);
    let mut s = format!(
        "sent {} done {} p50 {} p99 {} max {} lag.p99 {} rejected {} errors {} in-flight {} rss {}",
        fmt_rate(p.sent_rate.max(0.0)),
        fmt_rate(p.done_rate.max(0.0)),
        us(p.corrected_us.p50),
        us(p.corrected_us.p99),
        us(p.corrected_us.max),
        us(p.lag_p99_us),
        p.rejected,
        p.errors,
        p.in_flight,
        Bytes(mem.map_or(0, |m| m.rss_bytes)),
    );
    if let Some(h) = mem.and_then(|m| m.heap_bytes) {
        let _ = write!(s, " heap {}", Bytes(h));
    }
    if let Some(n) = mem.and_then(|m| m.pool_slots) {
        let _ = write!(s, " slots {n}");
    }
    s
}
