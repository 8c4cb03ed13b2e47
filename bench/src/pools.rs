//! The engine and its baselines at saturation: one producer thread submits
//! bursts of 64 no-op events and drains completions, as fast as it can,
//! for a fixed window after a warm-up of a quarter of it.
//!
//! The baselines are what one would write without toolplane: a worker
//! pool on a bounded MPMC channel (crossbeam-channel, or flume), with the
//! same handler, the same number of worker threads pinned the same way,
//! and the same completion path (a [`Completion`] with its three
//! timestamps, back over a second channel). The producer is pinned to the
//! last core, the workers from core 0.

use std::sync::atomic::Ordering;
use std::time::Duration;

use hdrhistogram::Histogram;
use toolplane_core::{Completion, Engine, Event, Outcome, Payload, Timestamps, ToolId, handler_fn};

use crate::ALLOCATIONS;

/// The handler every side runs.
pub fn noop(_event: Event) -> Outcome {
    Outcome::Ok(Payload::new())
}

/// One replica's figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct Run {
    /// Completions per second over the measured window.
    pub events_per_sec: f64,
    /// Submission to finish, median, ns.
    pub p50_ns: u64,
    /// Submission to finish, 99th percentile, ns.
    pub p99_ns: u64,
    /// Allocations during the window (counted only when the binary
    /// installs [`crate::CountingMimalloc`]).
    pub allocations: u64,
    /// Completions in the window.
    pub events: u64,
}

/// Which side runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// toolplane's engine.
    Engine,
    /// A crossbeam-channel worker pool.
    Crossbeam,
    /// A flume worker pool.
    Flume,
}

impl Side {
    /// Every side, the engine first.
    pub const ALL: [Side; 3] = [Side::Engine, Side::Crossbeam, Side::Flume];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Side::Engine => "toolplane engine",
            Side::Crossbeam => "crossbeam-channel pool",
            Side::Flume => "flume pool",
        }
    }

    /// Runs one replica of `seconds` with `workers` worker threads.
    pub fn run(self, workers: usize, seconds: f64, cores: &[core_affinity::CoreId]) -> Run {
        match self {
            Side::Engine => run_engine(workers, seconds, cores),
            Side::Crossbeam => run_pool::<Crossbeam>(workers, seconds, cores),
            Side::Flume => run_pool::<Flume>(workers, seconds, cores),
        }
    }
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
            drive(&clock, seconds, &mut hist, |record| {
                for _ in 0..64 {
                    if p.submit(Event::new(tool, Payload::new()).with_tag(tag))
                        .is_err()
                    {
                        break;
                    }
                    tag += 1;
                }
                p.drain(|c| record(&c)) as u64
            })
        })
        .join()
        .expect("producer thread")
    });
    let report = engine.shutdown(Duration::from_secs(5));
    assert!(report.is_balanced(), "engine lost events: {report:?}");
    run
}

/// A bounded MPMC channel, as a worker pool uses one.
pub trait Channel {
    /// The sending end.
    type Tx<T: Send + 'static>: Clone + Send + Sync + 'static;
    /// The receiving end.
    type Rx<T: Send + 'static>: Clone + Send + Sync + 'static;
    /// A channel of `capacity`.
    fn bounded<T: Send + 'static>(capacity: usize) -> (Self::Tx<T>, Self::Rx<T>);
    /// Sends without waiting; gives the value back when full or closed.
    fn try_send<T: Send + 'static>(tx: &Self::Tx<T>, value: T) -> Result<(), T>;
    /// Sends, waiting for room; `false` when closed.
    fn send<T: Send + 'static>(tx: &Self::Tx<T>, value: T) -> bool;
    /// Receives, waiting; `None` once closed and empty.
    fn recv<T: Send + 'static>(rx: &Self::Rx<T>) -> Option<T>;
    /// Receives without waiting.
    fn try_recv<T: Send + 'static>(rx: &Self::Rx<T>) -> Option<T>;
}

/// crossbeam-channel's `bounded`.
#[derive(Debug)]
pub enum Crossbeam {}

impl Channel for Crossbeam {
    type Tx<T: Send + 'static> = crossbeam_channel::Sender<T>;
    type Rx<T: Send + 'static> = crossbeam_channel::Receiver<T>;
    fn bounded<T: Send + 'static>(capacity: usize) -> (Self::Tx<T>, Self::Rx<T>) {
        crossbeam_channel::bounded(capacity)
    }
    fn try_send<T: Send + 'static>(tx: &Self::Tx<T>, value: T) -> Result<(), T> {
        tx.try_send(value).map_err(|e| e.into_inner())
    }
    fn send<T: Send + 'static>(tx: &Self::Tx<T>, value: T) -> bool {
        tx.send(value).is_ok()
    }
    fn recv<T: Send + 'static>(rx: &Self::Rx<T>) -> Option<T> {
        rx.recv().ok()
    }
    fn try_recv<T: Send + 'static>(rx: &Self::Rx<T>) -> Option<T> {
        rx.try_recv().ok()
    }
}

