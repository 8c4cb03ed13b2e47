//! Saturation: a no-op native handler driven as fast as one producer can,
//! through the engine and, in the same run, through a baseline (a plain
//! crossbeam-channel worker pool with the same handler, thread count,
//! pinning and completion path). Replicas alternate A B A B; the medians,
//! their spread and the ratio are printed as one JSON line.
//!
//! ```text
//! cargo run --release -p toolplane-core --example saturate -- [--seconds 2] [--replicas 3]
//! ```
//!
//! The allocation count is taken by a counting global allocator (over
//! mimalloc) during the measured window of the engine runs only.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use toolplane_core::{Completion, Engine, Event, Outcome, Payload, Timestamps, ToolId, handler_fn};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;

// SAFETY: every method forwards to mimalloc with the caller's arguments
// unchanged, so mimalloc's guarantees are ours; counting touches no memory
// the allocator hands out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { INNER.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `INNER.alloc` with this layout.
        unsafe { INNER.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { INNER.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The handler both sides run.
fn noop(_event: Event) -> Outcome {
    Outcome::Ok(Payload::new())
}

struct Run {
    /// Producer time per submit call (accepted or refused), engine only.
    submit_ns: f64,
    events_per_sec: f64,
    p50_ns: u64,
    p99_ns: u64,
    allocations: u64,
    events: u64,
}

struct Args {
    seconds: f64,
    replicas: usize,
    /// Run only one side (for profiling): "engine" or "baseline".
    only: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        seconds: 2.0,
        replicas: 3,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if !matches!(flag.as_str(), "--seconds" | "--replicas" | "--only") {
            usage(&format!("unknown argument {flag:?}"));
        }
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let bad = format!("bad value {value:?} for {flag}");
        match flag.as_str() {
            "--seconds" => a.seconds = value.parse().unwrap_or_else(|_| usage(&bad)),
            "--replicas" => a.replicas = value.parse().unwrap_or_else(|_| usage(&bad)),
            _ if value == "engine" || value == "baseline" => a.only = Some(value),
            _ => usage(&bad),
        }
    }
    if a.seconds <= 0.0 || a.replicas == 0 {
        usage("--seconds and --replicas must be positive");
    }
    a
}

fn usage(why: &str) -> ! {
    eprintln!(
        "saturate: {why}\nusage: saturate [--seconds 2] [--replicas 3] [--only engine|baseline]"
    );
    std::process::exit(2)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static bounds")
}

/// Pins the calling thread to the last core (the workers start at core 0).
fn pin_producer(cores: &[core_affinity::CoreId]) {
    if let Some(last) = cores.last() {
        core_affinity::set_for_current(*last);
    }
}

fn run_engine(workers: usize, seconds: f64, cores: &[core_affinity::CoreId]) -> Run {
    let engine = Engine::builder()
        .workers(workers)
        .sample_every(0)
        .build(handler_fn(noop))
        .expect("engine builds");
    let tool = engine.tool("noop");
    let clock = engine.clock().clone();
    let run = std::thread::scope(|s| {
        s.spawn(|| {
            pin_producer(cores);
            let mut p = engine.producer();
            p.preallocate();
            let mut hist = histogram();
            let mut tag = 0u64;
            let (mut submit_ticks, mut submit_calls) = (0u64, 0u64);
            let mut run = drive(&clock, seconds, &mut hist, |record| {
                let t0 = clock.raw();
                for _ in 0..64 {
                    submit_calls += 1;
                    if p.submit(Event::new(tool, Payload::new()).with_tag(tag))
                        .is_err()
                    {
                        break;
                    }
                    tag += 1;
                }
                submit_ticks += clock.raw() - t0;
                p.drain(|c| record(&c)) as u64
            });
            run.submit_ns = clock.delta_as_nanos(0, submit_ticks) as f64 / submit_calls as f64;
            run
        })
        .join()
        .expect("producer thread")
    });
    let report = engine.shutdown(Duration::from_secs(5));
    assert!(report.is_balanced(), "engine lost events: {report:?}");
    run
}

fn run_baseline(workers: usize, seconds: f64, cores: &[core_affinity::CoreId]) -> Run {
    let clock = quanta::Clock::new();
    let (job_tx, job_rx) = crossbeam_channel::bounded::<Event>(1024);
    let (done_tx, done_rx) = crossbeam_channel::bounded::<Completion>(2048);
    let handles: Vec<_> = (0..workers)
        .map(|i| {
            let (job_rx, done_tx, clock) = (job_rx.clone(), done_tx.clone(), clock.clone());
            let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
            std::thread::spawn(move || {
                if let Some(c) = core {
                    core_affinity::set_for_current(c);
                }
                for event in job_rx {
                    let (tag, tool, key, submitted) =
                        (event.tag(), event.tool(), event.key(), submitted_of(&event));
                    let started = clock.raw();
                    let outcome = noop(event);
                    let finished = clock.raw();
                    let c = Completion {
                        tag,
                        tool,
                        key,
                        worker: i as u16,
                        outcome,
                        times: Timestamps {
                            submitted,
                            started,
                            finished,
                        },
                    };
                    if done_tx.send(c).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    drop((job_rx, done_tx));
    let run = std::thread::scope(|s| {
        s.spawn(|| {
            pin_producer(cores);
            let mut hist = histogram();
            let r = drive(&clock, seconds, &mut hist, |record| {
                for _ in 0..64 {
                    // The baseline stamps its submit time in the tag's
                    // place: the event's own stamp is the engine's.
                    let e = Event::new(ToolId(0), Payload::new()).with_tag(clock.raw());
                    if job_tx.try_send(e).is_err() {
                        break;
                    }
                }
                let mut n = 0;
                while let Ok(c) = done_rx.try_recv() {
                    record(&c);
                    n += 1;
                }
                n
            });
            drop(job_tx);
            while done_rx.recv().is_ok() {}
            r
        })
        .join()
        .expect("producer thread")
    });
    for h in handles {
        h.join().expect("baseline worker");
    }
    run
}

/// The baseline has no admission stamp of its own: it carries the submit
/// time in the tag.
fn submitted_of(event: &Event) -> u64 {
    event.tag()
}

/// Runs `step` (submit a burst, drain) for a warm-up of a quarter of the
/// window, then measures completions, latency and allocations.
fn drive(
    clock: &quanta::Clock,
    seconds: f64,
    hist: &mut Histogram<u64>,
    mut step: impl FnMut(&mut dyn FnMut(&Completion)) -> u64,
) -> Run {
    let warm = Duration::from_secs_f64(seconds / 4.0);
    let window = Duration::from_secs_f64(seconds);
    let start = clock.now();
    while clock.now() - start < warm {
        step(&mut |_| {});
    }
    let allocs_before = ALLOCATIONS.load(Ordering::Relaxed);
    let t0 = clock.now();
    let mut events = 0u64;
    loop {
        events += step(&mut |c| {
            let _ = hist.record(
                clock
                    .delta_as_nanos(c.times.submitted, c.times.finished)
                    .max(1),
            );
        });
        if events & 0x3ff < 64 && clock.now() - t0 >= window {
            break;
        }
    }
    let elapsed = (clock.now() - t0).as_secs_f64();
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocs_before;
    Run {
        submit_ns: 0.0,
        events_per_sec: events as f64 / elapsed,
        p50_ns: hist.value_at_quantile(0.5),
        p99_ns: hist.value_at_quantile(0.99),
        allocations,
        events,
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args = args();
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let ncores = cores.len().max(1);
    let workers = ncores.saturating_sub(1).max(1);
    let (mut engine_runs, mut base_runs) = (Vec::new(), Vec::new());
    for r in 0..args.replicas {
        if let Some(side) = &args.only {
            let run = if side == "engine" {
                run_engine
            } else {
                run_baseline
            };
            let x = run(workers, args.seconds, &cores);
            eprintln!(
                "{side}: {:.2} M/s, p50 {} ns, p99 {} ns, {:.1} ns per submit call",
                x.events_per_sec / 1e6,
                x.p50_ns,
                x.p99_ns,
                x.submit_ns
            );
            continue;
        }
        let e = run_engine(workers, args.seconds, &cores);
        let b = run_baseline(workers, args.seconds, &cores);
        eprintln!(
            "replica {}: engine {:.2} M/s (p50 {} ns, p99 {} ns, {} allocs), baseline {:.2} M/s (p50 {} ns, p99 {} ns)",
            r + 1,
            e.events_per_sec / 1e6,
            e.p50_ns,
            e.p99_ns,
            e.allocations,
            b.events_per_sec / 1e6,
            b.p50_ns,
            b.p99_ns
        );
        engine_runs.push(e);
        base_runs.push(b);
    }
    if args.only.is_some() {
        return;
    }
    let mut e_rate: Vec<f64> = engine_runs.iter().map(|r| r.events_per_sec).collect();
    let mut b_rate: Vec<f64> = base_runs.iter().map(|r| r.events_per_sec).collect();
    let mut ratios: Vec<f64> = engine_runs
        .iter()
        .zip(&base_runs)
        .map(|(e, b)| e.events_per_sec / b.events_per_sec)
        .collect();
    let mut e_p50: Vec<f64> = engine_runs.iter().map(|r| r.p50_ns as f64).collect();
    let mut e_p99: Vec<f64> = engine_runs.iter().map(|r| r.p99_ns as f64).collect();
    let mut b_p50: Vec<f64> = base_runs.iter().map(|r| r.p50_ns as f64).collect();
    let mut b_p99: Vec<f64> = base_runs.iter().map(|r| r.p99_ns as f64).collect();
    let mut submit_ns: Vec<f64> = engine_runs.iter().map(|r| r.submit_ns).collect();
    let allocs: u64 = engine_runs.iter().map(|r| r.allocations).sum();
    let events: u64 = engine_runs.iter().map(|r| r.events).sum();
    let minmax = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo, hi)
    };
    let (e_lo, e_hi) = minmax(&e_rate);
    let (b_lo, b_hi) = minmax(&b_rate);
    println!(
        "{{\"workers\":{workers},\"producers\":1,\"replicas\":{},\"seconds\":{},\
\"engine_events_per_sec\":{:.0},\"engine_events_per_sec_min\":{e_lo:.0},\"engine_events_per_sec_max\":{e_hi:.0},\
\"baseline_events_per_sec\":{:.0},\"baseline_events_per_sec_min\":{b_lo:.0},\"baseline_events_per_sec_max\":{b_hi:.0},\
\"ratio\":{:.2},\"engine_p50_ns\":{:.0},\"engine_p99_ns\":{:.0},\"baseline_p50_ns\":{:.0},\"baseline_p99_ns\":{:.0},\
\"engine_submit_ns\":{:.1},\"allocations_per_event\":{:.6}}}",
        args.replicas,
        args.seconds,
        median(&mut e_rate),
        median(&mut b_rate),
        median(&mut ratios),
        median(&mut e_p50),
        median(&mut e_p99),
        median(&mut b_p50),
        median(&mut b_p99),
        median(&mut submit_ns),
        allocs as f64 / events.max(1) as f64,
    );
}