/// flume's `bounded`.
#[derive(Debug)]
pub enum Flume {}

impl Channel for Flume {
    type Tx<T: Send + 'static> = flume::Sender<T>;
    type Rx<T: Send + 'static> = flume::Receiver<T>;
    fn bounded<T: Send + 'static>(capacity: usize) -> (Self::Tx<T>, Self::Rx<T>) {
        flume::bounded(capacity)
    }
    fn try_send<T: Send + 'static>(tx: &Self::Tx<T>, value: T) -> Result<(), T> {
        tx.try_send(value).map_err(|e| e.into_inner())
    }
    fn send<T: Send + 'static>(tx: &Self::Tx<T>, value: T) -> bool {
        tx.send(value).is_ok()
    }
    fn recv<T: Send + 'static>(rx: &Self::Rx<T>) -> Option<T> {
        rx.recv().ok()
    }
    fn try_recv<T: Send + 'static>(rx: &Self::Rx<T>) -> Option<T> {
        rx.try_recv().ok()
    }
}

/// A worker pool on channel `C`: `workers` threads take events from one
/// bounded channel, run the handler, and send a [`Completion`] back.
/// The submit time travels in the event's tag (the event's own stamp is
/// the engine's to set).
#[derive(Debug)]
pub struct Pool<C: Channel> {
    jobs: Option<C::Tx<Event>>,
    done: C::Rx<Completion>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl<C: Channel> Pool<C> {
    /// Starts the workers, pinned from core 0 when `cores` is not empty.
    pub fn start(
        workers: usize,
        handler: fn(Event) -> Outcome,
        clock: &quanta::Clock,
        cores: &[core_affinity::CoreId],
    ) -> Pool<C> {
        let (job_tx, job_rx) = C::bounded::<Event>(1024);
        let (done_tx, done_rx) = C::bounded::<Completion>(2048);
        let threads = (0..workers)
            .map(|i| {
                let (job_rx, done_tx, clock) = (job_rx.clone(), done_tx.clone(), clock.clone());
                let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
                std::thread::spawn(move || {
                    if let Some(c) = core {
                        core_affinity::set_for_current(c);
                    }
                    while let Some(event) = C::recv(&job_rx) {
                        let (tag, tool, key) = (event.tag(), event.tool(), event.key());
                        let started = clock.raw();
                        let outcome = handler(event);
                        let finished = clock.raw();
                        let c = Completion {
                            tag,
                            tool,
                            key,
                            worker: i as u16,
                            outcome,
                            times: Timestamps {
                                submitted: tag,
                                started,
                                finished,
                            },
                        };
                        if !C::send(&done_tx, c) {
                            return;
                        }
                    }
                })
            })
            .collect();
        Pool {
            jobs: Some(job_tx),
            done: done_rx,
            threads,
        }
    }

    /// Submits without waiting; gives the event back when the queue is full.
    pub fn try_submit(&self, event: Event) -> Result<(), Event> {
        C::try_send(self.jobs.as_ref().expect("pool open"), event)
    }

    /// A completion, if one is ready.
    pub fn try_complete(&self) -> Option<Completion> {
        C::try_recv(&self.done)
    }

    /// Closes the queue, drains what is left and joins the workers.
    pub fn shutdown(mut self) {
        self.jobs = None;
        while C::recv(&self.done).is_some() {}
        for t in self.threads.drain(..) {
            t.join().expect("pool worker");
        }
    }
}

fn run_pool<C: Channel>(workers: usize, seconds: f64, cores: &[core_affinity::CoreId]) -> Run {
    let clock = quanta::Clock::new();
    let pool = Pool::<C>::start(workers, noop, &clock, cores);
    let run = std::thread::scope(|s| {
        s.spawn(|| {
            pin_producer(cores);
            let mut hist = histogram();
            drive(&clock, seconds, &mut hist, |record| {
                for _ in 0..64 {
                    let e = Event::new(ToolId(0), Payload::new()).with_tag(clock.raw());
                    if pool.try_submit(e).is_err() {
                        break;
                    }
                }
                let mut n = 0;
                while let Some(c) = pool.try_complete() {
                    record(&c);
                    n += 1;
                }
                n
            })
        })
        .join()
        .expect("producer thread")
    });
    pool.shutdown();
    run
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
    Run {
        events_per_sec: events as f64 / elapsed,
        p50_ns: hist.value_at_quantile(0.5),
        p99_ns: hist.value_at_quantile(0.99),
        allocations: ALLOCATIONS.load(Ordering::Relaxed) - allocs_before,
        events,
    }
}
